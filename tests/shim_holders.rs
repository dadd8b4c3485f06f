//! Who holds a reference, on the simulator with the real shim and core:
//! PROC records name every pid an event comes from (again after exec),
//! OPEN and CLOSE records bracket the usecount an open holds.

mod shim_support;

use maptrace_abi::EventKind;
use maptrace_abi::decode::{Decoder, Event, Record};
use maptrace_sim::{Config, map_flags, prot};
use shim_support::{Tunables, boot_loaded, drain};

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
