//! Checks of a linked kext and of what macOS's tools say about it: the Mach-O slices (file type,
//! arm64e pointer-authentication ABI bits, LC_UUID), `kmutil libraries` and
//! `kmutil showloaded` / `kextstat` output. Pure functions over bytes and text, so they are
//! tested here with fixtures; `cargo xtask build` and `vm-test` feed them the real output.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use object::macho;
use object::read::macho::{LoadCommandVariant, MachHeader};

use crate::kext::kernel::Arch;

/// arm64e cpusubtype capability bits ("take 2" in LLVM's BinaryFormat/MachO.h, the
/// `CPU_SUBTYPE_PTRAUTH_ABI` bit of XNU's osfmk/mach/machine.h): the ABI is versioned...
pub const ARM64E_VERSIONED_ABI: u32 = 0x8000_0000;
/// ...and is the kernel's ptrauth ABI (Apple clang `-mkernel` sets it, rustc does not)...
pub const ARM64E_KERNEL_ABI: u32 = 0x4000_0000;
/// ...with this ptrauth ABI version.
pub const ARM64E_PTR_AUTH_VERSION: u32 = 0x3f00_0000;

/// One architecture slice of a linked executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// The arch, when it is one the kext is built for.
    pub arch: Option<Arch>,
    /// `cputype`.
    pub cputype: u32,
    /// `cpusubtype`, capability bits included.
    pub cpusubtype: u32,
    /// `filetype` (`MH_KEXT_BUNDLE` = 0xb for a kext).
    pub filetype: u32,
    /// `LC_UUID`, as `kmutil showloaded` prints it.
    pub uuid: Option<String>,
}

/// The arm64e ptrauth ABI a cpusubtype announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtrauthAbi {
    /// The versioned-ABI bit is set.
    pub versioned: bool,
    /// The kernel-ABI bit is set.
    pub kernel: bool,
    /// The ABI version.
    pub version: u32,
}

impl PtrauthAbi {
    /// Decodes an arm64e cpusubtype's capability byte.
    pub fn of(cpusubtype: u32) -> Self {
        Self {
            versioned: cpusubtype & ARM64E_VERSIONED_ABI != 0,
            kernel: cpusubtype & ARM64E_KERNEL_ABI != 0,
            version: (cpusubtype & ARM64E_PTR_AUTH_VERSION) >> 24,
        }
    }
}

/// `8-4-4-4-12` upper-case hex, the form kmutil, kextstat and dwarfdump print.
pub fn uuid_string(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn thin_slice(image: &[u8]) -> Result<Slice> {
    let header = macho::MachHeader64::<object::Endianness>::parse(image, 0)
        .context("not a 64-bit Mach-O image")?;
    let e = header.endian()?;
    let mut uuid = None;
    let mut cmds = header.load_commands(e, image, 0)?;
    while let Some(cmd) = cmds.next()? {
        if let LoadCommandVariant::Uuid(u) = cmd.variant()? {
            uuid = Some(uuid_string(&u.uuid));
        }
    }
    let (cputype, cpusubtype) = (header.cputype(e), header.cpusubtype(e));
    let arch = Arch::ALL.into_iter().find(|a| {
        a.cpu_type() == cputype && (cpusubtype & !macho::CPU_SUBTYPE_MASK) == a.cpu_subtype()
    });
    Ok(Slice {
        arch,
        cputype,
        cpusubtype,
        filetype: header.filetype(e),
        uuid,
    })
}

/// The slices of a thin or universal executable.
pub fn slices(data: &[u8]) -> Result<Vec<Slice>> {
    crate::kext::objects::thin_images(data)?
        .into_iter()
        .map(thin_slice)
        .collect()
}

/// Checks the linked kext: one `MH_KEXT_BUNDLE` slice with a UUID per arch, and an arm64e
/// slice that carries the versioned ptrauth ABI (an unversioned `arm64e.old` image is ignored
/// by Apple's ld and its function pointers would not authenticate). Returns the lines to print
/// (arch, subtype, ABI bits, UUID) and the problems.
pub fn check_linked(slices: &[Slice], archs: &[Arch]) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut problems = Vec::new();
    for s in slices {
        let name = s.arch.map_or("unexpected arch", Arch::name);
        let _ = write!(
            text,
            "  {name}: cputype {:#x} cpusubtype {:#010x}",
            s.cputype, s.cpusubtype
        );
        if s.arch == Some(Arch::Arm64e) {
            let abi = PtrauthAbi::of(s.cpusubtype);
            let _ = write!(
                text,
                " (ptrauth ABI: versioned {}, kernel {}, version {})",
                abi.versioned, abi.kernel, abi.version
            );
            if !abi.versioned {
                problems.push(format!(
                    "arm64e slice has no versioned ptrauth ABI (cpusubtype {:#010x}): link with \
                     Apple's toolchain (xcrun), not another clang",
                    s.cpusubtype
                ));
            }
        }
        let _ = writeln!(text, " UUID {}", s.uuid.as_deref().unwrap_or("(none)"));
        if s.arch.is_none() {
            problems.push(format!(
                "slice of cputype {:#x} subtype {:#x} is neither x86_64 nor arm64e",
                s.cputype, s.cpusubtype
            ));
        }
        if s.filetype != macho::MH_KEXT_BUNDLE {
            problems.push(format!(
                "{name} slice has file type {:#x}, not MH_KEXT_BUNDLE (0xb): not linked with -kext",
                s.filetype
            ));
        }
        if s.uuid.is_none() {
            problems.push(format!(
                "{name} slice has no LC_UUID: vm-test could not tell which build is loaded"
            ));
        }
    }
    for &a in archs {
        if !slices.iter().any(|s| s.arch == Some(a)) {
            problems.push(format!("no {} slice", a.name()));
        }
    }
    (text, problems)
}

