//! Kernel services with their XNU semantics: the sysctl tree and requests,
//! MAC policy registration and hooks, and a kext filesystem (vfs_fsadd,
//! vnode_create) as the shim's layout discovery uses it.

mod kpi;

use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use kpi::*;
use maptrace_sim::{
    Config, Cred, Platform, Sim, SysctlError, Violation, ViolationPolicy, map_flags, prot, xnu,
};

const PS: u64 = 4096;

extern "C" fn noop(_ki: *mut xnu::kmod_info, _d: *mut c_void) -> xnu::kern_return_t {
    0
}

/// A simulator with an empty kext loaded: the test thread then plays the
/// kext's code.
fn loaded() -> Sim {
    // 4 KiB pages: the MAC test maps at a 4 KiB offset.
    let sim = Sim::boot(Config {
        policy: ViolationPolicy::Collect,
        ..Config::for_platform(Platform::IntelSsd)
    });
    // SAFETY: kmod_info is plain data; all-zero is valid.
    let mut ki: xnu::kmod_info = unsafe { std::mem::zeroed() };
    ki.start = Some(noop);
    ki.stop = Some(noop);
    // SAFETY: a leaked kmod_info whose routines do nothing.
    unsafe { sim.load_kext(Box::into_raw(Box::new(ki))) }.unwrap();
    sim
}

// ---------------------------------------------------------------- sysctl

static DATA: [u8; 100] = {
    let mut d = [0u8; 100];
    let mut i = 0;
    while i < 100 {
        d[i] = i as u8;
        i += 1;
    }
    d
};
static KNOB: AtomicU32 = AtomicU32::new(7);

extern "C" fn data_handler(
    _o: *mut xnu::sysctl_oid,
    _a1: *mut c_void,
    _a2: c_int,
    req: *mut xnu::sysctl_req,
) -> c_int {
    // SAFETY: the kernel's request.
    let out = unsafe { (*req).oldfunc }.expect("oldfunc");
    // SAFETY: SYSCTL_OUT of a static buffer.
    unsafe { out(req, DATA.as_ptr().cast(), DATA.len()) }
}

extern "C" fn secret_handler(
    o: *mut xnu::sysctl_oid,
    a1: *mut c_void,
    a2: c_int,
    req: *mut xnu::sysctl_req,
) -> c_int {
    // SAFETY: the kernel's request.
    let p = unsafe { (*req).p };
    // SAFETY: KPI call with the requesting process.
    if unsafe { proc_suser(p) } != 0 {
        return 1;
    }
    data_handler(o, a1, a2, req)
}

fn oid(
    parent: *mut xnu::sysctl_oid_list,
    name: &'static std::ffi::CStr,
    kind: u32,
    arg1: *mut c_void,
    arg2: c_int,
    handler: xnu::sysctl_handler_t,
) -> *mut xnu::sysctl_oid {
    Box::into_raw(Box::new(xnu::sysctl_oid {
        oid_parent: parent,
        oid_link: xnu::sysctl_oid__bindgen_ty_1 {
            sle_next: std::ptr::null_mut(),
        },
        oid_number: xnu::OID_AUTO,
        oid_kind: kind as c_int,
        oid_arg1: arg1,
        oid_arg2: arg2,
        oid_name: name.as_ptr(),
        oid_handler: handler,
        oid_fmt: c"".as_ptr(),
        oid_descr: c"".as_ptr(),
        oid_version: xnu::SYSCTL_OID_VERSION as c_int,
        oid_refcnt: 0,
    }))
}

struct Tree {
    oids: Vec<*mut xnu::sysctl_oid>,
}

