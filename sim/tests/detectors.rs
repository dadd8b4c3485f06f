//! The detectors: a fake kext made of Rust `extern "C"` functions does what a
//! real kernel punishes, and the simulator must say so loudly.

mod kpi;

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use kpi::*;
use maptrace_sim::{
    Config, Cred, KextError, Sim, Violation, ViolationPolicy, map_flags, prot, xnu,
};

const PS: u64 = 4096;

// What the fake kext does, as bits.
const PATCH: u32 = 1; // hook VNOP_PAGEIN and VNOP_MMAP of the file's vector
const RESTORE: u32 = 2; // restore the entries at stop
const SLEEP_IN_PAGEIN: u32 = 4;
const ALLOC_IN_PAGEIN: u32 = 8;
const SLEEP_IN_MMAP: u32 = 16;
const LEAK: u32 = 32; // IOMalloc at start, never freed
const REFUSE_STOP: u32 = 64;
const SPIN_SYSCTL: u32 = 128; // a sysctl handler that copies out under a spinlock
const HOLD_IOCOUNT: u32 = 256; // vnode_getwithref at start, no put
const KAUTH: u32 = 512; // a kauth listener, unlistened at stop
const FAIL_PAGEIN: u32 = 1024; // the pagein hook returns PAGEIN_ERR, original not called
const ABORT_UPL: u32 = 2048; // ... after aborting its UPL at ABORT_OFFSET

static MODE: AtomicU32 = AtomicU32::new(0);
static VNODE: AtomicUsize = AtomicUsize::new(0);
static V_OP_OFFSET: AtomicUsize = AtomicUsize::new(0);
static ORIG_PAGEIN: AtomicUsize = AtomicUsize::new(0);
static ORIG_MMAP: AtomicUsize = AtomicUsize::new(0);
static LEAKED: AtomicUsize = AtomicUsize::new(0);
static GRP: AtomicUsize = AtomicUsize::new(0);
static SPIN: AtomicUsize = AtomicUsize::new(0);
static LISTENER: AtomicUsize = AtomicUsize::new(0);
static KAUTH_CALLS: AtomicU32 = AtomicU32::new(0);
static PAGEIN_ERR: AtomicI32 = AtomicI32::new(0);
static ABORT_OFFSET: AtomicU32 = AtomicU32::new(0);
static mut OID: xnu::sysctl_oid = zero_oid();

const fn zero_oid() -> xnu::sysctl_oid {
    xnu::sysctl_oid {
        oid_parent: std::ptr::null_mut(),
        oid_link: xnu::sysctl_oid__bindgen_ty_1 {
            sle_next: std::ptr::null_mut(),
        },
        oid_number: 0,
        oid_kind: 0,
        oid_arg1: std::ptr::null_mut(),
        oid_arg2: 0,
        oid_name: std::ptr::null(),
        oid_handler: None,
        oid_fmt: std::ptr::null(),
        oid_descr: std::ptr::null(),
        oid_version: 0,
        oid_refcnt: 0,
    }
}

fn mode(bit: u32) -> bool {
    MODE.load(Ordering::Relaxed) & bit != 0
}

/// The vector slot of `desc` in the hooked vnode's vector.
fn slot(desc: *const xnu::vnodeop_desc) -> &'static AtomicUsize {
    let vp = VNODE.load(Ordering::Relaxed);
    // SAFETY: the test stored a live vnode address and its v_op offset.
    let vector = unsafe { *((vp + V_OP_OFFSET.load(Ordering::Relaxed)) as *const usize) };
    // SAFETY: exported descriptor.
    let off = unsafe { (*desc).vdesc_offset } as usize;
    // SAFETY: the vector has an entry at every descriptor offset.
    unsafe { &*((vector + off * 8) as *const AtomicUsize) }
}

fn call(orig: &AtomicUsize, args: *mut c_void) -> c_int {
    // SAFETY: the saved original vnode operation.
    let f: extern "C" fn(*mut c_void) -> c_int =
        unsafe { std::mem::transmute(orig.load(Ordering::Relaxed)) };
    f(args)
}

