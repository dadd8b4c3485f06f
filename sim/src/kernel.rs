//! The booted kernel: configuration, global state the KPIs reach, thread and
//! CPU identity, violations, the log and the ground-truth trace.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::arena::{Arena, Owner};
use crate::context::{self, ThreadIdentity};
use crate::kauth::Kauth;
use crate::kext::KextSlot;
use crate::locks::Locks;
use crate::mac::Mac;
use crate::sysctl::Sysctl;
use crate::vfs::Vfs;
use crate::violation::{Violation, ViolationPolicy};
use crate::vm::Procs;
use crate::{lock, read, write};

/// XNU releases the simulator models: they differ in the vnode-op descriptor
/// list (so `vdesc_offset`s differ) and in where `v_op` sits in the vnode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// macOS 10.15-era layout (modelled: `v_op` one pointer earlier than 15.x).
    Catalina,
    /// macOS 15.x (xnu-11417): `v_op` at 208.
    Sequoia,
}

impl Release {
    /// Offset of `v_op` in `struct vnode` for this release.
    pub fn v_op_offset(self) -> usize {
        match self {
            Release::Catalina => 200,
            Release::Sequoia => 208,
        }
    }
}

/// Machines the simulator models: page size, timebase and disk, as XNU
/// sizes its fault clusters for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// x86_64 with an SSD: 4 KiB pages, ticks are nanoseconds, pre-heat
    /// 16 KiB..128 KiB.
    IntelSsd,
    /// x86_64 with a spinning disk: 4 KiB pages, pre-heat 32 KiB..1 MiB.
    IntelHdd,
    /// arm64 (Apple silicon): 16 KiB pages (`ARM_PGSHIFT` 14,
    /// osfmk/arm64/proc_reg.h, xnu-11417.101.15), the 125/3 timebase, an
    /// SSD, so a first fault reads one page.
    AppleSilicon,
}

impl Config {
    /// The default configuration on `platform`.
    pub fn for_platform(platform: Platform) -> Config {
        let (page_size, timebase, ssd) = match platform {
            Platform::IntelSsd => (4096, (1, 1), true),
            Platform::IntelHdd => (4096, (1, 1), false),
            Platform::AppleSilicon => (16384, (125, 3), true),
        };
        Config {
            page_size,
            timebase,
            ssd,
            ..Config::default()
        }
    }
}

/// Boot parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// Vnode layout and descriptor list.
    pub release: Release,
    /// Overrides the release's `v_op` offset (must be 8-aligned, 104..=248).
    pub v_op_offset: Option<usize>,
    /// Simulated CPUs (`cpu_number()` returns 0..cpus).
    pub cpus: u32,
    /// VM page size (`PAGE_SIZE`).
    pub page_size: u64,
    /// The paging device is an SSD: `vm_object_cluster_size` halves the
    /// minimum pre-heat and divides the maximum by 8.
    pub ssd: bool,
    /// `mach_absolute_time` units: ns = ticks * numer / denom.
    pub timebase: (u32, u32),
    /// Seed for `read_random` and CPU placement.
    pub seed: u64,
    /// Bytes of kernel memory.
    pub arena_size: usize,
    /// Delay between reading a kauth callback and calling it (widens the
    /// documented unload race for tests).
    pub kauth_race_delay: Duration,
    /// What to do with violations.
    pub policy: ViolationPolicy,
    /// Echo IOLog lines to stderr.
    pub echo_log: bool,
    /// Moves `v_kusecount`/`v_usecount`/`v_iocount` (kept together, 4 bytes
    /// apart) from 92 to this offset: a release whose counts are not where
    /// 10.12..15 keep them, so a kext's offset validation must fail (must be
    /// 4-aligned, below 244 and clear of `v_op`).
    pub counts_offset: Option<usize>,
    /// `vfs_fsadd` fails with this errno (a kernel that refuses the kext's
    /// filesystem), for start-failure tests.
    pub fsadd_error: Option<i32>,
    /// `mac_policy_register` fails with this errno, as XNU's does for a
    /// policy name already registered (EEXIST) or a full policy table
    /// (ENOMEM) (security/mac_base.c, xnu-11417.121.6): start-failure tests.
    pub mac_register_error: Option<i32>,
    /// Trace events kept (the oldest go first), so long runs stay bounded.
    pub trace_capacity: usize,
    /// Measure every hook's and callout's kext stack against its budget
    /// (`stack::measure`). On by default; it paints the budget and a little
    /// more (`stack::paint_for`: 2.5 KiB for a hook) around each entry and
    /// again after each KPI the kext calls, so benchmarks of the kext's own
    /// cost turn it off. Kmod start/stop are always measured.
    pub stack_meter: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            release: Release::Sequoia,
            v_op_offset: None,
            cpus: 4,
            // Apple silicon: the page size goes with the arm64 timebase.
            page_size: 16384,
            ssd: true,
            timebase: (125, 3),
            seed: 0x6d61_7074_7261_6365,
            arena_size: 64 << 20,
            kauth_race_delay: Duration::ZERO,
            policy: ViolationPolicy::Panic,
            echo_log: false,
            counts_offset: None,
            fsadd_error: None,
            mac_register_error: None,
            trace_capacity: 1 << 20,
            stack_meter: true,
        }
    }
}

