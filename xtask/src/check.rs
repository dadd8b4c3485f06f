//! Checks on the cross-built Mach-O objects: format, CPU, no FP/SIMD, symbols, arm64e relocations, KPI imports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;

use anyhow::{Result, bail};
use iced_x86::{Decoder, DecoderOptions, InstructionInfoFactory, Register};
use object::macho;
use object::macho::MachHeader64;
use object::read::macho::{LoadCommandVariant, MachHeader};
use object::{
    Endianness, Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget,
    SectionFlags, SectionIndex,
};

use crate::kernel::{Arch, MACOS_MIN};
use crate::kpi::{Kind, Table};
use crate::objects::ObjFile;

/// `kmod_info` fields that hold function pointers from `KMOD_EXPLICIT_DECL`'s static
/// initializer: start (offset 180) and stop (188) of the `#pragma pack(4)` struct. On arm64e
/// these stay unsigned `ARM64_RELOC_UNSIGNED` with upstream clang; a documented open risk
/// (xnu-notes, "arm64e pointer signing"), so they are the only function pointers allowed in data.
pub const UNSIGNED_FN_PTR_ALLOWED: &[(&str, u64)] = &[("_kmod_info", 180), ("_kmod_info", 188)];

/// Undefined symbols the shim defines for the core (bridge header, C side).
const SHIM_PROVIDED_PREFIX: &str = "_mt_kpi_";

/// Symbols the static libraries of the final link provide (toolchain.md section 2): libkmod's
/// `_start`/`_stop` trampolines, which call the kext's `_realmain`/`_antimain`.
pub const LINK_LIBRARY_SYMBOLS: &[(&str, &str)] = &[("__start", "-lkmod"), ("__stop", "-lkmod")];

/// What the checks found for one architecture.
#[derive(Debug, Default)]
pub struct Report {
    /// Objects looked at.
    pub objects: usize,
    /// Imported symbol -> bundle, for the symbols the kernel must resolve.
    pub imports: BTreeMap<String, String>,
    /// Failures; the build is rejected when any.
    pub errors: Vec<String>,
    /// Informational lines.
    pub notes: Vec<String>,
}

impl Report {
    /// The bundles the imports come from.
    pub fn bundles(&self) -> BTreeSet<&str> {
        self.imports.values().map(String::as_str).collect()
    }

    /// Human-readable summary.
    pub fn render(&self, arch: Arch) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} objects, {} KPI imports from {:?}, {} errors",
            arch.name(),
            self.objects,
            self.imports.len(),
            self.bundles(),
            self.errors.len()
        );
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        for e in &self.errors {
            let _ = writeln!(s, "  error: {e}");
        }
        s
    }
}

/// A parsed Mach-O object with the facts the checks need.
struct Parsed<'a> {
    name: &'a str,
    file: object::File<'a>,
    /// Address ranges of data embedded in code (LC_DATA_IN_CODE), never disassembled.
    data_in_code: Vec<Range<u64>>,
    /// The full CPU subtype, capability bits included (arm64e: ptrauth ABI).
    cpusubtype: u32,
}

