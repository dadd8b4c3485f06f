//! Direct vnode-op dispatch (`Proc::direct_vnode`): one VNOP_PAGEIN /
//! VNOP_MMAP / VNOP_MNOMAP through the vnode's vector, as XNU's `VNOP_*`
//! wrappers call it, without the syscall and VM paths.

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering;

use maptrace_sim::vfs::{errno, word};
use maptrace_sim::{
    Config, Platform, Sim, SimError, TraceOp, Violation, ViolationPolicy, map_flags, prot,
};

const PS: u64 = 4096;
const DB: &str = "/Volumes/Data/db";

fn sim(policy: ViolationPolicy) -> Sim {
    let sim = Sim::boot(Config {
        policy,
        ..Config::for_platform(Platform::IntelSsd)
    });
    sim.mount("apfs", "/").unwrap();
    sim.mount("hfs", "/Volumes/Data").unwrap();
    sim.add_file(DB, 16 * PS).unwrap();
    sim
}

#[test]
fn each_call_is_one_operation_reaching_the_filesystem_as_the_process() {
    let sim = sim(ViolationPolicy::Panic);
    let p = sim.spawn("direct", 501);
    let vn = p.direct_vnode(DB).unwrap();
    let before = sim.counts(DB).unwrap();
    assert_eq!(before.iocount, 0, "the lookup's iocount went again");

    assert_eq!(vn.mmap(prot::READ | prot::WRITE), 0);
    assert_eq!(vn.pagein(4 * PS as i64, 2 * PS as usize), 0);
    assert_eq!(p.run_as(|| vn.mnomap()), 0);
    sim.safe_point();

    let t = sim.trace();
    let ops: Vec<TraceOp> = t.iter().map(|e| e.op).collect();
    assert_eq!(ops, [TraceOp::Mmap, TraceOp::Pagein, TraceOp::Mnomap]);
    assert!(t.iter().all(|e| e.pid == p.pid() && e.path == DB));
    assert_eq!(t[0].prot, prot::READ | prot::WRITE);
    assert_eq!((t[1].offset, t[1].size), (4 * PS as i64, 2 * PS));
    // Only the operation itself: no UBC state, no counts taken.
    assert_eq!(sim.counts(DB).unwrap(), before);

    // The original filled the page cache: faulting those pages needs no pagein.
    let fd = p.open(DB).unwrap();
    let a = p
        .mmap(fd, 16 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    assert_eq!(p.touch(a + 4 * PS, 2 * PS).unwrap().pageins, 0);
    assert_eq!(p.touch(a, PS).unwrap().pageins, 1);
}

#[test]
fn bad_input_gets_the_filesystems_errno() {
    let sim = sim(ViolationPolicy::Panic);
    let p = sim.spawn("direct", 501);
    assert_eq!(
        p.direct_vnode("/Volumes/Data/missing").unwrap_err(),
        SimError(errno::ENOENT)
    );
    let vn = p.direct_vnode(DB).unwrap();
    assert_eq!(vn.pagein(-1, PS as usize), errno::EFAULT);
    assert_eq!(
        vn.pagein(16 * PS as i64, PS as usize),
        errno::EFAULT,
        "past EOF"
    );
    assert!(
        sim.trace().iter().all(|e| e.op != TraceOp::Pagein),
        "a refused pagein is not traced"
    );
    // A reclaimed vnode points to deadfs: every operation fails.
    assert_eq!(sim.recycle(DB), Ok(true));
    assert_eq!(vn.pagein(0, PS as usize), errno::EIO);
    assert_eq!(vn.mmap(prot::READ), errno::EIO);
    assert_eq!(vn.mnomap(), errno::EIO);
}

extern "C" fn stray_hook(_args: *mut c_void) -> c_int {
    errno::EPERM
}

#[test]
fn dispatch_goes_through_the_vector_entry_as_it_is_now() {
    let sim = sim(ViolationPolicy::Collect);
    let p = sim.spawn("direct", 501);
    let vn = p.direct_vnode(DB).unwrap();
    let k = sim.kernel();
    let vp = k.vfs.vnode_by_path(DB).unwrap();
    let entry = k.vfs.v_op(&vp) + k.vfs.offsets.pagein * 8;
    let original = word(entry).load(Ordering::Acquire);
    // An entry patched by code that is not loaded: the kernel would jump
    // into freed memory; the simulator reports it and runs the original.
    word(entry).store(stray_hook as *const () as usize, Ordering::Release);
    assert_eq!(vn.pagein(0, PS as usize), 0);
    word(entry).store(original, Ordering::Release);
    let v = sim.take_violations();
    assert!(
        matches!(v.as_slice(), [Violation::CallAfterUnload { what, .. }] if what.contains("vnop_pagein")),
        "{v:?}"
    );
    assert_eq!(
        sim.trace()
            .iter()
            .filter(|e| e.op == TraceOp::Pagein)
            .count(),
        1
    );
}

#[test]
fn without_a_trace_the_operations_still_run() {
    let sim = Sim::boot(Config {
        trace_capacity: 0,
        ..Config::for_platform(Platform::IntelSsd)
    });
    sim.mount("hfs", "/Volumes/Data").unwrap();
    sim.add_file(DB, 16 * PS).unwrap();
    let p = sim.spawn("direct", 501);
    let vn = p.direct_vnode(DB).unwrap();
    assert_eq!(vn.pagein(0, 4 * PS as usize), 0);
    assert_eq!(vn.pagein(16 * PS as i64, PS as usize), errno::EFAULT);
    assert!(sim.trace().is_empty(), "nothing kept");
    let fd = p.open(DB).unwrap();
    let a = p
        .mmap(fd, 16 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    let t = p.touch(a, 4 * PS).unwrap();
    assert_eq!((t.hits, t.pageins), (4, 0), "the pagein filled the cache");
}