/// What reached a filesystem's original operation: the ground truth a kext's
/// records are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Order of arrival.
    pub seq: u64,
    /// Which operation.
    pub op: TraceOp,
    /// Calling process.
    pub pid: i32,
    /// Calling thread.
    pub tid: u64,
    /// Vnode address.
    pub vnode: u64,
    /// Vnode id at the time.
    pub vid: u32,
    /// Path of the file.
    pub path: String,
    /// PAGEIN: file offset.
    pub offset: i64,
    /// PAGEIN: bytes.
    pub size: u64,
    /// MMAP: `a_fflags` (the pager protection); FILE_CHECK_MMAP: the
    /// requested prot; MMAP_CHECK: `a_flags` (PROT_*); PAGEIN: `a_flags`
    /// (UPL_*).
    pub prot: i32,
    /// FILE_CHECK_MMAP: maxprot after the MAC policies; 0 otherwise.
    pub maxprot: i32,
}

/// Kinds of trace events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceOp {
    /// mac_file_check_mmap ran (mmap(2) only).
    FileCheckMmap,
    /// VNOP_MMAP_CHECK reached the filesystem.
    MmapCheck,
    /// VNOP_MMAP reached the filesystem.
    Mmap,
    /// VNOP_PAGEIN reached the filesystem.
    Pagein,
    /// VNOP_MNOMAP reached the filesystem.
    Mnomap,
    /// mac_vnode_notify_open ran: an open took its usecount (`prot` is the
    /// open's fmode).
    Open,
    /// VNOP_CLOSE reached the filesystem (`prot` is `a_fflag`); the open's
    /// usecount goes right after.
    Close,
}

/// The simulated kernel.
pub struct Kernel {
    /// Boot generation (distinguishes thread identities across boots).
    pub boot: u64,
    /// Boot parameters.
    pub config: Config,
    /// Kernel memory.
    pub arena: Arena,
    /// `monotonic_ns()` at boot.
    started_ns: u64,
    policy: Mutex<ViolationPolicy>,
    violations: Mutex<Vec<Violation>>,
    log: Mutex<Vec<String>>,
    trace: Mutex<VecDeque<TraceEvent>>,
    trace_seq: AtomicU64,
    threads: RwLock<HashMap<usize, u64>>,
    next_tid: AtomicU64,
    cpu_tick: AtomicU32,
    rng: Mutex<fastrand::Rng>,
    /// Pending injected copyout faults.
    pub copyout_faults: AtomicU32,
    /// VFS: descriptors, filesystems, mounts, vnodes.
    pub vfs: Vfs,
    /// Processes.
    pub procs: Procs,
    /// kauth scopes.
    pub kauth: Kauth,
    /// The kext's text, data and stack ranges (kernel addresses too).
    pub kext_image: crate::kext_image::KextImage,
    /// MAC policies.
    pub mac: Mac,
    /// The sysctl tree.
    pub sysctl: Sysctl,
    /// lck_* objects.
    pub locks: Locks,
    /// The loaded kext.
    pub kext: KextSlot,
    /// UPLs handed to VNOP_PAGEIN and not yet released.
    pub upls: crate::upl::Upls,
    /// Set while `panic()` is being reported.
    pub panicked: AtomicBool,
    /// Kext calls threads are inside right now (hooks, callbacks, handlers),
    /// one count per thread.
    in_kext: crate::in_kext::InKext,
}

