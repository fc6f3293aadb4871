//! Compiles `overlay/v1/*.proto` with protox (pure Rust, no system `protoc`)
//! and generates the prost types into `OUT_DIR/overlay.v1.rs`.

use std::path::PathBuf;

const PROTOS: &[&str] = &["overlay/v1/events.proto", "overlay/v1/outputs.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-changed={}", root.join("overlay").display());
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS.iter().map(|p| root.join(p)), [&root])?;
    prost_build::Config::new()
        // Maps encode in key order, so output bytes are deterministic.
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}
