//! Static kernel-stack check of the cross-built objects (`cargo xtask cross`).
//!
//! XNU kernel stacks are 16 KiB in total (`KERNEL_STACK_SIZE`,
//! osfmk/mach/i386/vm_param.h and osfmk/mach/arm/vm_param.h, xnu-11417.121.6)
//! and the kext's hooks run deep inside vm_fault / cluster / VFS paths that
//! already use most of it. So every function the kernel can call into the
//! kext gets a budget (`kext-shim/stack.tsv`), and the deepest path from it
//! through the kext's own code, C and Rust together, must fit.
//!
//! How frame sizes are found: LLVM writes no stack-size section for Mach-O
//! (`-fstack-size-section` / rustc's `-Z emit-stack-sizes` only emit it for
//! ELF), so each function's frame is derived from its machine code: pushes
//! and `sub rsp, imm` (x86_64), `sub sp, sp, #imm` and pre-indexed stores to
//! sp (arm64e), plus the return address. For the C shim, clang's
//! `-fstack-usage` (`.su` files beside the objects) is a second source; the
//! larger of the two counts. Calls come from branch relocations (and
//! PC-relative branches to functions of the same object): calls to what no
//! object defines are the kernel's (its stack is not the kext's budget). An
//! indirect `jmp`/`br` is a switch's jump table; an indirect call is allowed
//! only where the budget file names it (the original vnode op, SYSCTL_OUT).
//!
//! Failures: a path over its budget, a frame that cannot be sized (dynamic
//! stack allocation), recursion, an unlisted indirect call, an entry point
//! missing from the objects, or a function whose address the kext takes (so
//! the kernel may call it) with no budget.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic, OpKind, Register};
use object::macho;
use object::macho::MachHeader64;
use object::read::macho::{LoadCommandVariant, MachHeader};
use object::{
    Endianness, Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget,
    SectionFlags, SymbolKind,
};

use crate::kext::kernel::{Arch, Variant};
use crate::kext::objects::ObjFile;

/// The entry points and budgets, relative to the repository root.
pub const BUDGETS: &str = "kext-shim/stack.tsv";

/// One function the kernel calls into the kext, with its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    /// C name (no leading underscore).
    pub name: String,
    /// Bytes of kext stack the deepest path may use.
    pub budget: u64,
    /// Who calls it, for messages.
    pub what: String,
    /// Only the kauth variant has it (kind `kauth-entry`).
    pub kauth_only: bool,
}

/// The budget file: entry points and the indirect calls allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budgets {
    /// Entry points.
    pub entries: Vec<EntryPoint>,
    /// Function name -> indirect calls it may make (and why).
    pub indirect: BTreeMap<String, (u32, String)>,
}

impl Budgets {
    /// The entry points a build variant has (`kauth-entry` lines only with kauth).
    pub fn for_variant(&self, variant: Variant) -> Budgets {
        Budgets {
            entries: self
                .entries
                .iter()
                .filter(|e| variant.kauth || !e.kauth_only)
                .cloned()
                .collect(),
            indirect: self.indirect.clone(),
        }
    }
}

/// Parses `kext-shim/stack.tsv`: tab-separated lines `entry NAME BYTES WHAT` (or
/// `kauth-entry`, the kauth variant only) and `indirect NAME COUNT WHY`; `#` comments.
pub fn parse_budgets(text: &str) -> Result<Budgets> {
    let mut b = Budgets::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let (kind, name, num, what) = match cols.as_slice() {
            [k, name, num, what] => (*k, *name, *num, *what),
            _ => bail!("{BUDGETS}:{}: expected 4 tab-separated columns", n + 1),
        };
        let num: u64 = num
            .parse()
            .with_context(|| format!("{BUDGETS}:{}: bad number {num:?}", n + 1))?;
        match kind {
            "entry" | "kauth-entry" => b.entries.push(EntryPoint {
                name: name.into(),
                budget: num,
                what: what.into(),
                kauth_only: kind == "kauth-entry",
            }),
            "indirect" => {
                b.indirect
                    .insert(name.into(), (u32::try_from(num)?, what.into()));
            }
            other => bail!("{BUDGETS}:{}: unknown kind {other:?}", n + 1),
        }
    }
    Ok(b)
}

/// One line of a clang `-fstack-usage` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackUsage {
    /// Function name.
    pub name: String,
    /// Frame bytes (without the return address on x86_64).
    pub bytes: u64,
    /// Not `static`: the frame grows at run time.
    pub dynamic: bool,
}

/// Parses a `.su` file: `file:line:col:name<TAB>bytes<TAB>static|dynamic[,bounded]`.
pub fn parse_su(text: &str) -> Result<Vec<StackUsage>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [loc, bytes, kind] = cols.as_slice() else {
            bail!("bad -fstack-usage line {line:?}");
        };
        let name = loc.rsplit(':').next().unwrap_or(loc).to_string();
        out.push(StackUsage {
            name,
            bytes: bytes
                .parse()
                .with_context(|| format!("bad size in {line:?}"))?,
            dynamic: *kind != "static",
        });
    }
    Ok(out)
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// A function of the kext (index into [`Graph::funcs`]).
    Func(usize),
    /// A symbol no object defines: the kernel's.
    Kernel(String),
}

