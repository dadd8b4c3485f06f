//! `kern.maptrace.*` through the simulated sysctl: root only for every
//! leaf (read and write, enumerated from the tree), config
//! validation, the size query, copyout faults and concurrent readers.

use std::collections::HashSet;
use std::time::Duration;

use maptrace_abi::decode::Decoder;
use maptrace_abi::{EventKind, raw};
use maptrace_sim::{Config, Cred, Proc, TraceOp};
use maptrace_system_tests::{
    Tunables, boot_loaded, config_bytes, drain, event_records, events_buffer, raw_name,
    read_config, stats, traced, workload, write_config,
};

const EPERM: i32 = 1;
const ENOMEM: i32 = 12;
const EFAULT: i32 = 14;
const EINVAL: i32 = 22;

/// Every leaf the kext registers under `kern.maptrace`, from the sysctl tree
/// itself, so a leaf added later is covered without touching the tests.
fn registered_leaves(sim: &maptrace_sim::Sim) -> Vec<String> {
    let node = node_name();
    sim.sysctl_names()
        .into_iter()
        .filter(|n| n.strip_prefix(&node).is_some_and(|r| r.starts_with('.')))
        .collect()
}

/// `kern.maptrace`.
fn node_name() -> String {
    format!("kern.{}", raw_name(raw::MT_SYSCTL_NODE))
}

#[test]
fn every_kern_maptrace_leaf_refuses_non_root_reads_and_writes() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let leaves = registered_leaves(&sim);
    for known in [
        raw::MT_SYSCTL_ABI.as_slice(),
        raw::MT_SYSCTL_STATS,
        raw::MT_SYSCTL_CONFIG,
        raw::MT_SYSCTL_EVENTS,
    ] {
        assert!(leaves.iter().any(|l| l == raw_name(known)), "{leaves:?}");
    }
    let good = config_bytes(raw::MT_CF_ENABLE, raw::MT_EVMASK_PAGEIN, 0);
    for uid in [501, 1, u32::MAX] {
        let user = Cred::User(uid);
        for leaf in &leaves {
            assert_eq!(
                sim.sysctl_read(leaf, None, user).map_err(|e| e.errno),
                Err(EPERM),
                "{leaf}: size query as uid {uid}"
            );
            let mut buf = vec![0u8; 1 << 16];
            let r = sim.sysctl_read(leaf, Some(&mut buf), user);
            assert_eq!(r.map_err(|e| e.errno), Err(EPERM), "{leaf}: read");
            assert!(buf.iter().all(|&b| b == 0), "{leaf}: nothing copied out");
            for data in [&good[..], &[0; 4], &[]] {
                let r = sim.sysctl_write(leaf, data, None, user);
                assert_eq!(r.map_err(|e| e.errno), Err(EPERM), "{leaf}: write");
            }
        }
    }
    // The node itself has no handler: nothing to read for anyone.
    let node = node_name();
    assert!(sim.sysctl_names().contains(&node));
    let mut buf = [0u8; 64];
    assert!(
        sim.sysctl_read(&node, Some(&mut buf), Cred::User(501))
            .is_err()
    );
    assert_eq!(
        sim.sysctl_write(&node, &[0; 4], None, Cred::User(501))
            .map_err(|e| e.errno),
        Err(EPERM)
    );

    // Root reads every leaf; read-only leaves refuse writes even from root.
    let mut v = [0u8; 4];
    assert_eq!(
        sim.sysctl_read(raw_name(raw::MT_SYSCTL_ABI), Some(&mut v), Cred::Root),
        Ok(4)
    );
    assert_eq!(u32::from_le_bytes(v), raw::MT_ABI_VERSION);
    assert_eq!(stats(&sim, Cred::Root).nshards, 4);
    for name in [
        raw::MT_SYSCTL_ABI.as_slice(),
        raw::MT_SYSCTL_STATS,
        raw::MT_SYSCTL_EVENTS,
    ] {
        assert_eq!(
            sim.sysctl_write(raw_name(name), &[0; 4], None, Cred::Root)
                .map_err(|e| e.errno),
            Err(EPERM)
        );
    }
    // The refused requests consumed and changed nothing: root still gets
    // START, and the config is the default one.
    let mut dec = Decoder::new();
    let recs = drain(&sim, &mut dec);
    assert!(
        recs.iter().any(|r| r.kind == EventKind::Mark),
        "START is still there"
    );
    let cfg = read_config(&sim, Cred::Root).expect("root reads config");
    assert_ne!(cfg, good, "the users' writes changed nothing");
    assert_eq!(stats(&sim, Cred::Root).event_mask, raw::MT_EVMASK_ALL);
}

