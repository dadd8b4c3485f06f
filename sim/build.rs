//! Binds `kext-shim/src/xnu/mt_xnu.h` for the simulator (bindgen) and compiles
//! the simulator's C glue plus every `kext-shim/src/*.c` with `-DMT_SIM`.

use std::env;
use std::path::{Path, PathBuf};

fn c_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "c"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let shim = root.join("../kext-shim");
    let xnu_dir = shim.join("src/xnu");
    let header = xnu_dir.join("mt_xnu.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed={}", shim.join("src").display());
    println!("cargo:rerun-if-changed={}", shim.join("include").display());
    println!("cargo:rerun-if-changed={}", root.join("csrc").display());
    println!("cargo::rustc-check-cfg=cfg(mt_shim)");
    println!("cargo::rustc-check-cfg=cfg(mt_sanitize)");

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg("-DMT_SIM")
        .allowlist_file(".*mt_xnu\\.h")
        .blocklist_function("(memcpy|memset|memcmp|strlen|strlcpy|snprintf|panic|IOLog)")
        .use_core()
        .ctypes_prefix("core::ffi")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(false)
        .layout_tests(true)
        .generate()
        .expect("bindgen failed on mt_xnu.h (is libclang installed?)");
    bindings
        .write_to_file(out.join("xnu.rs"))
        .expect("write xnu.rs");

    let glue = c_files(&root.join("csrc"));
    let shim_files = c_files(&shim.join("src"));
    if !shim_files.is_empty() {
        // The real shim is present: the simulator can load it.
        println!("cargo:rustc-cfg=mt_shim");
    }
    let mut build = cc::Build::new();
    build.define("MT_SIM", None);
    // Build variants of the shim (kext-shim/src/mt_shim.h): the kauth variant
    // for macOS 10.15 and the resident (never unloadable) MAC policy.
    if env::var_os("CARGO_FEATURE_KAUTH").is_some() {
        build.define("MT_WITH_KAUTH", None);
    }
    if env::var_os("CARGO_FEATURE_RESIDENT").is_some() {
        build.define("MT_RESIDENT", None);
    }
    // The shim's hook-path calls into the core go through the simulator's
    // checking wrappers (sim/src/corewatch.rs).
    for f in [
        "mt_core_init",
        "mt_core_shutdown",
        "mt_core_wants",
        "mt_core_record",
        "mt_core_record_path",
        "mt_core_vector_original",
        "mt_core_vector_insert",
        "mt_core_vector_remove",
        "mt_core_proc_claim",
        "mt_core_proc_forget",
        "mt_core_record_proc",
    ] {
        build.define(f, Some(format!("mt_sim_{}", &f[3..]).as_str()));
    }
    build
        .include(shim.join("include"))
        .include(shim.join("src"))
        .include(&xnu_dir)
        .flag_if_supported("-std=gnu11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .files(glue.iter().chain(shim_files.iter()));
    // Sanitizer builds of the C (shim + glue), with CC=clang-19 and the Rust side on
    // nightly with the matching -Zsanitizer, which links the runtime:
    // MT_SIM_SANITIZE=address,undefined (RUSTFLAGS=-Zsanitizer=address; UBSan
    // traps, so it needs no runtime of its own) or MT_SIM_SANITIZE=thread
    // (RUSTFLAGS=-Zsanitizer=thread and -Zbuild-std, so std's atomics and locks
    // are seen too).
    println!("cargo:rerun-if-env-changed=MT_SIM_SANITIZE");
    // Optimised like the kext's (-O2), so the simulator's stack budgets
    // (src/stack.rs) measure frames close to the real ones; sanitizer builds
    // keep cc's default and switch the stack meter off (mt_sanitize).
    if env::var("MT_SIM_SANITIZE").is_err() {
        build.opt_level(2);
    }
    if let Ok(list) = env::var("MT_SIM_SANITIZE") {
        println!("cargo:rustc-cfg=mt_sanitize");
        let sanitizers: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        for s in &sanitizers {
            assert!(
                ["address", "undefined", "thread"].contains(s),
                "MT_SIM_SANITIZE: unknown sanitizer `{s}` (address, undefined, thread)"
            );
            build.flag(format!("-fsanitize={s}"));
            if *s == "undefined" {
                build.flag("-fsanitize-trap=undefined");
            }
        }
        // One runtime per process: ASan's and TSan's cannot be linked together.
        assert!(
            !(sanitizers.contains(&"thread") && sanitizers.contains(&"address")),
            "MT_SIM_SANITIZE: thread and address exclude each other"
        );
        build.flag("-fno-omit-frame-pointer");
    }
    // Every object is kept: nothing on the Rust side names the shim's symbols
    // except through the loader.
    build.link_lib_modifier("+whole-archive");
    build.compile("mtsim");
}
