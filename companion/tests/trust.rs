//! Recordings that can be trusted and outputs that cannot be hijacked: a cut
//! recording is read up to its last whole frame and says so, a flipped byte
//! is caught by the frame checksums, `info` and `stats FILE` describe a
//! recording, and hostile paths and values reach no output raw and cost no
//! unbounded work.

mod common;

use common::*;
use maptrace::recording::{FRAME_HEAD, encode_header};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use tempfile::TempDir;

fn run(args: &[&str], file: &Path) -> Output {
    maptrace().args(args).arg(file).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_cut_recording_is_read_up_to_its_last_whole_frame() {
    let dir = TempDir::new().unwrap();
    let batches = lifecycle_batches();
    let f = fixture(&dir, "life.mtr", &batches);
    let bytes = std::fs::read(&f).unwrap();
    let full = run(&["stream", "--json", "--no-summary"], &f);
    assert_eq!(full.status.code(), Some(0), "{}", stderr(&full));
    let header = encode_header(&maptrace::recording::Header {
        abi_version: maptrace_abi::raw::MT_ABI_VERSION as u16,
        start_unix_ns: 0,
        start_clock_ns: None,
        page_size: Some(maptrace::pagesize::PageSize::FOUR_K),
        host: "fixture".into(),
    })
    .len();
    let mut end = header;
    let mut ends = vec![header];
    for b in &batches {
        end += FRAME_HEAD + b.len();
        ends.push(end);
    }
    assert_eq!(end, bytes.len());
    // Cut inside each frame (its head, its middle, one byte short): every
    // whole frame before is read, exit 3, the cut is named with its bytes.
    for (i, w) in ends.windows(2).enumerate() {
        for cut in [w[0] + 3, (w[0] + w[1]) / 2, w[1] - 1] {
            let p = dir.path().join(format!("cut{cut}.mtr"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let o = run(&["stream", "--json"], &p);
            assert_eq!(o.status.code(), Some(3), "cut {cut}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(
                err.contains(&format!("cut off inside frame {}", i + 1))
                    && err.contains(&format!("{} bytes there were not read", cut - w[0])),
                "cut {cut}: {err}"
            );
            let want = decode(&batches[..i]).1.events;
            let lines: Vec<Value> = o
                .stdout
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            let summary = lines.last().unwrap();
            assert_eq!(summary["events"], want, "cut {cut}");
            assert_eq!(summary["cut_bytes"], (cut - w[0]) as u64, "cut {cut}");
        }
    }
    // The report says it in its totals too.
    let p = dir.path().join("cut.mtr");
    std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
    let o = run(&["report", "--json"], &p);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["totals"]["cut_bytes"].as_u64() > Some(0), "{r}");
    assert_eq!(r["totals"]["incomplete"], true);
    let o = run(&["report"], &p);
    assert!(String::from_utf8_lossy(&o.stdout).contains("recording CUT OFF"));
    // Copying it keeps every whole frame and says what was cut.
    let copy = dir.path().join("copy.mtr");
    let o = maptrace()
        .args([
            "--source",
            &format!("file:{}", p.display()),
            "record",
            "-q",
            "-o",
        ])
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cut off inside frame"),
        "{}",
        stderr(&o)
    );
    let a = run(&["stream", "--json", "--no-summary"], &p);
    let b = run(&["stream", "--json", "--no-summary"], &copy);
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(
        b.status.code(),
        Some(0),
        "the copy ends after a whole frame"
    );
}

#[test]
fn a_flipped_byte_in_any_frame_exits_corrupt() {
    let dir = TempDir::new().unwrap();
    let batches = lifecycle_batches();
    let f = fixture(&dir, "life.mtr", &batches);
    let bytes = std::fs::read(&f).unwrap();
    let mut at = bytes.len() - batches.iter().map(|b| FRAME_HEAD + b.len()).sum::<usize>();
    for (i, b) in batches.iter().enumerate() {
        // In the middle of the batch: values that would decode as garbage.
        let mut bad = bytes.clone();
        bad[at + FRAME_HEAD + b.len() / 2] ^= 0x10;
        let p = dir.path().join(format!("flip{i}.mtr"));
        std::fs::write(&p, &bad).unwrap();
        let o = run(&["stream"], &p);
        assert_eq!(o.status.code(), Some(4), "frame {}: {}", i + 1, stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!(
                "!! CORRUPT: {}: frame {} at byte {at}",
                p.display(),
                i + 1
            )) && out.contains("fails its checksum"),
            "{out}"
        );
        assert!(!out.contains("nothing lost"), "{out}");
        // In its length: the rest cannot be located; still exit 4.
        let mut bad = bytes.clone();
        bad[at + 1] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        let o = run(&["report"], &p);
        assert_eq!(o.status.code(), Some(4), "frame {}: {}", i + 1, stderr(&o));
        at += FRAME_HEAD + b.len();
    }
}