extern "C" fn hook_pagein(args: *mut c_void) -> c_int {
    if mode(SLEEP_IN_PAGEIN) {
        // SAFETY: KPI call.
        unsafe { IOSleep(1) };
    }
    if mode(ALLOC_IN_PAGEIN) {
        // SAFETY: KPI call.
        let p = unsafe { IOMalloc(16) };
        // SAFETY: freeing what was just allocated.
        unsafe { IOFree(p, 16) };
    }
    if mode(FAIL_PAGEIN) {
        // SAFETY: dispatched with a vnop_pagein_args block.
        let a = unsafe { &*args.cast::<xnu::vnop_pagein_args>() };
        if mode(ABORT_UPL) {
            let offset = a.a_pl_offset + ABORT_OFFSET.load(Ordering::Relaxed);
            // SAFETY: a KPI call on the kernel's UPL (FREE_ON_EMPTY | ERROR).
            unsafe { ubc_upl_abort_range(a.a_pl, offset, a.a_size as u32, 0xc) };
        }
        return PAGEIN_ERR.load(Ordering::Relaxed);
    }
    call(&ORIG_PAGEIN, args)
}

extern "C" fn hook_mmap(args: *mut c_void) -> c_int {
    if mode(SLEEP_IN_MMAP) {
        // SAFETY: KPI call (mmap paths are sleepable).
        unsafe { IOSleep(1) };
    }
    call(&ORIG_MMAP, args)
}

extern "C" fn spin_handler(
    _o: *mut xnu::sysctl_oid,
    _a1: *mut c_void,
    _a2: c_int,
    req: *mut xnu::sysctl_req,
) -> c_int {
    let data = [7u8; 16];
    let spin = SPIN.load(Ordering::Relaxed) as *mut xnu::lck_spin_t;
    // SAFETY: KPI calls on the lock this kext allocated; req is the kernel's.
    unsafe { lck_spin_lock(spin) };
    // SAFETY: the kernel's request.
    let out = unsafe { (*req).oldfunc }.expect("oldfunc");
    // SAFETY: SYSCTL_OUT through the request's oldfunc.
    let err = unsafe { out(req, data.as_ptr().cast(), data.len()) };
    // SAFETY: as above.
    unsafe { lck_spin_unlock(spin) };
    err
}

extern "C" fn kauth_cb(
    _c: xnu::kauth_cred_t,
    _i: *mut c_void,
    _a: c_int,
    _arg0: usize,
    _arg1: usize,
    _arg2: usize,
    _arg3: usize,
) -> c_int {
    KAUTH_CALLS.fetch_add(1, Ordering::Relaxed);
    xnu::KAUTH_RESULT_DEFER as c_int
}

extern "C" fn start(_ki: *mut xnu::kmod_info, _d: *mut c_void) -> xnu::kern_return_t {
    if mode(PATCH) {
        let p = slot(&raw const vnop_pagein_desc);
        ORIG_PAGEIN.store(
            p.swap(hook_pagein as *const () as usize, Ordering::AcqRel),
            Ordering::Relaxed,
        );
        let m = slot(&raw const vnop_mmap_desc);
        ORIG_MMAP.store(
            m.swap(hook_mmap as *const () as usize, Ordering::AcqRel),
            Ordering::Relaxed,
        );
    }
    if mode(LEAK) {
        // SAFETY: KPI call.
        LEAKED.store(unsafe { IOMalloc(64) } as usize, Ordering::Relaxed);
    }
    if mode(SPIN_SYSCTL) {
        // SAFETY: KPI call.
        let g = unsafe { lck_grp_alloc_init(c"fake".as_ptr(), std::ptr::null_mut()) };
        GRP.store(g as usize, Ordering::Relaxed);
        // SAFETY: KPI call with the group just made.
        let l = unsafe { lck_spin_alloc_init(g, std::ptr::null_mut()) };
        SPIN.store(l as usize, Ordering::Relaxed);
        let oid = xnu::sysctl_oid {
            oid_parent: &raw mut sysctl__kern_children,
            oid_number: xnu::OID_AUTO,
            oid_kind: (xnu::CTLTYPE_OPAQUE | xnu::CTLFLAG_RD | xnu::CTLFLAG_LOCKED) as c_int,
            oid_name: c"fake_spin".as_ptr(),
            oid_handler: Some(spin_handler),
            oid_version: xnu::SYSCTL_OID_VERSION as c_int,
            ..zero_oid()
        };
        let o = &raw mut OID;
        // SAFETY: this kext's OID static; nothing else touches it now.
        unsafe { o.write(oid) };
        // SAFETY: KPI call with a complete OID.
        unsafe { sysctl_register_oid(o) };
    }
    if mode(HOLD_IOCOUNT) {
        // SAFETY: KPI call on a live vnode.
        unsafe { vnode_getwithref(VNODE.load(Ordering::Relaxed) as xnu::vnode_t) };
    }
    if mode(KAUTH) {
        // SAFETY: KPI call.
        let l = unsafe {
            kauth_listen_scope(
                c"com.apple.kauth.vnode".as_ptr(),
                Some(kauth_cb),
                std::ptr::null_mut(),
            )
        };
        LISTENER.store(l as usize, Ordering::Relaxed);
    }
    0
}

