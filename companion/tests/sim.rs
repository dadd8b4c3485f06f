//! The companion on the simulator source: the real shim and core in the XNU
//! simulator, read through the simulated sysctls. `demo`, scenarios made for
//! the report's verdicts, stats and config, root checks, and the stream
//! checked against the simulator's ground truth.

mod common;

use common::maptrace;

use maptrace::pagesize::PageSize;
use maptrace::pipeline::{Ev, Item, Pipeline};
use maptrace::sim::{SimSource, SimSysctl, Workload};
use maptrace::source::{Next, Source, SourceError};
use maptrace::sysctl::{self, SysErr, Sysctl, SysctlSource};
use maptrace_abi::{EventKind, raw};
use maptrace_sim::{Cred, TraceOp};
use predicates::prelude::*;
use serde_json::Value;
use std::sync::Arc;
use tempfile::TempDir;

/// Reads a source to its end, returning the items.
fn read_all(src: &mut dyn Source) -> (Vec<Item>, maptrace::pipeline::Totals) {
    let mut p = Pipeline::new();
    let mut items = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..100_000 {
        match src.next_batch(&mut buf).unwrap() {
            Next::Batch(n) => {
                p.feed(&buf[..n], &mut items);
            }
            Next::Idle => std::thread::sleep(std::time::Duration::from_millis(1)),
            Next::Corrupt(msg) => panic!("the simulator made a corrupt batch: {msg}"),
            Next::End => {
                p.finish(&mut items);
                return (items, p.totals());
            }
        }
    }
    panic!("the simulator source never ended");
}

