//! The KPIs' per-thread fast paths (cached kernel handle, identity, vnode and
//! vector lookups) answer exactly what the tables say: a recycled block, a
//! foreign `thread_t`, a reboot and a repatched vector are all seen.

use maptrace_sim::{Config, Sim, Violation, ViolationPolicy, xnu};

unsafe extern "C" {
    // The simulator's exported KPIs. Pointer arguments are looked up as keys,
    // never dereferenced.
    safe fn vnode_vid(vp: xnu::vnode_t) -> u32;
    safe fn current_thread() -> xnu::thread_t;
    safe fn thread_tid(thread: xnu::thread_t) -> u64;
    safe fn proc_selfpid() -> i32;
    safe fn cpu_number() -> i32;
    safe fn mach_absolute_time() -> u64;
    fn absolutetime_to_nanoseconds(abs: u64, result: *mut u64);
}

const PS: u64 = 4096;

fn boot(config: Config) -> Sim {
    let sim = Sim::boot(Config {
        policy: ViolationPolicy::Collect,
        ..config
    });
    sim.mount("hfs", "/").unwrap();
    sim.add_file("/a", 4 * PS).unwrap();
    sim.add_file("/b", 4 * PS).unwrap();
    sim
}

fn to_ns(abs: u64) -> u64 {
    let mut ns = 0;
    // SAFETY: a simulator KPI with a valid out-pointer (a kernel is booted).
    unsafe { absolutetime_to_nanoseconds(abs, &raw mut ns) };
    ns
}

#[test]
fn vnode_vid_sees_a_recycled_block_and_its_reuse() {
    let sim = boot(Config::default());
    let p = sim.spawn("reader", 501);
    let fd = p.open("/a").unwrap();
    p.close(fd).unwrap();
    let addr = sim.vnode_addr("/a").unwrap();
    let vp = addr as xnu::vnode_t;
    let vid = sim.counts("/a").unwrap().vid;
    // Twice: the second answer comes from this thread's cache.
    assert_eq!(p.run_as(|| [vnode_vid(vp), vnode_vid(vp)]), [vid, vid]);

    assert!(sim.recycle("/a").unwrap());
    assert_eq!(p.run_as(|| vnode_vid(vp)), 0, "a freed block is no vnode");
    let v = sim.take_violations();
    assert!(
        matches!(v.as_slice(), [Violation::KernelPanic(m)] if m.contains("not a vnode")),
        "{v:?}"
    );

    let fd = p.open("/b").unwrap();
    assert_eq!(sim.vnode_addr("/b"), Some(addr), "the block is reused");
    assert_eq!(p.run_as(|| vnode_vid(vp)), vid + 1, "the new identity");
    p.close(fd).unwrap();
    assert!(sim.take_violations().is_empty());
}

#[test]
fn thread_tid_knows_every_thread_and_only_threads() {
    let sim = boot(Config::default());
    let p = sim.spawn("one", 501);
    let q = sim.spawn("two", 502);
    let (mine, my_tid, pid) = p.run_as(|| {
        let t = current_thread();
        (t as usize, thread_tid(t), proc_selfpid())
    });
    assert_ne!(my_tid, 0);
    assert_eq!(pid, p.pid());
    // Another process's thread, asked from a thread running as `q`: found in
    // the kernel's table, not answered with the caller's own identity.
    let (other_tid, other_pid) = q.run_as(|| (thread_tid(mine as xnu::thread_t), proc_selfpid()));
    assert_eq!(other_tid, my_tid);
    assert_eq!(other_pid, q.pid());
    let theirs = std::thread::scope(|s| {
        s.spawn(|| q.run_as(|| current_thread() as usize))
            .join()
            .unwrap()
    });
    assert_ne!(theirs, mine);
    assert_ne!(p.run_as(|| thread_tid(theirs as xnu::thread_t)), 0);
    // A pointer that is no thread_t (a vnode's block) has no tid.
    let fd = p.open("/a").unwrap();
    let vnode = sim.vnode_addr("/a").unwrap() as xnu::thread_t;
    assert_eq!(p.run_as(|| thread_tid(vnode)), 0);
    assert_eq!(p.run_as(|| thread_tid(std::ptr::null_mut())), 0);
    p.close(fd).unwrap();
}

