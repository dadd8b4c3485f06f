//! The scenario language: parsing (with line/column errors), printing, the
//! generator, and runs against the simulator.

use maptrace_sim::scenario::{GenParams, Op, Scenario, Step, generate, parse_size};
use maptrace_sim::{Config, DEMO, RingSize, Sim, TraceOp};
use std::sync::atomic::{AtomicBool, Ordering};

fn err(text: &str) -> (usize, usize, String) {
    let e = Scenario::parse(text).expect_err("must not parse");
    (e.line, e.col, e.msg)
}

#[test]
fn parses_every_command() {
    let s = Scenario::parse(
        "# comment\nmount apfs /\nfile /a 16K\nproc p uid=0\np: open /a as f   # trailing comment\n\
         p: mmap f prot=rx flags=shared,fixed offset=4K len=8K as m\np: touch m 4K 4096\np: touch m\n\
         parallel\n  p: munmap m\nend\np: close f\np: exec /a\np: exit\nsleep 2ms\nunmount / force\nrecycle /a\nevict /a\n",
    )
    .unwrap();
    assert_eq!(s.steps.len(), 15);
    assert_eq!(
        s.steps[2],
        Step::Proc {
            name: "p".into(),
            uid: 0
        }
    );
    match &s.steps[4] {
        Step::Op {
            line: 6,
            op:
                Op::Mmap {
                    prot: 5,
                    flags: 0x11,
                    offset: 4096,
                    len: Some(8192),
                    ..
                },
            ..
        } => {}
        other => panic!("mmap parsed as {other:?}"),
    }
    assert!(matches!(
        &s.steps[6],
        Step::Op {
            op: Op::Touch {
                offset: 0,
                len: None,
                ..
            },
            ..
        }
    ));
    assert!(matches!(&s.steps[7], Step::Parallel(v) if v.len() == 1));
    assert_eq!(s.steps[13], Step::Recycle { path: "/a".into() });
    assert_eq!(s.steps[14], Step::Evict { path: "/a".into() });
}

#[test]
fn errors_carry_line_and_column() {
    assert_eq!(
        err("mount apfs /\nbogus x"),
        (2, 1, "unknown command `bogus`".into())
    );
    assert_eq!(
        err("p: exit"),
        (
            1,
            1,
            "unknown process `p` (declare it with `proc p`)".into()
        )
    );
    assert_eq!(err("proc p\np: mmap f prot=q as m").0, 2);
    assert_eq!(err("proc p\np: mmap f prot=q as m").1, 16);
    assert_eq!(
        err("file relative 4K"),
        (1, 6, "`relative` is not an absolute path".into())
    );
    assert_eq!(err("file /a 4Q"), (1, 9, "bad size `4Q`".into()));
    assert_eq!(err("file /a"), (1, 8, "expected size".into()));
    assert_eq!(err("proc p\nproc p").0, 2);
    assert_eq!(err("proc p uid=x"), (1, 12, "bad uid `x`".into()));
    assert_eq!(err("proc p\np: open /a"), (2, 11, "expected `as`".into()));
    assert_eq!(
        err("proc p\np: open /a as 9x").2,
        "`9x` is not a valid descriptor name"
    );
    assert_eq!(
        err("proc p\np: open /a wo as f"),
        (2, 12, "bad open mode `wo` (use ro, rw or evtonly)".into())
    );
    assert_eq!(err("proc p\np: launch /a").2, "unknown operation `launch`");
    assert_eq!(
        err("proc p\np: exit now"),
        (2, 9, "unexpected `now`".into())
    );
    assert_eq!(err("parallel\nmount apfs /\nend").0, 2);
    assert_eq!(
        err("proc p\nparallel\np: exit"),
        (2, 1, "`parallel` without `end`".into())
    );
    assert_eq!(err("end").2, "`end` without `parallel`");
    assert_eq!(err("sleep 5 minutes").1, 7);
    assert_eq!(
        err("proc p\np: mmap f flags=shared,private as m").2,
        "bad flags (shared or private[,fixed]) `shared,private`"
    );
    assert_eq!(err("proc p\np: mmap f len=0 as m").2, "bad len `0`");
    assert_eq!(
        err("proc p\np: mmap f size=1 as m").2,
        "unknown mmap option `size`"
    );
}

