//! The `maptrace` binary end to end on recordings of real core batches:
//! every command, the JSON schema, the report's balance and leak verdicts,
//! losses and corruption in output and exit status, and refusals of bad
//! flags and bad files.

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn lines_json(stdout: &[u8]) -> Vec<Value> {
    std::str::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn run_json(args: &[&str], path: &Path) -> (Vec<Value>, i32) {
    let out = maptrace().args(args).arg(path).output().unwrap();
    (lines_json(&out.stdout), out.status.code().unwrap())
}

#[test]
fn stream_table_shows_every_event_with_paths_and_a_clean_summary() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    maptrace()
        .args(["stream"])
        .arg(&f)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("TIME(s)"))
        .stdout(predicate::str::contains("/data/app.db"))
        .stdout(predicate::str::contains("r-- mmap(2)"))
        .stdout(predicate::str::contains("r-x exec/loader map"))
        .stdout(predicate::str::contains("last unmap"))
        .stdout(predicate::str::contains("kext start"))
        .stdout(predicate::str::contains("nothing lost"));
    // Columns line up under their titles, and no line ends in blanks.
    let out = maptrace().arg("stream").arg(&f).output().unwrap().stdout;
    let text = String::from_utf8(out).unwrap();
    let header = text.lines().next().unwrap();
    let file_col = header.find("FILE").unwrap();
    let kind_col = header.find("KIND").unwrap();
    // The shard, right-aligned under its title (a shard is not a CPU).
    let shard_end = header.find("SHARD").expect("a SHARD column") + "SHARD".len();
    for line in text.lines() {
        assert!(!line.ends_with(' '), "trailing blanks: {line:?}");
        if line.ends_with("/data/app.db") {
            assert_eq!(line.find("/data/app.db"), Some(file_col), "{line}");
            let b = line.as_bytes();
            assert!(
                b[shard_end - 1].is_ascii_digit() && b[shard_end] == b' ',
                "{line}"
            );
            assert!(
                line[kind_col..].starts_with(|c: char| c.is_ascii_lowercase()),
                "{line}"
            );
        }
    }
}

#[test]
fn the_table_leaves_out_path_and_proc_rows_unless_asked() {
    // Each table row names its file and process already; a PATH row before
    // every map repeated it. JSON keeps every kind.
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let table = |args: &[&str]| -> String {
        let out = maptrace().args(args).arg(&f).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    };
    let kind_rows = |text: &str, kind: &str| {
        let header = text.lines().next().unwrap();
        let col = header.find("KIND").unwrap();
        text.lines()
            .filter(|l| {
                l.get(col..)
                    .is_some_and(|k| k.starts_with(&format!("{kind} ")))
            })
            .count()
    };
    let plain = table(&["stream"]);
    assert_eq!(kind_rows(&plain, "path"), 0, "{plain}");
    assert!(kind_rows(&plain, "mmap") > 0, "{plain}");
    let last = plain.lines().last().unwrap();
    assert!(
        last.starts_with("-- 4 path and proc rows not shown") && last.contains("--kind all"),
        "{plain}"
    );
    let all = table(&["stream", "--kind", "all"]);
    assert_eq!(kind_rows(&all, "path"), 4, "{all}");
    assert!(!all.contains("not shown"), "{all}");
    let (lines, _) = run_json(&["stream", "--json"], &f);
    assert_eq!(lines.iter().filter(|v| v["kind"] == "path").count(), 4);
    maptrace()
        .args(["stream", "--kind", "mmap,everything"])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("or all"));
}

/// Keys every event line has, and the extra keys of each kind.
const COMMON: &[&str] = &[
    "type",
    "kind",
    "ts_ns",
    "shard",
    "pos",
    "pid",
    "tid",
    "vnode",
    "path",
    "error",
    "lost_before",
];
const COUNTS: &[&str] = &[
    "usecount",
    "kusecount",
    "usecount_minus_kusecount",
    "iocount",
    "count_method",
    "counts_saturated",
];

fn kind_keys(kind: &str) -> Vec<&'static str> {
    let mut k: Vec<&str> = match kind {
        "mmap" => vec!["prot", "vid", "duration_ns", "via"],
        "pagein" => vec!["offset", "size", "duration_ns", "upl_flags"],
        "mnomap" => vec!["vid", "duration_ns"],
        "file_mmap" => vec!["file_pos", "prot", "maxprot", "mmap_flags"],
        "path" => vec!["vid", "truncated"],
        "mark" => vec!["mark", "arg0", "arg1", "arg2"],
        other => panic!("unknown kind {other}"),
    };
    if matches!(kind, "mmap" | "pagein" | "mnomap") {
        k.extend_from_slice(COUNTS);
    }
    k
}