/// A function of the kext and what its machine code says.
#[derive(Debug, Clone)]
pub struct Func {
    /// Symbol name (C names without the Mach-O underscore).
    pub name: String,
    /// Object it is defined in.
    pub object: String,
    /// Bytes of stack from the caller's stack pointer before the call to the
    /// deepest point of this frame; `Err` says why it is unknown.
    pub frame: Result<u64, String>,
    /// Direct calls.
    pub calls: BTreeSet<Target>,
    /// Tail calls (branches to another function).
    pub tails: BTreeSet<Target>,
    /// Indirect calls (through a register or memory).
    pub indirect_calls: u32,
}

/// The kext's call graph.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Every function.
    pub funcs: Vec<Func>,
    /// Functions whose address is taken by something other than a branch.
    pub address_taken: BTreeSet<usize>,
}

impl Graph {
    /// The function called `name` (globals first, then a unique local).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.funcs.iter().position(|f| f.name == name)
    }
}

fn c_name(sym: &str) -> String {
    sym.strip_prefix('_').unwrap_or(sym).to_string()
}

fn is_local_label(name: &str) -> bool {
    name.starts_with("ltmp") || name.starts_with("l_") || name.starts_with('L')
}

fn is_code(flags: SectionFlags) -> bool {
    matches!(flags, SectionFlags::MachO { flags }
        if flags & (macho::S_ATTR_PURE_INSTRUCTIONS | macho::S_ATTR_SOME_INSTRUCTIONS) != 0)
}

/// LC_DATA_IN_CODE ranges (section addresses in MH_OBJECT files).
fn data_in_code(data: &[u8]) -> Vec<std::ops::Range<u64>> {
    let mut out = Vec::new();
    let Ok(header) = MachHeader64::<Endianness>::parse(data, 0) else {
        return out;
    };
    let Ok(e) = header.endian() else { return out };
    let Ok(mut cmds) = header.load_commands(e, data, 0) else {
        return out;
    };
    while let Ok(Some(cmd)) = cmds.next() {
        if let Ok(LoadCommandVariant::LinkeditData(le)) = cmd.variant()
            && cmd.cmd() == macho::LC_DATA_IN_CODE
        {
            let start = le.dataoff.get(e) as usize;
            let bytes = data
                .get(start..start + le.datasize.get(e) as usize)
                .unwrap_or(&[]);
            for c in bytes.chunks_exact(8) {
                let off = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                let len = u64::from(u16::from_le_bytes([c[4], c[5]]));
                out.push(off..off + len);
            }
        }
    }
    out
}

/// A direct branch: a call, or a jump (a tail call when it leaves the function).
#[derive(Debug, Clone, Copy)]
struct Branch {
    ip: u64,
    len: u64,
    target: u64,
    call: bool,
}

/// What one function's code says, before call targets are resolved.
#[derive(Debug)]
struct Scan {
    frame: Result<u64, String>,
    branches: Vec<Branch>,
    indirect_calls: u32,
}

impl Scan {
    fn new(ret: u64) -> Scan {
        Scan {
            frame: Ok(ret),
            branches: Vec::new(),
            indirect_calls: 0,
        }
    }
}