#[test]
fn open_modes_parse_and_print_back() {
    use maptrace_sim::OpenMode;
    let s = Scenario::parse(
        "proc p\np: open /a as f\np: open /a ro as g\np: open /a rw as h\np: open /a evtonly as i\n",
    )
    .unwrap();
    let modes: Vec<OpenMode> = s
        .steps
        .iter()
        .filter_map(|st| match st {
            Step::Op {
                op: Op::Open { mode, .. },
                ..
            } => Some(*mode),
            _ => None,
        })
        .collect();
    assert_eq!(
        modes,
        [
            OpenMode::ReadOnly,
            OpenMode::ReadOnly,
            OpenMode::ReadWrite,
            OpenMode::EvtOnly
        ]
    );
    let text = s.to_string();
    assert!(text.contains("p: open /a rw as h") && text.contains("p: open /a evtonly as i"));
    assert_eq!(Scenario::parse(&text).unwrap().to_string(), text);
}

#[test]
fn sizes() {
    assert_eq!(parse_size("4096"), Some(4096));
    assert_eq!(parse_size("16K"), Some(16384));
    assert_eq!(parse_size("1M"), Some(1 << 20));
    assert_eq!(parse_size("0x1000"), Some(4096));
    assert_eq!(parse_size("K"), None);
    assert_eq!(parse_size("99999999999999999999G"), None);
}

#[test]
fn printing_round_trips() {
    let demo = Scenario::parse(DEMO).unwrap();
    let again = Scenario::parse(&demo.to_string()).unwrap();
    // Line numbers differ after printing; compare the printed forms.
    assert_eq!(demo.to_string(), again.to_string());
    let g = generate(7, &GenParams::default());
    assert_eq!(
        Scenario::parse(&g.to_string()).unwrap().to_string(),
        g.to_string()
    );
}

/// Found by fuzzing: a long sleep printed in microseconds overflowed the
/// parser, so the printed scenario did not parse.
#[test]
fn sleeps_print_in_a_unit_that_parses_back() {
    for (text, printed) in [
        ("sleep 8333333330510008s", "sleep 8333333330510008s"),
        (
            "sleep 18446744073709551615ms",
            "sleep 18446744073709551615ms",
        ),
        ("sleep 2000ms", "sleep 2s"),
        ("sleep 1500us", "sleep 1500us"),
        ("sleep 0us", "sleep 0s"),
    ] {
        let s = Scenario::parse(text).unwrap();
        assert_eq!(s.to_string().trim_end(), printed);
        assert_eq!(
            Scenario::parse(&s.to_string()).unwrap().steps,
            s.steps,
            "{text}"
        );
    }
}

#[test]
fn the_generator_is_deterministic_per_seed() {
    let p = GenParams::default();
    assert_eq!(generate(1, &p).to_string(), generate(1, &p).to_string());
    assert_ne!(generate(1, &p).to_string(), generate(2, &p).to_string());
}

#[test]
fn the_demo_runs_and_shows_each_path() {
    let sim = Sim::boot(Config::default());
    let s = Scenario::parse(DEMO).unwrap();
    let r = s.run(&sim).unwrap();
    assert!(r.ops > 10);
    assert!(
        r.touches.hits > 0,
        "the re-read is served from the page cache"
    );
    let t = sim.trace();
    let count = |op, path: &str| {
        t.iter()
            .filter(|e| e.op == op && e.path.ends_with(path))
            .count()
    };
    assert_eq!(
        count(TraceOp::Mmap, "/Mail"),
        3,
        "spawn maps three segments"
    );
    assert_eq!(count(TraceOp::Mmap, "/usr/lib/dyld"), 3, "and dyld's");
    assert_eq!(
        count(TraceOp::Mmap, "/MailCore"),
        1,
        "the app's framework, copy-on-write: one VNOP_MMAP"
    );
    // On macOS 11+ system dylibs exist only in the shared cache.
    assert!(t.iter().all(|e| !e.path.ends_with(".dylib")));
    assert_eq!(count(TraceOp::FileCheckMmap, "/Mail"), 0);
    assert_eq!(
        count(TraceOp::Mmap, "Envelope.db"),
        4,
        "two MAP_SHARED mmap(2)s, two VNOP_MMAPs each"
    );
    assert_eq!(
        count(TraceOp::Mnomap, "Envelope.db"),
        1,
        "forced unmount unmaps once"
    );
    assert_eq!(count(TraceOp::Mnomap, "/Mail"), 1, "exit unmaps");
    assert!(count(TraceOp::Pagein, "Envelope.db") >= 2);
    sim.check_balanced().unwrap();
}

