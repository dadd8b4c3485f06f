//! The Perfetto export and the heatmaps at scale and on awkward input:
//! the export is one valid JSON document written as it goes, with a
//! usecount counter track per file, a slice per mapped epoch and named
//! process tracks, keeping state only per file, process and thread; heatmaps colour every process even
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
        && e["args"]["name"] == "file usecounts and mapped epochs"));
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
        let count = l["args"]["count"].as_u64().unwrap();
        assert!(count > 0);
        // Named by the shard, which is not a CPU (one shard may serve many).
        let shard = &l["args"]["shard"];
        assert_eq!(l["name"], format!("LOST {count} records on shard {shard}"));
        placed += 1;
    }
    assert!(placed > 0);
}

/// The export's epoch slices by file name: (begin, end) in the order they
/// began, every begin ended once with the same name, category and id.
fn epoch_slices(doc: &Value) -> BTreeMap<String, Vec<(Value, Value)>> {
    let evs = doc["traceEvents"].as_array().unwrap();
    let mut ends: BTreeMap<u64, &Value> = BTreeMap::new();
    for e in evs.iter().filter(|e| e["ph"] == "e") {
        let id = e["id2"]["local"].as_u64().unwrap();
        assert!(ends.insert(id, e).is_none(), "one end per id: {e}");
    }
    let mut by_file: BTreeMap<String, Vec<(Value, Value)>> = BTreeMap::new();
    for b in evs.iter().filter(|e| e["ph"] == "b") {
        let e = ends
            .remove(&b["id2"]["local"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no end for {b}"));
        assert_eq!(
            (&e["name"], &e["cat"], &e["pid"]),
            (&b["name"], &b["cat"], &b["pid"])
        );
        assert_eq!(b["cat"], "epoch");
        assert_eq!(b["pid"], perfetto::COUNTERS_PID, "beside the counters");
        assert!(e["ts"].as_f64() >= b["ts"].as_f64(), "{b} {e}");
        by_file
            .entry(b["name"].as_str().unwrap().to_string())
            .or_default()
            .push((b.clone(), e.clone()));
    }
    assert!(ends.is_empty(), "ends without a begin: {ends:?}");
    by_file
}

#[test]
fn the_export_shows_each_mapped_epoch_as_an_async_slice() {
    let doc = export(&lifecycle_batches());
    let epochs = epoch_slices(&doc);
    let names: Vec<&str> = epochs.keys().map(String::as_str).collect();
    assert_eq!(names, ["App", "app.db", "libleak.dylib", "open.log"]);
    let only = |name: &str| {
        let e = &epochs[name];
        assert_eq!(e.len(), 1, "{name}: one epoch");
        e[0].clone()
    };
    // Mapped twice by pid 200, paged in three times, one last unmap.
    let (b, e) = only("app.db");
    assert_eq!(b["args"]["path"], "/data/app.db");
    assert_eq!(b["args"]["first_pid"], 200);
    assert_eq!(b["args"]["via"], "mmap");
    assert_eq!(b["args"]["usecount_before"], 1);
    assert_eq!(e["args"]["end"], "last unmap (VNOP_MNOMAP)");
    assert_eq!(e["args"]["maps"], 2);
    assert_eq!(e["args"]["pageins"], 3);
    assert_eq!(e["args"]["last_unmap_pid"], 200);
    assert_eq!(e["args"]["usecount_at_unmap"], 2);
    let (b, _) = only("App");
    assert_eq!(b["args"]["via"], "exec");
    assert_eq!(b["args"]["first_pid"], 300);
    // Never unmapped: closed at the trace's last time, and says so.
    let (b, e) = only("open.log");
    assert_eq!(e["args"]["end"], "not unmapped by the end of the trace");
    assert!(e["args"].get("last_unmap_pid").is_none());
    let last = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["ts"].as_f64())
        .fold(0.0, f64::max);
    assert_eq!(e["ts"].as_f64(), Some(last));
    assert!(b["ts"].as_f64() < Some(last));
    // Nothing was lost.
    assert!(
        epochs
            .values()
            .flatten()
            .all(|(_, e)| e["args"].get("lost").is_none())
    );
}

#[test]
fn the_export_marks_an_epoch_that_lost_records() {
    let epochs = epoch_slices(&export(&lossy_batches(200)));
    let (_, e) = &epochs["app.db"][0];
    assert_eq!(epochs["app.db"].len(), 1);
    assert_eq!(e["args"]["end"], "last unmap (VNOP_MNOMAP)");
    assert!(e["args"]["losses_during"].as_u64().unwrap() > 0, "{e}");
    assert!(
        e["args"]["lost"]
            .as_str()
            .unwrap()
            .contains("may be among them")
    );
}

#[test]
fn the_export_gives_each_load_its_own_epochs() {
    // The same file mapped and unmapped in two kext loads: two slices,
    // each ended by its own load's last unmap.
    let epochs = epoch_slices(&export(&reload_batches()));
    let db = &epochs["app.db"];
    assert_eq!(db.len(), 2);
    for (_, e) in db {
        assert_eq!(e["args"]["end"], "last unmap (VNOP_MNOMAP)");
        assert_eq!(e["args"]["maps"], 1);
    }
}

fn svg_of(batches: &[Vec<u8>], stem: &str) -> String {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "in.mtr", batches);
    let out = dir.path().join("svg");
    let run = maptrace()
        .args(["heatmap", "-o"])
        .arg(&out)
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        matches!(run.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let file = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(stem))
        .unwrap_or_else(|| panic!("no {stem}*.svg"));
    std::fs::read_to_string(file).unwrap()
}