fn scan_x86(code: &[u8], addr: u64, skip: &[std::ops::Range<u64>]) -> Scan {
    let mut s = Scan::new(8); // the return address
    let mut d = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let end = addr + code.len() as u64;
    // LLVM's inline stack probe: `mov r11, rsp; sub r11, N; loop: sub rsp,
    // 4096; mov [rsp], 0; cmp rsp, r11; jne loop`. The loop's sub counts once
    // above; N replaces it when the cmp shows up.
    let mut probe_size: HashMap<Register, u64> = HashMap::new();
    let mut last_rsp_sub = 0;
    while d.can_decode() {
        let ip = d.ip();
        if let Some(r) = skip.iter().find(|r| r.contains(&ip)) {
            let next = r.end.min(end);
            if d.set_position((next - addr) as usize).is_err() {
                break;
            }
            d.set_ip(next);
            continue;
        }
        let ins = d.decode();
        let grow = match ins.mnemonic() {
            Mnemonic::Push | Mnemonic::Pushfq => Some(8),
            Mnemonic::Sub | Mnemonic::Add
                if ins.op0_kind() == OpKind::Register && ins.op0_register() == Register::RSP =>
            {
                match ins.op1_kind() {
                    OpKind::Immediate8to64 | OpKind::Immediate32to64 | OpKind::Immediate32 => {
                        let v = ins.immediate(1) as i64;
                        let grow = if ins.mnemonic() == Mnemonic::Sub {
                            v
                        } else {
                            -v
                        };
                        last_rsp_sub = grow.max(0) as u64;
                        Some(last_rsp_sub)
                    }
                    _ if ins.mnemonic() == Mnemonic::Sub => {
                        s.frame = Err(format!("dynamic stack allocation at {ip:#x}"));
                        None
                    }
                    _ => None,
                }
            }
            Mnemonic::Sub
                if ins.op0_kind() == OpKind::Register
                    && matches!(
                        ins.op1_kind(),
                        OpKind::Immediate32to64 | OpKind::Immediate32
                    ) =>
            {
                probe_size.insert(ins.op0_register(), ins.immediate(1));
                None
            }
            // The probe loop's bound: its size replaces the one loop step counted.
            Mnemonic::Cmp
                if ins.op0_kind() == OpKind::Register
                    && ins.op0_register() == Register::RSP
                    && ins.op1_kind() == OpKind::Register =>
            {
                match probe_size.get(&ins.op1_register()) {
                    Some(&n) => Some(n.saturating_sub(last_rsp_sub)),
                    None => {
                        s.frame = Err(format!("unrecognised stack probe at {ip:#x}"));
                        None
                    }
                }
            }
            // Stack realignment: up to |align| - 8 bytes more.
            Mnemonic::And
                if ins.op0_kind() == OpKind::Register && ins.op0_register() == Register::RSP =>
            {
                Some((ins.immediate(1) as i64).unsigned_abs().saturating_sub(8))
            }
            _ => None,
        };
        if let (Some(g), Ok(f)) = (grow, s.frame.as_mut()) {
            *f += g;
        }
        let branch = |call| Branch {
            ip,
            len: ins.len() as u64,
            target: ins.near_branch_target(),
            call,
        };
        match ins.flow_control() {
            FlowControl::Call => s.branches.push(branch(true)),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
                if ins.op0_kind() == OpKind::NearBranch64 =>
            {
                s.branches.push(branch(false));
            }
            FlowControl::IndirectCall => s.indirect_calls += 1,
            _ => {}
        }
    }
    s
}

/// Sign-extends the low `bits` of `v`.
fn sext(v: u32, bits: u32) -> i64 {
    let shift = 32 - bits;
    i64::from(((v << shift) as i32) >> shift)
}

fn scan_a64(code: &[u8], addr: u64) -> Scan {
    // The return address lives in LR and is saved inside the frame.
    let mut s = Scan::new(0);
    for (i, w) in code.chunks_exact(4).enumerate() {
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let ip = addr + 4 * i as u64;
        let rd = w & 31;
        let rn = (w >> 5) & 31;
        let grow = if w & 0xff80_0000 == 0xd100_0000 && rd == 31 && rn == 31 {
            // sub sp, sp, #imm{, lsl #12}
            let imm = u64::from((w >> 10) & 0xfff);
            Some(if w & (1 << 22) != 0 { imm << 12 } else { imm })
        } else if w & 0xffe0_0000 == 0xcb20_0000 && rd == 31 && rn == 31 {
            // sub sp, sp, xM (extended register): a run-time size
            s.frame = Err(format!("dynamic stack allocation at {ip:#x}"));
            None
        } else if w & 0xffe0_0000 == 0xeb20_0000 && rd == 31 && rn == 31 {
            // cmp sp, xM: a stack probe loop, a frame over a page
            s.frame = Err(format!("stack probe loop at {ip:#x} (frame over a page)"));
            None
        } else if w & 0x7fc0_0000 == 0x2980_0000 && rn == 31 {
            // stp (pre-index) to [sp, #-imm]!: 64-bit (opc 10) scales by 8, 32-bit by 4
            let scale = if w >> 31 != 0 { 8 } else { 4 };
            let off = sext((w >> 15) & 0x7f, 7) * scale;
            Some((-off).max(0) as u64)
        } else if w & 0xbfe0_0c00 == 0xb800_0c00 && rn == 31 {
            // str (pre-index) to [sp, #-imm]!
            let off = sext((w >> 12) & 0x1ff, 9);
            Some((-off).max(0) as u64)
        } else {
            None
        };
        if let (Some(g), Ok(f)) = (grow, s.frame.as_mut()) {
            *f += g;
        }
        if w & 0x7c00_0000 == 0x1400_0000 {
            // b / bl imm26
            s.branches.push(Branch {
                ip,
                len: 4,
                target: ip.wrapping_add_signed(sext(w & 0x03ff_ffff, 26) * 4),
                call: w & 0x8000_0000 != 0,
            });
        } else if w & 0xfe00_0000 == 0xd600_0000 && (w >> 21) & 7 == 1 {
            // blr / blraa / blrab / blraaz / blrabz
            s.indirect_calls += 1;
        }
    }
    s
}