#[test]
fn generated_workloads_run_balanced() {
    for seed in 0..4 {
        let sim = Sim::boot(Config {
            seed,
            ..Config::default()
        });
        let s = generate(
            seed,
            &GenParams {
                force_unmount: seed % 2 == 0,
                ..GenParams::default()
            },
        );
        s.run(&sim)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{s}"));
        sim.check_balanced()
            .unwrap_or_else(|v| panic!("seed {seed}: {v:?}"));
        assert!(sim.trace().iter().any(|e| e.op == TraceOp::Pagein));
    }
}

#[test]
fn run_errors_name_the_line() {
    let sim = Sim::boot(Config::default());
    let s = Scenario::parse("mount apfs /\nproc p\np: open /missing as f\n").unwrap();
    let e = s.run(&sim).unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.msg.contains("open /missing"), "{}", e.msg);
    let s = Scenario::parse("proc q\nq: munmap m\n").unwrap();
    assert_eq!(
        s.run(&sim).unwrap_err(),
        maptrace_sim::scenario::RunError {
            line: 2,
            msg: "no mapping m".into()
        }
    );
    let s = Scenario::parse("\nmount apfs /\n").unwrap();
    let e = s.run(&sim).unwrap_err();
    assert_eq!(
        (e.line, e.msg.as_str()),
        (2, "mount apfs /: errno 16"),
        "already mounted"
    );
}

#[test]
fn every_shipped_scenario_parses_and_runs_balanced() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "mts") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let s = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}:{e}", path.display()));
        let sim = Sim::boot(Config::default());
        s.run(&sim)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        sim.check_balanced()
            .unwrap_or_else(|v| panic!("{}: {v:?}", path.display()));
        n += 1;
    }
    assert!(n >= 4, "demo, concurrent, recycle and launch ship");
}

#[test]
fn the_demo_runs_with_the_real_shim_loaded() {
    const { assert!(maptrace_sim::SHIM_LINKED, "kext-shim/src has the shim") };
    let sim = Sim::boot(Config::default());
    sim.load_shim().unwrap();
    let names = sim.sysctl_names();
    assert!(
        names.iter().any(|n| n == "kern.maptrace.events"),
        "{names:?}"
    );
    Scenario::parse(DEMO).unwrap().run(&sim).unwrap();
    let n = sim
        .sysctl_read("kern.maptrace.events", None, maptrace_sim::Cred::Root)
        .unwrap();
    let mut buf = vec![0u8; n];
    let got = sim
        .sysctl_read(
            "kern.maptrace.events",
            Some(&mut buf),
            maptrace_sim::Cred::Root,
        )
        .unwrap();
    assert!(got > 0, "the shim recorded the demo");
    assert_eq!(
        sim.find_kernel_addresses(&buf[..got]),
        Vec::<usize>::new(),
        "no kernel address leaks"
    );
    assert_eq!(
        sim.sysctl_read(
            "kern.maptrace.events",
            Some(&mut buf),
            maptrace_sim::Cred::User(501)
        )
        .unwrap_err()
        .errno,
        1,
        "events are root only"
    );
    // The demo force-unmounts the only hfs volume while a file on it is in
    // use: the shim keeps that vector hooked (to trace vclean's MNOMAPs) and
    // refuses to unload until a mount of the type is seen again.
    assert_eq!(
        sim.unload_kext(),
        Err(maptrace_sim::KextError::StopRefused(5))
    );
    sim.mount("hfs", "/Volumes/Other").unwrap();
    sim.add_file("/Volumes/Other/f", 64 << 10).unwrap();
    let p = sim.spawn("p", 501);
    let fd = p.open("/Volumes/Other/f").unwrap();
    let a = p
        .mmap(
            fd,
            64 << 10,
            maptrace_sim::prot::READ,
            maptrace_sim::map_flags::SHARED,
            0,
        )
        .unwrap();
    p.munmap(a).unwrap();
    p.close(fd).unwrap();
    sim.unload_kext().unwrap();
    assert_eq!(sim.load_shim(), Ok(()), "loads again");
    sim.unload_kext().unwrap();
    sim.check_balanced().unwrap();
}