#[test]
fn a_sysctl_listing_does_not_read_the_destructive_events_leaf() {
    // `sysctl -A` reads every listed leaf; reading kern.maptrace.events
    // consumes a batch, which the companion would then never see.
    let sim = boot_loaded(Config::default(), Tunables::default());
    let leaf = |name: &'static [u8]| raw_name(name).to_string();
    let listed = sim.kernel().sysctl.listed_names();
    assert!(!listed.contains(&leaf(raw::MT_SYSCTL_EVENTS)), "{listed:?}");
    for shown in [raw::MT_SYSCTL_STATS.as_slice(), raw::MT_SYSCTL_CONFIG] {
        assert!(listed.contains(&leaf(shown)), "{listed:?}");
    }
    // Still there for a reader that names it.
    assert!(sim.sysctl_names().contains(&leaf(raw::MT_SYSCTL_EVENTS)));
}

#[test]
fn malformed_config_writes_are_refused_and_change_nothing() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let root = Cred::Root;
    let original = read_config(&sim, root).expect("read");
    let good = config_bytes(
        raw::MT_CF_ENABLE,
        raw::MT_EVMASK_ALL & !raw::MT_EVMASK_PAGEIN,
        0,
    );
    let mut bad: Vec<(&str, Vec<u8>)> = vec![
        ("short", good[..31].to_vec()),
        ("long", [good.as_slice(), &[0]].concat()),
        ("empty", Vec::new()),
        ("unknown flag", config_bytes(0x80, raw::MT_EVMASK_ALL, 0)),
        (
            "unknown kind bit",
            config_bytes(raw::MT_CF_ENABLE, 0x400, 0),
        ),
        ("kind 0 bit", config_bytes(raw::MT_CF_ENABLE, 0x1, 0)),
        (
            "filter and exclude",
            config_bytes(
                raw::MT_CF_ENABLE | raw::MT_CF_PID_FILTER | raw::MT_CF_PID_EXCLUDE,
                2,
                7,
            ),
        ),
    ];
    let mut v = good.clone();
    v[0] = 2;
    bad.push(("version", v));
    let mut v = good.clone();
    v[2] = 31;
    bad.push(("size field", v));
    let mut v = good.clone();
    v[20] = 1;
    bad.push(("reserved", v));
    for (what, bytes) in &bad {
        let r = write_config(&sim, bytes, root);
        assert_eq!(r.map_err(|e| e.errno), Err(EINVAL), "{what}");
        assert_eq!(
            read_config(&sim, root).expect("read"),
            original,
            "{what} changed the config"
        );
    }
    // Nothing changed in behaviour either: pageins are still recorded.
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let p = sim.spawn("app", 501);
    workload(&p, "/data/a.bin");
    assert!(
        drain(&sim, &mut dec)
            .iter()
            .any(|r| r.kind == EventKind::Pagein)
    );

    // A valid write applies: pageins stop (though they reach the filesystem).
    assert_eq!(
        write_config(&sim, &good, root),
        Ok(good.len()),
        "the old config is returned"
    );
    assert_eq!(read_config(&sim, root).expect("read"), good);
    let t0 = sim.trace().len();
    workload(&p, "/data/b.bin");
    assert!(sim.trace()[t0..].iter().any(|t| t.op == TraceOp::Pagein));
    let recs = drain(&sim, &mut dec);
    assert!(recs.iter().all(|r| r.kind != EventKind::Pagein));
    assert!(recs.iter().any(|r| r.kind == EventKind::Mmap));
    let st = stats(&sim, root);
    assert_eq!(st.event_mask, raw::MT_EVMASK_ALL & !raw::MT_EVMASK_PAGEIN);
}

