//! Kernel code-generation flags, all in one place: Rust target specs, rustflags, clang flags.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::exec::Cmd;

/// Oldest macOS the kext supports (the LC_BUILD_VERSION minimum).
pub const MACOS_MIN: &str = "11.0";
/// Oldest macOS of the kauth variant: 10.15, the last release that loads a kext importing the
/// kauth listener KPIs by default.
pub const MACOS_MIN_KAUTH: &str = "10.15";

/// Mach-O `CPU_SUBTYPE_PTRAUTH_ABI` (osfmk/mach/machine.h, xnu-11417.121.6): the arm64e object
/// follows the versioned pointer-authentication ABI.
pub const CPU_SUBTYPE_PTRAUTH_ABI: u32 = 0x8000_0000;

/// Mach-O `CPU_TYPE_X86_64`.
pub const CPU_TYPE_X86_64: u32 = 0x0100_0007;
/// Mach-O `CPU_TYPE_ARM64`.
pub const CPU_TYPE_ARM64: u32 = 0x0100_000c;
/// Mach-O `CPU_SUBTYPE_X86_64_ALL`.
pub const CPU_SUBTYPE_X86_64_ALL: u32 = 3;
/// Mach-O `CPU_SUBTYPE_ARM64E` (low bits; the high byte holds ptrauth ABI capabilities).
pub const CPU_SUBTYPE_ARM64E: u32 = 2;

/// An architecture the kext is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// Intel Macs.
    X86_64,
    /// Apple silicon (pointer authentication ABI).
    Arm64e,
}

impl Arch {
    /// Every architecture of the universal kext.
    pub const ALL: [Self; 2] = [Self::X86_64, Self::Arm64e];

    /// The `-arch` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64e => "arm64e",
        }
    }

    /// Parses an `-arch` name.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .with_context(|| format!("unknown arch `{name}` (expected x86_64 or arm64e)"))
    }

    /// rustc's built-in target the kernel spec is derived from.
    pub fn base_rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-apple-darwin",
            Self::Arm64e => "arm64e-apple-darwin",
        }
    }

    /// Name of the generated target spec (file stem, and cargo's target directory name).
    pub fn spec_name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-apple-macos-kext",
            Self::Arm64e => "arm64e-apple-macos-kext",
        }
    }

    /// clang's `--target` option.
    pub fn clang_target(self) -> &'static str {
        match self {
            Self::X86_64 => "--target=x86_64-apple-macos11",
            Self::Arm64e => "--target=arm64e-apple-macos11",
        }
    }

    /// The arch column of the KPI tables (the arm64e kernel uses the arm64 export lists).
    pub fn kpi_arch(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64e => "arm64",
        }
    }

    /// Expected Mach-O CPU type.
    pub fn cpu_type(self) -> u32 {
        match self {
            Self::X86_64 => CPU_TYPE_X86_64,
            Self::Arm64e => CPU_TYPE_ARM64,
        }
    }

    /// Expected Mach-O CPU subtype, capability bits masked off.
    pub fn cpu_subtype(self) -> u32 {
        match self {
            Self::X86_64 => CPU_SUBTYPE_X86_64_ALL,
            Self::Arm64e => CPU_SUBTYPE_ARM64E,
        }
    }
}

/// A build variant of the kext: what the shim is compiled with (kext-shim/src/mt_shim.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Variant {
    /// The kauth listener (`-DMT_WITH_KAUTH`): macOS 10.15 test VMs. Its KPIs are unsupported
    /// from macOS 11, where a kext importing them does not load (kext-shim/kpi/unsupported.tsv).
    pub kauth: bool,
    /// The MAC policy without `MPC_LOADTIME_FLAG_UNLOADOK` (`-DMT_RESIDENT`): no MAC check in
    /// the system pays for an unloadable policy, and the kext never unloads.
    pub resident: bool,
}

