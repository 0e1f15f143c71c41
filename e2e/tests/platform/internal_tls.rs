//! Inside traffic over TLS: mTLS between the gateway and the services, PostgreSQL and Redis over TLS.
