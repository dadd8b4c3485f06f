//! No output of the companion carries a kernel address. Every command runs
//! on the simulator (the real shim and core), for the demo workload and for
//! a generated one, and every byte it writes (standard output, standard
//! error, files) is scanned for a simulated kernel address as 8 LE bytes,
//! hex (with or without 0x) and decimal. The simulator maps its kernel
//! memory in a fixed tagged window, so the child process's addresses are
//! recognisable here (`maptrace_sim::arena::find_tagged_addresses`). The
//! kext's text, globals and the stacks its code ran on are at other
//! addresses in each child, which publishes them for the scan
//! (`MAPTRACE_SIM_KERNEL_RANGES`).

mod common;

use common::maptrace;
use maptrace::sim::{SimSource, Workload};
use maptrace_sim::arena::{Leak, find_addresses, find_tagged_addresses, in_kernel_window};
use maptrace_sim::scenario::generate;
use maptrace_sim::{DEMO, GenParams};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tempfile::TempDir;

/// The kernel address ranges the simulators of the commands run so far
/// published (`MAPTRACE_SIM_KERNEL_RANGES`): besides the tagged arena, the
/// kext's text and globals and the stacks its code ran on, which are at
/// different addresses in every child process.
static CHILD_RANGES: Mutex<Vec<Range<u64>>> = Mutex::new(Vec::new());

/// The ranges a child wrote to `path`.
fn read_ranges(path: &Path) -> Vec<Range<u64>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the simulator published no ranges: {e}"));
    text.lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').expect("start end");
            u64::from_str_radix(a, 16).unwrap()..u64::from_str_radix(b, 16).unwrap()
        })
        .collect()
}

/// Every kernel address in `bytes`: tagged arena addresses of any process,
/// and addresses in the ranges the children published.
fn kernel_addresses(bytes: &[u8]) -> Vec<Leak> {
    let ranges = CHILD_RANGES.lock().unwrap().clone();
    find_addresses(bytes, |v| {
        in_kernel_window(v) || ranges.iter().any(|r| r.contains(&v))
    })
}

/// Fails with where and how a kernel address showed up in `bytes`.
fn assert_no_kernel_address(what: &str, bytes: &[u8]) {
    let leaks = kernel_addresses(bytes);
    assert!(
        leaks.is_empty(),
        "{what} leaks kernel addresses: {leaks:x?}"
    );
}

/// Runs `maptrace --source SOURCE ARGS`, scans both streams and returns
/// standard output. The command must succeed, with or without a loss (the
/// demo loses records on purpose, and its loss lines are output to scan
/// too).
fn run_scanned(source: &str, args: &[&str], extra: &[&Path]) -> Vec<u8> {
    let ranges = TempDir::new().unwrap();
    let ranges = ranges.path().join("ranges");
    let out = maptrace()
        .env("MAPTRACE_SIM_KERNEL_RANGES", &ranges)
        .args(["--source", source])
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    let what = format!("maptrace --source {source} {}", args.join(" "));
    if source.starts_with("sim") {
        let r = read_ranges(&ranges);
        assert!(r.len() >= 2, "{what}: the arena and the kext image: {r:x?}");
        CHILD_RANGES.lock().unwrap().extend(r);
    }
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{what}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_kernel_address(&format!("{what} (stdout)"), &out.stdout);
    assert_no_kernel_address(&format!("{what} (stderr)"), &out.stderr);
    out.stdout
}