impl Variant {
    /// The oldest macOS this variant is built for.
    pub fn macos_min(self) -> &'static str {
        if self.kauth {
            MACOS_MIN_KAUTH
        } else {
            MACOS_MIN
        }
    }

    /// The architectures it is built for: macOS 10.15 runs on Intel only.
    pub fn archs(self) -> &'static [Arch] {
        if self.kauth {
            &[Arch::X86_64]
        } else {
            &Arch::ALL
        }
    }

    /// The shim's preprocessor defines.
    pub fn defines(self) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.kauth {
            d.push("-DMT_WITH_KAUTH");
        }
        if self.resident {
            d.push("-DMT_RESIDENT");
        }
        d
    }

    /// Its name in messages: its directory, or `default`.
    pub fn name(self) -> &'static str {
        self.dir().unwrap_or("default")
    }

    /// Its directory under `target/kext` (the default variant has none).
    pub fn dir(self) -> Option<&'static str> {
        match (self.kauth, self.resident) {
            (false, false) => None,
            (true, false) => Some("kauth"),
            (false, true) => Some("resident"),
            (true, true) => Some("kauth-resident"),
        }
    }

    /// Appended to `MT_BUNDLE_ID`; must match `MT_KMOD_ID` in kext-shim/src/mt_shim.h.
    pub fn bundle_id_suffix(self) -> &'static str {
        if self.kauth { ".kauth" } else { "" }
    }

    /// clang's `--target` option for `arch`.
    pub fn clang_target(self, arch: Arch) -> String {
        if self.kauth {
            format!("--target={}-apple-macos{}", arch.name(), MACOS_MIN_KAUTH)
        } else {
            arch.clang_target().to_string()
        }
    }
}

/// The transform that turns rustc's spec for `arch.base_rust_target()` into the kernel spec.
pub fn spec_transform(arch: Arch, toolchain: Toolchain) -> crate::exec::Transform {
    match (arch, toolchain) {
        (Arch::X86_64, Toolchain::DebianWeb) => {
            |s| patch_target_spec(Arch::X86_64, "x86-softfloat", s)
        }
        (Arch::X86_64, Toolchain::RustupNightly) => {
            |s| patch_target_spec(Arch::X86_64, "softfloat", s)
        }
        (Arch::Arm64e, _) => |s| patch_target_spec(Arch::Arm64e, "softfloat", s),
    }
}

/// Keys every kernel spec sets: no dynamic linking, no TLS, static code, abort on panic.
fn common_kernel_keys() -> Value {
    json!({
        "relocation-model": "static",
        "panic-strategy": "abort",
        "dynamic-linking": false,
        "has-thread-local": false,
        "position-independent-executables": false,
        // Interrupts and nested faults may write below the stack pointer in the kernel.
        "disable-redzone": true,
    })
}

/// Arch-specific keys: no FP/SIMD anywhere (the kernel does not save user FP state for kexts).
/// `soft_abi` is the `rustc-abi` value: rustc 1.96 (Debian) wants `x86-softfloat` on x86_64,
/// nightlies from 2026-07 only `softfloat`.
fn arch_kernel_keys(arch: Arch, soft_abi: &str) -> Value {
    match arch {
        Arch::X86_64 => json!({
            "features": "-mmx,-sse,-sse2,-sse3,-ssse3,-sse4.1,-sse4.2,-avx,-avx2,+soft-float",
            "rustc-abi": soft_abi,
            "code-model": "kernel",
        }),
        // rustc requires the softfloat ABI to be named in both `abi` and `rustc-abi`.
        Arch::Arm64e => json!({
            "features": "-neon,-fp-armv8",
            "abi": soft_abi,
            "rustc-abi": soft_abi,
        }),
    }
}

/// Patches rustc's `--print target-spec-json` output for `arch` into the kernel spec.
pub fn patch_target_spec(arch: Arch, soft_abi: &str, rustc_spec: &[u8]) -> Result<Vec<u8>> {
    let mut spec: Value =
        serde_json::from_slice(rustc_spec).context("rustc's target spec is not JSON")?;
    let obj = spec
        .as_object_mut()
        .context("rustc's target spec is not a JSON object")?;
    let want_arch = match arch {
        Arch::X86_64 => "x86_64",
        Arch::Arm64e => "aarch64",
    };
    if obj.get("arch").and_then(Value::as_str) != Some(want_arch)
        || obj.get("binary-format").and_then(Value::as_str) != Some("mach-o")
    {
        bail!(
            "expected a Mach-O {want_arch} spec from rustc for {}, got arch {:?}",
            arch.base_rust_target(),
            obj.get("arch")
        );
    }
    for patch in [common_kernel_keys(), arch_kernel_keys(arch, soft_abi)] {
        if let Value::Object(map) = patch {
            obj.extend(map);
        }
    }
    let mut out = serde_json::to_vec_pretty(&spec)?;
    out.push(b'\n');
    Ok(out)
}

/// Extra rustflags for the core on `arch`.
pub fn rustflags(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "",
        // Return-address signing with the B key, as Apple's arm64e code uses.
        Arch::Arm64e => "-Zbranch-protection=pac-ret,b-key",
    }
}