#[test]
fn stream_json_follows_the_documented_schema() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let (lines, code) = run_json(&["stream", "--json"], &f);
    assert_eq!(code, 0);
    // The contract's name and version come first.
    let (first, lines) = lines.split_first().unwrap();
    assert_eq!(
        first,
        &serde_json::json!({"type":"schema","schema":"maptrace.events","version":1})
    );
    let (last, events) = lines.split_last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["events"].as_u64().unwrap() as usize, events.len());
    assert_eq!(last["dropped"], 0);
    let mut kinds = std::collections::BTreeMap::new();
    let mut prev_ts = 0;
    for e in events {
        assert_eq!(e["type"], "event", "{e}");
        let kind = e["kind"].as_str().unwrap();
        *kinds.entry(kind.to_string()).or_insert(0) += 1;
        let obj = e.as_object().unwrap();
        let mut want: Vec<&str> = COMMON.to_vec();
        want.extend(kind_keys(kind));
        if kind == "mmap" && e["via"] == "mmap" {
            want.extend(["file_pos", "maxprot", "mmap_flags", "call_map"]);
        }
        let mut have: Vec<&str> = obj.keys().map(String::as_str).collect();
        have.sort_unstable();
        want.sort_unstable();
        assert_eq!(have, want, "keys of {e}");
        assert_eq!(e["vnode"].as_str().unwrap().len(), 16);
        // 64-bit ids are decimal strings (jq would round numbers above 2^53).
        assert!(e["tid"].as_str().unwrap().parse::<u64>().is_ok(), "{e}");
        let ts = e["ts_ns"].as_u64().unwrap();
        assert!(ts >= prev_ts, "time order: {e}");
        prev_ts = ts;
    }
    let expect: Vec<(&str, i32)> = vec![
        ("file_mmap", 4),
        ("mark", 1),
        ("mmap", 5),
        ("mnomap", 3),
        ("pagein", 5),
        ("path", 4),
    ];
    let got: Vec<(&str, i32)> = kinds.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(got, expect);
    // The mmap(2) call is paired with its VNOP_MMAP; the exec map is not.
    let maps: Vec<&Value> = events.iter().filter(|e| e["kind"] == "mmap").collect();
    let exec: Vec<&&Value> = maps.iter().filter(|e| e["via"] == "exec").collect();
    assert_eq!(exec.len(), 1);
    assert_eq!(exec[0]["path"], "/Applications/App");
    assert_eq!(exec[0]["prot"], "r-x");
    let call = maps
        .iter()
        .find(|e| e["via"] == "mmap" && e["pid"] == 200 && e["prot"] == "rw-")
        .unwrap();
    assert_eq!(
        (call["maxprot"].as_str(), call["mmap_flags"].as_u64()),
        (Some("rwx"), Some(1))
    );
    assert_eq!(
        (
            call["usecount"].as_u64(),
            call["iocount"].as_u64(),
            call["count_method"].as_str()
        ),
        (Some(2), Some(1), Some("offset"))
    );
}

#[test]
fn stream_filters_by_pid_path_and_kind() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let events = |args: &[&str]| -> Vec<Value> {
        let (l, code) = run_json(args, &f);
        assert_eq!(code, 0);
        l.into_iter().filter(|v| v["type"] == "event").collect()
    };
    let by_pid = events(&["stream", "--json", "--pid", "300"]);
    assert_eq!(by_pid.len(), 6, "{by_pid:?}");
    assert!(by_pid.iter().all(|e| e["pid"] == 300));
    let by_two = events(&["stream", "--json", "--pid", "300", "--pid", "400"]);
    assert_eq!(by_two.len(), 9);
    // A prefix is whole path components: `/data/app` is not `/data/app.db`.
    assert!(events(&["stream", "--json", "--path", "/data/app"]).is_empty());
    let exact = events(&["stream", "--json", "--path", "/data/app.db"]);
    assert_eq!(exact.len(), 1 + 2 + 3 + 1);
    assert_eq!(
        events(&["stream", "--json", "--path", "/data"]).len(),
        exact.len()
    );
    let by_path = events(&["stream", "--json", "--path", "/data/"]);
    assert!(by_path.iter().all(|e| e["path"] == "/data/app.db"));
    assert_eq!(
        by_path.len(),
        1 + 2 + 3 + 1,
        "path, 2 maps, 3 page-ins, 1 unmap"
    );
    let by_kind = events(&["stream", "--json", "--kind", "pagein,mnomap"]);
    assert_eq!(by_kind.len(), 8);
    assert!(
        by_kind
            .iter()
            .all(|e| e["kind"] == "pagein" || e["kind"] == "mnomap")
    );
    let none = events(&["stream", "--json", "--pid", "999"]);
    assert!(none.is_empty());
    // The summary counts what the filter let through beside every event
    // read, in each format; without a filter it says nothing of it.
    let summary = |args: &[&str]| -> Value {
        let (l, _) = run_json(args, &f);
        l.into_iter().find(|v| v["type"] == "summary").unwrap()
    };
    let all = summary(&["stream", "--json"]);
    assert!(all.get("shown").is_none(), "{all}");
    let s = summary(&["stream", "--json", "--pid", "300"]);
    assert_eq!(
        (s["shown"].as_u64(), &s["events"]),
        (Some(6), &all["events"])
    );
    let table = maptrace()
        .args(["stream", "--kind", "pagein,mnomap"])
        .arg(&f)
        .output()
        .unwrap();
    let last = String::from_utf8(table.stdout).unwrap();
    let last = last.lines().last().unwrap().to_string();
    assert!(
        last.starts_with(&format!("-- {} events", all["events"]))
            && last.contains("(8 shown by the filters)"),
        "{last}"
    );
    let csv = maptrace()
        .args(["stream", "--format", "csv", "--pid", "999"])
        .arg(&f)
        .output()
        .unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let col = headers
        .iter()
        .position(|h| h == "shown")
        .expect("a shown column");
    let last = rows.records().last().unwrap().unwrap();
    assert_eq!((&last[0], &last[col]), ("summary", "0"));
}