/// Builds the call graph of `objs` (the shim objects and the core's members).
pub fn graph(arch: Arch, objs: &[ObjFile]) -> Result<Graph> {
    struct Pending {
        func: usize,
        obj: usize,
        start: u64,
        stop: u64,
        b: Branch,
    }
    let mut g = Graph::default();
    // Per object: address -> function index; relocation offset -> symbol.
    let mut by_addr: Vec<BTreeMap<u64, (u64, usize)>> = Vec::new();
    let mut relocs: Vec<BTreeMap<u64, Reloc>> = Vec::new();
    let mut pending = Vec::new();
    let mut globals: HashMap<String, usize> = HashMap::new();
    let mut taken: Vec<(usize, u64)> = Vec::new();
    let mut taken_syms: Vec<String> = Vec::new();
    for (oi, obj) in objs.iter().enumerate() {
        let file = object::File::parse(&*obj.data).with_context(|| obj.name.clone())?;
        let dic = data_in_code(&obj.data);
        let mut funcs_here = BTreeMap::new();
        let mut relocs_here = BTreeMap::new();
        for section in file.sections() {
            let code = is_code(section.flags());
            let base = section.address();
            for (off, r) in section.relocations() {
                let branch = code
                    && matches!(r.flags(), RelocationFlags::MachO { r_type, .. }
                    if r_type == match arch {
                        Arch::X86_64 => macho::X86_64_RELOC_BRANCH,
                        Arch::Arm64e => macho::ARM64_RELOC_BRANCH26,
                    });
                let target = match r.target() {
                    RelocationTarget::Symbol(i) => file
                        .symbol_by_index(i)
                        .ok()
                        .and_then(|s| s.name().ok().map(str::to_string))
                        .map(Reloc::Symbol),
                    RelocationTarget::Section(_) => Some(Reloc::Local),
                    _ => None,
                };
                let Some(target) = target else { continue };
                if branch {
                    relocs_here.insert(base + off, target);
                } else if let Reloc::Symbol(name) = target {
                    taken_syms.push(name);
                } else if code {
                    // A non-extern address load: resolved below by address.
                    taken.push((oi, base + off));
                }
            }
            if !code {
                continue;
            }
            let Ok(bytes) = section.data() else { continue };
            let end = base + bytes.len() as u64;
            let mut syms: Vec<(u64, String, bool)> = file
                .symbols()
                .filter(|s| s.section_index() == Some(section.index()))
                .filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Unknown))
                .filter_map(|s| Some((s.address(), s.name().ok()?.to_string(), s.is_global())))
                .filter(|(_, n, _)| !is_local_label(n))
                .collect();
            syms.sort();
            syms.dedup_by_key(|s| s.0);
            for (i, (start, name, global)) in syms.iter().enumerate() {
                let stop = syms.get(i + 1).map_or(end, |s| s.0);
                let range = (start - base) as usize..(stop - base) as usize;
                let code = bytes.get(range).unwrap_or(&[]);
                let scan = match arch {
                    Arch::X86_64 => scan_x86(code, *start, &dic),
                    Arch::Arm64e => scan_a64(code, *start),
                };
                let fi = g.funcs.len();
                g.funcs.push(Func {
                    name: c_name(name),
                    object: obj.name.clone(),
                    frame: scan.frame,
                    calls: BTreeSet::new(),
                    tails: BTreeSet::new(),
                    indirect_calls: scan.indirect_calls,
                });
                if *global {
                    globals.insert(name.clone(), fi);
                }
                funcs_here.insert(*start, (stop, fi));
                for b in scan.branches {
                    pending.push(Pending {
                        func: fi,
                        obj: oi,
                        start: *start,
                        stop,
                        b,
                    });
                }
            }
        }
        by_addr.push(funcs_here);
        relocs.push(relocs_here);
    }
    let locate = |oi: usize, addr: u64| -> Option<usize> {
        let (_, &(stop, fi)) = by_addr[oi].range(..=addr).next_back()?;
        (addr < stop).then_some(fi)
    };
    let local_syms: Vec<HashMap<String, usize>> = (0..objs.len())
        .map(|oi| {
            by_addr[oi]
                .values()
                .map(|&(_, fi)| (g.funcs[fi].name.clone(), fi))
                .collect()
        })
        .collect();
    for p in pending {
        // The relocation of a branch sits inside its instruction.
        let reloc = relocs[p.obj]
            .range(p.b.ip..p.b.ip + p.b.len)
            .next()
            .map(|(_, r)| r.clone());
        let target = match reloc {
            Some(Reloc::Symbol(name)) => local_syms[p.obj]
                .get(&c_name(&name))
                .or_else(|| globals.get(&name))
                .map_or_else(|| Target::Kernel(c_name(&name)), |&fi| Target::Func(fi)),
            // Without an external relocation the encoded target is right;
            // a jump inside the function is control flow, not a call.
            _ if !p.b.call && (p.start..p.stop).contains(&p.b.target) => continue,
            _ => match locate(p.obj, p.b.target) {
                Some(fi) if fi != p.func => Target::Func(fi),
                _ => continue,
            },
        };
        let f = &mut g.funcs[p.func];
        if p.b.call {
            f.calls.insert(target);
        } else {
            f.tails.insert(target);
        }
    }
    for (oi, addr) in taken {
        // x86_64 lea/mov RIP-relative: the disp32 names the target, but the
        // object's own functions are found by their symbol relocations; the
        // non-extern ones only matter when they land on a function start.
        if let Some(fi) = by_addr[oi].get(&addr).map(|&(_, fi)| fi) {
            g.address_taken.insert(fi);
        }
    }
    for name in taken_syms {
        if let Some(&fi) = globals.get(&name) {
            g.address_taken.insert(fi);
        } else if let Some(fi) = (0..objs.len()).find_map(|oi| local_syms[oi].get(&c_name(&name))) {
            g.address_taken.insert(*fi);
        }
    }
    Ok(g)
}

