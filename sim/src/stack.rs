//! Kernel-stack budgets at run time: every entry into kext code runs with a
//! painted-stack high-water mark, and a kext part deeper than its budget is a
//! `Violation::Contract` (`stack.hook_budget` / `stack.entry_budget`).
//!
//! XNU kernel stacks are 16 KiB in total (`KERNEL_STACK_SIZE`,
//! osfmk/mach/i386/vm_param.h and osfmk/mach/arm/vm_param.h,
//! xnu-11417.121.6), and the hooks run deep inside vm_fault / cluster / VFS
//! paths. The budgets are those of `kext-shim/stack.tsv`, which
//! `cargo xtask cross` checks statically on the Mach-O objects: 1 KiB for a
//! hook or callout, 4 KiB for kmod start/stop and the sysctl handlers.
//!
//! How: before the call, the region below the stack pointer is painted with
//! a pattern (inline asm, so the painting itself uses no stack); after it,
//! the lowest overwritten word gives the depth. Only the kext's part counts:
//! when kext code calls back into the simulated kernel (a KPI, which opens a
//! [`KernelScope`] through `kernel::with_current` or the KPIs' `k()`; the
//! filesystem's original vnode op), the depth so far is taken at that point,
//! the kernel's own run is excluded, and the region is painted again when it
//! returns. What is measured includes the
//! few frames of simulator glue between the entry point and the kext
//! function (and a KPI's own frame before it reaches `with_current`): a
//! slight over-count, never an under-count.
//!
//! The numbers mean something only for optimised code: the workspace builds
//! maptrace-core, maptrace-sim and the shim's C (sim/build.rs) optimised in
//! the dev profile too. Skipped (the meter is off) under Miri, under
//! sanitizers (ASan/TSan instrumentation inflates frames; sim/build.rs sets
//! `mt_sanitize`) and on targets other than x86_64 and aarch64.

use std::cell::{Cell, RefCell};

/// Budget of a hook or kernel callout into the kext (`kext-shim/stack.tsv`).
pub const HOOK_BUDGET: usize = 1024;
/// Budget of kmod start/stop and the sysctl handlers (`kext-shim/stack.tsv`).
pub const ENTRY_BUDGET: usize = 4096;

/// What the simulator measures beyond the kext's own frames, allowed on top
/// of each budget: the sim's glue between the entry point and the kext
/// function (~360 bytes at opt-level 1: the frame stack, the closures), and
/// host frames larger than the kernel build's (no LTO, no `-mkernel`:
/// `mt_core_record` is 272 bytes on the host, 144 in the kext). The static
/// check (`cargo xtask cross`) holds the kext to the exact budgets; this one
/// catches a hook that grows by hundreds of bytes, on every path the tests
/// drive, including those the static call graph cannot see.
pub const SIM_SLACK: usize = 512;

/// How far past `budget + SIM_SLACK` an entry's painting reaches, so a
/// report says by how much (up to this) a budget was overrun.
pub const OVERRUN_SEEN: usize = 1024;

/// Bytes to paint below an entry with `budget`: a deeper use dirties the
/// lowest painted word and reads as "at least" this, still past the budget.
/// Painting no more than that keeps the meter cheap enough for every test
/// (it paints again after each KPI the kext calls).
pub const fn paint_for(budget: usize) -> usize {
    budget + SIM_SLACK + OVERRUN_SEEN
}
/// The pattern (not a plausible pointer, length or zero).
const PATTERN: u64 = 0x5ac5_7ac5_5ac5_7ac5;

/// Whether this build measures.
pub const ENABLED: bool = cfg!(all(
    not(miri),
    not(mt_sanitize),
    any(target_arch = "x86_64", target_arch = "aarch64")
));

/// One kext entry being measured.
#[derive(Debug)]
struct Meter {
    /// Stack pointer at the entry.
    base: usize,
    /// Lowest painted address.
    lo: usize,
    /// Deepest kext use seen so far (bytes below `base`).
    high: usize,
    /// Nesting of simulated-kernel sections inside this entry.
    in_kernel: u32,
}