/// clang arguments for bindgen in build scripts of the cross build (project headers only).
pub fn bindgen_clang_args(arch: Arch) -> String {
    format!(
        "{} -mkernel -ffreestanding -nostdlibinc",
        arch.clang_target()
    )
}

/// Which Rust toolchain builds `core` for the Apple targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// Debian's `rustc-web` + `cargo-web` + `rust-web-src` (Linux).
    DebianWeb,
    /// rustup's nightly with the `rust-src` component (macOS).
    RustupNightly,
}

/// Debian's rustc, called by full path so rustup's proxies are never picked up.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Debian's cargo, called by full path for the same reason.
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";

impl Toolchain {
    /// The toolchain for this machine.
    pub fn for_host() -> Self {
        if cfg!(target_os = "macos") {
            Self::RustupNightly
        } else {
            Self::DebianWeb
        }
    }

    /// A command running this toolchain's `tool` (`rustc` or `cargo`) with every
    /// inherited setting that could select another toolchain or add flags removed.
    fn tool(self, tool: &str) -> Cmd {
        let cmd = match self {
            Self::DebianWeb => {
                let path = if tool == "cargo" {
                    DEBIAN_CARGO
                } else {
                    DEBIAN_RUSTC
                };
                Cmd::new(path)
                    .env("RUSTC", DEBIAN_RUSTC)
                    .env_remove("RUSTUP_TOOLCHAIN")
            }
            Self::RustupNightly => Cmd::new(tool).arg("+nightly").env_remove("RUSTC"),
        };
        cmd.env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_TARGET_DIR")
            // Unstable flags (-Zbuild-std, JSON specs) on a stable-labelled compiler.
            .env("RUSTC_BOOTSTRAP", "1")
    }

    /// The shim's C compiler with this toolchain: on macOS Apple's clang through `xcrun`, never
    /// the first `clang` on PATH (a non-Apple clang gives arm64e objects Apple's ld ignores as
    /// `arm64e.old`, and unsigned kmod_info start/stop pointers).
    pub fn clang(self) -> Cmd {
        match self {
            Self::DebianWeb => Cmd::new(clang_program()),
            Self::RustupNightly => Cmd::new("xcrun").arg("clang"),
        }
    }

    /// The command printing rustc's built-in spec for `arch`'s base target.
    pub fn spec_dump(self, arch: Arch) -> Cmd {
        self.tool("rustc").args([
            "-Zunstable-options",
            "--print",
            "target-spec-json",
            "--target",
            arch.base_rust_target(),
        ])
    }

    /// The cargo command building `package`'s staticlib for `arch` from `manifest`.
    pub fn core_build(
        self,
        arch: Arch,
        (manifest, package): (&Path, &str),
        spec: &Path,
        (target_dir, macos_min): (&Path, &str),
    ) -> Cmd {
        self.tool("cargo")
            // `cargo rustc` makes the staticlib; the package itself is an rlib for host builds,
            // where a no_std staticlib's panic handler would collide with std's.
            .args([
                "rustc",
                "--release",
                "--locked",
                "--lib",
                "--crate-type",
                "staticlib",
            ])
            .arg("--manifest-path")
            .path_arg(manifest)
            // Only the core: other members would unify extra features (alloc) into its deps.
            .args(["--package", package])
            // The kernel feature brings the panic handler that calls mt_kpi_panic.
            .args(["--features", "kernel"])
            // No compiler-builtins-mem: the kernel's memcpy/memset/bzero are used.
            .args(["-Zbuild-std=core", "-Zjson-target-spec"])
            .arg("--target")
            .path_arg(spec)
            .arg("--target-dir")
            .path_arg(target_dir)
            .env("RUSTFLAGS", rustflags(arch))
            // bindgen would hand clang the JSON spec's name as a triple; give it the real one.
            .env("BINDGEN_EXTRA_CLANG_ARGS", bindgen_clang_args(arch))
            .env("MACOSX_DEPLOYMENT_TARGET", macos_min)
            // The release profile must match the kernel's needs even if a profile changes.
            .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
            .env("CARGO_PROFILE_RELEASE_LTO", "fat")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
    }
}