#[derive(Debug, Clone)]
enum Reloc {
    Symbol(String),
    Local,
}

/// Raises each C function's frame to what clang's `-fstack-usage` says
/// (plus the return address on x86_64); a dynamic frame is unknown.
pub fn apply_su(g: &mut Graph, arch: Arch, su: &[StackUsage]) {
    let ret = match arch {
        Arch::X86_64 => 8,
        Arch::Arm64e => 0,
    };
    for u in su {
        for f in g.funcs.iter_mut().filter(|f| f.name == u.name) {
            if u.dynamic {
                f.frame = Err(format!("-fstack-usage says {} is dynamic", u.name));
            } else if let Ok(v) = f.frame.as_mut() {
                *v = (*v).max(u.bytes + ret);
            }
        }
    }
}

/// The outcome for one arch.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per entry point: depth, budget, deepest path.
    pub lines: Vec<String>,
    /// What fails the build.
    pub errors: Vec<String>,
}

struct Walk<'g> {
    g: &'g Graph,
    budgets: &'g Budgets,
    memo: HashMap<usize, Result<(u64, Vec<usize>), String>>,
    on_stack: Vec<usize>,
}

impl Walk<'_> {
    fn path_names(&self, path: &[usize]) -> String {
        path.iter()
            .map(|&i| {
                let f = &self.g.funcs[i];
                match &f.frame {
                    Ok(b) => format!("{} ({b})", f.name),
                    Err(_) => format!("{} (?)", f.name),
                }
            })
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    /// Deepest stack from `fi` down, and the path that reaches it.
    fn depth(&mut self, fi: usize) -> Result<(u64, Vec<usize>), String> {
        if let Some(r) = self.memo.get(&fi) {
            return r.clone();
        }
        if let Some(at) = self.on_stack.iter().position(|&x| x == fi) {
            let mut cycle = self.on_stack[at..].to_vec();
            cycle.push(fi);
            return Err(format!("recursion: {}", self.path_names(&cycle)));
        }
        self.on_stack.push(fi);
        let r = self.depth_uncached(fi);
        self.on_stack.pop();
        self.memo.insert(fi, r.clone());
        r
    }

    fn depth_uncached(&mut self, fi: usize) -> Result<(u64, Vec<usize>), String> {
        let f = &self.g.funcs[fi];
        let frame = f
            .frame
            .clone()
            .map_err(|why| format!("{} in {}: frame size unknown ({why})", f.name, f.object))?;
        let allowed = self.budgets.indirect.get(&f.name).map_or(0, |a| a.0);
        if f.indirect_calls > allowed {
            return Err(format!(
                "{} makes {} indirect call(s), {} allowed in {BUDGETS}",
                f.name, f.indirect_calls, allowed
            ));
        }
        let (calls, tails) = (f.calls.clone(), f.tails.clone());
        let mut best = (frame, vec![fi]);
        for (t, tail) in calls
            .iter()
            .map(|t| (t, false))
            .chain(tails.iter().map(|t| (t, true)))
        {
            let Target::Func(c) = t else { continue };
            let (d, path) = self
                .depth(*c)
                .map_err(|e| format!("{} -> {e}", self.g.funcs[fi].name))?;
            let total = if tail { d.max(frame) } else { frame + d };
            if total > best.0 {
                let mut p = vec![fi];
                p.extend(path);
                best = (total, p);
            }
        }
        Ok(best)
    }
}

/// The kext's panic handler (`src/ffi/panic.rs` calls it; it calls XNU's `panic()`): the core
/// denies every panicking construct, and no kernel entry point may reach it.
pub const PANIC_SINK: &str = "mt_kpi_panic";

/// A call path from `from` to [`PANIC_SINK`], if there is one (breadth first: the shortest).
fn path_to_panic(g: &Graph, from: usize) -> Option<Vec<usize>> {
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(fi) = queue.pop_front() {
        if g.funcs[fi].name == PANIC_SINK {
            let mut path = vec![fi];
            while let Some(&p) = prev.get(path.last()?) {
                path.push(p);
            }
            path.reverse();
            return Some(path);
        }
        let f = &g.funcs[fi];
        for t in f.calls.iter().chain(f.tails.iter()) {
            if let Target::Func(c) = t
                && seen.insert(*c)
            {
                prev.insert(*c, fi);
                queue.push_back(*c);
            }
        }
    }
    None
}