#[test]
fn a_binned_heatmap_colours_each_process() {
    let per = maptrace::heatmap::MAX_BLOCKS as u64 / 3 + 1_000;
    let batches = recorded(1, 1 << 15, |t| {
        t.path(0, DB, "/data/big.db");
        for (k, pid) in [200u32, 300, 400].into_iter().enumerate() {
            for i in 0..per {
                // Each process reads its own third of the file.
                let off = (k as u64 * 4096 + i % 4096) * 4096;
                t.pagein(0, pid, u64::from(pid), DB, (off as i64, 4096), 2);
                if i % 10_000 == 9_999 {
                    t.drain();
                }
            }
            t.drain();
        }
    });
    let text = svg_of(&batches, "big.db-");
    let svg = roxmltree::Document::parse(&text).unwrap();
    let bins: Vec<_> = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("pagein-bin"))
        .collect();
    assert!(!bins.is_empty());
    let fills: BTreeSet<&str> = bins.iter().map(|b| b.attribute("fill").unwrap()).collect();
    assert_eq!(fills.len(), 3, "{fills:?}");
    // The legend shows the same colours.
    let legend: BTreeSet<&str> = svg
        .descendants()
        .find(|n| n.attribute("id") == Some("legend"))
        .unwrap()
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter_map(|n| n.attribute("fill"))
        .collect();
    assert_eq!(legend, fills);
}

/// The numbers of an axis' tick labels (`12.5 KiB` → 12.5).
fn tick_values(svg: &roxmltree::Document<'_>, axis: &str) -> Vec<f64> {
    svg.descendants()
        .find(|n| n.attribute("id") == Some(axis))
        .unwrap()
        .children()
        .filter(|n| n.attribute("class") == Some("tick"))
        .map(|n| {
            let t = n.text().unwrap();
            t.split(' ')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{t}: {e}"))
        })
        .collect()
}