/// Every file under `dir`.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Every command and format on `source`; `file_source` reads the same
/// workload's recording (written here) for the commands that need one.
fn scan_every_output(source: &str, dir: &Path) {
    for args in [
        &["stream"][..],
        &["stream", "--json"],
        &["report"],
        &["report", "--json"],
        &["export", "--format", "perfetto"],
        &["stats"],
        &["stats", "--json"],
        &["config", "show"],
        &["config", "show", "--json"],
    ] {
        let stdout = run_scanned(source, args, &[]);
        assert!(!stdout.is_empty(), "{args:?} wrote something to scan");
    }
    let rec = dir.join("run.mtr");
    run_scanned(source, &["record", "-o"], &[&rec]);
    let bytes = std::fs::read(&rec).unwrap();
    assert!(bytes.len() > 1024, "a recording of the workload");
    assert_no_kernel_address("the recording", &bytes);
    let heat = dir.join("heat");
    run_scanned(source, &["heatmap", "-o"], &[&heat]);
    let svgs = files_in(&heat);
    assert!(!svgs.is_empty(), "heatmaps were drawn");
    for svg in svgs {
        assert_no_kernel_address(&svg.display().to_string(), &std::fs::read(&svg).unwrap());
    }
    let trace = dir.join("trace.json");
    run_scanned(source, &["export", "--format", "perfetto", "-o"], &[&trace]);
    assert_no_kernel_address("the perfetto file", &std::fs::read(&trace).unwrap());
    // The recording replays through every reader too.
    let file = format!("file:{}", rec.display());
    for args in [
        &["stream", "--json"][..],
        &["report", "--json"],
        &["report"],
    ] {
        run_scanned(&file, args, &[]);
    }
}

#[test]
fn the_simulators_kernel_addresses_are_in_the_tagged_window() {
    // What makes the scans below meaningful: a simulator's kernel objects
    // (vnodes, vectors, the kext's allocations) have addresses the scan
    // recognises in every form.
    let src = SimSource::open(Workload::Idle).unwrap();
    let sim = src.sim();
    assert!(
        sim.kernel().arena.in_window(),
        "{:x?}",
        sim.kernel_address_ranges()
    );
    sim.mount("apfs", "/").unwrap();
    sim.add_file("/f", 4096).unwrap();
    let p = sim.spawn("p", 501);
    let fd = p.open("/f").unwrap();
    let v = sim.vnode_addr("/f").unwrap();
    assert!(in_kernel_window(v) && sim.is_kernel_address(v));
    let text = format!("{v:#x} {v:x} {v} ").into_bytes();
    assert_eq!(find_tagged_addresses(&text).len(), 3);
    assert_eq!(find_tagged_addresses(&v.to_le_bytes()).len(), 1);
    p.close(fd).unwrap();
}

#[test]
fn no_output_of_the_demo_carries_a_kernel_address() {
    let dir = TempDir::new().unwrap();
    scan_every_output("sim", dir.path());
}

#[test]
fn no_output_of_a_generated_workload_carries_a_kernel_address() {
    let dir = TempDir::new().unwrap();
    let script = dir.path().join("gen.mts");
    // Processes, files, exec, parallel blocks and a forced unmount.
    let text = generate(0x5ec, &GenParams::default()).to_string();
    assert_ne!(text, DEMO);
    std::fs::write(&script, text).unwrap();
    scan_every_output(&format!("sim:{}", script.display()), dir.path());
}

#[test]
fn a_planted_kext_text_global_or_stack_address_fails_the_scan() {
    // A child's published ranges: the scan must catch an address of the
    // kext's image or stack in any form, not only arena addresses.
    let dir = TempDir::new().unwrap();
    let ranges = dir.path().join("ranges");
    maptrace()
        .env("MAPTRACE_SIM_KERNEL_RANGES", &ranges)
        .args(["--source", "sim", "stats"])
        .assert()
        .success();
    let published = read_ranges(&ranges);
    let outside_window: Vec<&Range<u64>> = published
        .iter()
        .filter(|r| !in_kernel_window(r.start))
        .collect();
    assert!(
        outside_window.len() >= 2,
        "text/data and a stack beside the arena: {published:x?}"
    );
    CHILD_RANGES
        .lock()
        .unwrap()
        .extend(published.iter().cloned());
    for r in outside_window {
        let addr = r.start + (r.end - r.start) / 2;
        assert!(find_tagged_addresses(&addr.to_le_bytes()).is_empty());
        for planted in [
            addr.to_le_bytes().to_vec(),
            format!("ptr={addr:#x}").into_bytes(),
            format!("{addr}").into_bytes(),
        ] {
            assert!(
                !kernel_addresses(&planted).is_empty(),
                "{addr:#x} planted as {planted:?} was not caught"
            );
        }
    }
}