/// The UUID of `arch`'s slice.
pub fn uuid_of(slices: &[Slice], arch: Arch) -> Option<&str> {
    slices
        .iter()
        .find(|s| s.arch == Some(arch))
        .and_then(|s| s.uuid.as_deref())
}

/// What `kmutil libraries -p KEXT --undef-symbols` (formerly kextlibs) reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Libraries {
    /// Library bundle id -> version, over every architecture section.
    pub libraries: BTreeMap<String, String>,
    /// Number of symbols no library defines, summed over architectures.
    pub undefined: u64,
    /// Number of symbols several libraries define.
    pub multiply_defined: u64,
    /// Undefined symbol names, when listed.
    pub undefined_symbols: Vec<String>,
}

/// Parses kextlibs-style output: `    com.apple.kpi.bsd = 20.6` library lines under
/// `For x86_64:` / `For all architectures:` headers, counts such as
/// `x86_64: 2 symbols not found in any library kext:` followed by the indented names, and
/// `... found in more than one library kext` counts.
pub fn parse_libraries(text: &str) -> Libraries {
    let mut out = Libraries::default();
    let mut listing_undefined = false;
    for line in text.lines() {
        let trimmed = line.trim();
        let count = |needle: &str| {
            trimmed.contains(needle).then(|| {
                trimmed
                    .split_whitespace()
                    .find_map(|w| w.parse::<u64>().ok())
                    .unwrap_or(1)
            })
        };
        if let Some(n) = count("not found in any library") {
            out.undefined += n;
            listing_undefined = trimmed.ends_with(':');
            continue;
        }
        if let Some(n) = count("in more than one library").or_else(|| count("multiple library")) {
            out.multiply_defined += n;
            listing_undefined = false;
            continue;
        }
        if let Some((id, version)) = trimmed.split_once(" = ") {
            let id = id.trim();
            if id.contains('.') && !id.contains(' ') {
                out.libraries
                    .insert(id.to_string(), version.trim().to_string());
                listing_undefined = false;
                continue;
            }
        }
        if listing_undefined && trimmed.starts_with('_') && !trimmed.contains(' ') {
            out.undefined_symbols.push(trimmed.to_string());
            continue;
        }
        listing_undefined = false;
    }
    out
}

