//! The internal CA and one certificate per process (rcgen), for mTLS between the gateway and the services.
