//! The outbox relay: reports-service's domain events reach analytics-service exactly once, also
//! across an outage of analytics-service (issue 18).