fn tree() -> Tree {
    let children = Box::into_raw(Box::new(xnu::sysctl_oid_list {
        slh_first: std::ptr::null_mut(),
    }));
    let node_kind = xnu::CTLTYPE_NODE | xnu::CTLFLAG_RW | xnu::CTLFLAG_LOCKED;
    let ro = xnu::CTLTYPE_OPAQUE | xnu::CTLFLAG_RD | xnu::CTLFLAG_LOCKED;
    let rw = xnu::CTLTYPE_INT | xnu::CTLFLAG_RW | xnu::CTLFLAG_LOCKED;
    let knob = KNOB.as_ptr().cast::<c_void>();
    let oids = vec![
        oid(
            &raw mut sysctl__kern_children,
            c"svc",
            node_kind,
            children.cast(),
            0,
            None,
        ),
        oid(
            children,
            c"data",
            ro,
            std::ptr::null_mut(),
            0,
            Some(data_handler),
        ),
        oid(
            children,
            c"secret",
            ro,
            std::ptr::null_mut(),
            0,
            Some(secret_handler),
        ),
        oid(children, c"knob", rw, knob, 4, Some(sysctl_handle_opaque)),
        oid(
            children,
            c"anyone",
            rw | xnu::CTLFLAG_ANYBODY,
            knob,
            4,
            Some(sysctl_handle_opaque),
        ),
    ];
    for o in &oids {
        // SAFETY: KPI call with a complete, leaked OID.
        unsafe { sysctl_register_oid(*o) };
    }
    Tree { oids }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for o in self.oids.iter().rev() {
            // SAFETY: unregistering what tree() registered, leaves first.
            unsafe { sysctl_unregister_oid(*o) };
        }
    }
}

#[test]
fn sysctl_size_query_partial_copy_and_faults() {
    let sim = loaded();
    let t = tree();
    assert_eq!(
        sim.sysctl_read("kern.svc.data", None, Cred::User(501)),
        Ok(100),
        "size query"
    );
    let mut buf = [0u8; 100];
    assert_eq!(
        sim.sysctl_read("kern.svc.data", Some(&mut buf), Cred::User(501)),
        Ok(100),
        "reads are open to all"
    );
    assert_eq!(buf, DATA);
    let mut short = [0u8; 40];
    assert_eq!(
        sim.sysctl_read("kern.svc.data", Some(&mut short), Cred::Root),
        Err(SysctlError { errno: 12, len: 40 }),
        "ENOMEM after a partial copy"
    );
    assert_eq!(short[..], DATA[..40]);
    sim.inject_copyout_faults(1);
    let mut buf = [0xffu8; 100];
    assert_eq!(
        sim.sysctl_read("kern.svc.data", Some(&mut buf), Cred::Root)
            .unwrap_err()
            .errno,
        14
    );
    assert_eq!(buf, [0xff; 100], "a faulting copyout copies nothing");
    assert_eq!(
        sim.sysctl_read("kern.svc.data", Some(&mut buf), Cred::Root),
        Ok(100),
        "one fault only"
    );
    drop(t);
    assert_eq!(
        sim.sysctl_read("kern.svc.data", None, Cred::Root)
            .unwrap_err()
            .errno,
        2
    );
    assert_eq!(sim.take_violations(), vec![]);
}

#[test]
fn vm_pagesize_is_the_kernels_page_for_every_caller() {
    for (platform, page) in [
        (Platform::IntelSsd, 4096u32),
        (Platform::AppleSilicon, 16384),
    ] {
        let sim = Sim::boot(Config::for_platform(platform));
        for cred in [Cred::Root, Cred::User(501)] {
            assert_eq!(
                sim.sysctl_read("vm.pagesize", None, cred),
                Ok(4),
                "size query"
            );
            let mut word = [0u8; 4];
            assert_eq!(sim.sysctl_read("vm.pagesize", Some(&mut word), cred), Ok(4));
            assert_eq!(u32::from_ne_bytes(word), page, "{platform:?}");
        }
        let mut short = [0u8; 2];
        assert_eq!(
            sim.sysctl_read("vm.pagesize", Some(&mut short), Cred::Root),
            Err(SysctlError { errno: 12, len: 2 }),
            "ENOMEM after a partial copy"
        );
        assert_eq!(short[..], page.to_ne_bytes()[..2]);
        assert_eq!(
            sim.sysctl_write("vm.pagesize", &4096u32.to_ne_bytes(), None, Cred::Root)
                .unwrap_err()
                .errno,
            1,
            "read-only: EPERM"
        );
        // The rest of XNU's own tree is not there.
        assert_eq!(
            sim.sysctl_read("vm.page_free_count", None, Cred::Root)
                .unwrap_err()
                .errno,
            2
        );
    }
}

