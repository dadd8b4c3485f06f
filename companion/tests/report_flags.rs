//! `maptrace report`'s flags on real recordings: the summary first, sort and
//! top-N, pid, name, path and time filters, latency percentiles,
//! `--fail-on-suspects`, and the usage errors for contradictory flags.

mod common;

use common::{DB, Trace, ev, fixture, lifecycle_batches, maptrace, recorded};
use maptrace_abi::raw;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn life(dir: &TempDir) -> PathBuf {
    fixture(dir, "life.mtr", &lifecycle_batches())
}

fn text(f: &Path, args: &[&str]) -> String {
    let out = maptrace().arg("report").arg(f).args(args).output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 5)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The paths of the FILE blocks, in order.
fn files(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("FILE "))
        .map(|l| l.split("  (vnode").next().unwrap())
        .collect()
}

fn json_paths(r: &Value) -> Vec<String> {
    r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

fn pids(r: &Value) -> Vec<u64> {
    r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_summary_comes_before_the_details() {
    let dir = TempDir::new().unwrap();
    let out = text(&life(&dir), &[]);
    let head: Vec<&str> = out.lines().take(7).collect();
    assert!(head[0].starts_with("maptrace report: "), "{out}");
    assert!(head[0].ends_with(" 4 files, 3 processes"), "{out}");
    assert!(head[1].starts_with("  time      "), "{out}");
    assert!(head[2].starts_with("  losses    dropped 0,"), "{out}");
    assert_eq!(head[3], "  suspects  2 (LEAK SUSPECTS below)");
    // Every fixture page-in takes 25 µs.
    assert_eq!(
        head[4],
        "  page-ins  5 clusters: p50 25us  p90 25us  p99 25us  max 25us"
    );
    assert_eq!(
        head[5],
        "  pages     counted in 4 KiB pages (the traced machine's)"
    );
    assert_eq!(head[6], "  sorted by pageins");
    let summary_at = out.find("  suspects").unwrap();
    assert!(summary_at < out.find("FILE ").unwrap());
    let r = common::report_json(&life(&dir), &[]);
    let s = &r["summary"];
    assert_eq!(
        (s["files"].as_u64(), s["suspects"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(s["latency"]["p99_ns"], 25_000);
    assert!(s["first_ns"].as_u64().unwrap() < s["last_ns"].as_u64().unwrap());
}

#[test]
fn sort_orders_files_by_the_key() {
    let dir = TempDir::new().unwrap();
    let f = life(&dir);
    assert_eq!(
        files(&text(&f, &["--sort", "path"])),
        [
            "/Applications/App",
            "/data/app.db",
            "/usr/lib/libleak.dylib",
            "/var/log/open.log"
        ]
    );
    // app.db: 3 page-ins, 36 864 bytes, 2 maps; the others 1, 4096, 1; App 0.
    for key in ["pageins", "bytes", "maps"] {
        let out = text(&f, &["--sort", key]);
        assert_eq!(files(&out)[0], "/data/app.db", "--sort {key}");
    }
    assert_eq!(
        *files(&text(&f, &["--sort", "pageins"])).last().unwrap(),
        "/Applications/App"
    );
    // libleak's MNOMAP saw 3, the highest usecount of the trace.
    assert_eq!(
        files(&text(&f, &["--sort", "usecount"]))[0],
        "/usr/lib/libleak.dylib"
    );
    // No page-in, no latency: last.
    assert_eq!(
        *files(&text(&f, &["--sort", "latency"])).last().unwrap(),
        "/Applications/App"
    );
}

#[test]
fn top_cuts_files_and_processes_but_never_suspects() {
    let dir = TempDir::new().unwrap();
    let f = life(&dir);
    let out = text(&f, &["--top", "1", "--sort", "path"]);
    assert_eq!(files(&out), ["/Applications/App"]);
    assert!(out.contains("3 more files not shown"), "{out}");
    assert!(out.contains("2 more processes not shown"), "{out}");
    assert!(out.contains("LEAK SUSPECTS: 2"), "{out}");
    assert_eq!(files(&text(&f, &["--top", "0"])).len(), 4);
    assert_eq!(files(&text(&f, &["--all"])).len(), 4);
    // JSON lists everything unless told.
    assert_eq!(json_paths(&common::report_json(&f, &[])).len(), 4);
    let r = common::report_json(&f, &["--top", "2"]);
    assert_eq!(json_paths(&r).len(), 2);
    assert_eq!(r["summary"]["files_not_shown"], 2);
    assert_eq!(r["leak_suspects"].as_array().unwrap().len(), 2);
}

#[test]
fn pid_selects_its_events_and_the_files_they_touched() {
    let dir = TempDir::new().unwrap();
    let r = common::report_json(&life(&dir), &["--pid", "300"]);
    let mut paths = json_paths(&r);
    paths.sort();
    assert_eq!(paths, ["/Applications/App", "/usr/lib/libleak.dylib"]);
    assert_eq!(pids(&r), [300]);
    assert_eq!(r["summary"]["filtered"], true);
    assert_eq!(r["leak_suspects"].as_array().unwrap().len(), 1);
    assert_eq!(r["leak_suspects"][0]["path"], "/usr/lib/libleak.dylib");
    let r = common::report_json(&life(&dir), &["--pid", "200", "--pid", "400"]);
    assert_eq!(pids(&r), [200, 400]);
    assert_eq!(json_paths(&r), ["/data/app.db", "/var/log/open.log"]);
}

#[test]
fn comm_selects_nothing_while_no_record_names_processes() {
    let dir = TempDir::new().unwrap();
    let r = common::report_json(&life(&dir), &["--comm", "Safari"]);
    assert_eq!(json_paths(&r).len(), 0);
    assert_eq!(pids(&r).len(), 0);
}

#[test]
fn path_globs_match_within_components() {
    let dir = TempDir::new().unwrap();
    let f = life(&dir);
    assert_eq!(
        json_paths(&common::report_json(&f, &["--path", "/usr/lib/*.dylib"])),
        ["/usr/lib/libleak.dylib"]
    );
    assert!(json_paths(&common::report_json(&f, &["--path", "/usr/*"])).is_empty());
    let mut both = json_paths(&common::report_json(
        &f,
        &["--path", "/usr/**", "--path", "/data/*"],
    ));
    both.sort();
    assert_eq!(both, ["/data/app.db", "/usr/lib/libleak.dylib"]);
}

#[test]
fn the_window_counts_seconds_from_the_first_event() {
    // The fixture's events are 10 µs apart, the first a PATH record: the
    // 19th and 20th (0.00019 s and 0.0002 s in) are pid 400's map and
    // page-in of open.log; the first 8 (to 0.00007 s) reach app.db's first
    // map, its first page-in and the next mmap(2) check.
    let dir = TempDir::new().unwrap();
    let f = life(&dir);
    let late = common::report_json(&f, &["--since", "0.00019"]);
    assert_eq!(json_paths(&late), ["/var/log/open.log"]);
    assert_eq!(pids(&late), [400]);
    let early = common::report_json(&f, &["--until", "0.00007"]);
    assert_eq!(json_paths(&early), ["/data/app.db"]);
    assert_eq!(early["files"][0]["pageins"]["count"], 1);
    // The epoch stays whole: both maps and the unmap, balanced.
    assert_eq!(early["files"][0]["epochs"][0]["verdict"], "balanced");
    let none = common::report_json(&f, &["--since", "5", "--until", "6"]);
    assert!(json_paths(&none).is_empty());
}

/// Pid 200 pages in /data/app.db 100 times, taking 1, 2, ... 100 µs.
fn latency_batches() -> Vec<Vec<u8>> {
    recorded(1, 512, |t: &mut Trace<'_>| {
        t.map_db();
        for us in 1..=100u64 {
            let mut p = ev(raw::MT_KIND_PAGEIN, 200, 2001, t.tick());
            p.vnode_ptr = DB;
            p.offset = us as i64 * 4096;
            p.size = 4096;
            p.duration_ns = us * 1000;
            t.e.record(0, &p);
        }
        t.drain();
    })
}

#[test]
fn latency_percentiles_of_a_known_distribution() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "lat.mtr", &latency_batches());
    let r = common::report_json(&f, &[]);
    let within = |got: &Value, want: u64| {
        let g = got.as_u64().unwrap();
        assert!(
            g >= want && g as f64 <= want as f64 * (1.0 + 1.0 / 128.0),
            "{g} vs {want}"
        );
    };
    for l in [&r["files"][0]["latency"], &r["summary"]["latency"]] {
        assert_eq!(l["count"], 100);
        within(&l["p50_ns"], 50_000);
        within(&l["p90_ns"], 90_000);
        within(&l["p99_ns"], 99_000);
        assert_eq!(l["max_ns"], 100_000);
    }
    let out = text(&f, &[]);
    assert!(out.contains("  latency  p50 50."), "{out}");
    assert!(out.contains("max 100us"), "{out}");
}

#[test]
fn fail_on_suspects_sets_its_own_status() {
    let dir = TempDir::new().unwrap();
    let f = life(&dir);
    maptrace().arg("report").arg(&f).assert().code(0);
    maptrace()
        .args(["report", "--fail-on-suspects"])
        .arg(&f)
        .assert()
        .code(5)
        .stdout(predicate::str::contains("LEAK SUSPECTS: 2"));
    // Filtered to a process without suspects: 0.
    maptrace()
        .args(["report", "--fail-on-suspects", "--pid", "200"])
        .arg(&f)
        .assert()
        .code(0);
    // Lost records come first: their status, not 5.
    let lossy = fixture(&dir, "lossy.mtr", &common::lossy_batches(100));
    maptrace()
        .args(["report", "--fail-on-suspects"])
        .arg(&lossy)
        .assert()
        .code(3);
}

#[test]
fn contradictory_or_bad_flags_are_usage_errors() {
    let dir = TempDir::new().unwrap();
    let f = life(&dir);
    let bad: &[(&[&str], &str)] = &[
        (
            &["--sort", "size"],
            "possible values: pageins, bytes, maps, latency, usecount, path",
        ),
        (
            &["--path", "/usr/[lib"],
            "--path `/usr/[lib` is not a valid glob",
        ),
        (
            &["--since", "3", "--until", "2"],
            "--since 3 is after --until 2",
        ),
        (&["--since=-1"], "is not a number of seconds, 0 or more"),
        (
            &["--until", "soon"],
            "is not a number of seconds, 0 or more",
        ),
        (&["--top", "many"], "invalid digit"),
        (&["--top", "3", "--all"], "cannot be used with"),
    ];
    for (args, says) in bad {
        maptrace()
            .arg("report")
            .arg(&f)
            .args(*args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(*says));
    }
}

/// The lifecycle batches as a recording of `format` (4: the anchor but no
/// page size, as the maptrace before format 5 wrote them).
fn life_of_format(dir: &TempDir, format: u16) -> PathBuf {
    use maptrace::recording::{Header, encode_header_of, frame_head};
    let mut bytes = encode_header_of(
        format,
        &Header {
            abi_version: raw::MT_ABI_VERSION as u16,
            start_unix_ns: common::FIXTURE_START_UNIX_NS,
            start_clock_ns: Some(common::FIXTURE_CLOCK_NS),
            page_size: None,
            host: "old".into(),
        },
    );
    for b in lifecycle_batches() {
        bytes.extend_from_slice(&frame_head(b.len() as u32, &b));
        bytes.extend_from_slice(&b);
    }
    let f = dir.path().join(format!("life{format}.mtr"));
    std::fs::write(&f, bytes).unwrap();
    f
}

/// `/data/app.db`'s distinct pages and their size, and the summary's
/// page size and where it comes from.
fn db_pages(r: &Value) -> (u64, u64, u64, String) {
    let p = &common::report_file(r, "/data/app.db")["pageins"];
    let s = &r["summary"];
    (
        p["distinct_pages"].as_u64().unwrap(),
        p["page_size"].as_u64().unwrap(),
        s["page_size"].as_u64().unwrap(),
        s["page_size_from"].as_str().unwrap().to_string(),
    )
}

#[test]
fn distinct_pages_count_in_the_traces_page_size_or_the_option() {
    let dir = TempDir::new().unwrap();
    let f = life(&dir);
    // app.db pages in 0..24 KiB and 64..68 KiB: 7 pages of 4 KiB (the
    // fixture's, from its header), 3 of 16 KiB, 2 of 64 KiB.
    let trace = (7, 4096, 4096, "trace".to_string());
    assert_eq!(db_pages(&common::report_json(&f, &[])), trace);
    for (flag, pages, bytes) in [
        ("16k", 3, 16384),
        ("16384", 3, 16384),
        ("16K", 3, 16384),
        ("4k", 7, 4096),
        ("64k", 2, 65536),
    ] {
        assert_eq!(
            db_pages(&common::report_json(&f, &["--page-size", flag])),
            (pages, bytes, bytes, "option".to_string()),
            "--page-size {flag}"
        );
    }
    // Text and CSV say it too.
    let out = text(&f, &["--page-size", "16k"]);
    assert!(
        out.contains("  pages     counted in 16 KiB pages (--page-size)"),
        "{out}"
    );
    assert!(out.contains("3 distinct 16 KiB pages"), "{out}");
    assert!(text(&f, &[]).contains("counted in 4 KiB pages (the traced machine's)"));
    let csv = maptrace()
        .args(["report", "--format", "csv", "--page-size", "16k"])
        .arg(&f)
        .output()
        .unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    let mut rows = csv.lines().map(|l| l.split(',').collect::<Vec<_>>());
    let head = rows.next().unwrap();
    let col = |name| head.iter().position(|c| *c == name).unwrap();
    assert_eq!(col("page_size"), head.len() - 1, "appended last");
    let db = rows.find(|r| r[col("path")] == "/data/app.db").unwrap();
    assert_eq!(
        (db[col("distinct_pages")], db[col("page_size")]),
        ("3", "16384")
    );
}

#[test]
fn a_recording_before_format_5_counts_4k_pages_and_says_so() {
    let dir = TempDir::new().unwrap();
    let f = life_of_format(&dir, 4);
    let r = common::report_json(&f, &[]);
    assert_eq!(db_pages(&r), (7, 4096, 4096, "unknown".to_string()));
    let note = "page size unknown (recording format 4), counted in 4 KiB pages";
    assert_eq!(r["summary"]["page_size_note"], note);
    assert!(text(&f, &[]).contains(&format!("  pages     {note}")));
    // The option decides then, with no note.
    let r = common::report_json(&f, &["--page-size", "16k"]);
    assert_eq!(db_pages(&r), (3, 16384, 16384, "option".to_string()));
    assert!(r["summary"].get("page_size_note").is_none());
}

#[test]
fn page_sizes_that_are_not_are_usage_errors() {
    let dir = TempDir::new().unwrap();
    let f = life(&dir);
    for (value, says) in [
        (
            "5000",
            "page size 5000 bytes is not a page size: give a power of two from 4096 (4k) to 65536 (64k)",
        ),
        ("2k", "page size 2048 bytes is not a page size"),
        ("128k", "page size 131072 bytes is not a page size"),
        ("0", "page size 0 bytes is not a page size"),
        (
            "16kb",
            "page size `16kb` is not a number of bytes (examples: 4096, 16384, 4k, 16k)",
        ),
        ("", "is not a number of bytes"),
    ] {
        maptrace()
            .arg("report")
            .arg(&f)
            .args(["--page-size", value])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--page-size"))
            .stderr(predicate::str::contains(says));
    }
}
