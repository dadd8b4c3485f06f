//! Who holds a reference, on the simulator with the real shim and core:
//! PROC records name every pid an event comes from (again after exec),
//! OPEN and CLOSE records bracket the usecount an open holds.

use maptrace_abi::EventKind;
use maptrace_abi::decode::{Decoder, Event, Record};
use maptrace_sim::{Config, TraceOp, map_flags, prot};
use maptrace_system_tests::{Tunables, boot_loaded, drain};

const PAGE: u64 = 4096;

/// The PROC names recorded for `pid`, in order.
fn names_of(recs: &[Record], pid: u32) -> Vec<String> {
    recs.iter()
        .filter(|r| r.pid == pid)
        .filter_map(|r| match &r.event {
            Event::Proc { name, .. } => Some(String::from_utf8_lossy(name).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn exec_names_the_process_again() {
    // One shard: the batch keeps the order of recording.
    let one = Tunables {
        nshards: 1,
        ..Tunables::default()
    };
    let sim = boot_loaded(Config::default(), one);
    let p = sim.spawn("zsh", 501);
    let fd = p.open("/data/a.bin").expect("open");
    let addr = p
        .mmap(fd, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("mmap");
    p.touch(addr, PAGE).expect("touch");
    p.exec("/bin/tool").expect("exec");
    let fd = p.open("/data/b.bin").expect("open after exec");
    p.mmap(fd, 4 * PAGE, prot::READ, map_flags::PRIVATE, 0)
        .expect("mmap after exec");
    let mut dec = Decoder::new();
    let recs = drain(&sim, &mut dec);
    let pid = p.pid() as u32;
    assert_eq!(names_of(&recs, pid), ["zsh", "tool"]);
    // Each name comes before the first event it names.
    let first_proc = recs
        .iter()
        .position(|r| r.pid == pid && r.kind == EventKind::Proc);
    let first_event = recs
        .iter()
        .position(|r| r.pid == pid && r.kind != EventKind::Proc && r.kind != EventKind::Path);
    assert!(first_proc < first_event, "{first_proc:?} {first_event:?}");
    let opened_after_exec = recs
        .iter()
        .rposition(|r| r.pid == pid && r.kind == EventKind::Open)
        .expect("an OPEN after exec");
    let renamed = recs
        .iter()
        .rposition(|r| r.pid == pid && r.kind == EventKind::Proc)
        .expect("the new name");
    assert!(renamed < opened_after_exec, "named before its first event");
    assert_eq!(sim.take_violations(), vec![]);
    p.exit();
    sim.check_balanced().expect("balanced");
}

/// (kind, pid, usecount, flags) of the OPEN and CLOSE records.
fn opens_and_closes(recs: &[Record]) -> Vec<(EventKind, u32, u16, u32)> {
    recs.iter()
        .filter_map(|r| match &r.event {
            Event::Open { fmode, counts, .. } => {
                Some((EventKind::Open, r.pid, counts.usecount, *fmode))
            }
            Event::Close { fflag, counts, .. } => {
                Some((EventKind::Close, r.pid, counts.usecount, *fflag))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn close_is_recorded_before_the_usecount_goes() {
    let one = Tunables {
        nshards: 1,
        ..Tunables::default()
    };
    let sim = boot_loaded(Config::default(), one);
    let a = sim.spawn("reader", 501);
    let b = sim.spawn("watcher", 501);
    let fa = a.open("/data/a.bin").expect("open");
    let fb = b.open_evtonly("/data/a.bin").expect("evtonly open");
    b.close(fb).expect("close");
    a.close(fa).expect("close");
    assert_eq!(sim.counts("/data/a.bin").expect("counts").usecount, 0);
    let mut dec = Decoder::new();
    let recs = drain(&sim, &mut dec);
    let (pa, pb) = (a.pid() as u32, b.pid() as u32);
    const FREAD: u32 = 1;
    const O_EVTONLY: u32 = 0x8000;
    assert_eq!(
        opens_and_closes(&recs),
        [
            (EventKind::Open, pa, 1, FREAD),
            (EventKind::Open, pb, 2, FREAD | O_EVTONLY),
            // Counts before vnode_rele_ext: the closing open's reference.
            (EventKind::Close, pb, 2, FREAD | O_EVTONLY),
            (EventKind::Close, pa, 1, FREAD),
        ]
    );
    // The ground truth has them in the same order.
    let trace: Vec<(TraceOp, i32)> = sim
        .trace()
        .iter()
        .filter(|t| matches!(t.op, TraceOp::Open | TraceOp::Close))
        .map(|t| (t.op, t.pid))
        .collect();
    let (ia, ib) = (a.pid(), b.pid());
    assert_eq!(
        trace,
        [
            (TraceOp::Open, ia),
            (TraceOp::Open, ib),
            (TraceOp::Close, ib),
            (TraceOp::Close, ia)
        ]
    );
    assert_eq!(sim.take_violations(), vec![]);
    a.exit();
    b.exit();
    sim.check_balanced().expect("balanced");
}

#[test]
fn a_forced_unmount_closes_once_for_the_unmounter_and_exit_closes_nothing_more() {
    let one = Tunables {
        nshards: 1,
        ..Tunables::default()
    };
    let sim = boot_loaded(Config::default(), one);
    let holder = sim.spawn("holder", 501);
    let admin = sim.spawn("diskutil", 0);
    holder.open("/Volumes/hfs/c.bin").expect("open");
    admin.unmount("/Volumes/hfs", true).expect("forced unmount");
    holder.exit();
    let mut dec = Decoder::new();
    let recs = drain(&sim, &mut dec);
    const IO_NDELAY: u32 = 0x10;
    assert_eq!(
        opens_and_closes(&recs),
        [
            (EventKind::Open, holder.pid() as u32, 1, 1),
            // vclean's close, in the unmounter's thread; the holder's own
            // close at exit reaches deadfs, unhooked.
            (EventKind::Close, admin.pid() as u32, 1, IO_NDELAY),
        ]
    );
    assert_eq!(sim.take_violations(), vec![]);
    sim.check_balanced().expect("balanced");
}
