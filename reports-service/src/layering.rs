//! The layering rule of ARCHITECTURE.md over every file of this crate (service-kit reads them).

#[test]
fn arrows_point_one_way() {
    service_kit::layering::assert_arrows_point_one_way(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}