static BOOTS: AtomicU64 = AtomicU64::new(1);
static CURRENT: RwLock<Option<Arc<Kernel>>> = RwLock::new(None);
/// Boot id of the kernel in `CURRENT` (0: none). Written under its write
/// lock; read without any lock by the per-thread cache, so a KPI call costs
/// one load of a cache line that only boot and shutdown write.
static CURRENT_BOOT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's handle to the booted kernel, valid while its boot id is
    /// `CURRENT_BOOT`: no global lock and no shared refcount per KPI call.
    static CACHED: Cell<Option<Arc<Kernel>>> = const { Cell::new(None) };
}

/// Boot id of the booted kernel (0: none), one load: for a KPI's
/// per-thread memo of an answer given in that boot.
#[inline(always)]
pub fn booted_id() -> u64 {
    CURRENT_BOOT.load(Ordering::Acquire)
}

/// The booted kernel the KPIs act on.
pub fn current() -> Option<Arc<Kernel>> {
    read(&CURRENT).clone()
}

/// The booted kernel, or a loud abort: a KPI was called with no kernel.
pub fn current_or_abort(kpi: &str) -> Arc<Kernel> {
    current().unwrap_or_else(|| no_kernel(kpi))
}

#[cold]
fn no_kernel(kpi: &str) -> ! {
    eprintln!("maptrace-sim: {kpi} called while no simulated kernel is booted");
    std::process::abort();
}

/// Runs `f` on the booted kernel (a loud abort when none is), through the
/// thread's cached handle when it is still the booted one. A reboot or a
/// shutdown changes `CURRENT_BOOT`, so a stale handle is never used.
pub fn with_current<R>(kpi: &str, f: impl FnOnce(&Kernel) -> R) -> R {
    // A KPI called from kext code: the kernel's stack use is not the kext's.
    let _scope = crate::stack::KernelScope::enter();
    // Taken out of the cell while `f` runs: a nested KPI call (a callout into
    // the kext) finds the cell empty and takes the slow path, and the handle
    // owned here stays alive whatever that call does to the cell.
    let cached = CACHED.with(Cell::take);
    let booted = CURRENT_BOOT.load(Ordering::Acquire);
    let k = match cached {
        Some(k) if k.boot == booted => k,
        stale => booted_kernel(kpi, stale),
    };
    let r = f(&k);
    CACHED.with(|c| c.set(Some(k)));
    r
}

/// The booted kernel for a thread whose cached handle is missing or of an
/// older boot (dropped here), out of line as [`with_identity_of_kernel`].
#[cold]
#[inline(never)]
fn booted_kernel(kpi: &str, stale: Option<Arc<Kernel>>) -> Arc<Kernel> {
    drop(stale);
    current_or_abort(kpi)
}

/// Runs `f` on the calling thread's identity in the booted kernel. A thread
/// that already has one for the booted kernel (every kext thread: XNU's
/// `cpu_number`, `current_thread` and `proc_selfpid` read the running
/// thread's own fields) needs no kernel handle; any other thread, or no
/// kernel, takes [`with_current`]'s path (a kernel_task identity, or the
/// loud abort).
#[inline(always)]
pub fn with_identity<R>(kpi: &str, f: impl FnOnce(ThreadIdentity) -> R) -> R {
    // A KPI called from kext code, as in `with_current` (taken first, so no
    // frame of ours counts as the kext's).
    let scope = crate::stack::KernelScope::enter();
    let booted = CURRENT_BOOT.load(Ordering::Acquire);
    match context::identity(booted) {
        Some(id) if booted != 0 => f(id),
        _ => {
            drop(scope);
            with_identity_of_kernel(kpi, f)
        }
    }
}

