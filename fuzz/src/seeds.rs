//! The seed corpus, made by code: real batches that the real shim and core
//! record while the simulator runs the demo workload, a recording of them,
//! valid and near-valid configs, and the shipped and generated scenarios.

use std::path::Path;

use crate::batches::join;
use crate::config::Harness;
use crate::shim_support::{Tunables, config_bytes, drain_batches, load};
use maptrace::recording::{Header, Writer};
use maptrace_abi::raw;
use maptrace_sim::scenario::{GenParams, Scenario, generate};
use maptrace_sim::{Config, DEMO, Sim};

/// The targets that draw a recording (`outputs`).
const OUTPUT_TARGETS: [&str; 4] = ["report", "heatmap", "export", "formatters"];

/// The shipped scenarios, read from the checkout.
const SCENARIO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/scenarios");

/// Batches the kext returned while the demo ran on a simulator of its own.
fn demo_batches() -> Vec<Vec<u8>> {
    let sim = Sim::boot(Config::default());
    load(&sim, Tunables::default()).expect("the shim loads");
    Scenario::parse(DEMO)
        .expect("the demo parses")
        .run(&sim)
        .expect("the demo runs");
    drain_batches(&sim)
}

/// Several batches of one load through a ring too small for them: drops,
/// drop deltas and cumulative counts in the headers.
/// Also returns the kext's stats read after the last batch.
fn lossy_batches() -> (Vec<Vec<u8>>, Vec<u8>) {
    let h = Harness::boot_with(Tunables {
        slots: 64,
        ..Tunables::default()
    });
    let mut out = Vec::new();
    for _ in 0..3 {
        for _ in 0..100 {
            h.workload();
        }
        out.extend(drain_batches(&h.sim));
    }
    (out, h.raw_stats())
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

/// Writes every target's seeds under `dir/<target>/`.
pub fn write_all(dir: &Path) -> std::io::Result<()> {
    let batches = demo_batches();
    let all = join(batches.iter().map(Vec::as_slice));
    write(dir, "decode", "demo", &all)?;
    for (i, b) in batches.iter().enumerate().take(4) {
        write(dir, "decode", &format!("batch{i}"), &join([b.as_slice()]))?;
    }

    let (lossy, stats) = lossy_batches();
    write(
        dir,
        "decode",
        "lossy",
        &join(lossy.iter().map(Vec::as_slice)),
    )?;

    let header = Header {
        abi_version: raw::MT_ABI_VERSION as u16,
        start_unix_ns: 1_700_000_000_000_000_000,
        start_clock_ns: Some(5_000_000_000),
        page_size: Some(maptrace::pagesize::PageSize::SIXTEEN_K),
        host: "fuzz-seed".into(),
    };
    let mut w = Writer::new(Vec::new(), &header)?;
    for b in &batches {
        w.write_batch(b)?;
    }
    let rec = w.finish()?;
    write(dir, "recording", "demo", &rec)?;
    let mut w = Writer::new(Vec::new(), &header)?;
    for b in &lossy {
        w.write_batch(b)?;
    }
    w.write_stats(&stats)?;
    let lossy_rec = w.finish()?;
    write(dir, "recording", "lossy", &lossy_rec)?;
    // The output targets read recordings too; the formatters also take
    // their input as text, so hostile names seed them as well.
    for target in OUTPUT_TARGETS {
        write(dir, target, "demo", &rec)?;
        write(dir, target, "lossy", &lossy_rec)?;
    }
    for (name, text) in [
        (
            "escapes",
            "/tmp/a\u{1b}[2J\u{1b}]0;t\u{7}\nforged row\r\t\u{9b}31m",
        ),
        ("bidi", "/Users/x/\u{202e}fdp.exe\u{2066}"),
        ("xml", "a<b>&\"'\\u{41}\u{ffff}"),
    ] {
        write(dir, "formatters", name, text.as_bytes())?;
    }
    write(
        dir,
        "recording",
        "header-only",
        &maptrace::recording::encode_header(&header),
    )?;

    let pid = Harness::boot().pid();
    let all_kinds = raw::MT_EVMASK_ALL;
    let configs = [
        ("all", config_bytes(raw::MT_CF_ENABLE, all_kinds, 0)),
        ("off", config_bytes(0, all_kinds, 0)),
        (
            "pagein-only",
            config_bytes(raw::MT_CF_ENABLE, raw::MT_EVMASK_PAGEIN, 0),
        ),
        (
            "pid-filter",
            config_bytes(raw::MT_CF_ENABLE | raw::MT_CF_PID_FILTER, all_kinds, pid),
        ),
        (
            "pid-exclude",
            config_bytes(raw::MT_CF_ENABLE | raw::MT_CF_PID_EXCLUDE, all_kinds, pid),
        ),
        ("bad-flags", config_bytes(0x80, all_kinds, 0)),
    ];
    for (name, bytes) in &configs {
        write(dir, "config_sysctl", name, bytes)?;
    }

    write(dir, "scenario", "demo.mts", DEMO.as_bytes())?;
    for entry in std::fs::read_dir(SCENARIO_DIR)? {
        let path = entry?.path();
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            write(dir, "scenario", name, &std::fs::read(&path)?)?;
        }
    }
    for seed in 0..4 {
        let text = generate(seed, &GenParams::default()).to_string();
        write(dir, "scenario", &format!("gen{seed}.mts"), text.as_bytes())?;
    }
    Ok(())
}