/// A reader of `kern.svc.data` on its own thread: (result, its buffer).
fn spawn_reader<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    sim: &'s Sim,
) -> std::thread::ScopedJoinHandle<'s, (Result<usize, SysctlError>, [u8; 100])> {
    s.spawn(move || {
        let mut buf = [0xffu8; 100];
        let r = sim.sysctl_read("kern.svc.data", Some(&mut buf), Cred::Root);
        (r, buf)
    })
}

#[test]
fn held_copyout_keeps_the_handler_running_and_unregister_waits() {
    let sim = loaded();
    let t = tree();
    // Leaves first, as Tree's drop does; the OIDs are leaked boxes.
    let oids: Vec<usize> = t.oids.iter().rev().map(|o| *o as usize).collect();
    std::mem::forget(t);
    let hold = sim.hold_copyout();
    assert!(
        !hold.wait_held(1, Duration::from_millis(20)),
        "no thread is in copyout yet"
    );
    assert_eq!(
        sim.sysctl_read("kern.svc.data", None, Cred::Root),
        Ok(100),
        "a size query copies nothing, so it is not held"
    );
    std::thread::scope(|s| {
        let reader = spawn_reader(s, &sim);
        assert!(hold.wait_held(1, Duration::from_secs(10)), "in copyout");
        assert_eq!(hold.held(), 1);
        assert_eq!(sim.kernel().threads_in_kext(), 1, "its handler runs");
        let unregister = s.spawn(move || {
            for o in oids {
                // SAFETY: KPI call with an OID tree() registered.
                unsafe { sysctl_unregister_oid(o as *mut xnu::sysctl_oid) };
            }
        });
        // Bounded: however long it is given, unregister cannot return while
        // the handler is inside.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !unregister.is_finished(),
            "unregister waits for the handler"
        );
        assert!(!reader.is_finished(), "the reader is still in copyout");
        hold.release();
        let (r, buf) = reader.join().expect("reader");
        assert_eq!(r, Ok(100), "the held copy completes");
        assert_eq!(buf, DATA);
        unregister
            .join()
            .expect("unregister returns after the handler");
    });
    assert!(
        sim.sysctl_names()
            .iter()
            .all(|n| !n.starts_with("kern.svc")),
        "{:?}",
        sim.sysctl_names()
    );
    assert_eq!(sim.kernel().threads_in_kext(), 0);
    assert_eq!(sim.take_violations(), vec![]);
}

#[test]
fn a_fault_injected_during_a_held_copyout_hits_it_and_drop_releases() {
    let sim = loaded();
    let t = tree();
    std::thread::scope(|s| {
        let hold = sim.hold_copyout();
        let reader = spawn_reader(s, &sim);
        assert!(hold.wait_held(1, Duration::from_secs(10)), "in copyout");
        sim.inject_copyout_faults(1);
        drop(hold);
        let (r, buf) = reader.join().expect("reader");
        assert_eq!(r.map_err(|e| e.errno), Err(14), "EFAULT after the wait");
        assert_eq!(buf, [0xff; 100], "a faulting copyout copies nothing");
    });
    let mut buf = [0u8; 100];
    assert_eq!(
        sim.sysctl_read("kern.svc.data", Some(&mut buf), Cred::Root),
        Ok(100),
        "released: copyouts pass again, the fault was used up"
    );
    assert_eq!(buf, DATA);
    drop(t);
    assert_eq!(sim.take_violations(), vec![]);
}

