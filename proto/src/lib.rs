//! The gRPC contracts shared by the gateway and the services, generated from `proto/` at build
//! time. Nothing else lives here: services never import each other, only these types.

#![allow(clippy::all, clippy::pedantic, unreachable_pub, missing_docs)] // generated code

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("auth.v1");
    }
}

pub mod reports {
    pub mod v1 {
        tonic::include_proto!("reports.v1");
    }
}

pub mod analytics {
    pub mod v1 {
        tonic::include_proto!("analytics.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("events.v1");
    }
}

/// Encoded `FileDescriptorSet` of every contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