#[test]
fn report_json_finds_balance_leaks_and_page_figures() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let out = maptrace()
        .args(["report", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    let r = common::ok_json(&out);
    let file = |p: &str| common::report_file(&r, p);

    let db = file("/data/app.db");
    let epochs = db["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 1);
    let e = &epochs[0];
    assert_eq!(
        (
            e["maps"].as_u64(),
            e["mmap_calls"].as_u64(),
            e["exec_maps"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert_eq!(
        (
            e["usecount_before"].as_u64(),
            e["usecount_at_unmap"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        (e["balance"].as_i64(), e["verdict"].as_str()),
        (Some(0), Some("balanced"))
    );
    let steps: Vec<(&str, u64)> = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["usecount"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, vec![("mmap", 1), ("mmap", 2), ("mnomap", 2)]);
    let p = &db["pageins"];
    assert_eq!(
        (
            p["count"].as_u64(),
            p["bytes"].as_u64(),
            p["distinct_pages"].as_u64()
        ),
        (Some(3), Some(36864), Some(7))
    );
    assert!(p["first_ns"].as_u64() < p["last_ns"].as_u64());
    assert_eq!(db["by_process"][0]["pid"], 200);
    assert_eq!(db["by_process"][0]["pageins"], 3);

    let leak = file("/usr/lib/libleak.dylib");
    assert_eq!(leak["epochs"][0]["verdict"], "held");
    assert_eq!(leak["epochs"][0]["balance"], 1);
    assert_eq!(leak["epochs"][0]["mmap_calls"], 1);
    let app = file("/Applications/App");
    assert_eq!(app["epochs"][0]["verdict"], "text_ref");
    assert_eq!(app["epochs"][0]["exec_pids"], serde_json::json!([300]));
    let open = file("/var/log/open.log");
    assert_eq!(open["epochs"][0]["verdict"], "open");
    assert!(open["epochs"][0]["end_ns"].is_null());

    let suspects: Vec<(String, String)> = r["leak_suspects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        suspects,
        vec![
            (
                "/usr/lib/libleak.dylib".to_string(),
                "usecount_not_returned".to_string()
            ),
            ("/var/log/open.log".to_string(), "still_mapped".to_string())
        ]
    );
    let t = &r["totals"];
    assert_eq!(
        (
            t["files"].as_u64(),
            t["processes"].as_u64(),
            t["incomplete"].as_bool()
        ),
        (Some(4), Some(3), Some(false))
    );
    assert_eq!(t["by_kind"]["pagein"], 5);
    assert_eq!(t["unpaired_mmap_calls"], 0);
    let pids: Vec<u64> = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, vec![200, 300, 400]);
    assert_eq!(r["processes"][0]["mmap_calls"], 2);
}

#[test]
fn report_text_names_suspects_and_says_nothing_was_lost() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    maptrace()
        .arg("report")
        .arg(&f)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("FILE /data/app.db"))
        .stdout(predicate::str::contains(": balanced\n"))
        .stdout(predicate::str::contains("exec's text reference"))
        .stdout(predicate::str::contains("LEAK SUSPECTS: 2"))
        .stdout(predicate::str::contains("[usecount_not_returned]"))
        .stdout(predicate::str::contains("[still_mapped]"))
        .stdout(predicate::str::contains("(nothing lost)"));
}

#[test]
fn drops_show_in_the_stream_the_report_and_the_exit_status() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "lossy.mtr", &lossy_batches(100));
    let (lines, code) = run_json(&["stream", "--json"], &f);
    assert_eq!(code, 3, "exit status 3 means loss");
    let lost: u64 = lines
        .iter()
        .filter(|l| l["type"] == "loss" && l["reason"] == "dropped")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    assert!(lost > 0, "no loss line");
    let summary = lines.last().unwrap();
    assert_eq!(summary["dropped"].as_u64(), Some(lost));
    let pageins = lines.iter().filter(|l| l["kind"] == "pagein").count() as u64;
    assert_eq!(
        pageins + lost,
        100,
        "every page-in is delivered or counted as dropped"
    );
    // The record after the drops says so too.
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "event" && l["lost_before"].as_u64() == Some(lost))
    );

    maptrace()
        .arg("stream")
        .arg(&f)
        .assert()
        .code(3)
        .stdout(predicate::str::contains(format!("!! LOST {lost} records")));
    let out = maptrace()
        .args(["report", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            r["totals"]["dropped"].as_u64(),
            r["totals"]["incomplete"].as_bool()
        ),
        (Some(lost), Some(true))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not complete"));
    maptrace()
        .arg("report")
        .arg(&f)
        .assert()
        .code(3)
        .stdout(predicate::str::contains("!! INCOMPLETE"));
}

#[test]
fn drops_after_the_last_record_are_still_counted() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "tail.mtr", &lossy_tail_batches(100));
    let (lines, code) = run_json(&["stream", "--json"], &f);
    assert_eq!(code, 3);
    let tail: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "loss" && l["before_pos"].is_null())
        .collect();
    assert_eq!(tail.len(), 1, "{lines:?}");
    let pageins = lines.iter().filter(|l| l["kind"] == "pagein").count() as u64;
    assert_eq!(pageins + tail[0]["count"].as_u64().unwrap(), 100);
    assert_eq!(lines.last().unwrap()["dropped"], tail[0]["count"]);
    maptrace()
        .arg("stream")
        .arg(&f)
        .assert()
        .code(3)
        .stdout(predicate::str::contains("at the end of the stream"));
}