/// [`with_identity`] for a thread without an identity in the booted kernel,
/// out of line: the KPIs' common path then saves no registers for it.
#[cold]
#[inline(never)]
fn with_identity_of_kernel<R>(kpi: &str, f: impl FnOnce(ThreadIdentity) -> R) -> R {
    with_current(kpi, |k| f(k.identity()))
}

/// `thread_tid(addr)` when `addr` is the calling thread's own `thread_t` in
/// the booted kernel (no kernel handle, no thread table); `None` otherwise,
/// for [`Kernel::thread_tid`] to answer.
pub fn own_tid(addr: usize) -> Option<u64> {
    let _scope = crate::stack::KernelScope::enter();
    let booted = CURRENT_BOOT.load(Ordering::Acquire);
    let id = context::identity(booted).filter(|id| booted != 0 && id.thread_addr == addr)?;
    Some(id.tid)
}

/// The timebase of one boot: what `mach_absolute_time` and
/// `absolutetime_to_nanoseconds` need, fixed from boot to shutdown.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    boot: u64,
    started_ns: u64,
    timebase: (u32, u32),
}

thread_local! {
    /// This thread's copy of the booted kernel's [`Clock`] (boot 0: none).
    static CLOCK: Cell<Clock> = const {
        Cell::new(Clock {
            boot: 0,
            started_ns: 0,
            timebase: (1, 1),
        })
    };
}

impl Clock {
    /// `mach_absolute_time()`: monotonic ticks since boot.
    #[inline(always)]
    pub fn abs_time(&self) -> u64 {
        self.ns_to_abs(monotonic_ns().wrapping_sub(self.started_ns))
    }

    /// Ticks in `ns` nanoseconds (rounded down).
    #[inline(always)]
    fn ns_to_abs(&self, ns: u64) -> u64 {
        match self.timebase {
            // The default (arm64) timebase: one product and one division
            // by a constant while `ns * 3` fits (194 years of uptime).
            (125, 3) if ns <= u64::MAX / 3 => ns * 3 / 125,
            (125, 3) => scale(ns, 3, 125),
            (numer, denom) => scale(ns, u64::from(denom), u64::from(numer.max(1))),
        }
    }

    /// `absolutetime_to_nanoseconds()`.
    #[inline(always)]
    pub fn abs_to_ns(&self, abs: u64) -> u64 {
        match self.timebase {
            // As in `ns_to_abs`: `abs * 125` fits for 187 years of ticks.
            (125, 3) if abs <= u64::MAX / 125 => abs * 125 / 3,
            (125, 3) => scale(abs, 125, 3),
            (numer, denom) => scale(abs, u64::from(numer), u64::from(denom.max(1))),
        }
    }
}

/// Runs `f` on the booted kernel's clock: from the thread's copy while its
/// boot is the booted one (the clock KPIs run twice per hook; the timebase
/// never changes during a boot), else through [`with_current`].
#[inline(always)]
pub fn with_clock<R>(kpi: &str, f: impl FnOnce(&Clock) -> R) -> R {
    let _scope = crate::stack::KernelScope::enter();
    let booted = CURRENT_BOOT.load(Ordering::Acquire);
    let mut clock = CLOCK.with(Cell::get);
    if booted == 0 || clock.boot != booted {
        clock = booted_clock(kpi);
    }
    f(&clock)
}

/// The booted kernel's clock, copied to the thread (or the loud abort
/// without a kernel), out of line as [`booted_kernel`]: the clock KPIs'
/// common path then saves no registers for it.
#[cold]
#[inline(never)]
fn booted_clock(kpi: &str) -> Clock {
    with_current(kpi, |k| {
        let clock = k.clock();
        CLOCK.with(|c| c.set(clock));
        clock
    })
}

/// Drops the calling thread's cached kernel handle (the Sim owner's thread
/// at shutdown, so the kernel's memory goes with the `Sim`).
pub fn forget_cached() {
    drop(CACHED.with(Cell::take));
}

