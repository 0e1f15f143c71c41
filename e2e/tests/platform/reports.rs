//! Incident reports through the gateway: create, list, read, change, withdraw, idempotency,
//! encryption at rest and row-level security (issue 18).