/// The C compiler for the shim on this machine. On Linux, Debian's clang-22 (bookworm-security):
/// clang-19 writes the static `kmod_info.start/stop` initializers of arm64e objects as plain
/// `ARM64_RELOC_UNSIGNED` and leaves `CPU_SUBTYPE_PTRAUTH_ABI` clear, while XNU authenticates
/// `kmod_info->start` (key IA, discriminator 0) before calling it (libkern/c++/OSKext.cpp,
/// xnu-11417.121.6); clang-22 emits `ARM64_RELOC_AUTHENTICATED_POINTER` and sets the bit.
pub fn clang_program() -> &'static str {
    if cfg!(target_os = "macos") {
        "clang"
    } else {
        "clang-22"
    }
}

/// [`clang_flags`] for `variant`: its target (minimum macOS) and its defines.
pub fn clang_flags_for(arch: Arch, variant: Variant) -> Vec<String> {
    let target = variant.clang_target(arch);
    clang_flags(arch)
        .into_iter()
        .map(|f| {
            if f.starts_with("--target=") {
                target.clone()
            } else {
                f.to_string()
            }
        })
        .chain(variant.defines().into_iter().map(str::to_string))
        .collect()
}

/// clang flags for kernel code on `arch` (without -I, -c and -o).
pub fn clang_flags(arch: Arch) -> Vec<&'static str> {
    let mut flags = vec![
        arch.clang_target(),
        // -mkernel: static relocation model, freestanding, no red zone, no builtins.
        "-mkernel",
        "-O2",
        "-g",
        "-std=gnu11",
        "-fno-common",
        "-Wall",
        "-Wextra",
        "-Werror",
    ];
    match arch {
        // Belt and braces: -mkernel implies it on x86_64 only through the driver.
        Arch::X86_64 => flags.extend(["-mno-implicit-float", "-mno-sse", "-mno-mmx"]),
        Arch::Arm64e => flags.extend([
            // Upstream -mkernel leaves NEON on for arm64; kernel code must not touch FP/SIMD.
            "-mgeneral-regs-only",
            // Upstream clang does not turn pointer authentication on for arm64e by itself.
            "-fptrauth-calls",
            "-fptrauth-returns",
            "-fptrauth-intrinsics",
            "-fptrauth-auth-traps",
        ]),
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_SPEC: &str = r#"{"arch":"x86_64","binary-format":"mach-o","cpu":"penryn",
        "dynamic-linking":true,"has-thread-local":true,"llvm-target":"x86_64-apple-macosx"}"#;
    const ARM_SPEC: &str = r#"{"arch":"aarch64","binary-format":"mach-o","cpu":"apple-m1",
        "llvm-target":"arm64e-apple-macosx"}"#;

    fn patched(arch: Arch, spec: &str) -> Value {
        let out = spec_transform(arch, Toolchain::DebianWeb)(spec.as_bytes()).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn x86_64_spec_is_soft_float_kernel_code() {
        let s = patched(Arch::X86_64, X86_SPEC);
        assert_eq!(s["rustc-abi"], "x86-softfloat");
        assert_eq!(s["code-model"], "kernel");
        assert_eq!(s["relocation-model"], "static");
        assert_eq!(s["disable-redzone"], true);
        assert_eq!(s["dynamic-linking"], false);
        assert_eq!(s["has-thread-local"], false);
        assert_eq!(s["panic-strategy"], "abort");
        let features = s["features"].as_str().unwrap();
        for f in ["-sse", "-sse2", "-avx", "-mmx", "+soft-float"] {
            assert!(features.split(',').any(|x| x == f), "{f} missing");
        }
        // Untouched keys survive.
        assert_eq!(s["cpu"], "penryn");
        assert_eq!(s["llvm-target"], "x86_64-apple-macosx");
    }

    #[test]
    fn arm64e_spec_has_no_fp_and_keeps_the_arm64e_triple() {
        let s = patched(Arch::Arm64e, ARM_SPEC);
        assert_eq!(s["features"], "-neon,-fp-armv8");
        assert_eq!(s["abi"], "softfloat");
        assert_eq!(s["rustc-abi"], "softfloat");
        assert_eq!(s["llvm-target"], "arm64e-apple-macosx");
        assert!(s.get("code-model").is_none());
    }

    #[test]
    fn wrong_or_broken_base_spec_is_rejected() {
        let arm = spec_transform(Arch::Arm64e, Toolchain::DebianWeb);
        let x86 = spec_transform(Arch::X86_64, Toolchain::DebianWeb);
        let err = arm(X86_SPEC.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("aarch64"), "{err}");
        assert!(x86(b"not json").is_err());
        assert!(x86(b"[1]").is_err());
        let elf = X86_SPEC.replace("mach-o", "elf");
        assert!(x86(elf.as_bytes()).is_err());
    }

    #[test]
    fn nightly_gets_the_new_softfloat_abi_name() {
        let out = spec_transform(Arch::X86_64, Toolchain::RustupNightly)(X86_SPEC.as_bytes());
        let s: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(s["rustc-abi"], "softfloat");
    }

    #[test]
    fn debian_toolchain_is_called_by_full_path_with_its_own_rustc() {
        let cmd = Toolchain::DebianWeb.core_build(
            Arch::Arm64e,
            (Path::new("/r/Cargo.toml"), "maptrace-core"),
            Path::new("/r/spec.json"),
            (Path::new("/r/target/kext/cargo"), MACOS_MIN),
        );
        assert_eq!(cmd.program, DEBIAN_CARGO);
        assert_eq!(cmd.env_value("RUSTC"), Some(DEBIAN_RUSTC));
        assert_eq!(cmd.env_value("RUSTC_BOOTSTRAP"), Some("1"));
        assert_eq!(
            cmd.env_value("RUSTFLAGS"),
            Some("-Zbranch-protection=pac-ret,b-key")
        );
        assert_eq!(cmd.env_value("CARGO_PROFILE_RELEASE_LTO"), Some("fat"));
        assert_eq!(
            cmd.env_value("BINDGEN_EXTRA_CLANG_ARGS"),
            Some("--target=arm64e-apple-macos11 -mkernel -ffreestanding -nostdlibinc")
        );
        assert_eq!(cmd.env_value("CARGO_PROFILE_RELEASE_PANIC"), Some("abort"));
        assert_eq!(cmd.env_value("MACOSX_DEPLOYMENT_TARGET"), Some("11.0"));
        for flag in [
            "rustc",
            "staticlib",
            "-Zbuild-std=core",
            "-Zjson-target-spec",
            "kernel",
            "maptrace-core",
        ] {
            assert!(cmd.has_arg(flag), "{flag} missing from {cmd}");
        }
        assert!(cmd.env_remove.iter().any(|k| k == "RUSTUP_TOOLCHAIN"));
        assert!(cmd.env_remove.iter().any(|k| k == "CARGO_TARGET_DIR"));
        assert!(!cmd.args.iter().any(|a| a.contains("compiler-builtins-mem")));
    }

    #[test]
    fn only_arm64e_gets_branch_protection_and_ptrauth() {
        assert_eq!(rustflags(Arch::X86_64), "");
        let x86 = clang_flags(Arch::X86_64);
        let arm = clang_flags(Arch::Arm64e);
        assert!(x86.contains(&"-mkernel") && arm.contains(&"-mkernel"));
        assert!(x86.contains(&"-Werror") && arm.contains(&"-Wextra"));
        assert!(arm.contains(&"-fptrauth-calls") && arm.contains(&"-mgeneral-regs-only"));
        assert!(!x86.iter().any(|f| f.contains("ptrauth")));
        assert_eq!(Arch::parse("arm64e").unwrap(), Arch::Arm64e);
        assert!(Arch::parse("arm64").is_err());
    }

    #[test]
    fn variants_set_their_defines_target_and_archs() {
        let default = Variant::default();
        assert!(default.defines().is_empty());
        assert_eq!(default.dir(), None);
        assert_eq!(default.archs(), Arch::ALL);
        assert_eq!(
            clang_flags_for(Arch::Arm64e, default),
            clang_flags(Arch::Arm64e)
        );
        let kauth = Variant {
            kauth: true,
            resident: false,
        };
        assert_eq!(kauth.macos_min(), "10.15");
        assert_eq!(kauth.archs(), [Arch::X86_64]);
        assert_eq!(kauth.bundle_id_suffix(), ".kauth");
        let flags = clang_flags_for(Arch::X86_64, kauth);
        assert!(flags.contains(&"--target=x86_64-apple-macos10.15".to_string()));
        assert!(flags.contains(&"-DMT_WITH_KAUTH".to_string()));
        assert!(!flags.iter().any(|f| f.contains("macos11")));
        let resident = Variant {
            kauth: false,
            resident: true,
        };
        assert_eq!(resident.dir(), Some("resident"));
        assert!(clang_flags_for(Arch::Arm64e, resident).contains(&"-DMT_RESIDENT".to_string()));
        assert_eq!(resident.macos_min(), MACOS_MIN);
    }
}
