//! The shim's trampolines reached by direct vnode-op dispatch
//! (`Proc::direct_vnode`), as `benches/e2e.rs` drives them: one dispatch is
//! one record with what the hook saw, and the filesystem's original runs.

use maptrace_abi::EventKind;
use maptrace_abi::decode::{Decoder, Event};
use maptrace_sim::vfs::errno;
use maptrace_sim::{Config, Cred, TraceOp, prot};
use maptrace_system_tests::{Tunables, boot_fs, drain, load, stats};

const PAGE: u64 = 4096;
const PATH: &str = "/data/a.bin";

#[test]
fn each_direct_dispatch_is_recorded_once_with_the_originals_result() {
    let sim = boot_fs(Config::default());
    let p = sim.spawn("direct", 501);
    // Looked up before the load: the start sweep hooks its vector.
    let vn = p.direct_vnode(PATH).expect("vnode");
    load(&sim, Tunables::default()).expect("the shim loads");
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let hooks = stats(&sim, Cred::Root).hook_calls;

    assert_eq!(vn.pagein(8 * PAGE as i64, 4 * PAGE as usize), 0);
    assert_eq!(vn.mmap(prot::READ), 0);
    assert_eq!(vn.mnomap(), 0);
    // Past EOF: the original refuses, the hook passes that on and records it.
    assert_eq!(vn.pagein(64 * PAGE as i64, PAGE as usize), errno::EFAULT);
    sim.safe_point();

    let s = stats(&sim, Cred::Root);
    assert_eq!(s.hook_calls - hooks, 4, "one hook per dispatch");
    assert_eq!((s.dropped(), s.errors), (0, 0));
    let mut recs: Vec<_> = drain(&sim, &mut dec)
        .into_iter()
        .filter(|r| r.pid == p.pid() as u32 && !matches!(r.kind, EventKind::Path | EventKind::Proc))
        .collect();
    // Each call ran on another simulated CPU, so on another shard.
    recs.sort_by_key(|r| r.timestamp_ns);
    let kinds: Vec<EventKind> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Pagein,
            EventKind::Mmap,
            EventKind::Mnomap,
            EventKind::Pagein
        ]
    );
    assert!(matches!(recs[0].event, Event::Pagein { offset, size, .. }
            if offset == 8 * PAGE as i64 && u64::from(size) == 4 * PAGE));
    assert_eq!(recs[0].error, 0);
    assert!(matches!(recs[1].event, Event::Mmap { fflags, .. } if fflags == prot::READ as u32));
    assert_eq!(i32::from(recs[3].error), errno::EFAULT);
    // The originals ran (the ground truth), the refused pagein excepted.
    let ops: Vec<TraceOp> = sim
        .trace()
        .iter()
        .filter(|e| e.pid == p.pid())
        .map(|e| e.op)
        .collect();
    assert_eq!(ops, [TraceOp::Pagein, TraceOp::Mmap, TraceOp::Mnomap]);

    // Unloaded: the vector holds the original again, and no hook runs.
    sim.unload_kext().expect("the shim unloads");
    assert_eq!(vn.pagein(0, PAGE as usize), 0);
    sim.safe_point();
}