#[test]
fn fork_in_a_scenario_starts_the_child() {
    let sim = Sim::boot(Config::default());
    let s = Scenario::parse(
        "mount apfs /\nfile /f 64K\nproc p\np: open /f as f\np: mmap f as m\np: fork as c\nc: touch m 0 4K\n\
         p: munmap m\nc: munmap m\nc: close f\np: close f\nc: exit\np: exit\n",
    )
    .unwrap();
    assert!(s.to_string().contains("p: fork as c"));
    s.run(&sim).unwrap();
    let t = sim.trace();
    assert_eq!(
        t.iter().filter(|e| e.op == TraceOp::Mmap).count(),
        1,
        "one private mmap(2), no VNOP_MMAP for fork"
    );
    assert_eq!(t.iter().filter(|e| e.op == TraceOp::Mnomap).count(), 1);
    let pids: std::collections::HashSet<i32> = t
        .iter()
        .filter(|e| e.op == TraceOp::Pagein)
        .map(|e| e.pid)
        .collect();
    assert_eq!(pids.len(), 1, "the child faulted");
    sim.check_balanced().unwrap();
}

#[test]
fn generated_parallel_workloads_with_the_real_shim_stay_clean() {
    use maptrace_sim::Cred;
    for seed in [11, 12] {
        let sim = Sim::boot(Config {
            seed,
            ..Config::default()
        });
        sim.load_shim().unwrap();
        let s = generate(
            seed,
            &GenParams {
                procs: 6,
                ops_per_proc: 60,
                ..GenParams::default()
            },
        );
        s.run(&sim).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let mut total = 0;
        loop {
            let n = sim
                .sysctl_read("kern.maptrace.events", None, Cred::Root)
                .unwrap();
            let mut buf = vec![0u8; n];
            let got = sim
                .sysctl_read("kern.maptrace.events", Some(&mut buf), Cred::Root)
                .unwrap();
            if got == 0 {
                break;
            }
            assert!(
                sim.find_kernel_addresses(&buf[..got]).is_empty(),
                "seed {seed}: a kernel address leaked"
            );
            total += got;
        }
        assert!(total > 0, "seed {seed}: the shim recorded the workload");
        sim.unload_kext().unwrap();
        sim.check_balanced()
            .unwrap_or_else(|v| panic!("seed {seed}: {v:?}"));
        assert_eq!(sim.allocations_outstanding(), (0, 0));
    }
}

/// posix_spawn maps the child's image in the parent's thread
/// (kern_exec.c:4511, xnu-11417.101.15); the child's thread faults.
#[test]
fn spawn_in_a_scenario_maps_as_the_parent_and_starts_the_child() {
    let sim = Sim::boot(Config::default());
    let s = Scenario::parse(
        "mount apfs /\nfile /sbin/launchd 64K\nfile /usr/lib/dyld 64K\nfile /app 64K\nproc launchd uid=0\n\
         launchd: exec /sbin/launchd\nlaunchd: spawn /app as app\napp: exit\nlaunchd: exit\n",
    )
    .unwrap();
    assert!(s.to_string().contains("launchd: spawn /app as app"));
    let r = s.run(&sim).unwrap();
    assert!(r.touches.pageins >= 1, "the child's entry faults count");
    let t = sim.trace();
    let pid_of = |op, path: &str| -> std::collections::HashSet<i32> {
        t.iter()
            .filter(|e| e.op == op && e.path == path)
            .map(|e| e.pid)
            .collect()
    };
    let maps = pid_of(TraceOp::Mmap, "/app");
    let pageins = pid_of(TraceOp::Pagein, "/app");
    assert_eq!(maps.len(), 1);
    assert_eq!(pageins.len(), 1);
    assert_ne!(maps, pageins, "launchd maps, the child faults");
    assert_eq!(maps, pid_of(TraceOp::Mmap, "/sbin/launchd"));
    sim.check_balanced().unwrap();
}