/// Compares kmutil's view with the bundle's OSBundleLibraries: every symbol resolved, and every
/// library kmutil needed declared (an undeclared one makes the load fail to link).
pub fn compare_libraries(found: &Libraries, declared: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    if found.undefined > 0 {
        problems.push(format!(
            "kmutil finds {} symbol(s) in no library kext{}",
            found.undefined,
            if found.undefined_symbols.is_empty() {
                String::new()
            } else {
                format!(": {}", found.undefined_symbols.join(" "))
            }
        ));
    }
    if found.multiply_defined > 0 {
        problems.push(format!(
            "kmutil finds {} symbol(s) in more than one library kext",
            found.multiply_defined
        ));
    }
    for id in found.libraries.keys() {
        if !declared.contains_key(id) {
            problems.push(format!(
                "kmutil needs {id}, which Info.plist's OSBundleLibraries does not declare"
            ));
        }
    }
    problems
}

/// The verdict on a `kmutil libraries` run: its problems, or a failure or an empty answer (an
/// unreadable answer must not pass as "everything resolves").
pub fn libraries_verdict(ok: bool, out: &str, declared: &BTreeMap<String, String>) -> Result<()> {
    let found = parse_libraries(out);
    let problems = compare_libraries(&found, declared);
    if !problems.is_empty() {
        bail!("kmutil libraries:\n{out}\n{}", problems.join("\n"));
    }
    if !ok {
        bail!("kmutil libraries failed:\n{out}");
    }
    if found.libraries.is_empty() {
        bail!("kmutil libraries listed no library kext; its output was:\n{out}");
    }
    Ok(())
}

/// The OSBundleLibraries of a filled Info.plist.
pub fn declared_libraries(info_plist: &[u8]) -> Result<BTreeMap<String, String>> {
    let v: plist::Value = plist::from_bytes(info_plist).context("Info.plist is not a plist")?;
    let libs = v
        .as_dictionary()
        .and_then(|d| d.get("OSBundleLibraries"))
        .and_then(plist::Value::as_dictionary)
        .context("Info.plist has no OSBundleLibraries dictionary")?;
    Ok(libs
        .iter()
        .map(|(k, v)| (k.clone(), v.as_string().unwrap_or("").to_string()))
        .collect())
}

/// A loaded kext as `kmutil showloaded` or `kextstat` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The version in parentheses.
    pub version: String,
    /// The executable's UUID.
    pub uuid: String,
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Finds `bundle_id` in `kmutil showloaded` / `kextstat` output
/// (`Index Refs Address Size Wired Name (Version) UUID <Linked Against>`).
/// `None` when it is not listed (not loaded).
pub fn parse_loaded(text: &str, bundle_id: &str) -> Result<Option<Loaded>> {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == bundle_id) else {
            continue;
        };
        let version = words
            .get(at + 1)
            .and_then(|v| v.strip_prefix('(')?.strip_suffix(')'))
            .with_context(|| format!("no (version) after {bundle_id} in: {line}"))?;
        let uuid = words
            .get(at + 2)
            .filter(|u| is_uuid(u))
            .with_context(|| format!("no UUID after {bundle_id} ({version}) in: {line}"))?;
        return Ok(Some(Loaded {
            version: version.to_string(),
            uuid: uuid.to_ascii_uppercase(),
        }));
    }
    Ok(None)
}