#[test]
fn sysctl_names_numbers_and_bad_names() {
    let sim = loaded();
    let t = tree();
    let names = sim.sysctl_names();
    for n in [
        "kern.svc",
        "kern.svc.data",
        "kern.svc.secret",
        "kern.svc.knob",
        "kern.svc.anyone",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    // SAFETY: reading back the OIDs the kernel numbered.
    let numbers: Vec<c_int> = t.oids.iter().map(|o| unsafe { (**o).oid_number }).collect();
    assert_eq!(
        numbers,
        vec![100, 100, 101, 102, 103],
        "OID_AUTO numbers from 100 per parent"
    );
    assert_eq!(
        sim.sysctl_read("kern.svc", None, Cred::Root)
            .unwrap_err()
            .errno,
        21,
        "a node has no value"
    );
    assert_eq!(
        sim.sysctl_read("kern.nope", None, Cred::Root)
            .unwrap_err()
            .errno,
        2
    );
    assert_eq!(
        sim.sysctl_read("vm.svc", None, Cred::Root)
            .unwrap_err()
            .errno,
        2
    );
    assert_eq!(
        sim.sysctl_read("kern.svc.data.more", None, Cred::Root)
            .unwrap_err()
            .errno,
        2
    );
    // An OID with another version is ignored.
    let bad = oid(
        &raw mut sysctl__kern_children,
        c"v2",
        xnu::CTLFLAG_RD,
        std::ptr::null_mut(),
        0,
        Some(data_handler),
    );
    // SAFETY: changing the leaked OID before registering it.
    unsafe { (*bad).oid_version = 2 };
    // SAFETY: KPI call.
    unsafe { sysctl_register_oid(bad) };
    assert_eq!(
        sim.sysctl_read("kern.v2", None, Cred::Root)
            .unwrap_err()
            .errno,
        2
    );
    assert!(sim.log_lines().iter().any(|l| l.contains("version 2")));
}

#[test]
fn sysctl_credentials() {
    let sim = loaded();
    let _t = tree();
    let mut buf = [0u8; 100];
    assert_eq!(
        sim.sysctl_read("kern.svc.secret", Some(&mut buf), Cred::User(501))
            .unwrap_err()
            .errno,
        1
    );
    assert_eq!(
        sim.sysctl_read("kern.svc.secret", Some(&mut buf), Cred::Root),
        Ok(100)
    );
    KNOB.store(7, Ordering::Relaxed);
    let new = 42u32.to_ne_bytes();
    assert_eq!(
        sim.sysctl_write("kern.svc.knob", &new, None, Cred::User(501))
            .unwrap_err()
            .errno,
        1,
        "root only"
    );
    assert_eq!(KNOB.load(Ordering::Relaxed), 7);
    assert_eq!(
        sim.sysctl_write("kern.svc.knob", &new, None, Cred::Root),
        Ok(4)
    );
    assert_eq!(KNOB.load(Ordering::Relaxed), 42);
    assert_eq!(
        sim.sysctl_write("kern.svc.knob", &[1, 2], None, Cred::Root)
            .unwrap_err()
            .errno,
        22,
        "short write"
    );
    assert_eq!(
        sim.sysctl_write(
            "kern.svc.anyone",
            &9u32.to_ne_bytes(),
            None,
            Cred::User(501)
        ),
        Ok(4)
    );
    assert_eq!(KNOB.load(Ordering::Relaxed), 9);
    assert_eq!(
        sim.sysctl_write("kern.svc.data", &new, None, Cred::Root)
            .unwrap_err()
            .errno,
        1,
        "read-only"
    );
}

#[test]
fn sysctl_after_unload_is_a_call_into_the_gone_kext() {
    let sim = loaded();
    let _t = tree();
    sim.unload_kext().unwrap();
    let v = sim.take_violations();
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::LeftRegistered(s) if s.contains("sysctl OID data"))),
        "{v:?}"
    );
    assert!(sim.sysctl_read("kern.svc.data", None, Cred::Root).is_err());
    let v = sim.take_violations();
    assert!(v.iter().any(|x| matches!(x, Violation::CallAfterUnload { what, .. } if what.contains("kern.svc.data"))), "{v:?}");
}

// ---------------------------------------------------------------- MAC

static MMAP_CALLS: AtomicU32 = AtomicU32::new(0);
static LAST: AtomicUsize = AtomicUsize::new(0);
static INITS: AtomicU32 = AtomicU32::new(0);
static DESTROYS: AtomicU32 = AtomicU32::new(0);
static MMAP_RESULT: AtomicI32 = AtomicI32::new(0);
static ADD_MAXPROT: AtomicU32 = AtomicU32::new(0);