impl Kernel {
    /// Boots a kernel and makes it the one the KPIs act on.
    pub fn boot(config: Config) -> Arc<Kernel> {
        let arena = Arena::new(config.arena_size);
        let boot = BOOTS.fetch_add(1, Ordering::Relaxed);
        let vfs = Vfs::new(&config, &arena);
        let k = Arc::new(Kernel {
            boot,
            policy: Mutex::new(config.policy),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config,
            arena,
            started_ns: monotonic_ns(),
            violations: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            trace: Mutex::new(VecDeque::new()),
            trace_seq: AtomicU64::new(0),
            threads: RwLock::new(HashMap::new()),
            next_tid: AtomicU64::new(0x1000),
            cpu_tick: AtomicU32::new(0),
            copyout_faults: AtomicU32::new(0),
            vfs,
            procs: Procs::default(),
            kauth: Kauth::default(),
            kext_image: Default::default(),
            mac: Mac::default(),
            sysctl: Sysctl::default(),
            locks: Locks::default(),
            kext: KextSlot::default(),
            upls: Default::default(),
            panicked: AtomicBool::new(false),
            in_kext: Default::default(),
        });
        k.procs.create_kernel_task(&k);
        let mut cur = write(&CURRENT);
        *cur = Some(Arc::clone(&k));
        CURRENT_BOOT.store(boot, Ordering::Release);
        drop(cur);
        k
    }