/// A forced unmount's MNOMAP is the unmount(2) caller's
/// (bsd/vfs/vfs_subr.c vflush, xnu-11417.101.15), and a jetsam kill's
/// teardown is the memorystatus thread's, pid 0 (kern_memorystatus.c).
#[test]
fn unmount_by_a_process_and_jetsam_run_as_xnu_runs_them() {
    let sim = Sim::boot(Config::default());
    let s = Scenario::parse(
        "mount apfs /\nmount hfs /Volumes/X\nfile /Volumes/X/a 64K\nfile /b 64K\nproc r\nproc v\nproc umount uid=0\n\
         r: open /Volumes/X/a as f\nr: mmap f flags=shared as m\nv: open /b as g\nv: mmap g as n\n\
         umount: unmount /Volumes/X force\njetsam v\nr: exit\n",
    )
    .unwrap();
    let text = s.to_string();
    assert!(text.contains("umount: unmount /Volumes/X force") && text.contains("jetsam v"));
    assert_eq!(Scenario::parse(&text).unwrap().to_string(), text);
    s.run(&sim).unwrap();
    let t = sim.trace();
    let mnomap = |path: &str| {
        t.iter()
            .find(|e| e.op == TraceOp::Mnomap && e.path == path)
            .map(|e| e.pid)
            .unwrap()
    };
    let umount_pid = mnomap("/Volumes/X/a");
    assert_eq!(sim.proc(umount_pid).unwrap().name(), "umount");
    assert_eq!(mnomap("/b"), 0, "jetsam's teardown is kernel_task's");
    sim.check_balanced().unwrap();
    assert_eq!(
        err("jetsam nobody"),
        (1, 8, "unknown process `nobody`".into())
    );
    assert_eq!(
        err("proc p\np: unmount /x now"),
        (2, 15, "unexpected `now`".into())
    );
}

#[test]
fn chapters_and_ring_sizes_parse_print_and_refuse_bad_values() {
    let s = Scenario::parse("ring slots=64\nchapter 1.  A   launch # the first part\nsleep 1ms\n")
        .unwrap();
    assert_eq!(
        s.ring(),
        Some(RingSize {
            shards: 1,
            slots: 64
        })
    );
    assert_eq!(s.steps[1], Step::Chapter("1. A launch".into()));
    assert_eq!(
        Scenario::parse(&s.to_string()).unwrap().steps,
        s.steps,
        "printing round-trips"
    );
    assert_eq!(
        Scenario::parse("ring shards=2 slots=256").unwrap().ring(),
        Some(RingSize {
            shards: 2,
            slots: 256
        })
    );
    assert_eq!(Scenario::parse("sleep 1ms").unwrap().ring(), None);
    assert_eq!(
        err("ring slots=100"),
        (1, 12, "bad slot count (a power of two) `100`".into())
    );
    assert_eq!(err("ring shards=0 slots=64").2, "bad shard count `0`");
    assert_eq!(err("ring shards=2").2, "expected slots=N");
    assert_eq!(
        err("ring size=1").2,
        "unknown ring option `size` (use slots=N, shards=N)"
    );
    assert_eq!(err("chapter   # nothing").2, "expected a chapter title");
    // Found by the fuzz target's promise: an error's column is on its line.
    assert_eq!(
        err("ring slots"),
        (1, 6, "expected slots=N or shards=N, found `slots`".into())
    );
    assert_eq!(err("ring slots=").1, 12);
}