#[test]
fn a_recording_closed_by_the_kexts_stats_reports_drops_no_batch_carried() {
    let dir = TempDir::new().unwrap();
    let (batches, stats) = lossy_unread_tail(100, 100);
    let dropped = maptrace::control::parse_stats(&stats).unwrap().shards[0].dropped;
    // Without the closing frame (format 1, or a recording of a file) only
    // the drops the batches carried are known.
    let old = dir.path().join("old.mtr");
    write_recording(&old, &batches);
    let (lines, code) = run_json(&["stream", "--json"], &old);
    assert_eq!(code, 3);
    let seen_in_batches = lines.last().unwrap()["dropped"].as_u64().unwrap();
    // 64 slots: the first 100 page-ins drop 36, the 100 unread ones 36 more.
    assert_eq!((seen_in_batches, dropped), (36, 72));

    let f = dir.path().join("closed.mtr");
    write_recording_with_stats(&f, &batches, Some(&stats));
    let (lines, code) = run_json(&["stream", "--json"], &f);
    assert_eq!(code, 3);
    let losses: Vec<&Value> = lines.iter().filter(|l| l["type"] == "loss").collect();
    let total: u64 = losses.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(total, dropped, "every drop the kext counted: {losses:?}");
    assert!(losses.iter().all(|l| l["shard"] == 0), "{losses:?}");
    assert_eq!(lines.last().unwrap()["dropped"], dropped);
    let pageins = lines.iter().filter(|l| l["kind"] == "pagein").count();
    assert_eq!(pageins, 64, "the stats frame is no batch: {lines:?}");
    assert!(!lines.iter().any(|l| l["type"] == "corrupt"), "{lines:?}");
}

#[test]
fn a_reload_is_announced_and_files_start_over() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "reload.mtr", &reload_batches());
    let (lines, code) = run_json(&["stream", "--json"], &f);
    assert_eq!(code, 0);
    let reload: Vec<&Value> = lines.iter().filter(|l| l["type"] == "reload").collect();
    assert_eq!(reload.len(), 1);
    assert_eq!(reload[0]["generation"], "2", "a 64-bit id, as a string");
    let out = maptrace()
        .args(["report", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "one file per load");
    assert!(
        files
            .iter()
            .all(|f| f["path"] == "/data/app.db" && f["epochs"][0]["verdict"] == "balanced")
    );
    maptrace()
        .arg("stream")
        .arg(&f)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "-- kext reloaded (generation 0x2)",
        ));
}

#[test]
fn a_batch_taken_by_another_reader_is_a_gap() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "gap.mtr", &gap_batches());
    let (lines, code) = run_json(&["stream", "--json"], &f);
    assert_eq!(code, 3);
    let gap = lines
        .iter()
        .find(|l| l["type"] == "loss" && l["reason"] == "gap")
        .expect("gap line");
    assert_eq!(gap["slots"], 1);
    maptrace()
        .arg("stream")
        .arg(&f)
        .assert()
        .code(3)
        .stdout(predicate::str::contains("!! GAP on shard 0: 1 slots"));
}

#[test]
fn corruption_is_shown_and_exits_4() {
    let dir = TempDir::new().unwrap();
    let mut batches = lifecycle_batches();
    // Flip a stamp: batch header, segment header, then the first record.
    batches[1][64 + 64] ^= 0x10;
    let f = fixture(&dir, "bad.mtr", &batches);
    let (lines, code) = run_json(&["stream", "--json"], &f);
    assert_eq!(code, 4);
    let c = lines
        .iter()
        .find(|l| l["type"] == "corrupt")
        .expect("corrupt line");
    assert!(c["message"].as_str().unwrap().contains("stamp"), "{c}");
    assert!(lines.last().unwrap()["corrupt"].as_u64() > Some(0));
    // A batch with a foreign magic is refused whole, and reading goes on.
    let mut batches = lifecycle_batches();
    batches[0][0] ^= 0xff;
    let f = fixture(&dir, "magic.mtr", &batches);
    maptrace()
        .arg("stream")
        .arg(&f)
        .assert()
        .code(4)
        .stdout(predicate::str::contains(
            "!! CORRUPT: batch 1: not a maptrace batch",
        ));
}