    /// Detaches the kernel from the KPIs.
    pub fn shutdown(self: &Arc<Kernel>) {
        let mut cur = write(&CURRENT);
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, self)) {
            CURRENT_BOOT.store(0, Ordering::Release);
            *cur = None;
        }
        drop(cur);
        forget_cached();
    }

    /// Allocates a kernel object filled with poison.
    pub fn kalloc(&self, size: usize, what: &'static str) -> usize {
        self.arena
            .alloc(size, 16, false, Owner::Kernel, what)
            .unwrap_or_else(|| panic!("simulated kernel memory exhausted allocating {what}"))
    }

    /// Allocates a zeroed kernel object.
    pub fn kalloc_zero(&self, size: usize, what: &'static str) -> usize {
        self.arena
            .alloc(size, 16, true, Owner::Kernel, what)
            .unwrap_or_else(|| panic!("simulated kernel memory exhausted allocating {what}"))
    }

    // ------------------------------------------------------------ violations

    /// Records a violation.
    pub fn violation(&self, v: Violation) {
        if self.config.echo_log {
            eprintln!("maptrace-sim: VIOLATION: {v}");
        }
        lock(&self.violations).push(v);
    }

    /// Sets the violation policy.
    pub fn set_policy(&self, p: ViolationPolicy) {
        *lock(&self.policy) = p;
    }

    /// Takes the recorded violations.
    pub fn take_violations(&self) -> Vec<Violation> {
        std::mem::take(&mut *lock(&self.violations))
    }

    /// A safe point: with the `Panic` policy, fails loudly if anything was
    /// recorded.
    pub fn safe_point(&self) {
        if *lock(&self.policy) != ViolationPolicy::Panic {
            return;
        }
        let v = self.take_violations();
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(ToString::to_string).collect();
            panic!(
                "maptrace-sim: a real kernel would have crashed:\n  {}",
                list.join("\n  ")
            );
        }
    }

    // ------------------------------------------------------------ log, trace

    /// Appends one IOLog line.
    pub fn log_line(&self, line: String) {
        if self.config.echo_log {
            eprintln!("IOLog: {line}");
        }
        lock(&self.log).push(line);
    }

    /// All IOLog lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// Records what reached a filesystem.
    pub fn trace(&self, mut ev: TraceEvent) {
        let mut t = lock(&self.trace);
        ev.seq = self.trace_seq.fetch_add(1, Ordering::Relaxed);
        if t.len() >= self.config.trace_capacity {
            t.pop_front();
        }
        if self.config.trace_capacity > 0 {
            t.push_back(ev);
        }
    }

    /// The trace so far.
    pub fn trace_events(&self) -> Vec<TraceEvent> {
        lock(&self.trace).iter().cloned().collect()
    }

    // ------------------------------------------------------------ time

    /// This boot's clock.
    pub fn clock(&self) -> Clock {
        Clock {
            boot: self.boot,
            started_ns: self.started_ns,
            timebase: self.config.timebase,
        }
    }

    /// `mach_absolute_time()`: monotonic ticks since boot.
    pub fn abs_time(&self) -> u64 {
        self.clock().abs_time()
    }

    /// `absolutetime_to_nanoseconds()`.
    pub fn abs_to_ns(&self, abs: u64) -> u64 {
        self.clock().abs_to_ns(abs)
    }

    /// `read_random()`.
    pub fn random_fill(&self, buf: &mut [u8]) {
        let mut rng = lock(&self.rng);
        buf.iter_mut().for_each(|b| *b = rng.u8(..));
    }

    // ------------------------------------------------------------ kext code

    /// Runs kext code (a hook, callback or handler) inside `frame`, counting
    /// the threads that are in kext code.
    /// Its kext part may use `stack::HOOK_BUDGET` bytes of stack.
    pub fn kext_call<R>(&self, frame: context::Frame, f: impl FnOnce() -> R) -> R {
        self.kext_call_budget(frame, crate::stack::HOOK_BUDGET, f)
    }

    /// As [`Kernel::kext_call`], for an entry with a larger stack budget
    /// (kmod start/stop, sysctl handlers: `stack::ENTRY_BUDGET`).
    pub fn kext_call_budget<R>(
        &self,
        frame: context::Frame,
        budget: usize,
        f: impl FnOnce() -> R,
    ) -> R {
        let inside = self.in_kext.enter(self.boot);
        self.kext_image.note_stack(self.boot);
        let (r, used) = if self.config.stack_meter {
            let depth = crate::stack::paint_for(budget);
            let (r, used) = crate::stack::measure(depth, || context::with_frame(frame, f));
            (r, Some(used))
        } else {
            (context::with_frame(frame, f), None)
        };
        self.in_kext.leave(inside);
        if let Some(used) = used {
            self.check_stack(frame, budget, used);
        }
        r
    }

    /// Reports an entry whose kext part went past its stack budget
    /// (KERNEL_STACK_SIZE is 16 KiB: osfmk/mach/i386/vm_param.h,
    /// xnu-11417.121.6; budgets from kext-shim/stack.tsv).
    pub fn check_stack(&self, frame: context::Frame, budget: usize, used: crate::stack::Usage) {
        if used.measured && used.bytes > budget + crate::stack::SIM_SLACK {
            let rule = if budget > crate::stack::HOOK_BUDGET {
                "stack.entry_budget"
            } else {
                "stack.hook_budget"
            };
            self.violation(Violation::Contract {
                rule,
                detail: format!(
                    "{frame:?} used {}{} bytes of kext stack, budget {budget} (+{} sim slack)",
                    if used.at_least { "at least " } else { "" },
                    used.bytes,
                    crate::stack::SIM_SLACK
                ),
            });
        }
    }

    /// Threads executing kext code right now.
    pub fn threads_in_kext(&self) -> usize {
        self.in_kext.total()
    }

    // ------------------------------------------------------------ identity

    /// The current thread's identity, creating a kernel_task thread for a
    /// thread that has none.
    pub fn identity(&self) -> ThreadIdentity {
        if let Some(id) = context::identity(self.boot) {
            return id;
        }
        let id = self.new_thread_identity(0);
        context::set_identity(Some(id));
        id
    }

    /// A fresh `thread_t` for `pid` on a CPU chosen round-robin.
    pub fn new_thread_identity(&self, pid: i32) -> ThreadIdentity {
        let tid = self.next_tid.fetch_add(1, Ordering::Relaxed);
        let addr = self.kalloc(256, "thread");
        write(&self.threads).insert(addr, tid);
        let cpu = self.cpu_tick.fetch_add(1, Ordering::Relaxed) % self.config.cpus.max(1);
        ThreadIdentity {
            boot: self.boot,
            thread_addr: addr,
            tid,
            pid,
            cpu,
        }
    }

    /// Frees a `thread_t` whose thread ended (exec's old thread).
    pub fn retire_thread(&self, addr: usize) {
        if write(&self.threads).remove(&addr).is_some() {
            self.arena.free(addr);
        }
    }

    /// `thread_tid()` of a `thread_t`.
    pub fn thread_tid(&self, addr: usize) -> Option<u64> {
        // Almost always the caller's own thread_t: no shared lock then.
        if let Some(id) = context::identity(self.boot).filter(|id| id.thread_addr == addr) {
            return Some(id.tid);
        }
        read(&self.threads).get(&addr).copied()
    }

    /// Moves the current thread to another simulated CPU (when there is
    /// another), as the scheduler may between two operations or when a
    /// thread that blocked runs again (`thread_setrun` picks a processor,
    /// osfmk/kern/sched_prim.c, xnu-11417.121.6).
    ///
    /// Each thread rotates through the CPUs on its own: any `cpus`
    /// consecutive migrations of a thread visit every CPU, whatever other
    /// threads do meanwhile, so every shard of a per-CPU ring sees a thread
    /// that keeps running. (One tick shared by all threads let two
    /// alternating threads each see only every other CPU.)
    pub fn migrate(&self) {
        if let Some(mut id) = context::identity(self.boot) {
            id.cpu = (id.cpu + 1) % self.config.cpus.max(1);
            context::set_identity(Some(id));
        }
    }
}