thread_local! {
    static METERS: RefCell<Vec<Meter>> = const { RefCell::new(Vec::new()) };
    /// `(lo, base)` of the innermost meter, read without calls (a plain TLS
    /// load) before anything else dirties the stack below the caller.
    static TOP: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sp() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer; touches no memory.
    unsafe { std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack)) };
    sp
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn sp() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer; touches no memory.
    unsafe { std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack)) };
    sp
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn sp() -> usize {
    0
}

/// Paints `[lo, sp - 128)`: the dead stack below the current frame (the
/// 128 bytes spare the x86_64 red zone).
///
/// # Safety
///
/// `lo` is 8-aligned and inside this thread's stack, above its guard page.
#[inline(always)]
unsafe fn paint_from(lo: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: writes only dead stack below the stack pointer (the caller's
    // contract bounds it from below); no `nostack`, so the compiler keeps
    // nothing live in the red zone across the block.
    unsafe {
        std::arch::asm!(
            "mov {top}, rsp",
            "sub {top}, 128",
            "cmp {top}, rdi",
            "jbe 2f",
            "mov rcx, {top}",
            "sub rcx, rdi",
            "shr rcx, 3",
            "cld",
            "rep stosq",
            "2:",
            top = out(reg) _,
            inout("rdi") lo => _,
            out("rcx") _,
            in("rax") PATTERN,
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above (aarch64 has no red zone).
    unsafe {
        std::arch::asm!(
            "mov {top}, sp",
            "sub {top}, {top}, 128",
            "2:",
            "cmp {lo}, {top}",
            "b.hs 3f",
            "str {pat}, [{lo}], #8",
            "b 2b",
            "3:",
            top = out(reg) _,
            lo = inout(reg) lo => _,
            pat = in(reg) PATTERN,
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = lo;
}

/// The lowest address in `[lo, hi)` whose word is not the pattern (`hi`
/// when all are), read without using the stack.
///
/// # Safety
///
/// As for [`paint_from`]; `hi` is at most the current stack pointer.
#[inline(always)]
unsafe fn lowest_dirty(lo: usize, hi: usize) -> usize {
    let mut p = lo;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads dead stack inside this thread's stack (caller's contract).
    unsafe {
        std::arch::asm!(
            "2:",
            "cmp {p}, {hi}",
            "jae 3f",
            "cmp qword ptr [{p}], {pat}",
            "jne 3f",
            "add {p}, 8",
            "jmp 2b",
            "3:",
            p = inout(reg) p,
            hi = in(reg) hi,
            pat = in(reg) PATTERN,
            options(readonly, nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        std::arch::asm!(
            "2:",
            "cmp {p}, {hi}",
            "b.hs 3f",
            "ldr {w}, [{p}]",
            "cmp {w}, {pat}",
            "b.ne 3f",
            "add {p}, {p}, 8",
            "b 2b",
            "3:",
            p = inout(reg) p,
            hi = in(reg) hi,
            pat = in(reg) PATTERN,
            w = out(reg) _,
            options(readonly, nostack),
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (lo, hi);
    p.min(hi)
}

thread_local! {
    /// This thread's `stack_floor` once found (0: not yet): glibc's
    /// `pthread_getattr_np` reads /proc/self/maps for the main thread, far
    /// more than the painting itself.
    static FLOOR: Cell<usize> = const { Cell::new(0) };
}

/// The lowest usable address of this thread's stack (above its guard
/// page), found once per thread.
fn stack_floor() -> Option<usize> {
    let known = FLOOR.get();
    if known != 0 {
        return Some(known);
    }
    let floor = find_stack_floor()?;
    FLOOR.set(floor);
    Some(floor)
}

/// [`stack_floor`], asked of the thread library.
fn find_stack_floor() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pthread_attr_t is plain data that getattr_np initialises.
        let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        // SAFETY: queries the calling thread's own attributes.
        if unsafe { libc::pthread_getattr_np(me, &mut attr) } != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: attr was initialised above.
        let ok = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) } == 0;
        // SAFETY: attr was initialised above and is destroyed once.
        unsafe { libc::pthread_attr_destroy(&mut attr) };
        // One page above the lowest address stays clear of a guard page.
        ok.then(|| addr as usize + 4096)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// What one measured entry used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of stack the kext part used, at most.
    pub bytes: usize,
    /// Whether the meter ran (false: disabled, or no room to paint).
    pub measured: bool,
    /// Whether the use reached the painted floor: it was `bytes` or more.
    pub at_least: bool,
}

impl Usage {
    const UNMEASURED: Usage = Usage {
        bytes: 0,
        measured: false,
        at_least: false,
    };
}

/// Runs kext code `f` and measures the stack its kext part uses, up to
/// `depth` bytes below the caller (see [`paint_for`]).
pub fn measure<R>(depth: usize, f: impl FnOnce() -> R) -> (R, Usage) {
    if !ENABLED {
        return (f(), Usage::UNMEASURED);
    }
    let base = sp() & !7;
    let floor = stack_floor().unwrap_or(base.saturating_sub(depth));
    let lo = base.saturating_sub(depth).max(floor).next_multiple_of(8);
    if lo + 1024 >= base {
        return (f(), Usage::UNMEASURED);
    }
    // The meter is pushed first: the push may allocate, deep, and must not
    // dirty the painted region.
    METERS.with(|m| {
        m.borrow_mut().push(Meter {
            base,
            lo,
            high: 0,
            in_kernel: 0,
        });
    });
    let outer = TOP.replace((lo, base));
    // SAFETY: lo is 8-aligned, inside this thread's stack above its guard.
    unsafe { paint_from(lo) };
    let r = f();
    // SAFETY: as above; base is this frame's stack pointer.
    let dirty = unsafe { lowest_dirty(lo, base) };
    TOP.set(outer);
    let meter = METERS.with(|m| m.borrow_mut().pop());
    let high = meter.map_or(0, |m| m.high);
    let bytes = high.max(base - dirty);
    (
        r,
        Usage {
            bytes,
            measured: true,
            at_least: bytes >= base - lo,
        },
    )
}

/// Runs simulated-kernel code `f` called from kext code (a KPI, the
/// original vnode op): its stack use is not the kext's.
pub fn kernel_section<R>(f: impl FnOnce() -> R) -> R {
    let _scope = KernelScope::enter();
    f()
}

/// While alive, the thread runs simulated-kernel code called from kext code
/// (a KPI, the original vnode op): the kext's depth is taken when it is
/// created, and the stack below is painted again when it is dropped.
///
/// Two words (no `Option`s), so it lives in registers: every KPI makes one.
#[derive(Debug)]
pub struct KernelScope {
    /// Index of the meter whose nesting it counted ([`KernelScope::NONE`]:
    /// none).
    meter: usize,
    /// Whether it is the outermost kernel section of that meter (then the
    /// stack below is painted again when it ends).
    outer: bool,
}

impl KernelScope {
    /// `meter` of a scope no meter counted.
    const NONE: usize = usize::MAX;
    /// A scope no meter counted: nothing to undo.
    const UNCOUNTED: KernelScope = KernelScope {
        meter: KernelScope::NONE,
        outer: false,
    };

    /// Enters kernel code at the current stack pointer.
    #[inline(always)]
    pub fn enter() -> KernelScope {
        if !ENABLED {
            return KernelScope::UNCOUNTED;
        }
        let here = sp() & !7;
        // Scanned before anything else runs below this frame.
        let (lo, base) = TOP.get();
        if base == 0 {
            // No meter on this thread (the meter is off, or a KPI called
            // outside kext code): nothing to count or paint again.
            return KernelScope::UNCOUNTED;
        }
        let so_far = (lo < here && here < base).then(|| {
            // SAFETY: lo is the innermost meter's painted floor; here is at
            // most the stack pointer.
            let dirty = unsafe { lowest_dirty(lo, here) };
            // The kext's deepest point so far: its frames down to here, and
            // anything it called before that went deeper.
            (base - here).max(base - dirty)
        });
        KernelScope::count_in(lo, base, so_far)
    }

    /// `enter`'s bookkeeping on the innermost meter, out of line: without a
    /// meter on the thread (benchmarks; any KPI called outside kext code)
    /// every KPI then compiles to a load and a branch, without this part's
    /// registers and stack. Its frame is below the scanned point.
    #[cold]
    #[inline(never)]
    fn count_in(lo: usize, base: usize, so_far: Option<usize>) -> KernelScope {
        let state = METERS.with(|m| {
            let mut m = m.borrow_mut();
            let index = m.len().checked_sub(1)?;
            let top = m.get_mut(index)?;
            top.in_kernel += 1;
            let outer = top.in_kernel == 1 && top.lo == lo && top.base == base;
            let so_far = so_far.filter(|_| outer);
            if let Some(d) = so_far {
                top.high = top.high.max(d);
            }
            Some((index, so_far.is_some()))
        });
        let Some((meter, outer)) = state else {
            return KernelScope::UNCOUNTED;
        };
        KernelScope { meter, outer }
    }
}

impl Drop for KernelScope {
    #[inline(always)]
    fn drop(&mut self) {
        if self.meter == KernelScope::NONE {
            return;
        }
        let lo = KernelScope::count_out(self.meter);
        if let (Some(lo), true) = (lo, self.outer) {
            // SAFETY: the kernel's run below this frame is dead now; paint
            // it again so the kext's later use is seen on its own. Here, in
            // the frame the scope was entered in, not in `count_out`'s.
            unsafe { paint_from(lo) };
        }
    }
}

impl KernelScope {
    /// `drop`'s bookkeeping for a scope a meter counted, out of line (see
    /// `count_in`); the innermost meter's painted floor.
    #[cold]
    #[inline(never)]
    fn count_out(index: usize) -> Option<usize> {
        METERS.with(|m| {
            let mut m = m.borrow_mut();
            let top = m.get_mut(index)?;
            top.in_kernel = top.in_kernel.saturating_sub(1);
            Some(top.lo)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uses about N bytes of stack.
    #[inline(never)]
    fn use_stack<const N: usize>() -> u8 {
        let mut buf = [0u8; N];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        std::hint::black_box(&mut buf);
        buf[N / 2]
    }

    #[test]
    fn the_meter_sees_a_deep_frame_and_not_a_shallow_one() {
        if !ENABLED {
            return;
        }
        let (_, deep) = measure(8192, || std::hint::black_box(use_stack::<6000>()));
        assert!(deep.measured);
        assert!(deep.bytes >= 6000, "{deep:?}");
        let (_, shallow) = measure(8192, || std::hint::black_box(1 + 1));
        assert!(shallow.bytes < 512, "{shallow:?}");
    }

    #[test]
    fn a_use_deeper_than_the_painting_reads_as_at_least_its_depth() {
        if !ENABLED {
            return;
        }
        let depth = paint_for(HOOK_BUDGET);
        let (_, u) = measure(depth, || std::hint::black_box(use_stack::<6000>()));
        assert!(u.at_least, "{u:?}");
        assert!(u.bytes + 8 >= depth, "{u:?}");
        assert!(
            u.bytes > HOOK_BUDGET + SIM_SLACK,
            "still past the budget: {u:?}"
        );
        let (_, u) = measure(depth, || std::hint::black_box(use_stack::<256>()));
        assert!(!u.at_least && u.bytes < depth, "{u:?}");
    }

    #[test]
    fn kernel_sections_are_not_counted_against_the_kext() {
        if !ENABLED {
            return;
        }
        let (_, u) = measure(8192, || {
            kernel_section(|| std::hint::black_box(use_stack::<6000>()))
        });
        assert!(
            u.bytes < 1024,
            "the kernel's 6000 bytes were counted: {u:?}"
        );
        // Kext use after the kernel section is still seen.
        let (_, u) = measure(8192, || {
            kernel_section(|| std::hint::black_box(use_stack::<6000>()));
            std::hint::black_box(use_stack::<3000>())
        });
        assert!((3000..6000).contains(&u.bytes), "{u:?}");
    }

    #[test]
    fn the_budgets_are_those_of_the_static_check() {
        let tsv = include_str!("../../kext-shim/stack.tsv");
        let budget = |name: &str| {
            tsv.lines()
                .map(|l| l.split('\t').collect::<Vec<_>>())
                .find(|c| c.len() == 4 && c[0] == "entry" && c[1] == name)
                .map(|c| c[2].parse::<usize>().unwrap())
                .unwrap()
        };
        assert_eq!(budget("mt_vnop_pagein_hook"), HOOK_BUDGET);
        assert_eq!(budget("mt_mac_file_check_mmap"), HOOK_BUDGET);
        assert_eq!(budget("mt_kmod_start"), ENTRY_BUDGET);
        assert_eq!(budget("mt_sysctl_events"), ENTRY_BUDGET);
    }
}
