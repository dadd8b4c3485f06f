//! `--time wall`: UTC times through a recording's clock anchor (format 4),
//! the clear refusal for older recordings, and `info` showing the anchor.

mod common;

use common::*;
use maptrace::recording::{Header, encode_header_of, frame_head};
use maptrace::wallclock::rfc3339_micros;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The UTC time of a fixture record stamped `ts_ns`.
fn fixture_utc(ts_ns: u64) -> String {
    rfc3339_micros(FIXTURE_START_UNIX_NS + ts_ns - FIXTURE_CLOCK_NS)
}

/// The lifecycle batches as a format 3 recording (checksummed frames, no
/// clock anchor), as the maptrace before format 4 wrote them.
fn format_3_fixture(dir: &TempDir) -> PathBuf {
    let mut bytes = encode_header_of(
        3,
        &Header {
            abi_version: maptrace_abi::raw::MT_ABI_VERSION as u16,
            start_unix_ns: FIXTURE_START_UNIX_NS,
            start_clock_ns: None,
            page_size: None,
            host: "old".into(),
        },
    );
    for b in lifecycle_batches() {
        bytes.extend_from_slice(&frame_head(b.len() as u32, &b));
        bytes.extend_from_slice(&b);
    }
    assert_eq!(bytes[8], 3);
    let p = dir.path().join("old.mtr");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn json_lines(args: &[&str], f: &Path) -> Vec<Value> {
    let out = maptrace().args(args).arg(f).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn stream_json_gains_utc_times_only_when_asked() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let wall = json_lines(&["stream", "--json", "--time", "wall"], &f);
    let rel = json_lines(&["stream", "--json"], &f);
    assert_eq!(wall.len(), rel.len());
    let mut events = 0;
    for (w, r) in wall.iter().zip(&rel) {
        if w["type"] != "event" {
            assert_eq!(w, r, "only events gain a time");
            continue;
        }
        events += 1;
        let ts = w["ts_ns"].as_u64().unwrap();
        assert_eq!(w["time"], fixture_utc(ts), "{w}");
        assert!(r.get("time").is_none(), "relative lines have no time: {r}");
        let mut without = w.clone();
        without.as_object_mut().unwrap().remove("time");
        assert_eq!(&without, r, "nothing else changes");
    }
    assert_eq!(events, 22);
    // `--time rel` is the default, spelled out.
    assert_eq!(json_lines(&["stream", "--json", "--time", "rel"], &f), rel);
}

#[test]
fn stream_table_and_csv_show_utc_times() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let ts: Vec<u64> = json_lines(&["stream", "--json"], &f)
        .iter()
        .filter(|l| l["type"] == "event")
        .map(|l| l["ts_ns"].as_u64().unwrap())
        .collect();

    // Every kind, so that the rows match the JSON events one to one.
    let out = maptrace()
        .args(["stream", "--time", "wall", "--kind", "all"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    assert!(head.starts_with("TIME(UTC) "), "{head}");
    let rows: Vec<&str> = lines.filter(|l| !l.starts_with("--")).collect();
    assert_eq!(rows.len(), ts.len());
    for (row, t) in rows.iter().zip(&ts) {
        let utc = fixture_utc(*t);
        assert!(row.starts_with(&format!("{utc}  ")), "{row}");
        // The columns stay under their titles: SHARD right-aligned in 5.
        assert_eq!(&row[27..29], "  ", "{row}");
        assert!(row.as_bytes()[32].is_ascii_digit(), "{row}");
    }
    assert_eq!(head.find("SHARD"), Some(28));

    let out = maptrace()
        .args(["stream", "--format", "csv", "--time", "wall"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut rd = csv::Reader::from_reader(out.stdout.as_slice());
    let cols: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    // Appended, after the columns before it (then `shown`, the summary's).
    assert_eq!(&cols[cols.len() - 2..], ["time", "shown"]);
    let (t_col, ts_col) = (cols.len() - 2, 2);
    let mut n = 0;
    for rec in rd.records() {
        let rec = rec.unwrap();
        if &rec[0] == "event" {
            let t: u64 = rec[ts_col].parse().unwrap();
            assert_eq!(&rec[t_col], fixture_utc(t));
            n += 1;
        } else {
            assert_eq!(&rec[t_col], "", "{rec:?}");
        }
    }
    assert_eq!(n, ts.len());
}

#[test]
fn wall_times_of_a_recording_without_an_anchor_are_refused_clearly() {
    let dir = TempDir::new().unwrap();
    let old = format_3_fixture(&dir);
    // Format 3 is still read, with relative times.
    let rel = json_lines(&["stream", "--json"], &old);
    let new = fixture(&dir, "life.mtr", &lifecycle_batches());
    assert_eq!(rel, json_lines(&["stream", "--json"], &new));
    for args in [
        &["stream", "--time", "wall"][..],
        &["stream", "--json", "--time", "wall"],
        &["stream", "--format", "csv", "--time", "wall"],
        &["report", "--time", "wall"],
        &["report", "--json", "--time", "wall"],
    ] {
        maptrace()
            .args(args)
            .arg(&old)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains("--time wall"))
            .stderr(predicate::str::contains("old.mtr has no clock anchor"))
            .stderr(predicate::str::contains("before format 4"))
            .stderr(predicate::str::contains("use --time rel"));
    }
}

#[test]
fn a_bad_time_value_is_a_usage_error_naming_the_choices() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    for cmd in ["stream", "report"] {
        for bad in ["utc", "", "WALL"] {
            maptrace()
                .args([cmd, "--time", bad])
                .arg(&f)
                .assert()
                .code(2)
                .stdout("")
                .stderr(predicate::str::contains("--time"))
                .stderr(predicate::str::contains("possible values: rel, wall"));
        }
    }
}

#[test]
fn report_shows_utc_first_and_last_times_with_time_wall() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let out = maptrace()
        .args(["report", "--json", "--time", "wall"])
        .arg(&f)
        .output()
        .unwrap();
    let r = ok_json(&out);
    // Suspect details name UTC times too, not seconds since boot.
    let still_mapped: Vec<&str> = r["leak_suspects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"] == "still_mapped")
        .map(|s| s["detail"].as_str().unwrap())
        .collect();
    assert!(!still_mapped.is_empty(), "{r}");
    for d in &still_mapped {
        assert!(d.contains(" since 20") && d.contains("Z by pid "), "{d}");
    }
    let s = &r["summary"];
    let (first, last) = (
        s["first_ns"].as_u64().unwrap(),
        s["last_ns"].as_u64().unwrap(),
    );
    assert_eq!(s["first_time"], fixture_utc(first));
    assert_eq!(s["last_time"], fixture_utc(last));
    assert_eq!(s["clock_anchor"]["unix_ns"], FIXTURE_START_UNIX_NS);
    assert_eq!(s["clock_anchor"]["clock_ns"], FIXTURE_CLOCK_NS);
    // Relative (the default): no UTC fields.
    let out = maptrace()
        .args(["report", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    let rel = ok_json(&out);
    for k in ["first_time", "last_time", "clock_anchor"] {
        assert!(rel["summary"].get(k).is_none(), "{k}");
    }

    let out = maptrace()
        .args(["report", "--time", "wall"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let span = format!(
        "  time      {} .. {}",
        fixture_utc(first),
        fixture_utc(last)
    );
    assert!(text.contains(&span), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("  epoch "))
            .all(|l| l.contains(&fixture_utc(first)[..11])),
        "{text}"
    );

    let out = maptrace()
        .args(["report", "--format", "csv", "--time", "wall"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut rd = csv::Reader::from_reader(out.stdout.as_slice());
    let cols: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| cols.iter().position(|c| c == n).unwrap();
    let (start_ns, start_time) = (col("start_ns"), col("start_time"));
    let mut epochs = 0;
    for rec in rd.records() {
        let rec = rec.unwrap();
        if let Ok(t) = rec[start_ns].parse::<u64>() {
            assert_eq!(&rec[start_time], fixture_utc(t));
            epochs += 1;
        }
    }
    assert!(epochs > 0);
}

#[test]
fn info_shows_the_anchor_or_says_there_is_none() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let ts: Vec<u64> = json_lines(&["stream", "--json"], &f)
        .iter()
        .filter_map(|l| l["ts_ns"].as_u64())
        .collect();
    let (first, last) = (
        fixture_utc(*ts.iter().min().unwrap()),
        fixture_utc(*ts.iter().max().unwrap()),
    );
    maptrace()
        .args(["info"])
        .arg(&f)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "format     5 (frames checksummed)",
        ))
        .stdout(predicate::str::contains(
            "anchor     kext clock 1.000000s since boot at the start",
        ))
        .stdout(predicate::str::contains(format!(
            "events     {first} .. {last}\n"
        )));
    let out = maptrace()
        .args(["info", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    let i = ok_json(&out);
    assert_eq!(i["start_clock_ns"], FIXTURE_CLOCK_NS);
    assert_eq!(i["first_event_utc"], first);
    assert_eq!(i["last_event_utc"], last);

    let old = format_3_fixture(&dir);
    maptrace()
        .args(["info"])
        .arg(&old)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "format     3 (frames checksummed)",
        ))
        .stdout(predicate::str::contains(
            "anchor     none (format 3 has no kext clock reading)",
        ))
        .stdout(predicate::str::contains("events ").not());
}

/// Records `src` (a recording given as the source) into `copy`.
fn record_copy(src: &Path, copy: &Path) {
    maptrace()
        .args(["--source", &format!("file:{}", src.display())])
        .args(["record", "-q", "-o"])
        .arg(copy)
        .assert()
        .code(0);
}

#[test]
fn a_copied_recording_keeps_its_anchor() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let copy = dir.path().join("copy.mtr");
    record_copy(&f, &copy);
    let h = maptrace::recording::Reader::open(&copy)
        .unwrap()
        .header()
        .clone();
    assert_eq!(h.start_unix_ns, FIXTURE_START_UNIX_NS);
    assert_eq!(h.start_clock_ns, Some(FIXTURE_CLOCK_NS));
    // And its page size.
    assert_eq!(h.page_size, Some(maptrace::pagesize::PageSize::FOUR_K));
    assert_eq!(
        json_lines(&["stream", "--json", "--time", "wall"], &copy),
        json_lines(&["stream", "--json", "--time", "wall"], &f)
    );
    // A copy of a format 3 recording has no anchor nor page size either;
    // it says so.
    let old = format_3_fixture(&dir);
    let copy = dir.path().join("copy3.mtr");
    record_copy(&old, &copy);
    let r = maptrace::recording::Reader::open(&copy).unwrap();
    assert_eq!(
        (r.format(), r.header().anchor(), r.header().page_size),
        (5, None, None)
    );
}

fn report_paths(r: &Value) -> Vec<String> {
    r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `--since` / `--until` take UTC times too: the same window as the
/// seconds after the first record it maps to.
#[test]
fn the_report_window_takes_utc_times_through_the_anchor() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let first = report_json(&f, &[])["summary"]["first_ns"]
        .as_u64()
        .unwrap();
    let at = |after_ns: u64| fixture_utc(first + after_ns);
    for (rel, utc) in [
        (
            &["--since", "0.00019"][..],
            vec!["--since".to_string(), at(190_000)],
        ),
        (&["--until", "0.00007"], vec!["--until".into(), at(70_000)]),
        (
            &["--since", "0.00007", "--until", "0.00019"],
            vec!["--since".into(), at(70_000), "--until".into(), at(190_000)],
        ),
    ] {
        let want = report_json(&f, rel);
        let utc: Vec<&str> = utc.iter().map(String::as_str).collect();
        let got = report_json(&f, &utc);
        assert_eq!(report_paths(&got), report_paths(&want), "{utc:?}");
        assert_eq!(got["files"], want["files"], "{utc:?}");
        assert_eq!(got["processes"], want["processes"], "{utc:?}");
    }
    assert_eq!(
        report_paths(&report_json(&f, &["--since", "0.00019"])),
        ["/var/log/open.log"]
    );
    // An offset is the same instant.
    let plus_one = {
        let z = at(190_000);
        // 2025-11-24T15:59:59.xxxxxxZ -> the same instant at +01:00.
        let hour: u32 = z[11..13].parse().unwrap();
        format!("{}{:02}{}+01:00", &z[..11], hour + 1, &z[13..z.len() - 1])
    };
    assert_eq!(
        report_json(&f, &["--since", &plus_one])["files"],
        report_json(&f, &["--since", "0.00019"])["files"]
    );

    // UTC bounds in the wrong order, an impossible time, no anchor.
    let (a, b) = (at(190_000), at(70_000));
    maptrace()
        .args(["report", "--since", &a, "--until", &b])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "--since {a} is after --until {b}"
        )));
    maptrace()
        .args(["report", "--since", "2025-02-30T00:00:00Z"])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "nor a UTC time (RFC 3339, example: 2026-12-05T06:28:09Z)",
        ));
    let old = format_3_fixture(&dir);
    maptrace()
        .args(["report", "--until", &b])
        .arg(&old)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(format!(
            "--until {b}: a UTC time needs the source's clock anchor"
        )))
        .stderr(predicate::str::contains("give seconds after"));
}