/// Checks every entry point of `budgets` against `g`: stack depth, and no path to a panic.
pub fn check(g: &Graph, budgets: &Budgets) -> Report {
    let mut r = Report::default();
    let mut w = Walk {
        g,
        budgets,
        memo: HashMap::new(),
        on_stack: Vec::new(),
    };
    for e in &budgets.entries {
        let Some(fi) = g.find(&e.name) else {
            r.errors.push(format!(
                "stack: entry point {} ({}) is in no object",
                e.name, e.what
            ));
            continue;
        };
        match w.depth(fi) {
            Ok((d, path)) => {
                let line = format!(
                    "{:>5} / {:>5} B  {}: {}",
                    d,
                    e.budget,
                    e.name,
                    w.path_names(&path)
                );
                if d > e.budget {
                    r.errors.push(format!(
                        "stack: {} ({}) uses {d} B of kext stack, budget {} B: {}",
                        e.name,
                        e.what,
                        e.budget,
                        w.path_names(&path)
                    ));
                }
                r.lines.push(line);
            }
            Err(why) => r
                .errors
                .push(format!("stack: {} ({}): {why}", e.name, e.what)),
        }
    }
    for e in &budgets.entries {
        if let Some(fi) = g.find(&e.name)
            && let Some(path) = path_to_panic(g, fi)
        {
            r.errors.push(format!(
                "panic: {} ({}) can reach the panic handler (a kernel panic, never an errno): {}",
                e.name,
                e.what,
                path.iter()
                    .map(|&i| g.funcs[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ));
        }
    }
    for &fi in &g.address_taken {
        let name = &g.funcs[fi].name;
        if !budgets.entries.iter().any(|e| &e.name == name) {
            r.errors.push(format!(
                "stack: the kext takes the address of {name} (the kernel may call it) \
                 but {BUDGETS} gives it no budget"
            ));
        }
    }
    r
}

/// Runs the check on what `cargo xtask cross` left for `arch`.
pub fn check_arch(root: &Path, arch: Arch, variant: Variant, budgets: &Budgets) -> Result<Report> {
    let layout = crate::kext::cross::Layout::for_variant(root, variant);
    let shim_paths = layout.shim_objects(arch)?;
    let mut objs = crate::kext::objects::load_all(shim_paths.iter().map(|p| p.as_path()))?;
    objs.extend(crate::kext::objects::load(&layout.core_lib(arch))?);
    let mut g = graph(arch, &objs)?;
    for p in &shim_paths {
        let su = p.with_extension("su");
        if let Ok(text) = std::fs::read_to_string(&su) {
            apply_su(&mut g, arch, &parse_su(&text)?);
        }
    }
    Ok(check(&g, budgets))
}

/// `cargo xtask cross`'s stack step: prints each entry's deepest path and
/// fails on any error.
pub fn run(root: &Path, archs: &[Arch], variant: Variant) -> Result<()> {
    let path = root.join(BUDGETS);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let budgets = parse_budgets(&text)?.for_variant(variant);
    let mut errors = Vec::new();
    for &arch in archs {
        let r = check_arch(root, arch, variant, &budgets)?;
        println!("kernel stack, {} (kext bytes / budget):", arch.name());
        let mut out = String::new();
        for l in &r.lines {
            let _ = writeln!(out, "  {l}");
        }
        print!("{out}");
        errors.extend(r.errors.iter().map(|e| format!("{}: {e}", arch.name())));
    }
    if !errors.is_empty() {
        bail!("kernel stack check failed:\n{}", errors.join("\n"));
    }
    println!("kernel stack check passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kext::check::compile_snippet;

    /// A hook two calls deep; `big` bytes of locals in the middle frame.
    fn chain(big: usize) -> String {
        format!(
            "extern int mt_kernel_fn(char *);\n\
             __attribute__((noinline)) int mt_leaf(char *p) {{ return mt_kernel_fn(p) + 1; }}\n\
             __attribute__((noinline)) static int mt_mid(int x) {{\n\
                 volatile char b[{big}]; b[x] = 1; return mt_leaf((char *)b); }}\n\
             int mt_entry(int x) {{ return mt_mid(x) + 2; }}\n"
        )
    }

    fn objects(arch: Arch, src: &str) -> (tempfile::TempDir, Vec<ObjFile>, Vec<StackUsage>) {
        let dir = tempfile::tempdir().unwrap();
        let mut flags = crate::kext::kernel::clang_flags(arch);
        flags.push("-fstack-usage");
        let o = compile_snippet(arch, src, &flags, dir.path(), "t").unwrap();
        let su = std::fs::read_to_string(dir.path().join(format!("t.{}.su", arch.name())))
            .map(|t| parse_su(&t).unwrap())
            .unwrap_or_default();
        (dir, vec![o], su)
    }

    fn budgets(text: &str) -> Budgets {
        parse_budgets(text).unwrap()
    }

    #[test]
    fn budget_and_su_fixtures_parse_and_bad_lines_are_refused() {
        let b = budgets(
            "# comment\n\nentry\tmt_a\t1024\tthe a hook\nindirect\tmt_a\t1\tthe original\n",
        );
        assert_eq!(b.entries[0].name, "mt_a");
        assert_eq!(b.entries[0].budget, 1024);
        assert_eq!(b.indirect["mt_a"].0, 1);
        assert!(parse_budgets("entry\tmt_a\t1024\n").is_err(), "3 columns");
        assert!(parse_budgets("entry\tmt_a\tlots\tx\n").is_err());
        assert!(parse_budgets("hook\tmt_a\t1\tx\n").is_err());
        let su = parse_su(
            "mt_vnops.c:207:12:mt_vnop_mmap_hook\t200\tstatic\n\
             a.c:3:1:f\t64\tdynamic,bounded\n",
        )
        .unwrap();
        assert_eq!(su[0].name, "mt_vnop_mmap_hook");
        assert_eq!((su[0].bytes, su[0].dynamic), (200, false));
        assert!(su[1].dynamic);
        assert!(parse_su("garbage\n").is_err());
    }

    #[test]
    fn the_repo_budgets_name_every_kind_of_entry() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let b = budgets(&std::fs::read_to_string(root.join(BUDGETS)).unwrap());
        let budget = |n: &str| b.entries.iter().find(|e| e.name == n).unwrap().budget;
        for hook in [
            "mt_vnop_pagein_hook",
            "mt_mac_file_check_mmap",
            "mt_kauth_vnode_cb",
        ] {
            assert_eq!(budget(hook), 1024, "{hook}");
        }
        for big in ["mt_kmod_start", "mt_kmod_stop", "mt_sysctl_events"] {
            assert_eq!(budget(big), 4096, "{big}");
        }
        assert_eq!(b.indirect["mt_vnop_pagein_hook"].0, 1);
    }

    #[test]
    fn the_deepest_path_is_summed_across_calls_on_both_arches() {
        for arch in Arch::ALL {
            let (_d, objs, su) = objects(arch, &chain(600));
            let mut g = graph(arch, &objs).unwrap();
            apply_su(&mut g, arch, &su);
            let mid = &g.funcs[g.find("mt_mid").unwrap()];
            let frame = *mid.frame.as_ref().unwrap();
            assert!(
                (600..800).contains(&frame),
                "{arch:?}: mt_mid frame {frame}"
            );
            let r = check(&g, &budgets("entry\tmt_entry\t1024\tx\n"));
            assert!(r.errors.is_empty(), "{arch:?}: {:?}", r.errors);
            assert!(
                r.lines[0].contains("mt_entry") && r.lines[0].contains("mt_mid"),
                "{}",
                r.lines[0]
            );
            assert!(r.lines[0].contains("mt_leaf"), "{}", r.lines[0]);
        }
    }

    #[test]
    fn an_over_budget_path_fails_and_names_the_path() {
        for arch in Arch::ALL {
            let (_d, objs, su) = objects(arch, &chain(1500));
            let mut g = graph(arch, &objs).unwrap();
            apply_su(&mut g, arch, &su);
            let r = check(&g, &budgets("entry\tmt_entry\t1024\thook\n"));
            assert_eq!(r.errors.len(), 1, "{arch:?}: {:?}", r.errors);
            let e = &r.errors[0];
            assert!(
                e.contains("mt_entry") && e.contains("budget 1024") && e.contains("mt_mid ("),
                "{e}"
            );
        }
    }

    #[test]
    fn an_entry_that_can_reach_the_panic_handler_fails_and_names_the_path() {
        let src = "extern void mt_kpi_panic(const char *, unsigned, unsigned);\n\
             __attribute__((noinline)) int mt_rem(int a, int n) {\n\
                 if (n == 0) { mt_kpi_panic(\"x\", 1, 1); } return a % n; }\n\
             int mt_entry(int a, int n) { return mt_rem(a, n) + 1; }\n\
             int mt_safe(int a) { return a + 1; }\n\
             __attribute__((noinline)) void mt_kpi_panic(const char *f, unsigned l, unsigned n) {\n\
                 (void)f; (void)l; (void)n; for (;;) {} }\n";
        for arch in Arch::ALL {
            let (_d, objs, su) = objects(arch, src);
            let mut g = graph(arch, &objs).unwrap();
            apply_su(&mut g, arch, &su);
            let r = check(
                &g,
                &budgets("entry\tmt_entry\t1024\thook\nentry\tmt_safe\t1024\thook\n"),
            );
            let panics: Vec<_> = r
                .errors
                .iter()
                .filter(|e| e.starts_with("panic:"))
                .collect();
            assert_eq!(panics.len(), 1, "{arch:?}: {:?}", r.errors);
            assert!(
                panics[0].contains("mt_entry -> mt_rem -> mt_kpi_panic"),
                "{}",
                panics[0]
            );
        }
    }

    #[test]
    fn unlisted_indirect_calls_recursion_and_missing_entries_fail() {
        let src = "typedef int (*fn_t)(void *);\n\
             int mt_indirect(fn_t f, void *a) { return f(a) + 1; }\n\
             __attribute__((noinline)) int mt_rec(int n) { return n ? mt_rec(n - 1) + n : 0; }\n";
        for arch in Arch::ALL {
            let (_d, objs, _) = objects(arch, src);
            let g = graph(arch, &objs).unwrap();
            let r = check(&g, &budgets("entry\tmt_indirect\t1024\tx\n"));
            assert!(
                r.errors[0].contains("1 indirect call(s), 0 allowed"),
                "{:?}",
                r.errors
            );
            let r = check(
                &g,
                &budgets("entry\tmt_indirect\t1024\tx\nindirect\tmt_indirect\t1\tthe original\n"),
            );
            assert!(r.errors.is_empty(), "{arch:?}: {:?}", r.errors);
            let r = check(&g, &budgets("entry\tmt_gone\t1024\tx\n"));
            assert!(r.errors[0].contains("in no object"), "{:?}", r.errors);
            // clang may turn the self-call into a loop; when it stays, it is caught.
            let rec = &g.funcs[g.find("mt_rec").unwrap()];
            if rec.calls.contains(&Target::Func(g.find("mt_rec").unwrap())) {
                let r = check(&g, &budgets("entry\tmt_rec\t1024\tx\n"));
                assert!(r.errors[0].contains("recursion"), "{:?}", r.errors);
            }
        }
    }

    #[test]
    fn self_recursion_is_refused() {
        let mut g = Graph::default();
        for (name, calls) in [("mt_a", vec![1]), ("mt_b", vec![0])] {
            g.funcs.push(Func {
                name: name.into(),
                object: "x.o".into(),
                frame: Ok(16),
                calls: calls.into_iter().map(Target::Func).collect(),
                tails: BTreeSet::new(),
                indirect_calls: 0,
            });
        }
        let r = check(&g, &budgets("entry\tmt_a\t1024\tx\n"));
        assert!(
            r.errors[0].contains("recursion: mt_a (16) -> mt_b (16) -> mt_a"),
            "{:?}",
            r.errors
        );
    }

    #[test]
    fn a_function_whose_address_escapes_needs_a_budget() {
        let src = "static int mt_cb(void *a) { return a != 0; }\n\
             int (*mt_table[1])(void *);\n\
             void mt_install(void) { mt_table[0] = mt_cb; }\n";
        for arch in Arch::ALL {
            let (_d, objs, _) = objects(arch, src);
            let g = graph(arch, &objs).unwrap();
            let r = check(&g, &budgets("entry\tmt_install\t4096\tx\n"));
            assert!(
                r.errors.iter().any(|e| e.contains("address of mt_cb")),
                "{arch:?}: {:?}",
                r.errors
            );
            let r = check(
                &g,
                &budgets("entry\tmt_install\t4096\tx\nentry\tmt_cb\t1024\tcallback\n"),
            );
            assert!(r.errors.is_empty(), "{arch:?}: {:?}", r.errors);
        }
    }

    #[test]
    fn a_stack_probe_loop_counts_its_whole_size() {
        // What rustc emits for a frame over a page (LLVM's inline stack probe).
        let asm = ".globl _mt_probe\n_mt_probe:\n\
             pushq %rbp\n movq %rsp, %rbp\n\
             movq %rsp, %r11\n subq $32768, %r11\n\
             1: subq $4096, %rsp\n movq $0, (%rsp)\n cmpq %r11, %rsp\n jne 1b\n\
             subq $2216, %rsp\n callq _mt_kernel_fn\n\
             movq %rbp, %rsp\n popq %rbp\n retq\n";
        let dir = tempfile::tempdir().unwrap();
        let o = compile_snippet(
            Arch::X86_64,
            asm,
            &["--target=x86_64-apple-macos11", "-x", "assembler"],
            dir.path(),
            "probe",
        )
        .unwrap();
        let g = graph(Arch::X86_64, &[o]).unwrap();
        let f = &g.funcs[g.find("mt_probe").unwrap()];
        assert_eq!(f.frame, Ok(8 + 8 + 32768 + 2216));
        let r = check(&g, &budgets("entry\tmt_probe\t4096\tstart\n"));
        assert!(r.errors[0].contains("uses 35000 B"), "{:?}", r.errors);
    }

    #[test]
    fn dynamic_frames_are_unknown_and_fail() {
        let src = "extern void mt_kernel_fn(char *);\n\
             void mt_vla(int n) { char b[n]; mt_kernel_fn(b); }\n";
        for arch in Arch::ALL {
            let (_d, objs, su) = objects(arch, src);
            let mut g = graph(arch, &objs).unwrap();
            apply_su(&mut g, arch, &su);
            let r = check(&g, &budgets("entry\tmt_vla\t1024\tx\n"));
            assert!(
                r.errors.iter().any(|e| e.contains("frame size unknown")),
                "{arch:?}: {:?}",
                r.errors
            );
        }
    }
}