#[test]
fn a_config_write_is_a_swap_no_other_write_lands_inside() {
    // A write returns the config it replaced. Writer A is held in the
    // copyout of that old value; writer B (no old buffer, so no copyout)
    // must wait for A, or A would return a config B has already replaced
    // and B's CONFIG marker would precede A's although A's config lost.
    let sim = boot_loaded(Config::default(), Tunables::default());
    let name = raw_name(raw::MT_SYSCTL_CONFIG);
    let a = config_bytes(raw::MT_CF_ENABLE, raw::MT_EVMASK_MMAP, 0);
    let b = config_bytes(raw::MT_CF_ENABLE, raw::MT_EVMASK_PAGEIN, 0);
    let hold = sim.hold_copyout();
    let b_done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer_a = s.spawn(|| {
            let mut old = vec![0u8; a.len()];
            sim.sysctl_write(name, &a, Some(&mut old), Cred::Root)
                .expect("A writes");
        });
        assert!(
            hold.wait_held(1, Duration::from_secs(20)),
            "A in its copyout"
        );
        let writer_b = s.spawn(|| {
            sim.sysctl_write(name, &b, None, Cred::Root)
                .expect("B writes");
            b_done.store(true, std::sync::atomic::Ordering::Release);
        });
        // The old shim lets B through at once; give it the chance.
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while !b_done.load(std::sync::atomic::Ordering::Acquire)
            && std::time::Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !b_done.load(std::sync::atomic::Ordering::Acquire),
            "B wrote while A was between reading and replacing the config"
        );
        hold.release();
        writer_a.join().unwrap();
        writer_b.join().unwrap();
    });
    let mut now = vec![0u8; b.len()];
    sim.sysctl_read(name, Some(&mut now), Cred::Root).unwrap();
    assert_eq!(now, b, "B, the later write, is in effect");
}

#[test]
fn a_copyout_fault_loses_nothing() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let t0 = traced(&sim);
    let p = sim.spawn("app", 501);
    workload(&p, "/data/a.bin");
    let produced = traced(&sim) - t0;
    assert!(produced > 4);

    let mut buf = events_buffer(&sim);
    sim.inject_copyout_faults(1);
    let r = sim.sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), Some(&mut buf), Cred::Root);
    assert_eq!(r.map_err(|e| e.errno), Err(EFAULT));
    let recs = drain(&sim, &mut dec);
    assert_eq!(
        event_records(&recs),
        produced,
        "every event survives the failed copy"
    );
    assert_eq!(dec.losses().dropped, 0);
    let mut seen = HashSet::new();
    assert!(
        recs.iter().all(|r| seen.insert((r.shard, r.pos))),
        "no record twice"
    );
}

#[test]
fn size_query_staging_bound_and_short_buffers() {
    let t = Tunables {
        nshards: 2,
        slots: 1024,
        staging_max: 16 * 1024,
        ..Tunables::default()
    };
    let sim = boot_loaded(Config::default(), t);
    let ev = raw_name(raw::MT_SYSCTL_EVENTS);
    assert_eq!(
        sim.sysctl_read(ev, None, Cred::Root),
        Ok(16 * 1024),
        "the staging size"
    );
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let t0 = traced(&sim);
    let p = sim.spawn("app", 501);
    for _ in 0..40 {
        workload(&p, "/data/a.bin");
    }
    let produced = traced(&sim) - t0;
    // A buffer too small for one record: ENOMEM, nothing consumed.
    let mut tiny = vec![0u8; 100];
    assert_eq!(
        sim.sysctl_read(ev, Some(&mut tiny), Cred::Root)
            .map_err(|e| e.errno),
        Err(ENOMEM)
    );
    // Reads with a small buffer come in several batches, each within it.
    let mut small = vec![0u8; 2048];
    let mut got = Vec::new();
    let mut batches = 0;
    loop {
        let n = sim
            .sysctl_read(ev, Some(&mut small), Cred::Root)
            .expect("read");
        if n == 0 {
            break;
        }
        assert!(n <= small.len());
        batches += 1;
        let (_, recs) = dec.decode(&small[..n]).expect("batch");
        got.extend(recs.into_iter().map(|r| r.expect("record")));
    }
    assert_eq!(event_records(&got), produced);
    assert!(batches > 3, "{batches} batches for {} records", got.len());
}