extern "C" fn check_mmap(
    _c: xnu::kauth_cred_t,
    fg: *mut xnu::fileglob,
    _l: *mut xnu::label,
    prot: c_int,
    flags: c_int,
    pos: u64,
    maxprot: *mut c_int,
) -> c_int {
    MMAP_CALLS.fetch_add(1, Ordering::Relaxed);
    LAST.store(
        ((prot as usize) << 48) | ((flags as usize) << 32) | pos as usize,
        Ordering::Relaxed,
    );
    // fg_data (offset 56) names the vnode.
    // SAFETY: the kernel's fileglob.
    let vp = unsafe { *((fg as usize + 56) as *const usize) };
    assert_ne!(vp, 0);
    if ADD_MAXPROT.load(Ordering::Relaxed) != 0 {
        // SAFETY: the kernel's maxprot out-parameter.
        unsafe { *maxprot |= 0x100 };
    }
    MMAP_RESULT.load(Ordering::Relaxed)
}

extern "C" fn policy_init(_c: *mut xnu::mac_policy_conf) {
    INITS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn policy_destroy(_c: *mut xnu::mac_policy_conf) {
    DESTROYS.fetch_add(1, Ordering::Relaxed);
}

fn conf(name: &'static std::ffi::CStr, flags: u32) -> *mut xnu::mac_policy_conf {
    // SAFETY: all-zero ops are valid (every slot None).
    let mut ops: xnu::mac_policy_ops = unsafe { std::mem::zeroed() };
    // SAFETY: the slot is called back as mpo_file_check_mmap_t.
    ops.mpo_slots[xnu::MPO_FILE_CHECK_MMAP as usize] = Some(unsafe {
        std::mem::transmute::<*const (), unsafe extern "C" fn()>(check_mmap as *const ())
    });
    // SAFETY: as above, mpo_policy_init_t.
    ops.mpo_slots[xnu::MPO_POLICY_INIT as usize] = Some(unsafe {
        std::mem::transmute::<*const (), unsafe extern "C" fn()>(policy_init as *const ())
    });
    // SAFETY: as above, mpo_policy_destroy_t.
    ops.mpo_slots[xnu::MPO_POLICY_DESTROY as usize] = Some(unsafe {
        std::mem::transmute::<*const (), unsafe extern "C" fn()>(policy_destroy as *const ())
    });
    let ops = Box::into_raw(Box::new(ops));
    // SAFETY: all-zero is a valid conf; the fields that matter are set below.
    let mut c: xnu::mac_policy_conf = unsafe { std::mem::zeroed() };
    c.mpc_name = name.as_ptr();
    c.mpc_fullname = c"fake policy".as_ptr();
    c.mpc_ops = ops;
    c.mpc_loadtime_flags = flags as c_int;
    Box::into_raw(Box::new(c))
}

fn mac_sim() -> (Sim, maptrace_sim::Proc, i32) {
    let sim = loaded();
    sim.mount("apfs", "/").unwrap();
    sim.add_file("/f", 8 * PS).unwrap();
    sim.add_file("/bin/app", 8 * PS).unwrap();
    let p = sim.spawn("p", 501);
    let fd = p.open("/f").unwrap();
    (sim, p, fd)
}

#[test]
fn mac_register_hooks_mmap_and_unregisters_with_unloadok() {
    let (sim, p, fd) = mac_sim();
    let (c, mut h) = (conf(c"fakepol", xnu::MPC_LOADTIME_FLAG_UNLOADOK), 0u32);
    INITS.store(0, Ordering::Relaxed);
    DESTROYS.store(0, Ordering::Relaxed);
    MMAP_CALLS.store(0, Ordering::Relaxed);
    MMAP_RESULT.store(0, Ordering::Relaxed);
    // SAFETY: KPI call with a complete conf.
    let r = unsafe { mac_policy_register(c, &raw mut h, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    assert_eq!(
        INITS.load(Ordering::Relaxed),
        1,
        "late registration runs policy_init"
    );
    let dup = conf(c"fakepol", xnu::MPC_LOADTIME_FLAG_UNLOADOK);
    let mut h2 = 0u32;
    // SAFETY: as above.
    let r = unsafe { mac_policy_register(dup, &raw mut h2, std::ptr::null_mut()) };
    assert_eq!(r, 17, "EEXIST");
    p.mmap(fd, 2 * PS, prot::READ, map_flags::SHARED, PS)
        .unwrap();
    assert_eq!(MMAP_CALLS.load(Ordering::Relaxed), 1);
    assert_eq!(LAST.load(Ordering::Relaxed), (1 << 48) | (1 << 32) | 4096);
    p.exec("/bin/app").unwrap();
    assert_eq!(
        MMAP_CALLS.load(Ordering::Relaxed),
        1,
        "exec does not call file_check_mmap"
    );
    MMAP_RESULT.store(1, Ordering::Relaxed);
    let fd = p.open("/f").unwrap();
    assert_eq!(
        p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0)
            .unwrap_err()
            .0,
        1,
        "a policy can deny"
    );
    MMAP_RESULT.store(0, Ordering::Relaxed);
    // SAFETY: KPI call with our handle.
    let r = unsafe { mac_policy_unregister(h) };
    assert_eq!(r, 0);
    assert_eq!(DESTROYS.load(Ordering::Relaxed), 1);
    p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0).unwrap();
    assert_eq!(
        MMAP_CALLS.load(Ordering::Relaxed),
        2,
        "unregistered: no more calls"
    );
    assert_eq!(sim.take_violations(), vec![]);
}

#[test]
fn mac_unregister_without_unloadok_is_ebusy_and_maxprot_growth_panics() {
    let (sim, p, fd) = mac_sim();
    let c = conf(c"stuck", 0);
    let mut h = 0u32;
    // SAFETY: KPI call with a complete conf.
    let r = unsafe { mac_policy_register(c, &raw mut h, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    // SAFETY: KPI call.
    let r = unsafe { mac_policy_unregister(h) };
    assert_eq!(r, 16, "EBUSY without UNLOADOK");
    ADD_MAXPROT.store(1, Ordering::Relaxed);
    p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0).unwrap();
    ADD_MAXPROT.store(0, Ordering::Relaxed);
    let v = sim.take_violations();
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::KernelPanic(s) if s.contains("maxprot"))),
        "{v:?}"
    );
    // SAFETY: the kext may change its own conf; now it may unload.
    unsafe { (*c).mpc_loadtime_flags = xnu::MPC_LOADTIME_FLAG_UNLOADOK as c_int };
    // SAFETY: KPI call.
    let r = unsafe { mac_policy_unregister(h) };
    assert_eq!(r, 0);
    // SAFETY: KPI call with an unknown handle.
    let r = unsafe { mac_policy_unregister(h) };
    assert_eq!(r, 2);
}