/// The demo without its deliberately small ring (its `ring` line), so
/// nothing is lost.
fn demo_text_on_the_default_ring() -> String {
    maptrace_sim::DEMO
        .lines()
        .filter(|l| !l.starts_with("ring "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn demo_on_the_default_ring() -> Workload {
    Workload::Script(demo_text_on_the_default_ring())
}

/// `--source sim:FILE` for the demo on the default ring.
fn demo_source_on_the_default_ring(dir: &TempDir) -> String {
    let f = dir.path().join("demo.mts");
    std::fs::write(&f, demo_text_on_the_default_ring()).unwrap();
    format!("sim:{}", f.display())
}

#[test]
fn the_stream_is_what_reached_the_filesystems() {
    let mut src = SimSource::open(demo_on_the_default_ring()).unwrap();
    let sim = Arc::clone(src.sim());
    let (items, totals) = read_all(&mut src);
    assert_eq!(
        (totals.dropped, totals.gap_slots, totals.corrupt),
        (0, 0, 0)
    );
    let count = |k: EventKind| {
        items
            .iter()
            .filter(|i| matches!(i, Item::Event(e) if e.rec.kind == k))
            .count()
    };
    let truth = sim.trace();
    let truth_of = |op: TraceOp| truth.iter().filter(|t| t.op == op).count();
    assert!(truth_of(TraceOp::Pagein) > 0);
    assert_eq!(count(EventKind::Mmap), truth_of(TraceOp::Mmap));
    assert_eq!(count(EventKind::Pagein), truth_of(TraceOp::Pagein));
    assert_eq!(count(EventKind::Mnomap), truth_of(TraceOp::Mnomap));
    assert_eq!(count(EventKind::FileMmap), truth_of(TraceOp::FileCheckMmap));
    // Every page-in names its file, with the offset and size the filesystem saw.
    let mut seen: Vec<(String, i64, u64)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => match &e.rec.event {
                maptrace_abi::Event::Pagein { offset, size, .. } => Some((
                    e.path
                        .as_ref()
                        .expect("page-in without a path")
                        .text
                        .clone(),
                    *offset,
                    u64::from(*size),
                )),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut want: Vec<(String, i64, u64)> = truth
        .iter()
        .filter(|t| t.op == TraceOp::Pagein)
        .map(|t| (t.path.clone(), t.offset, t.size))
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    // Every mmap(2) was paired with its VNOP_MMAP, and a MAP_SHARED one
    // with both of its VNOP_MMAPs (XNU maps its named object twice).
    let maps_of_calls = |n: u8| {
        items
            .iter()
            .filter(|i| matches!(i, Item::Event(e) if e.call.is_some() && e.call_map == n))
            .count()
    };
    let shared_calls = items
        .iter()
        .filter(|i| matches!(i, Item::Event(Ev { rec, .. }) if matches!(rec.event, maptrace_abi::Event::FileMmap { mmap_flags, .. } if mmap_flags & 1 != 0)))
        .count();
    assert_eq!(maps_of_calls(1), truth_of(TraceOp::FileCheckMmap));
    assert!(shared_calls > 0, "the demo maps its database MAP_SHARED");
    assert_eq!(maps_of_calls(2), shared_calls);
    assert_eq!(totals.unpaired_calls, 0);
}

/// The demo's story: a key to the columns, three chapters, a leak suspect
/// that names the helper, and a loss counted exactly (the simulator runs
/// the demo in lockstep with the reader, on a 128-slot ring: the same
/// records are lost every run).
#[test]
fn demo_tells_a_launch_a_leak_and_an_exact_loss() {
    let out = maptrace().arg("demo").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // The loss is the story's, said on the last line: the demo succeeds.
    assert_eq!(out.status.code(), Some(0), "{text}");
    let key = text.find("key: USE, KUSE, IO").expect("the key");
    let header = text.find("TIME(s)").expect("the table");
    assert!(key < header, "the key comes once, before the stream");
    assert_eq!(text.matches("key: ").count(), 1);
    let chapters: Vec<usize> = ["== 1. An app launch", "== 2. A leak", "== 3. A loss"]
        .iter()
        .map(|c| text.find(c).unwrap_or_else(|| panic!("no {c}: {text}")))
        .collect();
    assert!(chapters.is_sorted(), "{chapters:?}");
    for want in [
        "exec/loader map",
        "mmap(2) check",
        "/Volumes/External/Mail/Envelope.db",
    ] {
        assert!(text.contains(want), "{want}");
    }
    // As stream's table: no naming rows (each row names its file and
    // process), and a line says how many were left out.
    let kind_col = text[header..].lines().next().unwrap().find("KIND").unwrap();
    assert!(
        !text.lines().any(|l| l
            .get(kind_col..)
            .is_some_and(|k| k.starts_with("path ") || k.starts_with("proc "))),
        "{text}"
    );
    assert!(
        text.contains("-- 20 path and proc rows not shown"),
        "{text}"
    );
    // Chapter 1's page-ins come under its heading, before chapter 2.
    let launch = &text[chapters[0]..chapters[1]];
    assert!(launch.matches(" pagein ").count() > 10, "{launch}");
    // The helper that keeps the photo is the one the report suspects.
    let helper = text[chapters[1]..chapters[2]]
        .lines()
        .find(|l| l.contains(" mmap ") && l.ends_with("/Users/me/Pictures/Holiday.heic"))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("the helper's mmap row");
    let suspect = text
        .lines()
        .find(|l| l.contains("/Users/me/Pictures/Holiday.heic [still_mapped]"))
        .expect("the photo is a leak suspect");
    assert!(suspect.contains(&format!("by pid {helper} ")), "{suspect}");
    // ... and names the process that holds it, by its open and its map.
    assert!(
        suspect.contains(&format!("held by pid {helper} (thumbnailer) open x1")),
        "{suspect}"
    );
    assert!(text.contains("LEAK SUSPECTS: 1"), "{text}");
    // The loss: under chapter 3, exactly counted, and the last line says so.
    let lost = &text[chapters[2]..];
    assert!(
        lost.contains("!! LOST 132 records on shard 0 here"),
        "{lost}"
    );
    assert!(text.contains("LOSSES  dropped 132,"));
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("lost: exactly 132 records: 132 dropped (the kext's ring was full) on shard 0 in \"3. A loss"),
        "{last}"
    );
}

/// `--quiet` shows the report alone (and the closing loss line).
#[test]
fn a_quiet_demo_shows_only_the_report() {
    let out = maptrace().args(["demo", "--quiet"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("maptrace report:"), "{text}");
    assert!(!text.contains("key: ") && !text.contains("== ") && !text.contains("TIME(s)"));
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("lost: exactly 132 records")
    );
    // The same story as another scenario gets the usual status for a loss.
    let dir = TempDir::new().unwrap();
    let f = dir.path().join("story.mts");
    std::fs::write(&f, maptrace_sim::DEMO).unwrap();
    maptrace()
        .args(["demo", "--quiet", "--scenario"])
        .arg(&f)
        .assert()
        .code(3)
        .stdout(predicate::str::contains("lost: exactly 132 records"));
}

#[test]
fn the_demo_report_knows_the_xnu_semantics() {
    let dir = TempDir::new().unwrap();
    let out = maptrace()
        .args([
            "--source",
            &demo_source_on_the_default_ring(&dir),
            "report",
            "--json",
        ])
        .output()
        .unwrap();
    let r = common::ok_json(&out);
    let file = |p: &str| common::report_file(&r, p);
    // Two shared mmaps of one file: one epoch, one usecount reference, two
    // mmap(2) calls of two VNOP_MMAPs each and no exec/loader map.
    let db = file("/Volumes/External/Mail/Envelope.db");
    let e = &db["epochs"][0];
    assert_eq!(db["epochs"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            e["maps"].as_u64(),
            e["mmap_calls"].as_u64(),
            e["exec_maps"].as_u64()
        ),
        (Some(4), Some(2), Some(0))
    );
    assert_eq!(e["verdict"], "balanced");
    // Exec maps three segments without mmap(2); the text reference explains the extra count.
    let mail = file("/Applications/Mail.app/Contents/MacOS/Mail");
    let e = &mail["epochs"][0];
    assert_eq!(
        (e["maps"].as_u64(), e["exec_maps"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(e["verdict"], "text_ref");
    // Only chapter 2's helper, which never unmaps its photo, is suspected.
    let suspects = r["leak_suspects"].as_array().unwrap();
    assert_eq!(suspects.len(), 1, "{suspects:?}");
    assert_eq!(suspects[0]["path"], "/Users/me/Pictures/Holiday.heic");
    assert_eq!(suspects[0]["reason"], "still_mapped");
}

#[test]
fn scenarios_made_for_leaks_are_flagged() {
    let dir = TempDir::new().unwrap();
    let script = dir.path().join("leak.mts");
    std::fs::write(
        &script,
        "mount apfs /\nfile /data/kept.db 64K\nproc holder\nholder: open /data/kept.db as f\n\
         holder: mmap f prot=r flags=shared as m\nholder: touch m 0 16K\n",
    )
    .unwrap();
    let src = format!("sim:{}", script.display());
    let out = maptrace()
        .args(["--source", &src, "report", "--json"])
        .output()
        .unwrap();
    let r = common::ok_json(&out);
    let s = &r["leak_suspects"].as_array().unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["path"], "/data/kept.db");
    assert_eq!(s[0]["reason"], "still_mapped");
    assert_eq!(r["files"][0]["pageins"]["count"], 1);
}

#[test]
fn bad_scenarios_say_where() {
    let dir = TempDir::new().unwrap();
    let script = dir.path().join("bad.mts");
    std::fs::write(
        &script,
        "mount apfs /\nproc p\np: mmap nothing prot=q as m\n",
    )
    .unwrap();
    maptrace()
        .args(["--source", &format!("sim:{}", script.display()), "stream"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("scenario: 3:"));
    maptrace()
        .args(["--source", "sim:/nonexistent.mts", "stream"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot read scenario"));
}

#[test]
fn stats_and_config_through_the_simulated_sysctls() {
    let out = maptrace()
        .args(["--source", "sim", "stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["enabled"], true);
    assert_eq!(s["probe_method"], "offset");
    assert!(!s["shards"].as_array().unwrap().is_empty());
    // The demo workload ran first, and nothing read its events.
    assert!(s["hook_calls"].as_u64() > Some(0), "{s}");
    assert!(s["vectors_patched"].as_u64() > Some(0), "{s}");
    let backlog: u64 = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["backlog_slots"].as_u64().unwrap())
        .sum();
    assert!(backlog > 0, "{s}");
    maptrace()
        .args(["--source", "sim", "stats"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("recording enabled"));
    maptrace()
        .args(["--source", "sim", "config", "show"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("processes  all"));
    maptrace()
        .args([
            "--source",
            "sim",
            "config",
            "set",
            "--events",
            "mmap,pagein",
            "--exclude-pid",
            "42",
        ])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("events     mmap,pagein"))
        .stdout(predicate::str::contains("all but pid 42"));
}

#[test]
fn config_changes_apply_and_bad_writes_are_refused() {
    let mut src = SimSource::open(Workload::Idle).unwrap();
    let cur = src.config().unwrap();
    let mut only = cur;
    only.event_mask = raw::MT_EVMASK_PAGEIN;
    src.set_config(&only).unwrap();
    assert_eq!(src.config().unwrap().event_mask, raw::MT_EVMASK_PAGEIN);
    // The kext itself refuses what the companion would never send.
    let mut bad = cur;
    bad.flags = raw::MT_CF_PID_FILTER | raw::MT_CF_PID_EXCLUDE;
    let e = src.set_config(&bad).unwrap_err();
    assert!(matches!(e, SourceError::ConfigRefused(_)), "{e:?}");
    bad = cur;
    bad.reserved[0] = 1;
    assert!(matches!(
        src.set_config(&bad),
        Err(SourceError::ConfigRefused(_))
    ));
    assert_eq!(src.config().unwrap().event_mask, raw::MT_EVMASK_PAGEIN);
}

#[test]
fn a_user_who_is_not_root_is_told_so() {
    let src = SimSource::open(Workload::Idle).unwrap();
    let api = SimSysctl::new(Arc::clone(src.sim()), Cred::User(501));
    // The ABI check at open is already a read: refused, and said so.
    let e = SysctlSource::open(api, "sim as uid 501").unwrap_err();
    assert!(
        matches!(e, SourceError::NotRoot { ref name, what: "read" } if name == "kern.maptrace.abi"),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("not root") && msg.contains("run maptrace as root") && msg.contains("sudo"),
        "{msg}"
    );
    // Every other leaf refuses the user too, reads and writes alike.
    let mut user = SimSysctl::new(Arc::clone(src.sim()), Cred::User(501));
    for name in [sysctl::STATS, sysctl::CONFIG, sysctl::EVENTS] {
        assert_eq!(user.read(name, None), Err(SysErr::Perm), "{name}");
        assert_eq!(user.write(name, &[0; 32]), Err(SysErr::Perm), "{name}");
    }
    // Root is not affected.
    let root = SimSysctl::new(Arc::clone(src.sim()), Cred::Root);
    assert!(SysctlSource::open(root, "sim as root").is_ok());
}

#[test]
fn recording_the_simulator_replays_identically() {
    let dir = TempDir::new().unwrap();
    let f = dir.path().join("demo.mtr");
    maptrace()
        .args([
            "--source",
            &demo_source_on_the_default_ring(&dir),
            "record",
            "-o",
        ])
        .arg(&f)
        .assert()
        .code(0)
        .stderr(predicate::str::contains("0 dropped"));
    let out = maptrace()
        .args(["report", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["totals"]["files"], 7,
        "Mail, dyld, MailCore, MailUI, Envelope.db, Holiday.heic, Holiday.mov"
    );
    assert!(r["totals"]["by_kind"]["pagein"].as_u64() > Some(0));
    // A live source's recording ends with the kext's counters (format 2).
    let mut rd = maptrace::recording::Reader::open(&f).unwrap();
    let mut buf = Vec::new();
    while rd.next_frame(&mut buf).unwrap().is_some() {}
    let stats = maptrace::control::parse_stats(rd.final_stats().expect("closing stats")).unwrap();
    assert_eq!(stats.shards.iter().map(|s| s.dropped).sum::<u64>(), 0);
    assert!(stats.hook_calls > 0);
    // The simulated Mac's page size travels with the recording (format 5).
    assert_eq!(rd.header().page_size, Some(PageSize::SIXTEEN_K));
}

#[test]
fn the_simulator_source_says_its_kernels_page_size() {
    // The simulator models Apple silicon by default: 16 KiB pages.
    let src = SimSource::open(Workload::Idle).unwrap();
    assert_eq!(src.page_size(), Ok(PageSize::SIXTEEN_K));
    // One simulator at a time: this one goes before the next boots.
    drop(src);
    // An Intel one: 4 KiB, read through the sysctl side as on a Mac.
    let cfg = maptrace_sim::Config::for_platform(maptrace_sim::Platform::IntelSsd);
    let mut api = SimSysctl::new(Arc::new(maptrace_sim::Sim::boot(cfg)), Cred::Root);
    assert_eq!(api.page_size(), Some(PageSize::FOUR_K));
}

/// About three seconds of page-ins, one 16K cluster per millisecond.
fn long_script(dir: &TempDir) -> std::path::PathBuf {
    let script = dir.path().join("long.mts");
    let mut text = String::from("mount apfs /\nfile /data/big 64M\nproc reader\n");
    text.push_str("reader: open /data/big as f\nreader: mmap f prot=r flags=shared as m\n");
    for i in 0..3000u64 {
        text.push_str(&format!("reader: touch m {} 4K\nsleep 1ms\n", i * 16384));
    }
    std::fs::write(&script, text).unwrap();
    script
}

#[test]
fn duration_stops_a_live_stream_and_bad_durations_are_refused() {
    let dir = TempDir::new().unwrap();
    let src = format!("sim:{}", long_script(&dir).display());
    let out = maptrace()
        .args(["--source", &src, "stream", "--json", "--duration", "0.3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    let events = last["events"].as_u64().unwrap();
    assert!(events > 0 && events < 3000, "{events}");
    for bad in ["-1", "soon", "inf"] {
        maptrace()
            .args(["--source", &src, "stream", &format!("--duration={bad}")])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("not a number of seconds"));
    }
}

/// Page-ins of /data/a, a sleep far longer than any test, then page-ins of
/// /data/b: a reader that stops in the sleep sees /data/a and not /data/b.
fn sleepy_script(dir: &TempDir) -> std::path::PathBuf {
    let script = dir.path().join("sleepy.mts");
    std::fs::write(
        &script,
        "mount apfs /\nfile /data/a 256K\nfile /data/b 256K\nproc reader\n\
         reader: open /data/a as fa\nreader: mmap fa as ma\nreader: touch ma\n\
         sleep 1000s\n\
         reader: open /data/b as fb\nreader: mmap fb as mb\nreader: touch mb\n",
    )
    .unwrap();
    script
}

/// A hang guard only: no test here waits for anything near it.
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(120);

/// `--duration` ends the stream inside the scenario's long sleep: the
/// closing summary comes without waiting for the scenario's end, which is
/// 1000 s away (the stop reaches the workload, not only the reader).
#[test]
fn duration_stops_the_simulator_inside_a_long_step() {
    let dir = TempDir::new().unwrap();
    let src = format!("sim:{}", sleepy_script(&dir).display());
    let out = maptrace()
        .args(["--source", &src, "stream", "--json", "--duration", "0.5"])
        .timeout(HANG_GUARD)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    assert!(text.contains("/data/a"), "{text}");
    assert!(
        !text.contains("/data/b"),
        "stopped before the sleep ended: {text}"
    );
    let pageins = text.lines().filter(|l| l.contains("\"pagein\"")).count();
    assert!(pageins > 0, "{text}");
}

/// Ctrl-C (SIGINT) stops a live stream of the simulator inside the
/// scenario's long sleep: status 0, everything read so far, and the closing
/// summary.
#[test]
fn ctrl_c_stops_a_simulator_stream_with_its_summary() {
    use std::io::BufRead;
    let dir = TempDir::new().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("maptrace"))
        .env_remove("MAPTRACE_SOURCE")
        .args([
            "--source",
            &format!("sim:{}", sleepy_script(&dir).display()),
            "stream",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in std::io::BufReader::new(stdout).lines() {
            let l = l.unwrap();
            if l.contains(" pagein ") && l.ends_with("/data/a") {
                let _ = seen_tx.send(());
            }
            lines.push(l);
        }
        lines
    });
    // The workload is in its sleep once /data/a's page-ins are out.
    seen_rx
        .recv_timeout(HANG_GUARD)
        .expect("page-ins of /data/a");
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let guard = std::time::Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > guard {
            child.kill().unwrap();
            panic!("Ctrl-C did not stop the stream");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let lines = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    // The summary, then maybe the note on the path and proc rows left out.
    assert!(
        lines
            .iter()
            .rev()
            .take(2)
            .any(|l| l.starts_with("-- ") && l.contains(" events in ")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.ends_with("/data/b")), "{lines:?}");
}

#[test]
fn ctrl_c_stops_a_recording_cleanly_with_every_drained_batch_written() {
    a_signal_stops_a_recording_cleanly("-INT");
}

/// `kill` (SIGTERM), as a service manager or a script stops a recorder,
/// ends it as cleanly as Ctrl-C.
#[test]
fn sigterm_stops_a_recording_cleanly_with_every_drained_batch_written() {
    a_signal_stops_a_recording_cleanly("-TERM");
}

fn a_signal_stops_a_recording_cleanly(signal: &str) {
    let dir = TempDir::new().unwrap();
    let script = long_script(&dir);
    let out = dir.path().join("cut.mtr");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("maptrace"))
        .env_remove("MAPTRACE_SOURCE")
        .args([
            "--source",
            &format!("sim:{}", script.display()),
            "record",
            "-o",
        ])
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a few batches are on disk, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < 4096 {
        assert!(std::time::Instant::now() < deadline, "no batches recorded");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    // stderr is a pipe, not a terminal: whole lines, no carriage returns.
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert_eq!(done.status.code(), Some(0), "{stderr}");
    // The file is whole, and holds exactly the events the progress line counted.
    let said: u64 = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("recording: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("final progress line");
    let mut r = maptrace::recording::Reader::open(&out).unwrap();
    let mut buf = Vec::new();
    let mut dec = maptrace_abi::Decoder::new();
    let mut events = 0u64;
    while let Some(f) = r.next_frame(&mut buf).unwrap() {
        let maptrace::recording::Frame::Batch(n) = f else {
            panic!("{f:?}")
        };
        let (_, recs) = dec.decode(&buf[..n]).unwrap();
        assert!(recs.iter().all(Result::is_ok));
        events += recs.len() as u64;
    }
    assert_eq!(events, said);
    assert!(events > 10);
    // It stopped early: far fewer page-ins than the script's 3000.
    assert!(events < 3000, "{events}");
    assert_eq!(dec.losses().dropped, 0);
}

#[test]
fn demo_says_it_does_not_use_a_source_and_config_set_says_the_simulator_forgets() {
    let out = maptrace()
        .env("MAPTRACE_SOURCE", "sysctl")
        .args(["demo", "--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the source `sysctl`") && stderr.contains("is not used"),
        "{stderr}"
    );
    maptrace()
        .args(["--source", "sim", "config", "set", "--disable"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("disabled"))
        .stderr(predicate::str::contains("runs only for this command"));
    // Without a source given, the demo says nothing of one.
    let out = maptrace().args(["demo", "--quiet"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("is not used"));
}

/// One MAP_SHARED mmap(2) reaches the filesystem as two VNOP_MMAPs
/// (osfmk/vm/vm_map.c:5093 and 3698, xnu-11417.101.15): the report shows
/// one mmap(2) call with two maps, and the stream no exec/loader map.
#[test]
fn a_shared_mmap_is_one_call_of_two_maps() {
    let dir = TempDir::new().unwrap();
    let script = dir.path().join("shared.mts");
    std::fs::write(
        &script,
        "mount apfs /\nfile /data/app.db 64K\nproc reader\nreader: open /data/app.db as f\n\
         reader: mmap f prot=r flags=shared as m\nreader: munmap m\nreader: exit\n",
    )
    .unwrap();
    let src = format!("sim:{}", script.display());
    let out = maptrace()
        .args(["--source", &src, "report", "--json"])
        .output()
        .unwrap();
    let r = common::ok_json(&out);
    let e = &common::report_file(&r, "/data/app.db")["epochs"][0];
    assert_eq!(
        (
            e["maps"].as_u64(),
            e["mmap_calls"].as_u64(),
            e["exec_maps"].as_u64()
        ),
        (Some(2), Some(1), Some(0))
    );
    assert_eq!(e["verdict"], "balanced");
    let vias: Vec<&str> = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["via"].as_str())
        .collect();
    assert_eq!(vias, ["mmap", "mmap"]);
    assert_eq!(r["totals"]["unpaired_mmap_calls"], 0);
    maptrace()
        .args(["--source", &src, "stream"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("(same call, map 2)"))
        .stdout(predicate::str::contains("exec/loader map").not());
}

#[test]
fn a_recycled_vnode_is_a_new_file_to_the_companion() {
    // recycle.mts: /a.log's vnode is reclaimed and its block reused for /b.log.
    let script = include_str!("../../sim/scenarios/recycle.mts");
    let mut src = SimSource::open(Workload::Script(script.to_string())).unwrap();
    let (items, _) = read_all(&mut src);
    let mut ids: Vec<(String, u64)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) if e.rec.kind == EventKind::Pagein => {
                Some((e.path.as_ref()?.text.clone(), e.rec.vnode_id))
            }
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    let files: Vec<&str> = ids.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(files, ["/a.log", "/b.log"], "{ids:?}");
    assert_ne!(
        ids[0].1, ids[1].1,
        "the reused vnode block kept the old file's identity"
    );
}

/// Runs a scenario script through the companion's report (JSON).
fn report_of(script_text: &str) -> Value {
    let dir = TempDir::new().unwrap();
    let script = dir.path().join("holders.mts");
    std::fs::write(&script, script_text).unwrap();
    let src = format!("sim:{}", script.display());
    let out = maptrace()
        .args(["--source", &src, "report", "--json"])
        .output()
        .unwrap();
    common::ok_json(&out)
}

fn file<'a>(r: &'a Value, path: &str) -> &'a Value {
    r["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in {r}"))
}

#[test]
fn a_reference_held_by_another_open_is_not_a_leak() {
    // The indexer opens the mapped file and keeps it open across the last
    // unmap: one more usecount after than before, explained by that open.
    let r = report_of(
        "mount apfs /\nfile /data/shared.db 64K\nproc app\nproc indexer\n\
         app: open /data/shared.db as f\napp: mmap f prot=r flags=shared as m\n\
         app: touch m 0 16K\nindexer: open /data/shared.db as g\n\
         app: munmap m\napp: close f\n",
    );
    let f = file(&r, "/data/shared.db");
    let e = &f["epochs"][0];
    assert_eq!(e["balance"], 1, "{e}");
    assert_eq!(
        (e["opens_before"].as_u64(), e["opens_at_unmap"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(e["verdict"], "open_ref");
    assert!(
        r["leak_suspects"].as_array().unwrap().is_empty(),
        "{}",
        r["leak_suspects"]
    );
    // At the end only the indexer's open holds it, and it is named.
    let h = &f["holders"];
    assert_eq!(h["usecount"], 1, "{h}");
    let holders = h["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{h}");
    assert_eq!(
        (holders[0]["comm"].as_str(), holders[0]["how"].as_str()),
        (Some("indexer"), Some("open"))
    );
}

#[test]
fn a_helper_keeping_a_mapped_file_open_is_named() {
    let r = report_of(
        "mount apfs /\nfile /data/kept.db 64K\nproc app\nproc helperd\n\
         helperd: open /data/kept.db as h\napp: open /data/kept.db as f\n\
         app: mmap f prot=r flags=shared as m\napp: close f\napp: touch m 0 16K\n",
    );
    let s = r["leak_suspects"].as_array().unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["reason"], "still_mapped");
    let detail = s[0]["detail"].as_str().unwrap();
    assert!(detail.contains("(app)"), "{detail}");
    assert!(detail.contains("(helperd) open x1"), "{detail}");
    let h = &file(&r, "/data/kept.db")["holders"];
    // The helper's open and the mapping.
    assert_eq!(h["usecount"], 2, "{h}");
    let how: Vec<(String, String)> = h["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["comm"].as_str().unwrap().to_string(),
                x["how"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        how,
        [
            ("helperd".into(), "open".into()),
            ("app".into(), "map".into())
        ]
    );
    let names: Vec<&str> = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["comm"].as_str())
        .collect();
    assert!(
        names.contains(&"helperd") && names.contains(&"app"),
        "{names:?}"
    );
}

#[test]
fn events_carry_the_process_name() {
    let dir = TempDir::new().unwrap();
    let script = dir.path().join("names.mts");
    std::fs::write(
        &script,
        "mount apfs /\nfile /data/a.db 64K\nproc indexer\nindexer: open /data/a.db as f\n\
         indexer: mmap f prot=r flags=private as m\nindexer: touch m 0 4K\n",
    )
    .unwrap();
    let src = format!("sim:{}", script.display());
    let out = maptrace()
        .args(["--source", &src, "stream", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mmaps: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "mmap")
        .collect();
    assert!(!mmaps.is_empty(), "{text}");
    assert!(mmaps.iter().all(|v| v["comm"] == "indexer"), "{mmaps:?}");
    let out = maptrace()
        .args(["--source", &src, "stream"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(" COMM "), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains(" pagein "))
        .expect("a pagein row");
    assert!(row.contains(" indexer "), "{row}");
}

/// `--time wall` on the live simulator: the source pairs the simulated
/// kernel's clock with the Unix clock when it opens, so every event's UTC
/// time falls inside the run, as measured around it; and a recording of
/// the simulator keeps that anchor for its replay.
#[test]
fn a_live_stream_with_time_wall_is_dated_within_the_run() {
    use maptrace::wallclock::{rfc3339_micros, unix_now_ns};
    let dir = TempDir::new().unwrap();
    let src = demo_source_on_the_default_ring(&dir);
    let before = unix_now_ns();
    let out = maptrace()
        .args(["--source", &src, "stream", "--json", "--time", "wall"])
        .output()
        .unwrap();
    let after = unix_now_ns();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // RFC 3339 with fixed widths orders as text.
    let (lo, hi) = (rfc3339_micros(before), rfc3339_micros(after));
    let mut events = 0;
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["type"] != "event" {
            assert!(v.get("time").is_none(), "{v}");
            continue;
        }
        let t = v["time"].as_str().expect("an event without a time");
        assert!(
            lo.as_str() <= t && t <= hi.as_str(),
            "{t} outside {lo} .. {hi}"
        );
        events += 1;
    }
    assert!(events > 50, "{events} events");

    // A recording of the simulator carries the anchor to its replay.
    let rec = dir.path().join("sim.mtr");
    let before = unix_now_ns();
    maptrace()
        .args(["--source", &src, "record", "-q", "-o"])
        .arg(&rec)
        .assert()
        .code(0);
    let after = unix_now_ns();
    let h = maptrace::recording::Reader::open(&rec)
        .unwrap()
        .header()
        .clone();
    let a = h
        .anchor()
        .expect("a recording of a live source has an anchor");
    assert!((before..=after).contains(&a.unix_ns), "{a:?}");
    assert_eq!(h.start_unix_ns, a.unix_ns);
    let out = maptrace()
        .args(["stream", "--time", "wall"])
        .arg(&rec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let (lo, hi) = (rfc3339_micros(before), rfc3339_micros(after));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("--"))
        .collect();
    assert!(rows.len() > 50);
    for row in rows {
        let t = &row[..27];
        assert!(lo.as_str() <= t && t <= hi.as_str(), "{row}");
    }
}