fn parse<'a>(obj: &'a ObjFile, arch: Arch, errors: &mut Vec<String>) -> Option<Parsed<'a>> {
    let name = obj.name.as_str();
    let data = obj.data.as_slice();
    let header = match MachHeader64::<Endianness>::parse(data, 0) {
        Ok(h) => h,
        Err(_) => {
            errors.push(format!("{name}: not a 64-bit Mach-O object"));
            return None;
        }
    };
    let Ok(e) = header.endian() else {
        errors.push(format!("{name}: unreadable Mach-O header"));
        return None;
    };
    if header.filetype(e) != macho::MH_OBJECT {
        errors.push(format!(
            "{name}: file type {} is not MH_OBJECT",
            header.filetype(e)
        ));
    }
    let (cpu, sub) = (header.cputype(e), header.cpusubtype(e));
    if cpu != arch.cpu_type() || (sub & !macho::CPU_SUBTYPE_MASK) != arch.cpu_subtype() {
        errors.push(format!(
            "{name}: CPU type {cpu:#x} subtype {sub:#x}, expected {} ({:#x}/{:#x})",
            arch.name(),
            arch.cpu_type(),
            arch.cpu_subtype()
        ));
    }
    let mut data_in_code = Vec::new();
    let mut platform_ok = None;
    match header.load_commands(e, data, 0) {
        Ok(mut cmds) => loop {
            match cmds.next() {
                Ok(Some(cmd)) => match cmd.variant() {
                    Ok(LoadCommandVariant::LinkeditData(le))
                        if cmd.cmd() == macho::LC_DATA_IN_CODE =>
                    {
                        data_in_code.extend(read_data_in_code(
                            data,
                            le.dataoff.get(e),
                            le.datasize.get(e),
                            e,
                        ));
                    }
                    Ok(LoadCommandVariant::BuildVersion(bv)) => {
                        let minos = bv.minos.get(e);
                        let ok = bv.platform.get(e) == macho::PLATFORM_MACOS
                            && minos <= encode_version(MACOS_MIN);
                        platform_ok = Some((ok, bv.platform.get(e), minos));
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(_) => {
                    errors.push(format!("{name}: bad load command"));
                    break;
                }
            }
        },
        Err(_) => errors.push(format!("{name}: bad load commands")),
    }
    if let Some((false, platform, minos)) = platform_ok {
        errors.push(format!(
            "{name}: built for platform {platform} minos {minos:#x}, expected macOS <= {MACOS_MIN}"
        ));
    }
    match object::File::parse(data) {
        Ok(file) => Some(Parsed {
            name,
            file,
            data_in_code,
            cpusubtype: sub,
        }),
        Err(err) => {
            errors.push(format!("{name}: {err}"));
            None
        }
    }
}

/// `11.0` -> 0x000b0000, the LC_BUILD_VERSION encoding.
fn encode_version(v: &str) -> u32 {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major << 16) | (minor << 8)
}

fn read_data_in_code(data: &[u8], off: u32, size: u32, e: Endianness) -> Vec<Range<u64>> {
    let start = off as usize;
    let bytes = data.get(start..start + size as usize).unwrap_or(&[]);
    bytes
        .chunks_exact(8)
        .map(|c| {
            let word = |b: [u8; 4]| match e {
                Endianness::Little => u32::from_le_bytes(b),
                Endianness::Big => u32::from_be_bytes(b),
            };
            let half = |b: [u8; 2]| match e {
                Endianness::Little => u16::from_le_bytes(b),
                Endianness::Big => u16::from_be_bytes(b),
            };
            let offset = u64::from(word([c[0], c[1], c[2], c[3]]));
            let length = u64::from(half([c[4], c[5]]));
            offset..offset + length
        })
        .collect()
}

fn is_code(flags: SectionFlags) -> bool {
    matches!(flags, SectionFlags::MachO { flags }
        if flags & (macho::S_ATTR_PURE_INSTRUCTIONS | macho::S_ATTR_SOME_INSTRUCTIONS) != 0)
}

/// False for sections the kernel never sees: DWARF and the linker-only `__LD` (compact unwind).
fn is_loaded(section: &object::Section<'_, '_>) -> bool {
    let debug = matches!(section.flags(), SectionFlags::MachO { flags } if flags & macho::S_ATTR_DEBUG != 0);
    let segment = section.segment_name().ok().flatten().unwrap_or("");
    !debug && segment != "__DWARF" && segment != "__LD"
}

/// Assembler-local labels (`ltmp0`, `l_...`, `L...`) are not symbols anyone refers to by name.
fn is_local_label(name: &str) -> bool {
    name.starts_with("ltmp") || name.starts_with("l_") || name.starts_with('L')
}