fn assert_round(values: &[f64]) {
    assert!(values.len() >= 3, "{values:?}");
    assert_eq!(values[0], 0.0, "{values:?}");
    let step = values[1] - values[0];
    let mantissa = step / 10f64.powf(step.log10().floor());
    assert!(
        [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
        "step {step} of {values:?}"
    );
    for (i, v) in values.iter().enumerate() {
        assert!((v - step * i as f64).abs() < 1e-6 * step, "{values:?}");
    }
}

#[test]
fn heatmap_ticks_are_round_numbers() {
    let text = svg_of(&lifecycle_batches(), "app.db-");
    let svg = roxmltree::Document::parse(&text).unwrap();
    assert_round(&tick_values(&svg, "x-axis"));
    assert_round(&tick_values(&svg, "y-axis"));
    // Odd sizes too: 3 page-ins up to 1000 KiB + 12 KiB over 1.23 ms.
    let batches = recorded(1, 256, |t| {
        t.path(0, DB, "/data/odd.db");
        t.pagein(0, 200, 2001, DB, (0, 4096), 2);
        t.ts += 1_230_000;
        t.pagein(0, 200, 2001, DB, (1000 << 10, 12 << 10), 2);
        t.drain();
    });
    let text = svg_of(&batches, "odd.db-");
    let svg = roxmltree::Document::parse(&text).unwrap();
    assert_round(&tick_values(&svg, "x-axis"));
    assert_round(&tick_values(&svg, "y-axis"));
}

#[test]
fn a_heatmap_marks_dropped_records_on_the_time_axis() {
    let batches = lossy_batches(200);
    let (_, totals) = decode(&batches);
    assert!(totals.dropped > 0);
    let text = svg_of(&batches, "app.db-");
    let svg = roxmltree::Document::parse(&text).unwrap();
    let marks: Vec<_> = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("loss"))
        .collect();
    assert!(!marks.is_empty());
    let shown: u64 = marks
        .iter()
        .map(|m| {
            let title = m.children().find(|c| c.has_tag_name("title")).unwrap();
            title
                .text()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(shown, totals.dropped);
    assert!(text.contains("records lost"));
}

#[test]
fn small_pageins_stay_visible_above_the_map_lines() {
    // A 4 KiB page-in in a 4 GiB span is far below a pixel.
    let batches = recorded(1, 256, |t| {
        t.path(0, DB, "/data/huge.db");
        t.mmap_call(0, 200, 2001, DB, 1, 1);
        t.pagein(0, 200, 2001, DB, (0, 4096), 2);
        t.pagein(0, 200, 2001, DB, (4 << 30, 4096), 2);
        t.ts += 5_000_000_000;
        t.mnomap(0, 200, 2001, DB, 2);
        t.drain();
    });
    let text = svg_of(&batches, "huge.db-");
    let svg = roxmltree::Document::parse(&text).unwrap();
    let num = |n: roxmltree::Node<'_, '_>, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
    let plot = svg
        .descendants()
        .find(|n| n.attribute("id") == Some("plot"))
        .unwrap();
    let (px, py, pw, ph) = (
        num(plot, "x"),
        num(plot, "y"),
        num(plot, "width"),
        num(plot, "height"),
    );
    let blocks: Vec<_> = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("pagein"))
        .collect();
    assert_eq!(blocks.len(), 2);
    for b in &blocks {
        assert!(num(*b, "width") >= 3.0 && num(*b, "height") >= 3.0);
        assert!(num(*b, "x") >= px && num(*b, "x") + num(*b, "width") <= px + pw + 1e-6);
        assert!(num(*b, "y") >= py && num(*b, "y") + num(*b, "height") <= py + ph + 1e-6);
    }
    // Drawn after (so above) the map lines.
    let order: Vec<&str> = svg
        .root_element()
        .children()
        .filter_map(|n| n.attribute("id"))
        .collect();
    let at = |id: &str| order.iter().position(|x| *x == id).unwrap();
    assert!(at("maps") < at("pageins"), "{order:?}");
}

#[test]
fn a_heatmap_survives_timestamps_at_the_end_of_time() {
    let batches = recorded(1, 256, |t| {
        t.path(0, DB, "/data/late.db");
        t.pagein(0, 200, 2001, DB, (0, 4096), 2);
        // The page-in's end (time + 25 µs) is past 2^64 ns.
        t.ts = u64::MAX - 15_000;
        t.pagein(0, 200, 2001, DB, (i64::MAX - 100, u64::from(u32::MAX)), 2);
        t.drain();
    });
    let text = svg_of(&batches, "late.db-");
    roxmltree::Document::parse(&text).unwrap();
}

/// A launch: a burst of page-ins, a 4.8 s sleep, another burst.
fn burst_sleep_burst() -> Vec<Vec<u8>> {
    recorded(1, 1 << 10, |t| {
        t.path(0, DB, "/data/launch.db");
        for i in 0..20i64 {
            t.pagein(0, 200, 2001, DB, (i * 4096, 4096), 2);
        }
        t.ts += 4_800_000_000;
        for i in 0..20i64 {
            t.pagein(0, 200, 2001, DB, ((64 + i) * 4096, 4096), 2);
        }
        t.drain();
    })
}

fn heatmap_with(batches: &[Vec<u8>], args: &[&str]) -> (std::process::Output, TempDir) {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "in.mtr", batches);
    let out = maptrace()
        .args(["heatmap", "-o"])
        .arg(dir.path().join("svg"))
        .arg(&f)
        .args(args)
        .output()
        .unwrap();
    (out, dir)
}

#[test]
fn time_axis_compressed_cuts_the_sleep_and_linear_is_the_default() {
    let batches = burst_sleep_burst();
    let read = |dir: &TempDir| {
        let svg = dir.path().join("svg");
        let file = std::fs::read_dir(svg).unwrap().next().unwrap().unwrap();
        std::fs::read_to_string(file.path()).unwrap()
    };
    let (out, dir) = heatmap_with(&batches, &["--time-axis", "compressed"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = read(&dir);
    let svg = roxmltree::Document::parse(&text).unwrap();
    let breaks: Vec<_> = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("break"))
        .collect();
    assert_eq!(breaks.len(), 1, "{text}");
    let label = breaks[0]
        .children()
        .find(|n| n.has_tag_name("text"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        label.ends_with(" s idle ⋯") && label.contains("4.8"),
        "{label}"
    );
    // Both panels are there; the curve ends at the 160 KiB read.
    assert!(text.contains(r#"id="histogram""#) && text.contains(r#"id="cumulative-curve""#));
    assert!(text.contains("bytes paged in so far: 160 KiB"));
    let (out, dir) = heatmap_with(&batches, &[]);
    assert_eq!(out.status.code(), Some(0));
    let default = read(&dir);
    assert!(!default.contains(r#"class="break""#));
    let (_, dir) = heatmap_with(&batches, &["--time-axis", "linear"]);
    assert_eq!(read(&dir), default);
}

#[test]
fn a_bad_time_axis_is_refused_with_the_choices() {
    let (out, _dir) = heatmap_with(&burst_sleep_burst(), &["--time-axis", "log"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linear") && err.contains("compressed"),
        "{err}"
    );
}
