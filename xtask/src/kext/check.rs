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

use crate::kext::kernel::{Arch, CPU_SUBTYPE_PTRAUTH_ABI, Variant};
use crate::kext::kpi::{Kind, Table};
use crate::kext::objects::ObjFile;

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

fn parse<'a>(
    obj: &'a ObjFile,
    arch: Arch,
    macos_min: &str,
    errors: &mut Vec<String>,
) -> Option<Parsed<'a>> {
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
                            && minos <= encode_version(macos_min);
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
            "{name}: built for platform {platform} minos {minos:#x}, expected macOS <= {macos_min}"
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

/// AArch64: the first instruction word of each code range that `pred` picks, with its label and
/// address (one finding a range is enough to fail and to point at).
fn a64_first_words(p: &Parsed<'_>, pred: fn(u32) -> bool) -> Vec<(String, u64, u32)> {
    let mut out = Vec::new();
    for (label, ip, bytes) in code_ranges(p) {
        let hit = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .enumerate()
            .find(|&(_, w)| pred(w));
        if let Some((i, word)) = hit {
            out.push((label, ip + 4 * i as u64, word));
        }
    }
    out
}

fn a64_fp_findings(p: &Parsed<'_>) -> Vec<String> {
    a64_first_words(p, a64_uses_fp)
        .into_iter()
        .map(|(label, at, word)| {
            format!(
                "{}: {label}: FP/SIMD instruction {word:#010x} at {at:#x}",
                p.name
            )
        })
        .collect()
}

/// AArch64: true for a branch to a register (BR, BLR and their pointer-authenticated forms
/// BRAA/BRAAZ/BRAB/BRABZ, BLRAA/BLRAAZ/BLRAB/BLRABZ); RET, RETAA/RETAB and ERET are not.
/// Unconditional branch (register): bits 31:25 `1101011`, opc (24:21) 0000 BR, 0001 BLR,
/// 1000 BRA*, 1001 BLRA*; op2 (20:16) `11111` (Arm ARM, C4.1.94).
pub fn a64_branches_to_register(word: u32) -> bool {
    word >> 25 == 0b110_1011
        && matches!((word >> 21) & 0xf, 0b0000 | 0b0001 | 0b1000 | 0b1001)
        && (word >> 16) & 0x1f == 0x1f
}

/// arm64e, the Rust core: no branch to a register. The core is built for the user-space
/// arm64e ABI inside a kernel-ABI kext; the two differ in how code pointers are signed, not in
/// return-address signing (PACIBSP/RETAB in both). A core that calls nothing through a pointer
/// and stores no function pointer (`arm64e_unsigned_fn_ptrs`) has no signed code pointer for
/// the difference to reach, which is also the house rule: the kernel's function pointers live
/// in C, Rust makes only direct calls.
fn a64_indirect_branch_findings(p: &Parsed<'_>) -> Vec<String> {
    a64_first_words(p, a64_branches_to_register)
        .into_iter()
        .map(|(label, at, word)| {
            format!(
                "{}: {label}: branch to a register {word:#010x} at {at:#x} in the Rust core (an \
                 indirect call or jump table: the core's arm64e user ABI signs code pointers \
                 unlike the kernel's; make the call direct)",
                p.name
            )
        })
        .collect()
}

/// arm64e: plain 64-bit pointers to functions in data (unsigned, so the kernel faults on them).
/// No exception, `kmod_info.start/stop` included: OSKext authenticates `kmod_info->start` (key
/// IA, discriminator 0) before calling it (libkern/c++/OSKext.cpp, xnu-11417.121.6), so it must
/// be an `ARM64_RELOC_AUTHENTICATED_POINTER` (clang-22 writes one; clang-19 does not).
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
            let at = containing_symbol(file, section.index(), addr).map_or_else(
                || format!("{}+{offset:#x}", section.name().unwrap_or("?")),
                |(n, a)| format!("{n}+{:#x}", addr - a),
            );
            out.push(format!(
                "{}: unsigned function pointer (ARM64_RELOC_UNSIGNED) to {target} at {at}; \
                 compile with a clang that signs static initializers (clang-22) or store it \
                 at run time in C code",
                p.name
            ));
        }
    }
    out
}