/// The loaded kext must be the build at hand: macOS keeps loading the approved copy from the
/// auxiliary kext collection until a new one is approved and the machine restarted.
pub fn require_same_build(loaded: &Loaded, built_uuid: &str, install_hint: &str) -> Result<()> {
    if loaded.uuid.eq_ignore_ascii_case(built_uuid) {
        return Ok(());
    }
    bail!(
        "the loaded kext ({} UUID {}) is not the one just built (UUID {built_uuid}): macOS still \
         runs an earlier approved build. {install_hint}",
        loaded.version,
        loaded.uuid
    )
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::kext::kernel;

    fn cpu(arch: Arch) -> (u32, u32) {
        (arch.cpu_type(), arch.cpu_subtype())
    }

    /// A minimal 64-bit Mach-O header with an optional LC_UUID.
    pub fn image(cputype: u32, cpusubtype: u32, filetype: u32, uuid: Option<[u8; 16]>) -> Vec<u8> {
        let mut img = Vec::new();
        let ncmds = u32::from(uuid.is_some());
        for v in [
            macho::MH_MAGIC_64,
            cputype,
            cpusubtype,
            filetype,
            ncmds,
            24 * ncmds,
            0,
            0,
        ] {
            img.extend(v.to_le_bytes());
        }
        if let Some(u) = uuid {
            img.extend(macho::LC_UUID.to_le_bytes());
            img.extend(24u32.to_le_bytes());
            img.extend(u);
        }
        img
    }

    /// A universal file holding `thin` images (4 KiB aligned).
    pub fn fat(thin: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(macho::FAT_MAGIC.to_be_bytes());
        out.extend((thin.len() as u32).to_be_bytes());
        let mut offset = 4096u32;
        for t in thin {
            let cputype = u32::from_le_bytes(t[4..8].try_into().unwrap());
            let sub = u32::from_le_bytes(t[8..12].try_into().unwrap());
            for v in [cputype, sub, offset, t.len() as u32, 12] {
                out.extend(v.to_be_bytes());
            }
            offset += 4096;
        }
        for t in thin {
            out.resize(out.len().next_multiple_of(4096), 0);
            out.extend(t);
        }
        out
    }

    const U1: [u8; 16] = [
        0x6a, 0x2f, 0x7e, 0x0c, 0x8b, 0x1d, 0x3c, 0x47, 0x9e, 0x55, 0x01, 0x23, 0x45, 0x67, 0x89,
        0xab,
    ];

    pub fn kext(arm64e_subtype: u32) -> Vec<u8> {
        let (x, xs) = cpu(Arch::X86_64);
        let (a, _) = cpu(Arch::Arm64e);
        fat(&[
            image(x, xs, macho::MH_KEXT_BUNDLE, Some(U1)),
            image(a, arm64e_subtype, macho::MH_KEXT_BUNDLE, Some([7; 16])),
        ])
    }

    #[test]
    fn a_universal_kext_with_kernel_abi_arm64e_passes_and_prints_its_bits() {
        let s = slices(&kext(0xC000_0002)).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].uuid.as_deref(),
            Some("6A2F7E0C-8B1D-3C47-9E55-0123456789AB")
        );
        let (text, problems) = check_linked(&s, &Arch::ALL);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            text.contains("arm64e: cputype 0x100000c cpusubtype 0xc0000002 (ptrauth ABI: versioned true, kernel true, version 0)"),
            "{text}"
        );
        // The user-ABI core alone (0x80) is versioned too: reported, accepted.
        let (text, problems) = check_linked(&slices(&kext(0x8000_0002)).unwrap(), &Arch::ALL);
        assert!(
            problems.is_empty() && text.contains("kernel false"),
            "{text}"
        );
    }

    #[test]
    fn unversioned_arm64e_wrong_file_type_and_missing_slices_are_refused() {
        let (_, problems) = check_linked(&slices(&kext(0x2)).unwrap(), &Arch::ALL);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("no versioned ptrauth ABI")),
            "{problems:?}"
        );
        let (x, xs) = cpu(Arch::X86_64);
        let bundle = image(x, xs, macho::MH_BUNDLE, None);
        let (_, problems) = check_linked(&slices(&bundle).unwrap(), &Arch::ALL);
        let all = problems.join("\n");
        assert!(all.contains("not MH_KEXT_BUNDLE"), "{all}");
        assert!(all.contains("no LC_UUID"), "{all}");
        assert!(all.contains("no arm64e slice"), "{all}");
        let plain_arm64 = image(kernel::CPU_TYPE_ARM64, 0, macho::MH_KEXT_BUNDLE, Some(U1));
        let (_, problems) = check_linked(&slices(&plain_arm64).unwrap(), &[Arch::Arm64e]);
        assert!(
            problems.iter().any(|p| p.contains("neither")),
            "{problems:?}"
        );
        assert!(slices(b"#!/bin/sh\n").is_err());
        assert!(slices(&[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 9]).is_err());
    }

    /// kextlibs(8)-format output of `kmutil libraries --undef-symbols` for a clean kext.
    const LIBS_CLEAN: &str = "\
For all architectures:
    com.apple.kpi.bsd = 20.6
    com.apple.kpi.dsep = 20.6
    com.apple.kpi.iokit = 20.6
    com.apple.kpi.libkern = 20.6
    com.apple.kpi.mach = 20.6
    com.apple.kpi.unsupported = 20.6
";

    const LIBS_MISSING: &str = "\
For x86_64:
    com.apple.kpi.bsd = 20.6
    com.apple.kpi.private = 20.6
For arm64e:
    com.apple.kpi.bsd = 20.6