// ---------------------------------------------------------------- kext filesystem

static mut FAKE_VECTOR: *mut Option<unsafe extern "C" fn(*mut c_void) -> c_int> =
    std::ptr::null_mut();
static RECLAIMS: AtomicU32 = AtomicU32::new(0);

extern "C" fn fake_reclaim(_a: *mut c_void) -> c_int {
    RECLAIMS.fetch_add(1, Ordering::Relaxed);
    0
}

#[test]
fn a_kext_filesystem_and_layout_discovery_by_scanning_a_vnode() {
    let sim = loaded();
    // SAFETY: vn_default_error has the vnop signature's ABI (no arguments read).
    let default: unsafe extern "C" fn(*mut c_void) -> c_int =
        unsafe { std::mem::transmute(vn_default_error as *const ()) };
    let entries = Box::leak(Box::new([
        xnu::vnodeopv_entry_desc {
            opve_op: &raw mut vnop_default_desc,
            opve_impl: Some(default),
        },
        xnu::vnodeopv_entry_desc {
            opve_op: &raw mut vnop_reclaim_desc,
            opve_impl: Some(fake_reclaim),
        },
        xnu::vnodeopv_entry_desc {
            opve_op: std::ptr::null_mut(),
            opve_impl: None,
        },
    ]));
    let opv = Box::leak(Box::new(xnu::vnodeopv_desc {
        opv_desc_vector_p: &raw mut FAKE_VECTOR,
        opv_desc_ops: entries.as_ptr(),
    }));
    let mut opvs = [opv as *mut xnu::vnodeopv_desc];
    // SAFETY: all-zero vfsops (no entry points) is valid.
    let vfsops: &mut xnu::vfsops = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    // SAFETY: all-zero is a valid fsentry; fields set below.
    let mut vfe: xnu::vfs_fsentry = unsafe { std::mem::zeroed() };
    vfe.vfe_vfsops = vfsops;
    vfe.vfe_vopcnt = 1;
    vfe.vfe_opvdescs = opvs.as_mut_ptr();
    for (i, b) in b"mtfake".iter().enumerate() {
        vfe.vfe_fsname[i] = *b as c_char;
    }
    vfe.vfe_flags = xnu::VFS_TBLTHREADSAFE | xnu::VFS_TBLNOTYPENUM;
    let mut handle: xnu::vfstable_t = std::ptr::null_mut();
    // SAFETY: KPI call with a complete entry.
    let r = unsafe { vfs_fsadd(&raw mut vfe, &raw mut handle) };
    assert_eq!(r, 0);
    // SAFETY: vfs_fsadd filled the vector pointer in.
    let vector = unsafe { FAKE_VECTOR } as usize;
    assert!(sim.is_kernel_address(vector as u64));
    let mut again: xnu::vfstable_t = std::ptr::null_mut();
    // SAFETY: as above, a second registration of the same name.
    let r = unsafe { vfs_fsadd(&raw mut vfe, &raw mut again) };
    assert_eq!(r, 17);

    // SAFETY: all-zero is a valid fsparam; fields set below.
    let mut p: xnu::vnode_fsparam = unsafe { std::mem::zeroed() };
    p.vnfs_vtype = xnu::VNON;
    p.vnfs_vops = vector as *mut _;
    let mut vp: xnu::vnode_t = std::ptr::null_mut();
    let size = size_of::<xnu::vnode_fsparam>() as u32;
    // SAFETY: KPI call with a complete fsparam.
    let r = unsafe { vnode_create(xnu::VNCREATE_FLAVOR, size, (&raw mut p).cast(), &raw mut vp) };
    assert_eq!(r, 0);
    let mut other: xnu::vnode_t = std::ptr::null_mut();
    // SAFETY: KPI call with a bad size.
    let r = unsafe { vnode_create(0, size - 8, (&raw mut p).cast(), &raw mut other) };
    assert_eq!(r, 22);
    // The FakeFSD trick: find the known vector in the vnode.
    // SAFETY: the vnode block is 256 bytes of kernel memory.
    let block = unsafe { std::slice::from_raw_parts(vp as *const u8, 256) };
    let found: Vec<usize> = (0..256 - 8)
        .step_by(8)
        .filter(|o| usize::from_ne_bytes(block[*o..o + 8].try_into().unwrap()) == vector)
        .collect();
    assert_eq!(found, vec![sim.v_op_offset()]);
    RECLAIMS.store(0, Ordering::Relaxed);
    // SAFETY: KPI calls on the vnode we hold an iocount on.
    let r = unsafe { vnode_recycle(vp) };
    assert_eq!(r, 0, "in use: recycled on the last put");
    // SAFETY: as above.
    unsafe { vnode_put(vp) };
    assert_eq!(
        RECLAIMS.load(Ordering::Relaxed),
        1,
        "VNOP_RECLAIM through the kext's vector"
    );
    // SAFETY: KPI call with our handle.
    let r = unsafe { vfs_fsremove(handle) };
    assert_eq!(r, 0);
    assert_eq!(sim.take_violations(), vec![]);
    sim.unload_kext().unwrap();
    assert_eq!(sim.take_violations(), vec![]);
}

// ---------------------------------------------------------------- scheduler

/// thread_setrun may move a thread to another processor whenever it runs
/// again (osfmk/kern/sched_prim.c, xnu-11417.121.6): however other threads'
/// runs interleave with its own, a thread that keeps running visits every
/// CPU, so each shard of a per-CPU ring sees its records.
#[test]
fn a_thread_that_keeps_running_visits_every_cpu() {
    const CPUS: u32 = 4;
    let sim = Sim::boot(Config {
        cpus: CPUS,
        ..Config::for_platform(Platform::IntelSsd)
    });
    let procs = [sim.spawn("first", 501), sim.spawn("second", 501)];
    let mut visited = [BTreeSet::new(), BTreeSet::new()];
    // Each thread migrates CPUS times, the two alternating.
    for _ in 0..CPUS {
        for (p, cpus) in procs.iter().zip(&mut visited) {
            // SAFETY: a KPI without arguments, called as the process's thread.
            cpus.insert(p.run_as(|| unsafe { cpu_number() }));
        }
    }
    let all: BTreeSet<c_int> = (0..CPUS as c_int).collect();
    assert_eq!(visited, [all.clone(), all]);
}