extern "C" fn stop(_ki: *mut xnu::kmod_info, _d: *mut c_void) -> xnu::kern_return_t {
    if mode(REFUSE_STOP) {
        return xnu::KERN_FAILURE as xnu::kern_return_t;
    }
    if mode(PATCH) && mode(RESTORE) {
        slot(&raw const vnop_pagein_desc)
            .store(ORIG_PAGEIN.load(Ordering::Relaxed), Ordering::Release);
        slot(&raw const vnop_mmap_desc).store(ORIG_MMAP.load(Ordering::Relaxed), Ordering::Release);
    }
    if mode(SPIN_SYSCTL) {
        let o = &raw mut OID;
        // SAFETY: undoing what start did.
        unsafe { sysctl_unregister_oid(o) };
        let grp = GRP.load(Ordering::Relaxed) as *mut xnu::lck_grp_t;
        // SAFETY: the lock and group from start.
        unsafe { lck_spin_free(SPIN.load(Ordering::Relaxed) as *mut _, grp) };
        // SAFETY: as above.
        unsafe { lck_grp_free(grp) };
    }
    if mode(KAUTH) {
        // SAFETY: KPI call with the listener from start.
        unsafe { kauth_unlisten_scope(LISTENER.load(Ordering::Relaxed) as xnu::kauth_listener_t) };
    }
    0
}

fn kmod() -> *mut xnu::kmod_info {
    // SAFETY: kmod_info is plain data; all-zero is a valid value (None routines).
    let mut ki: xnu::kmod_info = unsafe { std::mem::zeroed() };
    ki.start = Some(start);
    ki.stop = Some(stop);
    Box::into_raw(Box::new(ki))
}

/// A simulator (collecting violations) with one mapped file, and the fake
/// kext loaded in `m`.
fn setup(m: u32, config: Config) -> (Sim, maptrace_sim::Proc, u64) {
    let sim = Sim::boot(Config {
        policy: ViolationPolicy::Collect,
        ..config
    });
    sim.mount("hfs", "/").unwrap();
    sim.add_file("/db", 32 * PS).unwrap();
    let p = sim.spawn("reader", 501);
    let fd = p.open("/db").unwrap();
    VNODE.store(sim.vnode_addr("/db").unwrap() as usize, Ordering::Relaxed);
    V_OP_OFFSET.store(sim.v_op_offset(), Ordering::Relaxed);
    MODE.store(m, Ordering::Relaxed);
    // SAFETY: a leaked kmod_info with this file's start/stop.
    unsafe { sim.load_kext(kmod()) }.unwrap();
    let a = p
        .mmap(fd, 32 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    (sim, p, a)
}

fn has(v: &[Violation], f: impl Fn(&Violation) -> bool) -> bool {
    v.iter().any(f)
}

#[test]
fn a_hook_left_in_a_vector_after_unload_is_caught_at_the_next_dispatch() {
    let (sim, p, a) = setup(PATCH, Config::default());
    sim.unload_kext().unwrap();
    assert!(sim.take_violations().is_empty(), "nothing is called yet");
    // The kernel does not crash in the simulator: the original runs instead.
    assert_eq!(p.touch(a, 1).unwrap().pageins, 1);
    let v = sim.take_violations();
    assert!(
        has(
            &v,
            |x| matches!(x, Violation::CallAfterUnload { what, .. } if what.contains("vnop_pagein"))
        ),
        "{v:?}"
    );
}

#[test]
fn restored_vectors_are_quiet() {
    let (sim, p, a) = setup(PATCH | RESTORE, Config::default());
    p.touch(a, 1).unwrap();
    sim.unload_kext().unwrap();
    p.touch(a + PS * 8, 1).unwrap();
    p.munmap(a).unwrap();
    assert_eq!(sim.take_violations(), vec![]);
}

#[test]
#[should_panic(expected = "call into unloaded kext through vnop_pagein")]
fn with_the_default_policy_the_test_fails_loudly() {
    let (sim, p, a) = setup(PATCH, Config::default());
    sim.set_violation_policy(ViolationPolicy::Panic);
    sim.unload_kext().unwrap();
    let _ = p.touch(a, 1);
}

#[test]
fn sleeping_or_allocating_in_a_pagein_hook_is_caught_but_not_in_mmap() {
    let (sim, p, a) = setup(PATCH | RESTORE | SLEEP_IN_MMAP, Config::default());
    let fd = p.open("/db").unwrap();
    p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0).unwrap();
    p.touch(a, 1).unwrap();
    assert_eq!(
        sim.take_violations(),
        vec![],
        "mmap hooks may sleep; a plain pagein hook is fine"
    );
    MODE.store(
        PATCH | RESTORE | SLEEP_IN_PAGEIN | ALLOC_IN_PAGEIN,
        Ordering::Relaxed,
    );
    p.touch(a + 8 * PS, 1).unwrap();
    let v = sim.take_violations();
    assert!(
        has(&v, |x| *x == Violation::SleepInPagein("IOSleep".into())),
        "{v:?}"
    );
    assert!(
        has(&v, |x| *x == Violation::SleepInPagein("IOMalloc".into())),
        "{v:?}"
    );
    sim.unload_kext().unwrap();
}