x86_64: 2 symbols not found in any library kext:
    ___bzero
    _mt_missing
arm64e: 1 symbol found in more than one library kext
";

    fn declared() -> BTreeMap<String, String> {
        crate::kext::kpi::libraries(crate::kext::kpi::PUBLIC_BUNDLES)
    }

    #[test]
    fn kmutil_libraries_output_is_checked_against_os_bundle_libraries() {
        let clean = parse_libraries(LIBS_CLEAN);
        assert_eq!(clean.libraries.len(), 6);
        assert_eq!(clean.libraries["com.apple.kpi.bsd"], "20.6");
        assert!(compare_libraries(&clean, &declared()).is_empty());

        let bad = parse_libraries(LIBS_MISSING);
        assert_eq!(bad.undefined, 2);
        assert_eq!(bad.undefined_symbols, ["___bzero", "_mt_missing"]);
        assert_eq!(bad.multiply_defined, 1);
        let problems = compare_libraries(&bad, &declared()).join("\n");
        assert!(problems.contains("2 symbol(s) in no library kext: ___bzero _mt_missing"));
        assert!(problems.contains("more than one library"));
        assert!(problems.contains("com.apple.kpi.private"), "{problems}");
        assert_eq!(parse_libraries(""), Libraries::default());
    }

    #[test]
    fn only_a_clean_readable_successful_answer_passes() {
        libraries_verdict(true, LIBS_CLEAN, &declared()).unwrap();
        let err = libraries_verdict(false, LIBS_MISSING, &declared())
            .unwrap_err()
            .to_string();
        assert!(err.contains("___bzero"), "{err}");
        let err = libraries_verdict(false, "kmutil: unknown option\n", &declared())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("failed") && err.contains("unknown option"),
            "{err}"
        );
        let err = libraries_verdict(true, "", &declared())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no library kext"), "{err}");
    }

    #[test]
    fn declared_libraries_come_from_the_filled_plist() {
        let template =
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Info.plist"))
                .unwrap();
        let info = crate::package::bundle::Info {
            bundle_id: "org.example.kext".into(),
            version: "1.2.3".into(),
            libraries: declared(),
            macos_min: "11.0".into(),
        };
        let filled = crate::package::bundle::fill_info_plist(&template, &info).unwrap();
        assert_eq!(declared_libraries(&filled).unwrap(), declared());
        assert!(declared_libraries(b"<plist version=\"1.0\"><dict/></plist>").is_err());
    }

    /// `kmutil showloaded --list-only --bundle-identifier ...` on macOS 11+ (kextstat prints the
    /// same columns).
    const SHOWLOADED: &str = "\
No variant specified, falling back to release
Index Refs Address            Size       Wired      Name (Version) UUID <Linked Against>
  211    0 0xffffff800350c000 0x9000     0x9000     org.maptrace.kext (0.1.0) 6a2f7e0c-8b1d-3c47-9e55-0123456789ab <8 6 5 3 2 1>
";

    #[test]
    fn showloaded_gives_the_loaded_uuid_and_a_stale_build_is_refused() {
        let l = parse_loaded(SHOWLOADED, "org.maptrace.kext")
            .unwrap()
            .unwrap();
        assert_eq!(l.version, "0.1.0");
        assert_eq!(l.uuid, "6A2F7E0C-8B1D-3C47-9E55-0123456789AB");
        require_same_build(&l, "6A2F7E0C-8B1D-3C47-9E55-0123456789AB", "x").unwrap();
        let err = require_same_build(&l, "00000000-0000-0000-0000-000000000000", "run install")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not the one just built") && err.contains("run install"),
            "{err}"
        );
        // Not listed: not loaded. Header only, or another kext.
        assert_eq!(parse_loaded(SHOWLOADED, "org.other.kext").unwrap(), None);
        assert_eq!(parse_loaded("", "org.maptrace.kext").unwrap(), None);
        // Listed but unreadable: an error naming the line, not a silent "not loaded".
        let garbled = "  1 0 0x0 0x1 0x1 org.maptrace.kext (0.1.0) not-a-uuid <1>";
        assert!(parse_loaded(garbled, "org.maptrace.kext").is_err());
        assert!(parse_loaded("org.maptrace.kext 0.1.0", "org.maptrace.kext").is_err());
    }
}