/// The named symbol at or before `addr` in `section`.
fn containing_symbol(
    file: &object::File<'_>,
    section: SectionIndex,
    addr: u64,
) -> Option<(String, u64)> {
    file.symbols()
        .filter(|s| s.section_index() == Some(section) && s.address() <= addr)
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .filter(|(n, _)| !is_local_label(n))
        .max_by_key(|(_, a)| *a)
}

/// Byte ranges of each code section to disassemble: from each symbol to the next, data-in-code cut out.
fn code_ranges(p: &Parsed<'_>) -> Vec<(String, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for section in p.file.sections() {
        if !is_code(section.flags()) {
            continue;
        }
        let Ok(bytes) = section.data() else { continue };
        let base = section.address();
        let end_addr = base + bytes.len() as u64;
        // In MH_OBJECT files, LC_DATA_IN_CODE offsets are section addresses (LLVM writes symbol
        // addresses there), so they compare directly with `base`.
        let data: Vec<&Range<u64>> = p
            .data_in_code
            .iter()
            .filter(|r| r.start >= base && r.end <= end_addr)
            .collect();
        let mut starts: Vec<u64> = p
            .file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()))
            .map(|s| s.address())
            .chain([base])
            .chain(data.iter().map(|r| r.end))
            .filter(|a| *a < end_addr)
            .collect();
        starts.sort_unstable();
        starts.dedup();
        for (i, &start) in starts.iter().enumerate() {
            let mut end = starts.get(i + 1).copied().unwrap_or(end_addr);
            for r in &data {
                if r.contains(&start) {
                    end = start;
                } else if r.start > start && r.start < end {
                    end = r.start;
                }
            }
            if start < end {
                let label = containing_symbol(&p.file, section.index(), start).map_or_else(
                    || format!("{}+{:#x}", section.name().unwrap_or("?"), start - base),
                    |(n, a)| format!("{n}+{:#x}", start - a),
                );
                let range = (start - base) as usize..(end - base) as usize;
                out.push((label, start, bytes[range].to_vec()));
            }
        }
    }
    out
}

fn is_fp_register(r: Register) -> bool {
    r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_k() || r.is_mm() || r.is_st() || r.is_tmm()
}

/// x86_64: any instruction that reads or writes an x87/MMX/SSE/AVX register, or is x87.
fn x86_fp_findings(p: &Parsed<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut info = InstructionInfoFactory::new();
    for (label, ip, bytes) in code_ranges(p) {
        let mut decoder = Decoder::with_ip(64, &bytes, ip, DecoderOptions::NONE);
        for instr in &mut decoder {
            if instr.is_invalid() {
                out.push(format!(
                    "{}: {label}: undecodable bytes at {:#x}; cannot prove it FP-free",
                    p.name,
                    instr.ip()
                ));
                break;
            }
            let uses_fp = info
                .info(&instr)
                .used_registers()
                .iter()
                .any(|u| is_fp_register(u.register()))
                || instr
                    .cpuid_features()
                    .iter()
                    .any(|f| matches!(f, iced_x86::CpuidFeature::FPU));
            if uses_fp {
                out.push(format!(
                    "{}: {label}: floating-point/SIMD instruction {:?} at {:#x}",
                    p.name,
                    instr.mnemonic(),
                    instr.ip()
                ));
                break;
            }
        }
    }
    out
}