#[test]
fn two_readers_at_once_serialise_and_share_everything() {
    let sim = boot_loaded(
        Config::default(),
        Tunables {
            nshards: 4,
            slots: 8192,
            ..Tunables::default()
        },
    );
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let first_batch = dec.batches();
    let t0 = traced(&sim);
    let done = std::sync::atomic::AtomicBool::new(false);
    // Each reader keeps its raw batches; they are decoded in batch order
    // afterwards (a decoder checks shard positions are contiguous).
    let (a, b) = std::thread::scope(|s| {
        let reader = || {
            let mut buf = events_buffer(&sim);
            let mut batches: Vec<(u64, Vec<u8>)> = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let n = sim
                    .sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), Some(&mut buf), Cred::Root)
                    .expect("read");
                if n > 0 {
                    let h =
                        maptrace_abi::decode::parse_batch_header(&buf[..n]).expect("batch header");
                    batches.push((h.header.batch_no, buf[..n].to_vec()));
                } else if finished {
                    return batches;
                }
            }
        };
        let r1 = s.spawn(reader);
        let r2 = s.spawn(reader);
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let p = sim.spawn("w", 501);
                s.spawn(move || {
                    for _ in 0..20 {
                        workload(
                            &p,
                            if i % 2 == 0 {
                                "/data/a.bin"
                            } else {
                                "/data/b.bin"
                            },
                        );
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        (r1.join().expect("reader 1"), r2.join().expect("reader 2"))
    });
    let mut all: Vec<(u64, Vec<u8>)> = a.into_iter().chain(b).collect();
    all.sort_by_key(|(n, _)| *n);
    // Serialised drains: every batch number once, none missing.
    let numbers: Vec<u64> = all.iter().map(|(n, _)| *n).collect();
    let expected: Vec<u64> = (first_batch + 1..=first_batch + all.len() as u64).collect();
    assert_eq!(numbers, expected);
    let mut recs = Vec::new();
    for (_, bytes) in &all {
        let (_, r) = dec.decode(bytes).expect("batch");
        recs.extend(r.into_iter().map(|r| r.expect("contiguous records")));
    }
    let produced = traced(&sim) - t0;
    let mut seen = HashSet::new();
    for r in &recs {
        assert!(
            seen.insert((r.shard, r.pos)),
            "record {:?} delivered twice",
            (r.shard, r.pos)
        );
    }
    assert_eq!(event_records(&recs), produced);
    assert_eq!(stats(&sim, Cred::Root).dropped(), 0);
}

#[test]
fn pid_filter_config_selects_by_the_hooks_pid() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let a = sim.spawn("a", 501);
    let b = sim.spawn("b", 502);
    let mut dec = Decoder::new();
    for (flags, want_a, want_b) in [
        (raw::MT_CF_ENABLE | raw::MT_CF_PID_FILTER, true, false),
        (raw::MT_CF_ENABLE | raw::MT_CF_PID_EXCLUDE, false, true),
        (0, false, false),
    ] {
        let cfg = config_bytes(flags, raw::MT_EVMASK_ALL, a.pid() as u32);
        write_config(&sim, &cfg, Cred::Root).expect("config");
        drain(&sim, &mut dec);
        workload(&a, "/data/a.bin");
        workload(&b, "/data/b.bin");
        let recs = drain(&sim, &mut dec);
        let has = |p: &Proc| recs.iter().any(|r| r.pid == p.pid() as u32);
        assert_eq!((has(&a), has(&b)), (want_a, want_b), "flags {flags:#x}");
    }
}