/// A stop request ends a run inside a long `sleep` (checked in slices),
/// before the steps after it: the touch after the sleep never runs.
#[test]
fn a_stop_request_ends_a_run_inside_a_long_sleep() {
    let s = Scenario::parse(
        "mount apfs /\nfile /a 64K\nproc p\np: open /a as f\np: mmap f as m\n\
         p: touch m 0 16K\nsleep 1000s\np: touch m 32K 16K\n",
    )
    .unwrap();
    let sim = std::sync::Arc::new(Sim::boot(Config::default()));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (at_sleep_tx, at_sleep_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (sim2, stop2) = (sim.clone(), stop.clone());
    std::thread::spawn(move || {
        let r = s.run_until(&sim2, &stop2, |step| {
            if matches!(step, Step::Sleep(_)) {
                let _ = at_sleep_tx.send(());
            }
        });
        let _ = done_tx.send(r);
    });
    at_sleep_rx.recv().unwrap();
    stop.store(true, Ordering::Relaxed);
    // A hang guard only: the run ends within a few milliseconds.
    let r = done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the run stopped inside its sleep")
        .unwrap();
    assert!(r.stopped);
    assert_eq!(r.ops, 3, "open, mmap and the first touch; not the second");
    let pageins = sim
        .trace()
        .iter()
        .filter(|t| t.op == TraceOp::Pagein)
        .count();
    assert!(pageins > 0);
    // Stopped before the first step, nothing runs.
    let stop = AtomicBool::new(true);
    let r = Scenario::parse("proc q\nq: exit\n")
        .unwrap()
        .run_until(&sim, &stop, |_| {})
        .unwrap();
    assert_eq!((r.stopped, r.ops), (true, 0));
}

#[test]
fn a_stacking_mount_mirrors_a_directory_from_a_scenario() {
    let text = "mount hfs /Volumes/Data\nfile /Volumes/Data/App/bin 64K\n\
                mount nullfs /private/var/Translocated from /Volumes/Data/App\n\
                proc p\np: open /private/var/Translocated/bin as f\n\
                p: mmap f prot=rx as m\np: touch m\np: munmap m\np: close f\n";
    let s = Scenario::parse(text).unwrap();
    assert_eq!(
        s.steps[2],
        Step::Mount {
            fstype: "nullfs".into(),
            on: "/private/var/Translocated".into(),
            from: Some("/Volumes/Data/App".into()),
        }
    );
    // Printed as written, and read back the same.
    assert!(
        s.to_string()
            .contains("mount nullfs /private/var/Translocated from /Volumes/Data/App\n")
    );
    assert_eq!(Scenario::parse(&s.to_string()).unwrap().steps, s.steps);

    // The map goes through the mirror to the lower file (nullfs_mmap).
    let sim = Sim::boot(Config::default());
    s.run(&sim).unwrap();
    let mmaps: Vec<String> = sim
        .trace()
        .into_iter()
        .filter(|t| t.op == TraceOp::Mmap)
        .map(|t| t.path)
        .collect();
    assert_eq!(mmaps, ["/Volumes/Data/App/bin"]);
    sim.check_balanced().unwrap();
    drop(sim); // one booted simulator at a time

    // A stacking mount without `from`, a bad `from`, and a mirror of a
    // directory no mount holds: line, command and a way out.
    assert_eq!(
        err("mount nullfs /m from App").2,
        "`App` is not an absolute path"
    );
    assert_eq!(err("mount nullfs /m from").2, "expected a path");
    let sim = Sim::boot(Config::default());
    let e = Scenario::parse("mount nullfs /m\n")
        .unwrap()
        .run(&sim)
        .unwrap_err();
    assert_eq!(e.line, 1);
    assert!(
        e.msg.starts_with("mount nullfs /m: ") && e.msg.contains("`mount nullfs /m from DIR`"),
        "{}",
        e.msg
    );
    let e = Scenario::parse("mount bindfs /m from /nowhere\n")
        .unwrap()
        .run(&sim)
        .unwrap_err();
    assert!(
        e.msg.starts_with("mount bindfs /m from /nowhere: "),
        "{}",
        e.msg
    );
}