#[test]
fn record_copies_a_source_into_an_identical_recording() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let copy = dir.path().join("copy.mtr");
    let src = format!("file:{}", f.display());
    maptrace()
        .args(["--source", &src, "record", "-o"])
        .arg(&copy)
        .assert()
        .code(0)
        .stderr(predicate::str::contains("recording: 22 events, 0 dropped"))
        .stderr(predicate::str::contains("wrote 3 batches"));
    let a = maptrace()
        .args(["stream", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    let b = maptrace()
        .args(["stream", "--json"])
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(a.stdout, b.stdout);
    // The header names this host and a start time.
    let r = maptrace::recording::Reader::open(&copy).unwrap();
    assert_eq!(
        r.header().abi_version,
        maptrace_abi::raw::MT_ABI_VERSION as u16
    );
    assert!(r.header().start_unix_ns > 1_600_000_000_000_000_000);
    assert!(!r.header().host.is_empty());
    // Recording a lossy stream says so and exits 3.
    let lossy = fixture(&dir, "lossy.mtr", &lossy_batches(100));
    maptrace()
        .args([
            "--source",
            &format!("file:{}", lossy.display()),
            "record",
            "-q",
            "-o",
        ])
        .arg(dir.path().join("l2.mtr"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("dropped"));
}

#[test]
fn bad_files_are_refused_with_clear_messages() {
    let dir = TempDir::new().unwrap();
    maptrace()
        .args(["report", "/nonexistent/x.mtr"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/nonexistent/x.mtr"));
    let junk = dir.path().join("junk.mtr");
    std::fs::write(&junk, b"hello, this is not a trace at all").unwrap();
    maptrace()
        .arg("report")
        .arg(&junk)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not a maptrace recording"));
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let bytes = std::fs::read(&f).unwrap();
    let cut = dir.path().join("cut.mtr");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    // A cut recording is read up to its last whole frame, and says so.
    maptrace()
        .args(["stream", "--json"])
        .arg(&cut)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cut off inside frame 3"));
    let mut newer = bytes.clone();
    newer[11] = 2; // header ABI major
    let abi = dir.path().join("abi.mtr");
    std::fs::write(&abi, &newer).unwrap();
    maptrace()
        .arg("report")
        .arg(&abi)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("recorded from a kext with ABI 2."))
        .stderr(predicate::str::contains("this maptrace reads 1.x"))
        .stderr(predicate::str::contains(
            "use the maptrace that matches that kext",
        ));
}

#[test]
fn a_batch_of_another_abi_inside_a_recording_is_refused_and_named() {
    let dir = TempDir::new().unwrap();
    let mut batches = lifecycle_batches();
    assert!(batches.len() >= 3);
    // mt_batch_header.abi_version (u16 after the magic): major 2, minor 1.
    batches[1][4..6].copy_from_slice(&0x0201u16.to_le_bytes());
    let f = fixture(&dir, "mixed.mtr", &batches);
    let (lines, code) = run_json(&["stream", "--json"], &f);
    assert_eq!(code, 4, "corrupt part");
    let refused: Vec<&Value> = lines.iter().filter(|l| l["type"] == "corrupt").collect();
    assert_eq!(refused.len(), 1, "{lines:?}");
    let msg = refused[0]["message"].as_str().unwrap();
    for want in [
        "batch 2",
        "ABI 2.1",
        "this maptrace reads 1.x",
        "use the maptrace built with that kext",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    // The batches of the right ABI are still read.
    assert!(lines.iter().any(|l| l["type"] == "event"), "{lines:?}");
    maptrace()
        .arg("stream")
        .arg(&f)
        .assert()
        .code(4)
        .stdout(predicate::str::contains(
            "!! CORRUPT: batch 2: ABI mismatch",
        ));
}

/// What clap refuses and what the commands refuse themselves (an unknown
/// source, a recording and --source together, nothing to change, a bad
/// kind list) are all usage errors: status 2, as the README says.
#[test]
fn bad_flags_are_refused() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    maptrace()
        .args(["stream", "--kind", "mmap,bogus"])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown event kind `bogus`"));
    maptrace()
        .args(["stream", "--pid", "abc"])
        .arg(&f)
        .assert()
        .code(2);
    maptrace().args(["frobnicate"]).assert().code(2);
    maptrace()
        .args(["config", "set", "--pid", "1", "--exclude-pid", "2"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    maptrace()
        .args(["config", "set", "--enable", "--disable"])
        .assert()
        .code(2);
    maptrace()
        .args(["config", "set"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nothing to change"));
    maptrace()
        .args(["config", "set", "--events", "mmap,nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown event kind `nope`"));
    maptrace()
        .args(["--source", "tape", "stream"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown source `tape`"));
    maptrace()
        .args(["--source", "sim", "stream"])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not both"));
    // From the environment, the message names the variable and its value.
    maptrace()
        .env("MAPTRACE_SOURCE", "sysctl")
        .arg("stream")
        .arg(&f)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("MAPTRACE_SOURCE").and(predicate::str::contains("`sysctl`")),
        );
    maptrace()
        .args(["export", "--format", "pdf"])
        .arg(&f)
        .assert()
        .code(2);
}

#[test]
#[cfg_attr(feature = "sim", ignore = "this build has the simulator source")]
fn without_the_simulator_its_sources_are_refused_with_how_to_get_them() {
    for args in [
        &["demo"][..],
        &["--source", "sim", "stats"],
        &["--source", "sim:x.mts", "report"],
    ] {
        maptrace()
            .args(args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("built without the simulator"))
            .stderr(predicate::str::contains("--features sim"));
    }
}

#[test]
fn stats_and_config_explain_which_sources_have_them() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let src = format!("file:{}", f.display());
    maptrace()
        .args(["--source", &src, "stats"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("has no kext statistics"));
    maptrace()
        .args(["--source", &src, "config", "show"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("has no kext config"));
    maptrace()
        .args(["--source", &src, "config", "set", "--disable"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("has no kext config"));
    if !cfg!(target_os = "macos") {
        maptrace()
            .args(["--source", "sysctl", "stats"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("needs macOS"));
    }
}

#[test]
fn perfetto_export_has_tracks_slices_and_instants() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let out = dir.path().join("trace.json");
    maptrace()
        .args(["export", "--format", "perfetto", "-o"])
        .arg(&out)
        .arg(&f)
        .assert()
        .code(0);
    let doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let evs = doc["traceEvents"].as_array().unwrap();
    let meta = |name: &str| {
        evs.iter()
            .filter(|e| e["ph"] == "M" && e["name"] == name)
            .count()
    };
    assert_eq!(
        meta("process_name"),
        3 + 1,
        "one track group per process, and the files' usecounts and epochs"
    );
    assert_eq!(meta("thread_name"), 4, "one track per thread");
    let slices: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), 5);
    for s in &slices {
        assert_eq!(s["cat"], "pagein");
        assert!(
            (s["dur"].as_f64().unwrap() - 25.0).abs() < 1e-9,
            "25 µs: {s}"
        );
        assert!(s["ts"].as_f64().unwrap() > 0.0);
        assert!(s["tid"].as_u64().is_some() && s["pid"].as_u64().is_some());
        assert!(s["args"]["size"].as_u64().is_some());
    }
    let instants = evs
        .iter()
        .filter(|e| e["ph"] == "i" && e["cat"] == "map")
        .count();
    assert_eq!(instants, 5 + 3 + 4, "maps, last unmaps, mmap(2) checks");
    // Also to standard output.
    let stdout = maptrace().args(["export"]).arg(&f).output().unwrap().stdout;
    let doc2: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(doc2, doc);
}

#[test]
fn heatmaps_are_svg_with_axes_legend_and_one_block_per_pagein() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let out = dir.path().join("maps");
    let listing = maptrace()
        .args(["heatmap", "-o"])
        .arg(&out)
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(listing.status.code(), Some(0));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4);
    let db = files
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("app.db-")
        })
        .unwrap();
    let text = std::fs::read_to_string(db).unwrap();
    let svg = roxmltree::Document::parse(&text).unwrap();
    let root = svg.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let by_id = |id: &str| {
        svg.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no #{id}"))
    };
    assert_eq!(by_id("title").text(), Some("/data/app.db"));
    let ticks = |id: &str| {
        by_id(id)
            .children()
            .filter(|n| n.has_tag_name("text"))
            .count()
    };
    // At least 3 round tick labels (tests/export_heatmap.rs) and the axis name.
    assert!(ticks("x-axis") > 3);
    assert!(ticks("y-axis") > 3);
    let blocks: Vec<_> = by_id("pageins")
        .children()
        .filter(|n| n.attribute("class") == Some("pagein"))
        .collect();
    assert_eq!(blocks.len(), 3);
    let lines: Vec<_> = by_id("maps")
        .children()
        .filter(|n| n.has_tag_name("line"))
        .collect();
    let count = |c: &str| {
        lines
            .iter()
            .filter(|n| n.attribute("class") == Some(c))
            .count()
    };
    assert_eq!((count("map"), count("unmap")), (2, 1));
    let legend: Vec<String> = by_id("legend")
        .descendants()
        .filter_map(|n| n.text())
        .map(str::to_string)
        .collect();
    assert!(
        legend.iter().any(|t| t.contains("page-in, pid 200")),
        "{legend:?}"
    );
    // Blocks lie inside the plot area.
    let plot = by_id("plot");
    let num = |n: roxmltree::Node<'_, '_>, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
    let (px, py, pw, ph) = (
        num(plot, "x"),
        num(plot, "y"),
        num(plot, "width"),
        num(plot, "height"),
    );
    for b in blocks {
        assert!(num(b, "x") >= px - 1e-6 && num(b, "x") + num(b, "width") <= px + pw + 2.0 + 1e-6);
        assert!(num(b, "y") >= py - 1e-6 && num(b, "y") + num(b, "height") <= py + ph + 1e-6);
    }
    // A prefix selects files; a prefix matching nothing is an error.
    let one = dir.path().join("one");
    maptrace()
        .args(["heatmap", "--path", "/usr/", "-o"])
        .arg(&one)
        .arg(&f)
        .assert()
        .code(0);
    assert_eq!(std::fs::read_dir(&one).unwrap().count(), 1);
    maptrace()
        .args(["heatmap", "--path", "/nowhere", "-o"])
        .arg(dir.path().join("none"))
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no file had page-ins or maps"));
}

#[test]
fn png_heatmaps_are_the_svg_pictures_rasterized() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let (svgs, pngs) = (dir.path().join("svg"), dir.path().join("png"));
    maptrace()
        .args(["heatmap", "-o"])
        .arg(&svgs)
        .arg(&f)
        .assert()
        .code(0);
    maptrace()
        .args(["heatmap", "--format", "png", "-o"])
        .arg(&pngs)
        .arg(&f)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(".png  /data/app.db"));
    let listed = |d: &Path| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let (svgs, pngs) = (listed(&svgs), listed(&pngs));
    assert_eq!(svgs.len(), 4);
    assert_eq!(svgs.len(), pngs.len());
    let raster = maptrace::raster::Rasterizer::with_system_fonts();
    for (svg, png) in svgs.iter().zip(&pngs) {
        assert_eq!(svg.file_stem(), png.file_stem());
        assert_eq!(png.extension().unwrap(), "png");
        let bytes = std::fs::read(png).unwrap();
        // A PNG (signature, then IHDR) at twice the SVG's 1080 × 680.
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((be(16), be(20)), (2160, 1360));
        // Exactly the picture the SVG run wrote, rasterized.
        let expected = raster.png(&std::fs::read_to_string(svg).unwrap()).unwrap();
        assert!(
            bytes == expected,
            "{} is not {} rasterized",
            png.display(),
            svg.display()
        );
    }
    // An unknown format is a usage error naming the choices.
    maptrace()
        .args(["heatmap", "--format", "jpg", "-o"])
        .arg(dir.path().join("jpg"))
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("svg").and(predicate::str::contains("png")));
}

#[test]
fn help_reads_well() {
    maptrace()
        .arg("--help")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("demo"))
        .stdout(predicate::str::contains("Exit status"))
        .stdout(predicate::str::contains("file:FILE"));
    maptrace()
        .args(["stream", "--help"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("--kind"));
}

#[test]
fn a_heatmap_of_very_many_pageins_is_binned_and_still_counts_them_all() {
    let dir = TempDir::new().unwrap();
    let n = maptrace::heatmap::MAX_BLOCKS as u64 + 5_000;
    let batches = recorded(1, 1 << 15, |t| {
        t.path(0, DB, "/data/big.db");
        t.mmap_call(0, 200, 2001, DB, 1, 1);
        for i in 0..n {
            t.pagein(
                0,
                200,
                2001,
                DB,
                (((i * 7919) % 4096 * 4096) as i64, 4096),
                2,
            );
        }
        t.drain();
    });
    let f = fixture(&dir, "big.mtr", &batches);
    let out = dir.path().join("svg");
    maptrace()
        .args(["heatmap", "-o"])
        .arg(&out)
        .arg(&f)
        .assert()
        .code(0);
    let file = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(file).unwrap();
    let svg = roxmltree::Document::parse(&text).unwrap();
    let class = |c: &str| {
        svg.descendants()
            .filter(|x| x.attribute("class") == Some(c))
            .collect::<Vec<_>>()
    };
    assert!(class("pagein").is_empty());
    let bins = class("pagein-bin");
    assert!(!bins.is_empty() && bins.len() <= 200 * 100);
    let total: u64 = bins
        .iter()
        .map(|b| {
            let title = b.children().find(|c| c.has_tag_name("title")).unwrap();
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
    assert_eq!(total, n);
    let note = svg
        .descendants()
        .find(|x| x.attribute("id") == Some("binned"))
        .unwrap();
    assert!(note.text().unwrap().starts_with(&format!("{n} page-ins")));
}

/// Splits CSV text into records of fields (RFC 4180, as the `csv` crate
/// writes it), by hand so the test does not trust the writer's library.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[test]
fn stream_csv_has_the_json_lines_fields_and_quotes_odd_paths() {
    let dir = TempDir::new().unwrap();
    let odd = "/data/a,b \"quoted\"\nnext line";
    let batches = recorded(2, 64, |t| {
        t.path(0, DB, odd);
        t.mmap_call(0, 200, 2001, DB, 1, 1);
        t.pagein(0, 200, 2001, DB, (0, 16384), 2);
        t.drain();
    });
    let f = fixture(&dir, "odd.mtr", &batches);
    let out = maptrace()
        .args(["stream", "--format", "csv"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rows = parse_csv(std::str::from_utf8(&out.stdout).unwrap());
    let (json, _) = run_json(&["stream", "--json"], &f);
    let header = &rows[0];
    assert_eq!(rows.len() - 1, json.len(), "one row a JSON line");
    for (row, line) in rows[1..].iter().zip(&json) {
        assert_eq!(row.len(), header.len(), "{row:?}");
        for (name, value) in line.as_object().unwrap() {
            let col = header.iter().position(|h| h == name);
            let col = col.unwrap_or_else(|| panic!("no column for {name}"));
            let want = match value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            assert_eq!(row[col], want, "{name} of {line}");
        }
    }
    let path_col = header.iter().position(|h| h == "path").unwrap();
    assert!(rows.iter().any(|r| r[path_col] == odd), "{rows:?}");
    // --json and --format are one choice.
    maptrace()
        .args(["stream", "--json", "--format", "csv"])
        .arg(&f)
        .assert()
        .code(2);
}

#[test]
fn report_csv_has_a_row_per_file_epoch() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let out = maptrace()
        .args(["report", "--format", "csv"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rows = parse_csv(std::str::from_utf8(&out.stdout).unwrap());
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let row_of = |path: &str| {
        rows.iter()
            .find(|r| r[col("path")] == path)
            .unwrap_or_else(|| panic!("no row for {path}: {rows:?}"))
    };
    assert_eq!(
        rows.len(),
        5,
        "header + 4 files of one epoch each: {rows:?}"
    );
    assert_eq!(row_of("/data/app.db")[col("verdict")], "balanced");
    assert_eq!(row_of("/data/app.db")[col("pageins")], "3");
    assert_eq!(row_of("/var/log/open.log")[col("verdict")], "open");
    assert_eq!(
        row_of("/var/log/open.log")[col("leak_suspect")],
        "still_mapped"
    );
    assert_eq!(
        row_of("/usr/lib/libleak.dylib")[col("leak_suspect")],
        "usecount_not_returned"
    );
}

/// Text from the traced machine that a spreadsheet would run as a formula
/// (each fits a process name's 24 bytes).
const HOSTILE: &[&str] = &[
    "=HYPERLINK(\"http://x\")",
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,2)",
    "\t=1+1",
    "\r=1+1",
    "'already quoted",
];

/// OWASP's CSV injection guard: a cell of a path, name or message column
/// that starts with `=`, `+`, `-`, `@`, tab or CR gets a `'` in front (and
/// so does one starting with `'`, so dropping one `'` gives the text back);
/// numbers and the companion's own words are left alone.
#[test]
fn csv_cells_from_the_traced_machine_never_start_a_formula() {
    use maptrace_abi::raw::MT_KIND_PROC;
    let dir = TempDir::new().unwrap();
    let files: Vec<u64> = (0..HOSTILE.len() as u64).map(|i| DB + i * 0x100).collect();
    let batches = recorded(1, 256, |t| {
        for (i, (&vnode, &name)) in files.iter().zip(HOSTILE).enumerate() {
            let pid = 500 + i as u32;
            let ts = t.tick();
            t.e.record_proc(0, &ev(MT_KIND_PROC, pid, 1, ts), name.as_bytes());
            t.path(0, vnode, name);
            t.mmap_call(0, pid, 1, vnode, 1, 1);
            t.pagein(0, pid, 1, vnode, (-4096, 4096), 2);
            t.mnomap(0, pid, 1, vnode, 1);
        }
        t.drain();
    });
    let f = fixture(&dir, "hostile.mtr", &batches);
    let guarded = |s: &str| match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') => format!("'{s}"),
        _ => s.to_string(),
    };
    let starts_a_formula = |c: &str| c.starts_with(['=', '+', '-', '@', '\t', '\r']);

    let out = maptrace()
        .args(["stream", "--format", "csv"])
        .arg(&f)
        .output()
        .unwrap();
    let rows = parse_csv(std::str::from_utf8(&out.stdout).unwrap());
    let col = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    for name in ["path", "comm", "name"] {
        let cells: Vec<&str> = rows[1..].iter().map(|r| r[col(name)].as_str()).collect();
        assert!(
            !cells.iter().any(|c| starts_a_formula(c)),
            "{name}: {cells:?}"
        );
        for &h in HOSTILE {
            assert!(
                cells.contains(&guarded(h).as_str()),
                "{name}: no {h:?} in {cells:?}"
            );
        }
    }
    // A negative offset is a number, not a formula: left as it is.
    assert!(rows.iter().any(|r| r[col("offset")] == "-4096"), "{rows:?}");

    let out = maptrace()
        .args(["report", "--format", "csv"])
        .arg(&f)
        .output()
        .unwrap();
    let rows = parse_csv(std::str::from_utf8(&out.stdout).unwrap());
    let path = rows[0].iter().position(|h| h == "path").unwrap();
    let paths: Vec<&str> = rows[1..].iter().map(|r| r[path].as_str()).collect();
    let want: Vec<String> = HOSTILE.iter().map(|h| guarded(h)).collect();
    for w in &want {
        assert!(paths.contains(&w.as_str()), "no {w:?} in {paths:?}");
    }
    assert!(!paths.iter().any(|c| starts_a_formula(c)), "{paths:?}");
}

/// The lifecycle recording in `dir`, its size, and it opened as a source.
fn lifecycle_recording(dir: &TempDir) -> (PathBuf, u64, maptrace::replay::FileSource) {
    let f = fixture(dir, "life.mtr", &lifecycle_batches());
    let size = std::fs::metadata(&f).unwrap().len();
    let src = maptrace::replay::FileSource::open(&f).unwrap();
    (f, size, src)
}

/// A recording reports how far it was read (the progress bar's figures),
/// and the bar is drawn only on a terminal: a piped stderr stays empty.
#[test]
fn reading_a_recording_reports_progress_and_draws_no_bar_off_a_terminal() {
    use maptrace::source::{Next, Source};
    let dir = TempDir::new().unwrap();
    let (f, size, mut src) = lifecycle_recording(&dir);
    let (mut done, total) = src.progress().unwrap();
    assert_eq!(total, size);
    assert!(done > 0 && done < size, "the header is read: {done}");
    let mut buf = Vec::new();
    while let Next::Batch(_) = src.next_batch(&mut buf).unwrap() {
        let (now, _) = src.progress().unwrap();
        assert!(now > done && now <= size, "{done} -> {now} of {size}");
        done = now;
    }
    assert_eq!(done, size, "every frame counted");
    assert_eq!(src.progress(), Some((size, size)));
    maptrace().arg("report").arg(&f).assert().code(0).stderr("");
}

/// Asking a recording for its closing statistics reads the rest of it, and
/// its progress says so.
#[test]
fn a_recordings_statistics_read_it_to_the_end() {
    use maptrace::source::Source;
    let dir = TempDir::new().unwrap();
    let (_, size, mut src) = lifecycle_recording(&dir);
    assert!(src.stats().is_err(), "this recording has no statistics");
    assert_eq!(src.progress(), Some((size, size)));
}

/// `completions SHELL` prints a script the shell accepts, generated from the
/// same command line definition: every subcommand and flag is offered.
#[test]
fn completions_are_scripts_the_shells_take() {
    let out = maptrace().args(["completions", "bash"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    for word in [
        "heatmap",
        "report",
        "--time",
        "--fail-on-suspects",
        "completions",
    ] {
        assert!(script.contains(word), "{word} not offered");
    }
    // bash itself loads it and registers the completion.
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("maptrace.bash");
    std::fs::write(&file, &script).unwrap();
    let loaded = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p maptrace", file.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("_maptrace"),
        "{loaded:?}"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = maptrace().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("heatmap"),
            "{shell}"
        );
    }
    let bad = maptrace().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values: bash"));
}

/// `man` prints a roff page titled maptrace that lists every command, and
/// each command's own page; groff reads them without a warning.
#[test]
fn man_prints_a_page_listing_every_command() {
    let out = maptrace().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    // After roff's preamble (the `\*(Aq` apostrophe), the title.
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .unwrap();
    assert!(first.starts_with(".TH maptrace 1 "), "{first}");
    for command in [
        "demo",
        "stream",
        "record",
        "report",
        "stats",
        "info",
        "config",
        "export",
        "heatmap",
        "schema",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!("maptrace\\-{command}(1)")),
            "{command} not listed"
        );
    }
    assert!(page.contains("MAPTRACE_SOURCE"), "the environment");
    assert!(page.contains("Exit status"), "the after-help text");
    let stream = maptrace().args(["man", "stream"]).output().unwrap();
    assert_eq!(stream.status.code(), Some(0));
    let stream = String::from_utf8(stream.stdout).unwrap();
    assert!(stream.contains(".TH maptrace-stream 1 "), "{stream}");
    assert!(stream.contains("\\-\\-no\\-summary"), "{stream}");
    let bad = maptrace().args(["man", "nope"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no command `nope`"));
    // groff, where installed, formats them with every warning on and none.
    for roff in [&page, &stream] {
        let Ok(mut groff) = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        use std::io::Write;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(roff.as_bytes())
            .unwrap();
        let checked = groff.wait_with_output().unwrap();
        assert!(
            checked.status.success() && checked.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}
