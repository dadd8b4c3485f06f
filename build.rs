//! Generates the core's view of `kext-shim/include/maptrace_bridge.h` (the
//! shim <-> core function ABI) with bindgen. The ABI types it mentions come
//! from `maptrace_abi::raw`, never from a second binding.

use std::env;
use std::path::PathBuf;

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let include = root.join("kext-shim/include");
    let header = include.join("maptrace_bridge.h");
    println!("cargo:rerun-if-changed={}", header.display());
    println!(
        "cargo:rerun-if-changed={}",
        include.join("maptrace_abi.h").display()
    );

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_file(".*maptrace_bridge\\.h")
        .blocklist_file(".*maptrace_abi\\.h")
        .raw_line("use maptrace_abi::raw::*;")
        .use_core()
        .ctypes_prefix("core::ffi")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(false)
        .layout_tests(true)
        .generate()
        .expect("bindgen failed on maptrace_bridge.h (is libclang installed? `cargo xtask test` installs it)");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bridge.rs"))
        .expect("write bridge.rs");
}