#[test]
fn a_reboot_is_seen_by_a_thread_that_cached_the_old_kernel() {
    use std::sync::mpsc::channel;
    let (go, wait) = channel::<()>();
    let (answer, answers) = channel::<u64>();
    // A thread outside any Sim call caches the first kernel, then asks again
    // after the main thread dropped it and booted another.
    let helper = std::thread::spawn(move || {
        while wait.recv().is_ok() {
            answer.send(to_ns(3)).unwrap();
        }
    });
    let first = boot(Config::default());
    go.send(()).unwrap();
    assert_eq!(answers.recv().unwrap(), 125, "ns = ticks * 125 / 3");
    drop(first);

    let second = boot(Config {
        timebase: (1, 1),
        ..Config::default()
    });
    go.send(()).unwrap();
    assert_eq!(answers.recv().unwrap(), 3, "the new boot's timebase");
    let p = second.spawn("reader", 501);
    let (pid, tid, t0, t1) = p.run_as(|| {
        let t0 = mach_absolute_time();
        (
            proc_selfpid(),
            thread_tid(current_thread()),
            t0,
            mach_absolute_time(),
        )
    });
    assert_eq!(pid, p.pid());
    assert_ne!(tid, 0, "a thread of the new boot");
    assert!(t1 >= t0, "monotonic");
    assert!(second.take_violations().is_empty());
    drop(go);
    helper.join().unwrap();
}

#[test]
fn a_cached_lookup_takes_no_shared_reference_and_sees_a_recycle() {
    let sim = boot(Config::default());
    let vfs = &sim.kernel().vfs;
    let p = sim.spawn("reader", 501);
    let fd = p.open("/a").unwrap();
    p.close(fd).unwrap();
    let addr = sim.vnode_addr("/a").unwrap() as usize;
    let first = vfs.vnode(addr).expect("a vnode");
    let shared = std::sync::Arc::strong_count(&*first);
    // A hit is this thread's own handle: the vnode's Arc, which every CPU
    // dispatching on it would write, keeps its count.
    let again = vfs.vnode(addr).expect("a vnode");
    assert!(std::sync::Arc::ptr_eq(&*first, &*again));
    assert_eq!(std::sync::Arc::strong_count(&*again), shared);
    let vid = again.vid;
    drop((first, again));
    assert!(sim.recycle("/a").unwrap());
    assert!(vfs.vnode(addr).is_none(), "a freed block is no vnode");
    let fd = p.open("/b").unwrap();
    assert_eq!(vfs.vnode(addr).map(|v| v.vid), Some(vid + 1), "reused");
    p.close(fd).unwrap();
}

#[test]
fn a_thread_identity_from_an_old_boot_is_not_used() {
    use std::sync::mpsc::channel;
    let (go, wait) = channel::<()>();
    let (answer, answers) = channel::<(i32, usize, u64, i32)>();
    // A plain thread gets a kernel_task identity at its first KPI call, and
    // asks again after a reboot.
    let helper = std::thread::spawn(move || {
        while wait.recv().is_ok() {
            let t = current_thread();
            answer
                .send((proc_selfpid(), t as usize, thread_tid(t), cpu_number()))
                .unwrap();
        }
    });
    let first = boot(Config::default());
    go.send(()).unwrap();
    let (pid, _, old_tid, _) = answers.recv().unwrap();
    assert_eq!(pid, 0, "kernel_task");
    assert_ne!(old_tid, 0);
    drop(first);

    let second = boot(Config {
        cpus: 1,
        ..Config::default()
    });
    // Threads of the new boot first, so an old tid would differ.
    let p = second.spawn("reader", 501);
    let mine = p.run_as(|| thread_tid(current_thread()));
    go.send(()).unwrap();
    let (pid, thread, tid, cpu) = answers.recv().unwrap();
    assert_eq!((pid, cpu), (0, 0), "kernel_task on the only CPU");
    assert_ne!(tid, mine);
    // The new kernel's table knows the helper's thread_t, with its tid.
    assert_eq!(p.run_as(|| thread_tid(thread as xnu::thread_t)), tid);
    assert!(second.take_violations().is_empty());
    drop(go);
    helper.join().unwrap();
}

#[test]
fn a_vnode_vid_memo_of_an_old_boot_is_not_used() {
    let first = boot(Config::default());
    let p = first.spawn("reader", 501);
    let fd = p.open("/a").unwrap();
    let vp = first.vnode_addr("/a").unwrap() as xnu::vnode_t;
    let vid = first.counts("/a").unwrap().vid;
    // Twice: the second answer is this thread's memo.
    assert_eq!(p.run_as(|| [vnode_vid(vp), vnode_vid(vp)]), [vid, vid]);
    p.close(fd).unwrap();
    drop(p);
    drop(first);

    // A kernel whose tables have not changed since (no mount, no vnode):
    // the old block is no vnode of this boot, whatever the thread noted.
    let second = Sim::boot(Config {
        policy: ViolationPolicy::Collect,
        ..Config::default()
    });
    assert_eq!(vnode_vid(vp), 0);
    let v = second.take_violations();
    assert!(
        matches!(v.as_slice(), [Violation::KernelPanic(m)] if m.contains("vnode_vid") && m.contains("not a vnode")),
        "{v:?}"
    );
}