#[test]
fn info_describes_a_recording_and_stats_shows_its_closing_counters() {
    let dir = TempDir::new().unwrap();
    let f = dir.path().join("s.mtr");
    let (batches, stats) = lossy_unread_tail(10, 0);
    write_recording_with_stats(&f, &batches, Some(&stats));
    let o = run(&["info", "--json"], &f);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let i: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(i["format"], maptrace::recording::FORMAT_VERSION);
    assert_eq!(i["checksummed"], true);
    assert_eq!(i["host"], "fixture");
    assert_eq!(i["page_size"], 4096);
    assert_eq!(i["start_utc"], "2025-11-24 16:00:00.000 UTC");
    assert_eq!(i["batches"], batches.len());
    assert_eq!(i["events"], decode(&batches).1.events);
    assert!(i["duration_ns"].as_u64() > Some(0));
    assert_eq!(i["cut"], Value::Null);
    assert_eq!(i["closing_stats"], true);
    let o = run(&["info"], &f);
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "format     5 (frames checksummed)",
        "anchor     kext clock 1.000000s since boot",
        "page size  4 KiB (4096 bytes)",
        "host       fixture",
        "end        complete",
        "closing statistics are present",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // The closing counters, from the file.
    let o = run(&["stats", "--json"], &f);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = maptrace::control::parse_stats(&stats).unwrap();
    assert_eq!(s, serde_json::to_value(&want).unwrap());
    // Cut off: info says where, stats says why there are none.
    let bytes = std::fs::read(&f).unwrap();
    let cut = dir.path().join("cut.mtr");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let o = run(&["info", "--json"], &cut);
    assert_eq!(o.status.code(), Some(3));
    let i: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(i["closing_stats"], false);
    assert_eq!(i["cut"]["bytes"], FRAME_HEAD + stats.len() - 7);
    let o = run(&["stats"], &cut);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no kext statistics") && stderr(&o).contains("cut off"),
        "{}",
        stderr(&o)
    );
    // Without a closing frame.
    let plain = fixture(&dir, "plain.mtr", &batches);
    let o = run(&["stats"], &plain);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not end with them"),
        "{}",
        stderr(&o)
    );
}

/// A path that would clear root's screen, retitle the terminal and forge a
/// table row if printed raw.
const HOSTILE: &str =
    "/tmp/x\u{1b}[2J\u{1b}]0;owned\u{7}\n   9.999999    0    1       1  pagein  FORGED\r\u{9b}31m";

/// A recording of a file named [`HOSTILE`] mapped by a process named after
/// its escape sequences, with page-ins claiming 4 GiB and timestamps at the
/// end of time.
fn hostile_recording(dir: &TempDir) -> std::path::PathBuf {
    let batches = recorded(1, 256, |t| {
        // A process can name itself too (exec of a file so named): its
        // name is shown wherever a path is.
        let ts = t.tick();
        let name = &HOSTILE.as_bytes()[6..30];
        t.e.record_proc(0, &ev(maptrace_abi::raw::MT_KIND_PROC, 200, 2001, ts), name);
        t.path(0, DB, HOSTILE);
        t.mmap_call(0, 200, 2001, DB, 1, 1);
        // The last page-in ends past u64::MAX (ts + 25 us).
        t.ts = u64::MAX - 50_000;
        for i in 0..4 {
            t.pagein(0, 200, 2001, DB, (i << 40, u64::from(u32::MAX)), 2);
        }
        t.drain();
    });
    fixture(dir, "hostile.mtr", &batches)
}