#[test]
fn leaked_allocations_are_reported_at_unload() {
    let (sim, _p, _a) = setup(LEAK, Config::default());
    assert_eq!(sim.allocations_outstanding(), (1, 64));
    sim.unload_kext().unwrap();
    let v = sim.take_violations();
    assert!(
        has(&v, |x| matches!(
            x,
            Violation::LeakedAllocations {
                count: 1,
                bytes: 64,
                ..
            }
        )),
        "{v:?}"
    );
}

#[test]
fn a_refused_stop_keeps_the_kext_loaded_and_working() {
    let (sim, p, a) = setup(PATCH | RESTORE | REFUSE_STOP, Config::default());
    assert_eq!(sim.unload_kext(), Err(KextError::StopRefused(5)));
    assert!(sim.kext_loaded());
    p.touch(a, 1).unwrap();
    assert_eq!(
        sim.take_violations(),
        vec![],
        "hooks still run: the kext is loaded"
    );
    MODE.store(PATCH | RESTORE, Ordering::Relaxed);
    sim.unload_kext().unwrap();
    assert_eq!(sim.unload_kext(), Err(KextError::NotLoaded));
}

#[test]
fn a_spinlock_held_across_copyout_is_caught() {
    let (sim, _p, _a) = setup(SPIN_SYSCTL, Config::default());
    let mut buf = [0u8; 16];
    assert_eq!(
        sim.sysctl_read("kern.fake_spin", Some(&mut buf), Cred::Root),
        Ok(16)
    );
    assert_eq!(buf, [7u8; 16]);
    let v = sim.take_violations();
    assert!(
        has(&v, |x| *x == Violation::SpinlockHeld("copyout".into())),
        "{v:?}"
    );
    sim.unload_kext().unwrap();
    assert_eq!(
        sim.take_violations(),
        vec![],
        "the lock objects and the OID were given back"
    );
}

#[test]
fn an_iocount_the_kext_kept_is_unbalanced_at_unload() {
    let (sim, _p, _a) = setup(HOLD_IOCOUNT, Config::default());
    assert_eq!(sim.counts("/db").unwrap().iocount, 1);
    sim.unload_kext().unwrap();
    let v = sim.take_violations();
    assert!(
        has(
            &v,
            |x| matches!(x, Violation::UnbalancedCount(s) if s.contains("1 iocount"))
        ),
        "{v:?}"
    );
    // The count stays wrong; a quiescence check sees it too.
    assert!(sim.check_balanced().is_err());
}

#[test]
fn a_put_without_a_get_is_unbalanced() {
    let (sim, _p, _a) = setup(0, Config::default());
    // SAFETY: KPI call on a live vnode without an iocount.
    unsafe { vnode_put(sim.vnode_addr("/db").unwrap() as xnu::vnode_t) };
    let v = sim.take_violations();
    assert!(
        has(
            &v,
            |x| matches!(x, Violation::UnbalancedCount(s) if s.contains("iocount < 1"))
        ),
        "{v:?}"
    );
    assert_eq!(
        sim.counts("/db").unwrap().iocount,
        0,
        "the count did not go negative"
    );
    sim.unload_kext().unwrap();
}

