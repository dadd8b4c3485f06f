//! The Perfetto export and the heatmaps at scale and on awkward input:
//! the export is one valid JSON document written as it goes, with a
//! usecount counter track per file and named process tracks, keeping state
//! only per file, process and thread; heatmaps colour every process even
//! when binned, round their ticks, mark drops and survive absurd times.

mod common;

use common::*;
use maptrace::perfetto;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use tempfile::TempDir;

fn export(batches: &[Vec<u8>]) -> Value {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "in.mtr", batches);
    let out = maptrace().args(["export"]).arg(&f).output().unwrap();
    // 3: finished, but records were lost.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the export is one JSON document")
}

#[test]
fn the_export_has_a_usecount_counter_track_per_file() {
    let doc = export(&lifecycle_batches());
    let evs = doc["traceEvents"].as_array().unwrap();
    let mut tracks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut counter_pids = BTreeSet::new();
    for e in evs.iter().filter(|e| e["ph"] == "C") {
        counter_pids.insert(e["pid"].as_u64().unwrap());
        assert!(e["ts"].as_f64().unwrap() > 0.0, "{e}");
        tracks
            .entry(e["name"].as_str().unwrap().to_string())
            .or_default()
            .push(e["args"]["usecount"].as_u64().unwrap());
    }
    assert_eq!(tracks.len(), 4, "one counter track per file: {tracks:?}");
    for path in [
        "/data/app.db",
        "/usr/lib/libleak.dylib",
        "/var/log/open.log",
        "/Applications/App",
    ] {
        assert_eq!(
            tracks.keys().filter(|k| k.contains(path)).count(),
            1,
            "{path}: {tracks:?}"
        );
    }
    // The usecount before every map, page-in and last unmap of the file.
    let db = tracks.iter().find(|(k, _)| k.contains("app.db")).unwrap().1;
    assert_eq!(db, &[1, 2, 2, 2, 2, 2]);
    let leak = tracks
        .iter()
        .find(|(k, _)| k.contains("libleak"))
        .unwrap()
        .1;
    assert_eq!(leak, &[1, 2, 3]);
    // The counters sit in a process of their own, named, no real pid.
    assert_eq!(counter_pids.len(), 1);
    let cpid = *counter_pids.first().unwrap();
    assert!(cpid > 99_999, "above XNU's PID_MAX: {cpid}");
    assert!(evs.iter().any(|e| e["ph"] == "M"
        && e["name"] == "process_name"
        && e["pid"] == cpid
        && e["args"]["name"] == "file usecounts"));
}

#[test]
fn the_export_names_every_process_track_once() {
    let doc = export(&lifecycle_batches());
    let evs = doc["traceEvents"].as_array().unwrap();
    let names: Vec<(u64, String)> = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(pid, _)| *pid <= 99_999)
        .collect();
    assert_eq!(
        names,
        [(200, "pid 200"), (300, "pid 300"), (400, "pid 400")]
            .map(|(p, n)| (p, n.to_string()))
            .to_vec()
    );
    assert_eq!(perfetto::process_track_name(7, None), "pid 7");
    assert_eq!(
        perfetto::process_track_name(7, Some("Mail")),
        "Mail (pid 7)"
    );
}

#[test]
fn the_export_keeps_state_per_file_process_and_thread_not_per_event() {
    let retained = |n: u64| {
        let batches = recorded(2, 1 << 12, |t| {
            t.path(0, DB, "/data/app.db");
            t.path(1, LIB, "/usr/lib/libx.dylib");
            for i in 0..n {
                let (pid, vnode) = [(200, DB), (300, LIB), (400, DB)][(i % 3) as usize];
                t.pagein(
                    (i % 2) as u32,
                    pid,
                    u64::from(pid) * 10,
                    vnode,
                    ((i * 4096) as i64, 4096),
                    2,
                );
                if i % 1000 == 999 {
                    t.drain();
                }
            }
            t.drain();
        });
        let (items, _) = decode(&batches);
        let mut x = perfetto::Exporter::new(std::io::sink()).unwrap();
        for it in &items {
            x.observe(it).unwrap();
        }
        let kept = x.retained();
        x.finish().unwrap();
        kept
    };
    // 2 files, 3 processes, 3 threads, whatever the number of events.
    assert_eq!(retained(300), 2 + 3 + 3);
    assert_eq!(retained(30_000), 2 + 3 + 3);
}

#[test]
fn the_export_places_losses_where_they_happened() {
    let doc = export(&lossy_batches(200));
    let evs = doc["traceEvents"].as_array().unwrap();
    let mut placed = 0;
    for (i, l) in evs.iter().enumerate().filter(|(_, e)| e["cat"] == "loss") {
        // At the time of the record the drops came just before.
        let Some(next) = evs[i + 1..]
            .iter()
            .find(|e| e["ph"] != "M" && e["ph"] != "C" && e["cat"] != "loss")
        else {
            continue;
        };
        assert_eq!(l["ts"], next["ts"], "{l} then {next}");
        assert!(l["args"]["count"].as_u64().unwrap() > 0);
        placed += 1;
    }
    assert!(placed > 0);
}