/// No byte of `out` is a control character other than newline (and tab in
/// the table), and no line is the forged row.
fn assert_clean(what: &str, out: &[u8]) {
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what} carries a raw control character: {text:?}"
    );
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("9.999999")),
        "{what} has a forged row: {text}"
    );
}

#[test]
fn hostile_paths_reach_no_output_raw() {
    let dir = TempDir::new().unwrap();
    let f = hostile_recording(&dir);
    for args in [&["stream"][..], &["report"], &["info"]] {
        let o = run(args, &f);
        assert!(
            matches!(o.status.code(), Some(0 | 3)),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_clean(&format!("{args:?} stdout"), &o.stdout);
        assert_clean(&format!("{args:?} stderr"), &o.stderr);
    }
    let o = run(&["stream"], &f);
    assert!(String::from_utf8_lossy(&o.stdout).contains("/tmp/x\\u{1b}[2J"));
    // JSON keeps the exact path, as valid JSON.
    let o = run(&["stream", "--json"], &f);
    let mut paths = 0;
    for l in o.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(l).unwrap();
        if v["path"] == HOSTILE {
            paths += 1;
        }
    }
    assert!(paths > 0);
    let o = run(&["report", "--json"], &f);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["files"][0]["path"], HOSTILE);
    // Export: valid JSON, names escaped.
    let o = run(&["export"], &f);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        names.iter().all(|n| !n.chars().any(char::is_control)),
        "{names:?}"
    );
    // Heatmap: the listing is clean and the SVG is well-formed XML.
    let out = dir.path().join("svg");
    let o = maptrace()
        .args(["heatmap", "-o"])
        .arg(&out)
        .arg(&f)
        .output()
        .unwrap();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
    assert_clean("heatmap listing", &o.stdout);
    let svgs: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(svgs.len(), 1, "{svgs:?}");
    let svg = std::fs::read_to_string(&svgs[0]).unwrap();
    roxmltree::Document::parse(&svg).unwrap();
    assert!(!svg.contains('\u{1b}'));
}

#[test]
fn a_hostile_file_name_given_on_the_command_line_is_escaped_in_errors() {
    let dir = TempDir::new().unwrap();
    let p = dir.path().join("x\u{1b}[2J\nforged.mtr");
    std::fs::write(&p, b"not a recording").unwrap();
    let o = run(&["report"], &p);
    assert_eq!(o.status.code(), Some(1));
    assert_clean("error", &o.stderr);
    assert!(
        stderr(&o).contains("x\\u{1b}[2J\\nforged.mtr"),
        "{}",
        stderr(&o)
    );
    // Output paths too: a directory that does not exist.
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let out = dir.path().join("no\u{1b}]0;t\u{7}dir/x.json");
    let o = maptrace()
        .args(["export", "-o"])
        .arg(&out)
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_clean("error", &o.stderr);
    assert!(stderr(&o).contains("cannot create"), "{}", stderr(&o));
}

#[test]
fn info_says_a_recording_before_format_5_has_no_page_size() {
    let dir = TempDir::new().unwrap();
    let f = dir.path().join("old.mtr");
    let h = maptrace::recording::Header {
        abi_version: maptrace_abi::raw::MT_ABI_VERSION as u16,
        start_unix_ns: 0,
        start_clock_ns: None,
        page_size: Some(maptrace::pagesize::PageSize::SIXTEEN_K),
        host: "old".into(),
    };
    // Format 4 has no room for it: it is not written.
    std::fs::write(&f, maptrace::recording::encode_header_of(4, &h)).unwrap();
    let o = run(&["info", "--json"], &f);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let i: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (i["format"].as_u64(), &i["page_size"]),
        (Some(4), &Value::Null)
    );
    let text = String::from_utf8(run(&["info"], &f).stdout).unwrap();
    assert!(
        text.contains("page size  unknown (format 4 has none): `report` counts 4 KiB pages"),
        "{text}"
    );
}