/// Runs every check on the default variant's shim objects and core for `arch`.
#[cfg(test)]
pub fn check(arch: Arch, shim: &[ObjFile], core: &[ObjFile], table: &Table) -> Report {
    check_variant(Variant::default(), arch, shim, core, table)
}

/// Runs every check on `variant`'s shim objects and the core's archive members for `arch`.
pub fn check_variant(
    variant: Variant,
    arch: Arch,
    shim: &[ObjFile],
    core: &[ObjFile],
    table: &Table,
) -> Report {
    let mut report = Report {
        objects: shim.len() + core.len(),
        ..Report::default()
    };
    let errors = &mut report.errors;
    let parsed: Vec<Parsed<'_>> = shim
        .iter()
        .chain(core)
        .filter_map(|o| parse(o, arch, variant.macos_min(), errors))
        .collect();
    if arch == Arch::Arm64e {
        // Every arm64e object must follow the ptrauth ABI (clang-19 leaves the bit clear).
        for p in &parsed {
            if p.cpusubtype & CPU_SUBTYPE_PTRAUTH_ABI == 0 {
                errors.push(format!(
                    "{}: arm64e CPU subtype {:#x} lacks CPU_SUBTYPE_PTRAUTH_ABI ({CPU_SUBTYPE_PTRAUTH_ABI:#x}); \
                     built by a clang that predates the ptrauth ABI (use clang-22)",
                    p.name, p.cpusubtype
                ));
            }
        }
        let caps: BTreeSet<u32> = parsed
            .iter()
            .map(|p| p.cpusubtype & macho::CPU_SUBTYPE_MASK)
            .collect();
        if caps.len() > 1 {
            // E.g. Apple clang's kernel-ABI shim beside rustc's user-ABI core.
            let list: Vec<String> = caps.iter().map(|c| format!("{c:#x}")).collect();
            report.notes.push(format!(
                "arm64e objects mix ptrauth ABI capability bits ({}): check that Apple's ld accepts the mix",
                list.join(", ")
            ));
        }
    }
    let core_names: BTreeSet<&str> = core.iter().map(|o| o.name.as_str()).collect();
    let mut defined: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut undefined: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for p in &parsed {
        errors.extend(match arch {
            Arch::X86_64 => x86_fp_findings(p),
            Arch::Arm64e => a64_fp_findings(p),
        });
        if arch == Arch::Arm64e {
            errors.extend(arm64e_unsigned_fn_ptrs(p, table));
            if core_names.contains(p.name) {
                errors.extend(a64_indirect_branch_findings(p));
            }
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
        let refused = table
            .unsupported(name, arch)
            .filter(|u| !(variant.kauth && u.kauth_variant_ok));
        if let Some(u) = refused {
            errors.push(format!(
                "{name} (used by {}) is an unsupported KPI ({}; {}): a kext importing it does \
                 not load on macOS 11+{}",
                users.join(", "),
                u.source,
                crate::kext::kpi::UNSUPPORTED,
                if u.kauth_variant_ok {
                    "; only the kauth variant (--kauth, macOS 10.15) may import it"
                } else {
                    ""
                }
            ));
            continue;
        }
        match table.lookup(name, arch) {
            Some(entry) => {
                report.imports.insert(name.clone(), entry.bundle.clone());
            }
            None => errors.push(format!(
                "{name} (used by {}) is not in {}: private, unknown or not yet listed for {}",
                users.join(", "),
                crate::kext::kpi::TABLE,
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
    crate::exec::Cmd::new(crate::kext::kernel::clang_program())
        .args(flags.iter().copied())
        .arg("-c")
        .path_arg(&c)
        .arg("-o")
        .path_arg(&o)
        .output()
        .with_context(|| {
            format!(
                "compiling {stem}.c for {} (is {} installed?)",
                arch.name(),
                crate::kext::kernel::clang_program()
            )
        })?;
    crate::kext::objects::load(&o)?
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
        obj_with(arch, src, &crate::kext::kernel::clang_flags(arch), stem)
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

    /// A `KMOD_EXPLICIT_DECL`-like kmod_info plus other static function pointers in data.
    const FN_PTRS: &str = "#pragma pack(push, 4)\n\
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

    #[test]
    fn clang_22_signs_every_static_function_pointer_on_arm64e() {
        // With the kernel flags, clang-22 writes ARM64_RELOC_AUTHENTICATED_POINTER for all of
        // them, kmod_info.start/stop included, and sets CPU_SUBTYPE_PTRAUTH_ABI.
        let (_d, o) = obj(Arch::Arm64e, FN_PTRS, "signed");
        let r = check(Arch::Arm64e, std::slice::from_ref(&o), &[], &table());
        assert!(r.errors.is_empty(), "{}", r.render(Arch::Arm64e));
        let subtype = u32::from_le_bytes(o.data[8..12].try_into().unwrap());
        assert_eq!(subtype, CPU_SUBTYPE_PTRAUTH_ABI | 2);
    }

    #[test]
    fn any_unsigned_function_pointer_in_arm64e_data_is_an_error_kmod_info_included() {
        let mut flags = crate::kext::kernel::clang_flags(Arch::Arm64e);
        flags.retain(|f| *f != "-fptrauth-calls");
        flags.push("-fno-ptrauth-calls");
        let (_d, o) = obj_with(Arch::Arm64e, FN_PTRS, &flags, "fnptr");
        let r = check(Arch::Arm64e, std::slice::from_ref(&o), &[], &table());
        let hits: Vec<_> = r
            .errors
            .iter()
            .filter(|e| e.contains("unsigned function pointer"))
            .collect();
        assert_eq!(hits.len(), 4, "{}", r.render(Arch::Arm64e));
        for at in [
            "to _IOLog at _mt_table+0x0",
            "at _mt_ops+0x0",
            "at _kmod_info+0xb4",
            "at _kmod_info+0xbc",
        ] {
            assert!(hits.iter().any(|e| e.contains(at)), "{at}: {hits:#?}");
        }
        // The same object is fine on x86_64, where pointers are not signed.
        let (_d2, x) = obj(Arch::X86_64, FN_PTRS, "fnptr");
        assert!(check(Arch::X86_64, &[x], &[], &table()).errors.is_empty());
    }

    #[test]
    fn arm64e_objects_without_the_ptrauth_abi_bit_are_refused() {
        let (_d, mut o) = obj(Arch::Arm64e, CLEAN, "abi");
        assert!(
            check(Arch::Arm64e, std::slice::from_ref(&o), &[], &table())
                .errors
                .is_empty()
        );
        // What clang-19 writes: the arm64e subtype without the capability bit.
        o.data[8..12].copy_from_slice(&2u32.to_le_bytes());
        let r = check(Arch::Arm64e, &[o], &[], &table());
        assert_eq!(r.errors.len(), 1, "{}", r.render(Arch::Arm64e));
        assert!(r.errors[0].contains("lacks CPU_SUBTYPE_PTRAUTH_ABI"));
    }

    #[test]
    fn unsupported_kpi_fails_the_default_variant_only_kauth_passes_the_kauth_variant() {
        let src = "typedef void *kauth_listener_t;\n\
            extern kauth_listener_t kauth_listen_scope(const char *, void *, void *);\n\
            kauth_listener_t mt_listen(void) { return kauth_listen_scope(\"v\", 0, 0); }\n";
        let kauth = Variant {
            kauth: true,
            resident: false,
        };
        for arch in Arch::ALL {
            let (_d, o) = obj(arch, src, "kauth");
            let r = check(arch, std::slice::from_ref(&o), &[], &table());
            assert_eq!(r.errors.len(), 1, "{}", r.render(arch));
            assert!(
                r.errors[0].starts_with("_kauth_listen_scope ")
                    && r.errors[0].contains("unsupported KPI")
                    && r.errors[0].contains("kauth.h"),
                "{}",
                r.errors[0]
            );
            assert!(r.imports.is_empty());
        }
        let flags = crate::kext::kernel::clang_flags_for(Arch::X86_64, kauth);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (_d, o) = obj_with(Arch::X86_64, src, &flags, "kauth_variant");
        let r = check_variant(kauth, Arch::X86_64, &[o], &[], &table());
        assert!(r.errors.is_empty(), "{}", r.render(Arch::X86_64));
        assert_eq!(r.imports["_kauth_listen_scope"], "com.apple.kpi.bsd");
        // A KPI no variant may use fails the kauth variant too.
        let src = "extern char *strcpy(char *, const char *);\n\
            char *mt_cp(char *d, const char *s) { return strcpy(d, s); }\n";
        let (_d, o) = obj_with(
            Arch::X86_64,
            src,
            &[&flags[..], &["-fno-builtin"]].concat(),
            "strcpy",
        );
        let r = check_variant(kauth, Arch::X86_64, &[o], &[], &table());
        assert!(
            r.errors
                .iter()
                .any(|e| e.starts_with("_strcpy ") && e.contains("unsupported KPI")),
            "{}",
            r.render(Arch::X86_64)
        );
    }

    #[test]
    fn each_variant_checks_its_own_minimum_macos() {
        let kauth = Variant {
            kauth: true,
            resident: false,
        };
        let flags = crate::kext::kernel::clang_flags_for(Arch::X86_64, kauth);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (_d, o1015) = obj_with(Arch::X86_64, CLEAN, &flags, "min1015");
        let r = check_variant(kauth, Arch::X86_64, &[o1015], &[], &table());
        assert!(r.errors.is_empty(), "{}", r.render(Arch::X86_64));
        // A macOS 11 object would not load on the kauth variant's 10.15.
        let (_d2, o11) = obj(Arch::X86_64, CLEAN, "min11");
        let r = check_variant(kauth, Arch::X86_64, &[o11], &[], &table());
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("expected macOS <= 10.15")),
            "{}",
            r.render(Arch::X86_64)
        );
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
        crate::exec::Cmd::new(crate::kext::kernel::clang_program())
            .args(["--target=arm64-apple-macos11", "-mkernel", "-c"])
            .path_arg(&c)
            .arg("-o")
            .path_arg(&o)
            .output()
            .unwrap();
        let objs = crate::kext::objects::load(&o).unwrap();
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
        let parsed = parse(
            &o,
            Arch::X86_64,
            crate::kext::kernel::MACOS_MIN,
            &mut Vec::new(),
        )
        .unwrap();
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
    fn a64_register_branches_match_known_encodings() {
        // br x16, blr x8, blraaz x8, braa x16 x17, blrab x1 x2, brabz x3 (llvm-mc-22).
        for ind in [
            0xd61f_0200_u32,
            0xd63f_0100,
            0xd63f_091f,
            0xd71f_0a11,
            0xd73f_0c22,
            0xd61f_0c7f,
        ] {
            assert!(
                a64_branches_to_register(ind),
                "{ind:#x} branches to a register"
            );
        }
        // ret, retab, eret, bl #0, b #0, pacibsp, cbz x0.
        for direct in [
            0xd65f_03c0_u32,
            0xd65f_0fff,
            0xd69f_03e0,
            0x9400_0000,
            0x1400_0000,
            0xd503_237f,
            0xb400_0000,
        ] {
            assert!(!a64_branches_to_register(direct), "{direct:#x} does not");
        }
    }

    #[test]
    fn an_indirect_call_in_the_arm64e_core_is_caught_not_in_the_shim() {
        let src = "typedef int (*op_t)(void *);\n\
            int mt_call(op_t f, void *a) { return f(a) + 1; }\n";
        let (_d, o) = obj(Arch::Arm64e, src, "indirect");
        let as_shim = check(Arch::Arm64e, std::slice::from_ref(&o), &[], &table());
        assert!(
            !as_shim
                .errors
                .iter()
                .any(|e| e.contains("branch to a register")),
            "{}",
            as_shim.render(Arch::Arm64e)
        );
        let as_core = check(Arch::Arm64e, &[], std::slice::from_ref(&o), &table());
        assert!(
            as_core
                .errors
                .iter()
                .any(|e| e.contains("branch to a register") && e.contains("_mt_call")),
            "{}",
            as_core.render(Arch::Arm64e)
        );
        let (_d, direct) = obj(Arch::Arm64e, CLEAN, "direct");
        let r = check(Arch::Arm64e, &[], &[direct], &table());
        assert!(r.errors.is_empty(), "{}", r.render(Arch::Arm64e));
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
