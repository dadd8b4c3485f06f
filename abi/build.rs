//! Generates `raw` from `kext-shim/include/maptrace_abi.h` (bindgen) and, for
//! host builds, compiles the C layout table that `tests/layout.rs` compares
//! against Rust's view.

use std::env;
use std::path::PathBuf;

/// Adds zerocopy's derives to every generated struct, so records are read from
/// and written to bytes without `unsafe` and without hand-written mirrors.
#[derive(Debug)]
struct ZerocopyDerives;

impl bindgen::callbacks::ParseCallbacks for ZerocopyDerives {
    fn add_derives(&self, info: &bindgen::callbacks::DeriveInfo<'_>) -> Vec<String> {
        if info.kind == bindgen::callbacks::TypeKind::Struct {
            ["FromBytes", "IntoBytes", "Immutable", "KnownLayout"]
                .iter()
                .map(|d| format!("zerocopy::{d}"))
                .collect()
        } else {
            Vec::new()
        }
    }
}

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let include = root.join("../kext-shim/include");
    let header = include.join("maptrace_abi.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", header.display());

    // The header has no target-dependent types; bind it for the host so the
    // generated layout tests run wherever the crate is tested.
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_file(".*maptrace_abi\\.h")
        .use_core()
        .ctypes_prefix("core::ffi")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_eq(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(ZerocopyDerives))
        .generate()
        .expect("bindgen failed on maptrace_abi.h (is libclang installed? `cargo xtask test` installs it)");
    bindings
        .write_to_file(out.join("abi.rs"))
        .expect("write abi.rs");

    // The C side of the runtime layout comparison, for host builds only.
    let host = env::var("HOST").unwrap_or_default();
    let target = env::var("TARGET").unwrap_or_default();
    if host == target {
        let table = root.join("tests/layout_table.c");
        println!("cargo:rerun-if-changed={}", table.display());
        cc::Build::new()
            .file(&table)
            .include(&include)
            .warnings(true)
            .extra_warnings(true)
            .flag_if_supported("-Wpadded")
            .compile("mt_abi_layout_table");
        println!("cargo:rustc-cfg=mt_layout_table");
    }
    println!("cargo:rustc-check-cfg=cfg(mt_layout_table)");
}