/// The host's monotonic clock in ns: one `clock_gettime`, without
/// `Instant`'s checked `Duration` arithmetic on every simulated clock read.
#[cfg(unix)]
#[inline]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(not(unix))]
fn monotonic_ns() -> u64 {
    use std::time::Instant;
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// `floor(x * mul / div)` in 64-bit arithmetic: with `x = q * div + r`, it is
/// `q * mul + r * mul / div` (exact, and `r * mul < div * mul` cannot
/// overflow for 32-bit timebase terms), so no 128-bit division per call.
#[inline(always)]
fn scale(x: u64, mul: u64, div: u64) -> u64 {
    (x / div)
        .wrapping_mul(mul)
        .wrapping_add(x % div * mul / div)
}

#[cfg(test)]
mod tests {
    use super::{Clock, scale};

    #[test]
    fn the_default_timebase_converts_as_128_bit_arithmetic_on_both_paths() {
        let clock = Clock {
            boot: 1,
            started_ns: 0,
            timebase: (125, 3),
        };
        // Each side of the single-division paths' bounds, and the ends.
        let xs = [
            0,
            1,
            124,
            125,
            1_000_000_007,
            u64::MAX / 125 - 1,
            u64::MAX / 125,
            u64::MAX / 125 + 1,
            u64::MAX / 3 - 1,
            u64::MAX / 3,
            u64::MAX / 3 + 1,
            u64::MAX,
        ];
        let want = |x: u64, mul: u128, div: u128| (u128::from(x) * mul / div) as u64;
        for x in xs {
            assert_eq!(clock.ns_to_abs(x), want(x, 3, 125), "{x} ns");
            assert_eq!(clock.abs_to_ns(x), want(x, 125, 3), "{x} ticks");
        }
    }

    #[test]
    fn scale_matches_128_bit_arithmetic() {
        let terms = [
            (125, 3),
            (3, 125),
            (1, 1),
            (1_000_000_000, 24_000_000),
            (u32::MAX as u64, 7),
        ];
        let xs = [
            0,
            1,
            2,
            124,
            125,
            126,
            1 << 32,
            123_456_789_012,
            u64::MAX / 1_000_000_000,
        ];
        for (mul, div) in terms {
            for x in xs {
                let want = (u128::from(x) * u128::from(mul) / u128::from(div)) as u64;
                assert_eq!(scale(x, mul, div), want, "{x} * {mul} / {div}");
            }
        }
    }
}
