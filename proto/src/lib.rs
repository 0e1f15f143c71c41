//! The gRPC contracts shared by the gateway and the services, generated from `proto/` at build
//! time. Nothing else lives here: services never import each other, only these types.

#![allow(clippy::all, clippy::pedantic, unreachable_pub, missing_docs)] // generated code

/// `pub mod NAME { pub mod v1 { … } }` holding the code generated for package `NAME.v1`.
macro_rules! package_v1 {
    ($name:ident, $package:literal) => {
        pub mod $name {
            pub mod v1 {
                tonic::include_proto!($package);
            }
        }
    };
}

package_v1!(auth, "auth.v1");
package_v1!(reports, "reports.v1");
package_v1!(analytics, "analytics.v1");
package_v1!(events, "events.v1");

/// Encoded `FileDescriptorSet` of every contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