#[test]
fn kauth_unload_race_calls_a_callback_after_unlisten() {
    let config = Config {
        kauth_race_delay: Duration::from_millis(1000),
        ..Config::default()
    };
    let (sim, p, _a) = setup(KAUTH, config);
    KAUTH_CALLS.store(0, Ordering::Relaxed);
    std::thread::scope(|s| {
        let opener = s.spawn(|| p.open("/db").unwrap());
        // Wait until the opener has copied the callback and sits in the race
        // window, then unload under it.
        let start = std::time::Instant::now();
        while sim.kernel().kauth.in_race_window() == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the opener never reached the window"
            );
            std::thread::yield_now();
        }
        sim.unload_kext().unwrap();
        opener.join().unwrap();
    });
    let v = sim.take_violations();
    assert!(
        has(
            &v,
            |x| matches!(x, Violation::CallAfterUnload { what, .. } if what.contains("kauth"))
        ),
        "{v:?}"
    );
    assert_eq!(
        KAUTH_CALLS.load(Ordering::Relaxed),
        0,
        "the callback was not entered after unload"
    );
}

#[test]
fn kauth_listener_is_called_while_loaded() {
    let (sim, p, _a) = setup(KAUTH, Config::default());
    KAUTH_CALLS.store(0, Ordering::Relaxed);
    p.open("/db").unwrap();
    assert_eq!(KAUTH_CALLS.load(Ordering::Relaxed), 1);
    sim.unload_kext().unwrap();
    p.open("/db").unwrap();
    assert_eq!(KAUTH_CALLS.load(Ordering::Relaxed), 1, "unlistened");
    assert_eq!(sim.take_violations(), vec![]);
}

#[test]
fn proc_suser_follows_the_credentials() {
    let sim = Sim::boot(Config::default());
    let root = sim.spawn("root", 0);
    let user = sim.spawn("user", 501);
    let proc_of = |pid| sim.kernel().procs.get(pid).unwrap().proc_addr as xnu::proc_t;
    // SAFETY: KPI calls on live proc objects.
    let r = unsafe { proc_suser(proc_of(root.pid())) };
    assert_eq!(r, 0);
    // SAFETY: as above.
    let r = unsafe { proc_suser(proc_of(user.pid())) };
    assert_eq!(r, 1);
}

#[test]
fn a_stop_that_returns_while_a_hook_is_in_flight_is_caught() {
    use maptrace_sim::Vop;
    let (sim, p, a) = setup(PATCH | RESTORE, Config::default());
    let hold = sim.hold_vnop(Vop::Pagein);
    std::thread::scope(|s| {
        let t = s.spawn(|| p.touch(a, 1));
        assert!(hold.wait_held(1, Duration::from_secs(10)));
        assert_eq!(
            sim.kernel().threads_in_kext(),
            1,
            "the fault is inside the kext's pagein hook"
        );
        // This stop restores the vector but does not wait for hooks in flight.
        sim.unload_kext().unwrap();
        hold.release();
        t.join().unwrap().unwrap();
    });
    let v = sim.take_violations();
    assert!(
        has(
            &v,
            |x| matches!(x, Violation::CallAfterUnload { what, .. } if what.contains("hooks in flight"))
        ),
        "{v:?}"
    );
    assert_eq!(sim.kernel().threads_in_kext(), 0);
}

#[test]
fn hooks_in_flight_on_two_threads_are_all_counted_at_unload() {
    use maptrace_sim::Vop;
    let (sim, p, a) = setup(PATCH | RESTORE, Config::default());
    // This thread entered the kext before (its own count, back at 0).
    p.touch(a, 1).unwrap();
    let hold = sim.hold_vnop(Vop::Pagein);
    std::thread::scope(|s| {
        let t1 = s.spawn(|| p.touch(a + PS * 8, 1));
        let t2 = s.spawn(|| p.touch(a + PS * 16, 1));
        assert!(hold.wait_held(2, Duration::from_secs(10)));
        assert_eq!(
            sim.kernel().threads_in_kext(),
            2,
            "each thread is inside the kext's pagein hook, on its own count"
        );
        sim.unload_kext().unwrap();
        hold.release();
        t1.join().unwrap().unwrap();
        t2.join().unwrap().unwrap();
    });
    let v = sim.take_violations();
    assert!(
        has(
            &v,
            |x| matches!(x, Violation::CallAfterUnload { what, .. } if what.starts_with("2 thread(s)"))
        ),
        "{v:?}"
    );
    assert_eq!(sim.kernel().threads_in_kext(), 0);
}