/// AArch64: true when the instruction word uses the FP/SIMD (or SVE) register file.
/// Per the Arm ARM top-level encoding table (op0 = bits 28:25): `x111` is scalar FP and
/// Advanced SIMD data processing, `0010` is SVE, and loads/stores (`x1x0`) use SIMD&FP
/// registers when bit 26 (V) is set. MRS/MSR of FPCR or FPSR count too.
pub fn a64_uses_fp(word: u32) -> bool {
    let op0 = (word >> 25) & 0xf;
    let simd_dp = op0 & 0b0111 == 0b0111;
    let sve = op0 == 0b0010;
    let simd_ldst = op0 & 0b0101 == 0b0100 && word & (1 << 26) != 0;
    // MRS/MSR (register) with the L bit masked: FPCR is S3_3_C4_C4_0, FPSR S3_3_C4_C4_1.
    let sysreg = word & 0xffdf_ffe0;
    let fp_sysreg = sysreg == 0xd51b_4400 || sysreg == 0xd51b_4420;
    simd_dp || sve || simd_ldst || fp_sysreg
}

fn a64_fp_findings(p: &Parsed<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (label, ip, bytes) in code_ranges(p) {
        let hit = bytes
            .chunks_exact(4)
            .enumerate()
            .find(|(_, c)| a64_uses_fp(u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        if let Some((i, c)) = hit {
            out.push(format!(
                "{}: {label}: FP/SIMD instruction {:#010x} at {:#x}",
                p.name,
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                ip + 4 * i as u64
            ));
        }
    }
    out
}

/// arm64e: plain 64-bit pointers to functions in data (unsigned, so the kernel faults on them).
fn arm64e_unsigned_fn_ptrs(p: &Parsed<'_>, table: &Table) -> Vec<String> {
    let mut out = Vec::new();
    let file = &p.file;
    for section in file.sections() {
        if is_code(section.flags()) || !is_loaded(&section) {
            continue;
        }
        for (offset, reloc) in section.relocations() {
            let RelocationFlags::MachO {
                r_type, r_length, ..
            } = reloc.flags()
            else {
                continue;
            };
            if r_type != macho::ARM64_RELOC_UNSIGNED || r_length != 3 {
                continue;
            }
            let target = match reloc.target() {
                RelocationTarget::Symbol(idx) => match file.symbol_by_index(idx) {
                    Ok(sym) => {
                        let name = sym.name().unwrap_or("?").to_string();
                        let is_fn = match sym.section_index() {
                            Some(s) => file.section_by_index(s).is_ok_and(|s| is_code(s.flags())),
                            // An import: a function unless the KPI table says data.
                            None => table
                                .lookup(&name, Arch::Arm64e)
                                .is_none_or(|e| e.kind == Kind::Func),
                        };
                        is_fn.then_some(name)
                    }
                    Err(_) => Some(format!("symbol #{}", idx.0)),
                },
                RelocationTarget::Section(idx) => file
                    .section_by_index(idx)
                    .ok()
                    .filter(|s| is_code(s.flags()))
                    .map(|s| format!("section {}", s.name().unwrap_or("?"))),
                _ => None,
            };
            let Some(target) = target else { continue };
            let addr = section.address() + offset;
            let holder = containing_symbol(file, section.index(), addr);
            let allowed = holder.as_ref().is_some_and(|(n, a)| {
                UNSIGNED_FN_PTR_ALLOWED
                    .iter()
                    .any(|(an, ao)| n == an && addr - a == *ao)
            });
            if !allowed {
                let at = holder.map_or_else(
                    || format!("{}+{offset:#x}", section.name().unwrap_or("?")),
                    |(n, a)| format!("{n}+{:#x}", addr - a),
                );
                out.push(format!(
                    "{}: unsigned function pointer (ARM64_RELOC_UNSIGNED) to {target} at {at}; \
                     store it at run time in C code so clang signs it",
                    p.name
                ));
            }
        }
    }
    out
}

/// Runs every check on the shim objects and the core's archive members for `arch`.
pub fn check(arch: Arch, shim: &[ObjFile], core: &[ObjFile], table: &Table) -> Report {
    let mut report = Report {
        objects: shim.len() + core.len(),
        ..Report::default()
    };
    let errors = &mut report.errors;
    let parsed: Vec<Parsed<'_>> = shim
        .iter()
        .chain(core)
        .filter_map(|o| parse(o, arch, errors))
        .collect();
    if arch == Arch::Arm64e {
        let caps: BTreeSet<u32> = parsed
            .iter()
            .map(|p| p.cpusubtype & macho::CPU_SUBTYPE_MASK)
            .collect();
        if caps.len() > 1 {
            // clang-19 leaves the ptrauth ABI bit clear, rustc sets it (toolchain.md section 1).
            let list: Vec<String> = caps.iter().map(|c| format!("{c:#x}")).collect();
            report.notes.push(format!(
                "arm64e objects mix ptrauth ABI capability bits ({}): check that Apple's ld accepts the mix",
                list.join(", ")
            ));
        }
    }
    let mut defined: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut undefined: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for p in &parsed {
        errors.extend(match arch {
            Arch::X86_64 => x86_fp_findings(p),
            Arch::Arm64e => a64_fp_findings(p),
        });
        if arch == Arch::Arm64e {
            errors.extend(arm64e_unsigned_fn_ptrs(p, table));
        }
        for sym in p.file.symbols() {
            let Ok(name) = sym.name() else { continue };
            if sym.is_undefined() {
                undefined.entry(name.to_string()).or_default().push(p.name);
            } else if sym.is_global() && sym.is_definition() && !sym.is_weak() {
                defined.entry(name.to_string()).or_default().push(p.name);
            }
        }
    }
    for (name, owners) in &defined {
        if owners.len() > 1 {
            errors.push(format!(
                "{name} is defined more than once: {}",
                owners.join(", ")
            ));
        }
    }
    for (name, users) in &undefined {
        if defined.contains_key(name) {
            continue;
        }
        if shim.is_empty() && name.starts_with(SHIM_PROVIDED_PREFIX) {
            report.notes.push(format!(
                "{name}: provided by the shim, which has no C files yet"
            ));
            continue;
        }
        if let Some((_, lib)) = LINK_LIBRARY_SYMBOLS.iter().find(|(s, _)| s == name) {
            report
                .notes
                .push(format!("{name}: provided by {lib} at the final link"));
            continue;
        }
        match table.lookup(name, arch) {
            Some(entry) => {
                report.imports.insert(name.clone(), entry.bundle.clone());
            }
            None => errors.push(format!(
                "{name} (used by {}) is not in {}: private, unknown or not yet listed for {}",
                users.join(", "),
                crate::kpi::TABLE,
                arch.name()
            )),
        }
    }
    if shim.is_empty() {
        report
            .notes
            .push("no shim objects: kext-shim/src has no C files yet".into());
    }
    report
}

/// Fails with every error of every report.
pub fn require_clean(reports: &[(Arch, Report)]) -> Result<()> {
    let total: usize = reports.iter().map(|(_, r)| r.errors.len()).sum();
    if total > 0 {
        let text: String = reports.iter().map(|(a, r)| r.render(*a)).collect();
        bail!("{total} object check(s) failed:\n{text}");
    }
    Ok(())
}

/// Compiles a C snippet with `flags` for `arch` into an object (synthetic-object tests).
#[cfg(test)]
pub fn compile_snippet(
    arch: Arch,
    source: &str,
    flags: &[&str],
    dir: &std::path::Path,
    stem: &str,
) -> Result<ObjFile> {
    let c = dir.join(format!("{stem}.c"));
    let o = dir.join(format!("{stem}.{}.o", arch.name()));
    use anyhow::Context as _;
    std::fs::write(&c, source)?;
    crate::exec::Cmd::new(crate::kernel::clang_program())
        .args(flags.iter().copied())
        .arg("-c")
        .path_arg(&c)
        .arg("-o")
        .path_arg(&o)
        .output()
        .with_context(|| {
            format!(
                "compiling {stem}.c for {} (is clang-19 installed?)",
                arch.name()
            )
        })?;
    crate::objects::load(&o)?
        .pop()
        .context("no object produced")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "extern int IOLog(const char *, ...);\n\
        int mt_clean(int x) { IOLog(\"x=%d\\n\", x); return x + 1; }\n";

    fn table() -> Table {
        Table::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
    }

    fn obj_with(arch: Arch, src: &str, flags: &[&str], stem: &str) -> (tempfile::TempDir, ObjFile) {
        let dir = tempfile::tempdir().unwrap();
        let o = compile_snippet(arch, src, flags, dir.path(), stem).unwrap();
        (dir, o)
    }

    fn obj(arch: Arch, src: &str, stem: &str) -> (tempfile::TempDir, ObjFile) {
        obj_with(arch, src, &crate::kernel::clang_flags(arch), stem)
    }

    #[test]
    fn clean_kernel_objects_pass_on_both_arches() {
        for arch in Arch::ALL {
            let (_d, o) = obj(arch, CLEAN, "clean");
            let r = check(arch, &[o], &[], &table());
            assert!(r.errors.is_empty(), "{}", r.render(arch));
            assert_eq!(r.imports["_IOLog"], "com.apple.kpi.iokit");
            assert_eq!(r.bundles().len(), 1);
        }
    }

    #[test]
    fn sse_use_on_x86_64_is_caught() {
        // -mkernel already forbids implicit SSE; explicit SSE code must still be caught.
        let src = "typedef float v4 __attribute__((vector_size(16)));\n\
            void mt_sse(v4 *a, const v4 *b) { *a = *a * *b; }\n";
        let (_d, o) = obj_with(
            Arch::X86_64,
            src,
            &["--target=x86_64-apple-macos11", "-mkernel", "-O2", "-msse2"],
            "sse",
        );
        let r = check(Arch::X86_64, &[o], &[], &table());
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("floating-point/SIMD") && e.contains("_mt_sse")),
            "{}",
            r.render(Arch::X86_64)
        );
    }

    #[test]
    fn neon_use_on_arm64e_is_caught() {
        // Without -mgeneral-regs-only, clang copies big structs through q registers.
        let src = "struct big { unsigned long a[16]; };\n\
            void mt_copy(struct big *d, const struct big *s) { *d = *s; }\n";
        let (_d, o) = obj_with(
            Arch::Arm64e,
            src,
            &["--target=arm64e-apple-macos11", "-mkernel", "-O2"],
            "neon",
        );
        let r = check(Arch::Arm64e, &[o], &[], &table());
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("FP/SIMD") && e.contains("_mt_copy")),
            "{}",
            r.render(Arch::Arm64e)
        );
    }

    #[test]
    fn private_and_unknown_imports_are_caught() {
        let src = "extern int vnode_usecount(void *);\nextern int mt_no_such_kpi(void);\n\
            int mt_priv(void *vp) { return vnode_usecount(vp) + mt_no_such_kpi(); }\n";
        for arch in Arch::ALL {
            let (_d, o) = obj(arch, src, "private");
            let r = check(arch, &[o], &[], &table());
            assert_eq!(r.errors.len(), 2, "{}", r.render(arch));
            assert!(r.errors.iter().any(|e| e.starts_with("_vnode_usecount ")));
            assert!(r.errors.iter().any(|e| e.starts_with("_mt_no_such_kpi ")));
        }
    }

    #[test]
    fn cpu_number_is_public_on_x86_64_only() {
        let src = "extern int cpu_number(void);\nint mt_cpu(void) { return cpu_number(); }\n";
        let (_d, x) = obj(Arch::X86_64, src, "cpu");
        assert!(check(Arch::X86_64, &[x], &[], &table()).errors.is_empty());
        let (_d2, a) = obj(Arch::Arm64e, src, "cpu");
        assert_eq!(check(Arch::Arm64e, &[a], &[], &table()).errors.len(), 1);
    }

    #[test]
    fn duplicate_definitions_are_caught_and_imports_resolve_locally() {
        let a = "int mt_dup(void) { return 1; }\nint mt_user(void);\nint mt_a(void) { return mt_user(); }\n";
        let b = "int mt_dup(void) { return 2; }\nint mt_user(void) { return 3; }\n";
        for arch in Arch::ALL {
            let (_d1, oa) = obj(arch, a, "dup_a");
            let (_d2, ob) = obj(arch, b, "dup_b");
            let r = check(arch, &[oa], &[ob], &table());
            assert_eq!(r.errors.len(), 1, "{}", r.render(arch));
            assert!(r.errors[0].starts_with("_mt_dup is defined more than once"));
            // mt_user is defined by the other object: not a kernel import.
            assert!(r.imports.is_empty());
        }
    }

    #[test]
    fn static_function_pointer_in_data_is_caught_on_arm64e_except_kmod_info() {
        let src = "#pragma pack(push, 4)\n\
            struct kmod_info { void *next; int iv; unsigned id; char name[64]; char version[64];\n\
              int refs; void *reflist; unsigned long address, size, hdr_size;\n\
              int (*start)(void *, void *); int (*stop)(void *, void *); };\n\
            #pragma pack(pop)\n\
            _Static_assert(sizeof(struct kmod_info) == 196, \"kmod_info\");\n\
            static int mt_start(void *k, void *d) { (void)k; (void)d; return 0; }\n\
            static int mt_stop(void *k, void *d) { (void)k; (void)d; return 0; }\n\
            struct kmod_info kmod_info = { .start = mt_start, .stop = mt_stop };\n\
            extern void IOLog(const char *, ...);\n\
            extern char vnop_mmap_desc[];\n\
            void (*mt_table[2])(const char *, ...) = { IOLog, 0 };\n\
            void *mt_desc = vnop_mmap_desc;\n\
            static int mt_cb(void) { return 7; }\n\
            int (*mt_ops)(void) = mt_cb;\n";
        let (_d, o) = obj(Arch::Arm64e, src, "fnptr");
        let r = check(Arch::Arm64e, std::slice::from_ref(&o), &[], &table());
        let hits: Vec<_> = r
            .errors
            .iter()
            .filter(|e| e.contains("unsigned function pointer"))
            .collect();
        assert_eq!(hits.len(), 2, "{}", r.render(Arch::Arm64e));
        assert!(
            hits.iter()
                .any(|e| e.contains("to _IOLog at _mt_table+0x0"))
        );
        assert!(hits.iter().any(|e| e.contains("at _mt_ops+0x0")));
        assert!(!r.errors.iter().any(|e| e.contains("_kmod_info")));
        // The same object is fine on x86_64, where pointers are not signed.
        let (_d2, x) = obj(Arch::X86_64, src, "fnptr");
        assert!(check(Arch::X86_64, &[x], &[], &table()).errors.is_empty());
    }

    #[test]
    fn wrong_arch_and_non_macho_are_caught() {
        let (_d, o) = obj(Arch::X86_64, CLEAN, "arch");
        let r = check(Arch::Arm64e, &[o], &[], &table());
        assert!(
            r.errors.iter().any(|e| e.contains("expected arm64e")),
            "{}",
            r.render(Arch::Arm64e)
        );
        let junk = ObjFile {
            name: "junk.o".into(),
            data: b"\x7fELF not mach-o".to_vec(),
        };
        let r = check(Arch::X86_64, &[junk], &[], &table());
        assert_eq!(r.errors, ["junk.o: not a 64-bit Mach-O object"]);
    }

    #[test]
    fn plain_arm64_is_not_arm64e() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("a.c");
        let o = dir.path().join("a.o");
        std::fs::write(&c, CLEAN).unwrap();
        crate::exec::Cmd::new(crate::kernel::clang_program())
            .args(["--target=arm64-apple-macos11", "-mkernel", "-c"])
            .path_arg(&c)
            .arg("-o")
            .path_arg(&o)
            .output()
            .unwrap();
        let objs = crate::objects::load(&o).unwrap();
        let r = check(Arch::Arm64e, &objs, &[], &table());
        assert!(
            r.errors.iter().any(|e| e.contains("subtype 0x0")),
            "{}",
            r.render(Arch::Arm64e)
        );
    }

    #[test]
    fn missing_shim_turns_mt_kpi_imports_into_notes() {
        let src = "extern void mt_kpi_panic(const char *, unsigned, unsigned);\n\
            void mt_core_fail(void) { mt_kpi_panic(\"f\", 1, 2); }\n";
        let (_d, o) = obj(Arch::X86_64, src, "core");
        let r = check(Arch::X86_64, &[], std::slice::from_ref(&o), &table());
        assert!(r.errors.is_empty(), "{}", r.render(Arch::X86_64));
        assert!(r.notes.iter().any(|n| n.contains("_mt_kpi_panic")));
        // With a shim present, the shim must define it.
        let (_d2, shim) = obj(Arch::X86_64, CLEAN, "shim");
        let r = check(Arch::X86_64, &[shim], &[o], &table());
        assert!(r.errors.iter().any(|e| e.starts_with("_mt_kpi_panic ")));
    }

    #[test]
    fn jump_tables_in_x86_64_code_are_not_disassembled() {
        let src = "int mt_sw(int x, int y) {\n switch (x) {\n\
              case 0: return y * 3; case 1: return y + 7; case 2: return y ^ 5;\n\
              case 3: return y - 11; case 4: return y << 2; case 5: return y * 13;\n\
              case 6: return y | 9; case 7: return ~y; default: return 0; } }\n";
        let (_d, o) = obj(Arch::X86_64, src, "jt");
        let parsed = parse(&o, Arch::X86_64, &mut Vec::new()).unwrap();
        assert!(
            !parsed.data_in_code.is_empty(),
            "expected an inline jump table"
        );
        let r = check(Arch::X86_64, &[o], &[], &table());
        assert!(r.errors.is_empty(), "{}", r.render(Arch::X86_64));
    }

    #[test]
    fn libkmod_trampolines_are_notes_not_errors() {
        let src = "extern int _start(void *, void *);\n\
            int mt_go(void) { return _start(0, 0); }\n";
        let (_d, o) = obj(Arch::X86_64, src, "kmod");
        let r = check(Arch::X86_64, &[o], &[], &table());
        assert!(r.errors.is_empty(), "{}", r.render(Arch::X86_64));
        assert!(
            r.notes
                .iter()
                .any(|n| n.starts_with("__start: provided by -lkmod"))
        );
    }

    #[test]
    fn a64_classifier_matches_known_encodings() {
        for fp in [
            0x9e67_0020_u32,
            0xad40_0420,
            0x6f00_e400,
            0x4ee1_8461,
            0x1e20_4000,
            0x3dc0_0000,
            0xd53b_4400,
            0xd51b_4420,
        ] {
            assert!(a64_uses_fp(fp), "{fp:#x} should be FP");
        }
        for int in [
            0xa942_2428_u32,
            0x9100_0400,
            0xd65f_03c0,
            0xd503_237f,
            0x8b08_0128,
            0xf940_0000,
            0x9400_0000,
            0xd53b_d040,
        ] {
            assert!(!a64_uses_fp(int), "{int:#x} should be integer");
        }
    }

    #[test]
    fn require_clean_lists_every_error() {
        let bad = Report {
            errors: vec!["e1".into(), "e2".into()],
            ..Report::default()
        };
        let err =
            require_clean(&[(Arch::X86_64, Report::default()), (Arch::Arm64e, bad)]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("2 object check(s) failed") && text.contains("e2"),
            "{text}"
        );
        assert!(require_clean(&[(Arch::X86_64, Report::default())]).is_ok());
    }
}
