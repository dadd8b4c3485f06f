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
use maptrace::recording::FORMAT_VERSION;
use maptrace::sim::{SimSource, Workload};
use maptrace_sim::arena::{
    Leak, find_addresses, find_addresses_by_field, find_tagged_addresses, in_kernel_window,
};
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
    kernel_addresses_among(bytes, &CHILD_RANGES.lock().unwrap())
}

/// Whether `v` is in the tagged window or in `ranges`.
fn kernel_among(ranges: &[Range<u64>]) -> impl Fn(u64) -> bool + '_ {
    move |v| in_kernel_window(v) || ranges.iter().any(|r| r.contains(&v))
}

/// Every address in `bytes` that is in the tagged window or in `ranges`.
fn kernel_addresses_among(bytes: &[u8], ranges: &[Range<u64>]) -> Vec<Leak> {
    find_addresses(bytes, kernel_among(ranges))
}

/// Every kernel address in the recording `rec`, read struct by struct (the
/// file header, a frame's header, a batch or segment header, a 64-byte
/// slot, the closing statistics) and each clock field as the whole value
/// the kext wrote (`find_addresses_by_field` says why).
fn recording_leaks(rec: &[u8], ranges: &[Range<u64>]) -> Vec<Leak> {
    let (structs, clocks) = recording_layout(rec);
    find_addresses_by_field(rec, &structs, &clocks, kernel_among(ranges))
}

/// A little-endian integer of `N` bytes at `at`.
fn le<const N: usize>(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v[..N].copy_from_slice(&b[at..at + N]);
    u64::from_le_bytes(v)
}

/// Where the structs of a recording of the current format start (see
/// `companion/src/recording.rs` and `maptrace_abi.h`), and the offsets of
/// its 8-byte clock readings: the header's start times, and in each batch
/// frame the drain time, each segment's first and last record times and
/// each record's time (continuation slots and the closing statistics hold
/// none).
fn recording_layout(rec: &[u8]) -> (Vec<usize>, Vec<usize>) {
    use maptrace_abi::raw::{
        MT_BATCH_MAGIC, MT_SLOT_SIZE, MT_STAMP_CONT, mt_batch_header as B, mt_rec_header as R,
        mt_segment_header as S,
    };
    use std::mem::offset_of;
    assert_eq!(
        le::<2>(rec, 8),
        u64::from(FORMAT_VERSION),
        "a recording of this build"
    );
    let slot_size = MT_SLOT_SIZE as usize;
    let mut structs = vec![0];
    let mut clocks = vec![16, 24];
    let mut frame = le::<4>(rec, 12) as usize;
    // Frames: len u32, len_crc u32, crc u32, then a batch or the statistics.
    while frame + 12 <= rec.len() {
        let batch = frame + 12;
        structs.extend([frame, batch]);
        if le::<4>(rec, batch) == u64::from(MT_BATCH_MAGIC) {
            clocks.push(batch + offset_of!(B, drain_ns));
            let mut seg = batch + le::<2>(rec, batch + offset_of!(B, header_size)) as usize;
            for _ in 0..le::<4>(rec, batch + offset_of!(B, nsegments)) {
                structs.push(seg);
                clocks.extend([seg + offset_of!(S, ts_min), seg + offset_of!(S, ts_max)]);
                let nslots = le::<4>(rec, seg + offset_of!(S, nslots)) as usize;
                let slots = seg + size_of::<S>();
                for slot in (0..nslots).map(|i| slots + i * slot_size) {
                    structs.push(slot);
                    let stamp = le::<4>(rec, slot) as u32;
                    if stamp != 0 && stamp & MT_STAMP_CONT == 0 {
                        clocks.push(slot + offset_of!(R, timestamp_ns));
                    }
                }
                seg = slots + nslots * slot_size;
            }
        }
        frame = batch + le::<4>(rec, frame) as usize;
    }
    clocks.sort_unstable();
    (structs, clocks)
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
    let leaks = recording_leaks(&bytes, &CHILD_RANGES.lock().unwrap());
    assert!(
        leaks.is_empty(),
        "the recording leaks kernel addresses: {leaks:x?}"
    );
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

#[test]
fn a_clock_reading_in_a_recording_is_no_address_but_one_planted_there_is() {
    // A failure seen once: a record of pid 103 at 8.347458 ms (0x7f5f42
    // ns). Read from the pid's upper bytes on, the 8 bytes are that time
    // shifted by 24 bits, 0x7f5f_4200_0000, inside a child's 2 MiB thread
    // stack 0x7f5f_41e5_3000..0x7f5f_4205_3000.
    let stack = 0x7f5f_41e5_3000..0x7f5f_4205_3000;
    let batches = common::recorded(1, 64, |t| {
        t.ts = 0x7f5f42 - 10_000;
        t.pagein(0, 103, 4100, 0x1000, (0, 16384), 1);
        t.drain();
    });
    let dir = TempDir::new().unwrap();
    let rec = std::fs::read(common::fixture(&dir, "r.mtr", &batches)).unwrap();
    let unaligned = kernel_addresses_among(&rec, std::slice::from_ref(&stack));
    // The record's time, and the batch's drain time and the segment's
    // first and last times (each after a zero upper half).
    assert!(
        unaligned.len() >= 2 && unaligned.iter().all(|l| l.value == 0x7f5f_4200_0000),
        "what a blind scan reads as an address: {unaligned:x?}"
    );
    assert_eq!(recording_leaks(&rec, std::slice::from_ref(&stack)), []);
    // The exact scan still sees an address the kext wrote, in a clock
    // field or in any other.
    let (_, clocks) = recording_layout(&rec);
    let record_time = *clocks.last().unwrap();
    assert_eq!(le::<8>(&rec, record_time), 0x7f5f42, "the record's time");
    let address: u64 = 0x7f5f_4200_1000;
    for at in [
        record_time,
        record_time + 8,
        record_time + 11,
        rec.len() - 8,
    ] {
        let mut planted = rec.clone();
        planted[at..at + 8].copy_from_slice(&address.to_le_bytes());
        let leaks = recording_leaks(&planted, std::slice::from_ref(&stack));
        assert!(
            leaks.iter().any(|l| l.offset == at && l.value == address),
            "{address:#x} planted at {at} was not caught: {leaks:x?}"
        );
    }
}