#[test]
fn vnode_ref_needs_some_reference_already() {
    let (sim, p, _a) = setup(0, Config::default());
    let held = sim.vnode_addr("/db").unwrap() as xnu::vnode_t;
    // SAFETY: KPI calls on a vnode the process has open and mapped.
    assert_eq!(unsafe { vnode_ref(held) }, 0);
    // SAFETY: as above.
    unsafe { vnode_rele(held) };
    assert_eq!(
        sim.take_violations(),
        vec![],
        "a usecount is a valid reference"
    );
    sim.add_file("/idle", PS).unwrap();
    let fd = p.open("/idle").unwrap();
    p.close(fd).unwrap();
    let idle = sim.vnode_addr("/idle").unwrap() as xnu::vnode_t;
    // SAFETY: KPI calls on a live vnode nobody references.
    unsafe { vnode_ref(idle) };
    // SAFETY: as above.
    unsafe { vnode_rele(idle) };
    let v = sim.take_violations();
    assert!(
        has(
            &v,
            |x| matches!(x, Violation::KernelPanic(s) if s.contains("no valid reference"))
        ),
        "{v:?}"
    );
    sim.unload_kext().unwrap();
}

#[test]
fn vnode_create_of_a_vreg_without_a_mount_is_a_null_dereference() {
    // bsd/vfs/vfs_subr.c vnode_create_internal (xnu-3248 .. xnu-11417.121.6)
    // reads param->vnfs_mp->mnt_ioflags for VREG with no NULL check.
    let (sim, _p, _a) = setup(0, Config::default());
    for (vtype, bad) in [(xnu::VREG, true), (xnu::VNON, false)] {
        // SAFETY: an all-zero vnode_fsparam is plain data (NULL pointers).
        let mut param: xnu::vnode_fsparam = unsafe { std::mem::zeroed() };
        param.vnfs_vtype = vtype;
        let mut vp: xnu::vnode_t = std::ptr::null_mut();
        // SAFETY: a valid fsparam and out-pointer.
        let err = unsafe {
            vnode_create(
                xnu::VNCREATE_FLAVOR,
                size_of::<xnu::vnode_fsparam>() as u32,
                (&raw mut param).cast(),
                &raw mut vp,
            )
        };
        let v = sim.take_violations();
        let caught = has(
            &v,
            |x| matches!(x, Violation::Contract { rule, .. } if *rule == "vnode_create.vreg_needs_mount"),
        );
        assert_eq!(caught, bad, "vtype {vtype}: {v:?}");
        if !bad {
            assert_eq!(err, 0);
            // SAFETY: the vnode just created, with its one iocount.
            unsafe { vnode_put(vp) };
        }
    }
    sim.unload_kext().unwrap();
}

#[test]
fn a_failed_pagein_must_release_its_upl_unless_vnode_pagein_does() {
    // bsd/vm/vnode_pager.c vnode_pagein (xnu-11417.121.6 :797-816) aborts
    // the UPL itself only for EAGAIN and EPERM.
    let upl_rule = |v: &[Violation], rule: &str| {
        has(
            v,
            |x| matches!(x, Violation::Contract { rule: r, .. } if *r == rule),
        )
    };
    for (extra, err, offset, rule) in [
        (0, 5, 0, Some("vnop_pagein.upl_released")),
        (ABORT_UPL, 5, 0, None),
        (0, 35, 0, None),
        (0, 1, 0, None),
        (
            ABORT_UPL,
            5,
            PS as u32,
            Some("ubc_upl_abort_range.in_range"),
        ),
    ] {
        PAGEIN_ERR.store(err, Ordering::Relaxed);
        ABORT_OFFSET.store(offset, Ordering::Relaxed);
        let (sim, p, a) = setup(PATCH | RESTORE | FAIL_PAGEIN | extra, Config::default());
        assert!(p.touch(a, 1).is_err(), "the fault fails");
        let v = sim.take_violations();
        match rule {
            Some(r) => assert!(upl_rule(&v, r), "{err}/{extra}: {v:?}"),
            None => assert!(v.is_empty(), "{err}/{extra}: {v:?}"),
        }
        sim.unload_kext().unwrap();
    }
}
