//! The JSON lines contract: the hand-written writer (`output`) against the
//! typed reference (`contract::Line` through `serde_json`), byte for byte;
//! the checked-in JSON Schema against the generated one; and every line the
//! stream writes against that schema.

mod common;

use common::*;
use maptrace::contract::{self, Line};
use maptrace::output;
use maptrace::pipeline::{Comm, Ev, Item, Loss, MapCall, PathInfo, Totals};
use maptrace::wallclock::Anchor;
use maptrace_abi::{Counts, Event, EventKind, Mark, ProbeMethod, Record};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::rc::Rc;

/// The reference bytes of an item's line.
fn reference(item: &Item) -> Vec<u8> {
    let mut v = serde_json::to_vec(&Line::of(item)).unwrap();
    v.push(b'\n');
    v
}

fn written(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    output::item_json(&mut out, item);
    out
}

/// [`reference`] and [`written`] with UTC times (`--time wall`).
fn reference_at(item: &Item, a: &Anchor) -> Vec<u8> {
    let mut v = serde_json::to_vec(&Line::of_at(item, Some(a))).unwrap();
    v.push(b'\n');
    v
}

fn written_at(item: &Item, a: &Anchor) -> Vec<u8> {
    let mut out = Vec::new();
    output::item_json_at(&mut out, item, Some(a));
    out
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&serde_json::to_value(contract::schema()).unwrap()).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, line: &[u8]) {
    let value: serde_json::Value = serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
    let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{value}: {errors:?}");
}

#[test]
fn the_checked_in_schema_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/events.schema.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == contract::schema_text(),
        "{path} is stale: regenerate it with \
         `cargo run -p maptrace -- schema > companion/schema/events.schema.json`"
    );
}

#[test]
fn the_schema_command_prints_the_schema() {
    let out = maptrace().arg("schema").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        contract::schema_text()
    );
}

/// Every fixture's stream, losses, gaps and reloads included.
fn fixture_items() -> Vec<Item> {
    let mut all = Vec::new();
    for batches in [
        lifecycle_batches(),
        lossy_batches(5),
        gap_batches(),
        lossy_tail_batches(3),
        reload_batches(),
    ] {
        all.extend(decode(&batches).0);
    }
    all.push(Item::Corrupt("batch 3: bad \"magic\"\n\u{1b}[2J".into()));
    all
}

#[test]
fn fixture_lines_are_the_reference_bytes_and_valid() {
    let v = validator();
    let items = fixture_items();
    let mut kinds = std::collections::BTreeSet::new();
    for item in &items {
        let line = written(item);
        assert_eq!(
            String::from_utf8_lossy(&line),
            String::from_utf8_lossy(&reference(item))
        );
        assert_valid(&v, &line);
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        kinds.insert(format!("{}/{}", value["type"], value["kind"]));
    }
    assert!(kinds.len() >= 8, "fixtures cover too little: {kinds:?}");
    // With UTC times: the same bytes again, each event with its `time`.
    let a = Anchor {
        unix_ns: 1_764_000_000_000_000_000,
        clock_ns: 1_000,
    };
    for item in &items {
        let line = written_at(item, &a);
        assert_eq!(
            String::from_utf8_lossy(&line),
            String::from_utf8_lossy(&reference_at(item, &a))
        );
        assert_valid(&v, &line);
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value.get("time").is_some(), value["type"] == "event");
    }
    let mut header = Vec::new();
    output::header_json(&mut header);
    assert_eq!(header, reference_line(&Line::header()));
    assert_valid(&v, &header);
    let mut summary = Vec::new();
    let totals = decode(&lossy_batches(5)).1;
    output::summary_json(&mut summary, &totals);
    assert_eq!(summary, reference_line(&Line::summary(&totals)));
    assert_valid(&v, &summary);
}

fn reference_line(l: &Line) -> Vec<u8> {
    let mut v = serde_json::to_vec(l).unwrap();
    v.push(b'\n');
    v
}

#[test]
fn the_schema_refuses_what_the_contract_forbids() {
    let v = validator();
    let good = serde_json::json!({"type":"reload","generation":"18446744073709551615"});
    assert!(v.is_valid(&good));
    for bad in [
        // 64-bit ids are strings.
        serde_json::json!({"type":"reload","generation":7}),
        serde_json::json!({"type":"nonsense"}),
        serde_json::json!({"type":"loss","reason":"gap","shard":0}),
    ] {
        assert!(!v.is_valid(&bad), "accepted {bad}");
    }
    let mut ev =
        serde_json::from_slice::<serde_json::Value>(&written(&fixture_items()[0])).unwrap();
    let mut numeric_tid = ev.clone();
    numeric_tid["tid"] = 4098.into();
    assert!(!v.is_valid(&numeric_tid), "accepted {numeric_tid}");
    // A time is RFC 3339 UTC with microseconds, or absent.
    for bad in ["2025-11-24 16:00:00.000 UTC", "2025-11-24T16:00:00Z", ""] {
        let mut t = ev.clone();
        t["time"] = bad.into();
        assert!(!v.is_valid(&t), "accepted {t}");
    }
    let mut t = ev.clone();
    t["time"] = "2025-11-24T16:00:00.000001Z".into();
    assert!(v.is_valid(&t), "refused {t}");
    // Optional fields are left out, never null: the writer never writes one.
    for field in ["time", "comm"] {
        let mut t = ev.clone();
        t[field] = serde_json::Value::Null;
        assert!(!v.is_valid(&t), "accepted {t}");
    }
    // A null path is stated, never left out.
    ev.as_object_mut().unwrap().remove("path");
    assert!(!v.is_valid(&ev), "accepted {ev}");
}

#[test]
fn paths_of_any_bytes_stay_valid_json() {
    let v = validator();
    for bytes in [
        &b"/tmp/\x1b[31mred\x1b[0m"[..],
        b"/tmp/line\nbreak\r\ttab",
        b"/tmp/\xff\xfe invalid utf-8 \xc3",
        b"/tmp/quote\"back\\slash\x08\x0c\x7f",
        b"",
    ] {
        let item = Item::Event(event(
            Event::Pagein {
                offset: 0,
                size: 4096,
                duration_ns: 1,
                counts: Counts::default(),
                upl_flags: 0,
            },
            Some(bytes),
        ));
        let line = written(&item);
        assert_eq!(line, reference(&item));
        assert_valid(&v, &line);
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value["path"].as_str().unwrap(),
            String::from_utf8_lossy(bytes)
        );
    }
}

fn kind_of(e: &Event) -> EventKind {
    match e {
        Event::Mmap { .. } => EventKind::Mmap,
        Event::Pagein { .. } => EventKind::Pagein,
        Event::Mnomap { .. } => EventKind::Mnomap,
        Event::FileMmap { .. } => EventKind::FileMmap,
        Event::Path { .. } => EventKind::Path,
        Event::Mark { .. } => EventKind::Mark,
        Event::Proc { .. } => EventKind::Proc,
        Event::Open { .. } => EventKind::Open,
        Event::Close { .. } => EventKind::Close,
    }
}

fn event(e: Event, path: Option<&[u8]>) -> Ev {
    Ev {
        rec: Record {
            shard: 1,
            pos: 2,
            lost_before: 0,
            kind: kind_of(&e),
            flags: 0,
            error: 0,
            pid: 3,
            timestamp_ns: 4,
            tid: u64::MAX,
            vnode_id: 0xdead_beef,
            event: e,
        },
        path: path.map(|b| Rc::new(PathInfo::new(0xdead_beef, b, false))),
        call: None,
        call_map: 0,
        comm: None,
    }
}

/// Single digits (and the first two-digit values) as often as any value:
/// the writer has a shorter path for them.
fn small_or_any() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..12, any::<u16>()]
}

fn any_counts() -> impl Strategy<Value = Counts> {
    (
        small_or_any(),
        small_or_any(),
        proptest::option::of(small_or_any()),
        prop_oneof![
            Just(ProbeMethod::None),
            Just(ProbeMethod::Offset),
            Just(ProbeMethod::IsInUse)
        ],
        any::<bool>(),
    )
        .prop_map(|(usecount, kusecount, iocount, method, saturated)| Counts {
            usecount,
            kusecount,
            iocount,
            method,
            saturated,
        })
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>(), any_counts()).prop_map(
            |(fflags, vid, duration_ns, counts)| Event::Mmap {
                fflags,
                vid,
                duration_ns,
                counts
            }
        ),
        (
            any::<i64>(),
            any::<u32>(),
            any::<u32>(),
            any_counts(),
            any::<u16>()
        )
            .prop_map(|(offset, size, duration_ns, counts, upl_flags)| {
                Event::Pagein {
                    offset,
                    size,
                    duration_ns,
                    counts,
                    upl_flags,
                }
            }),
        (any::<u32>(), any::<u32>(), any_counts()).prop_map(|(vid, duration_ns, counts)| {
            Event::Mnomap {
                vid,
                duration_ns,
                counts,
            }
        }),
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(file_pos, prot, maxprot, mmap_flags)| Event::FileMmap {
                file_pos,
                prot,
                maxprot,
                mmap_flags
            }
        ),
        (any::<u32>(), any::<bool>()).prop_map(|(vid, truncated)| Event::Path {
            vid,
            path: Vec::new(),
            truncated
        }),
        (proptest::collection::vec(any::<u8>(), 0..24), any::<bool>())
            .prop_map(|(name, truncated)| Event::Proc { name, truncated }),
        (any::<u32>(), any::<u32>(), any_counts())
            .prop_map(|(vid, fmode, counts)| { Event::Open { vid, fmode, counts } }),
        (any::<u32>(), any::<u32>(), any::<u32>(), any_counts()).prop_map(
            |(vid, fflag, duration_ns, counts)| Event::Close {
                vid,
                fflag,
                duration_ns,
                counts
            }
        ),
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(m, arg0, arg1, arg2)| Event::Mark {
                mark: Mark::from(m % 5),
                arg0,
                arg1,
                arg2
            }
        ),
    ]
}

prop_compose! {
    fn any_ev()(
        e in any_event(),
        shard in small_or_any(),
        pos in any::<u64>(),
        lost_before in prop_oneof![Just(0), any::<u64>()],
        error in prop_oneof![Just(0), any::<u8>()],
        pid in any::<u32>(),
        timestamp_ns in any::<u64>(),
        tid in any::<u64>(),
        vnode_id in any::<u64>(),
        path in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        call in proptest::option::of((any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>())),
        call_map in 0u8..3,
        comm in proptest::option::of("[ -~\\x{1b}\n\"\\\\é]{0,20}"),
        path_names_vnode in any::<bool>(),
    ) -> Ev {
        let mut ev = event(e, path.as_deref());
        ev.comm = comm.map(|c| Rc::new(Comm::new(c)));
        ev.rec.shard = shard;
        ev.rec.pos = pos;
        ev.rec.lost_before = lost_before;
        ev.rec.error = error;
        ev.rec.pid = pid;
        ev.rec.timestamp_ns = timestamp_ns;
        ev.rec.tid = tid;
        ev.rec.vnode_id = vnode_id;
        // The pipeline attaches a path to the id it names (the writer then
        // copies the id's digits with it); a path of another id is written
        // after the id's own digits.
        if path_names_vnode {
            ev.path = path.map(|b| Rc::new(PathInfo::new(vnode_id, &b, false)));
        }
        if matches!(ev.rec.event, Event::Mmap { .. }) {
            ev.call = call.map(|(file_pos, prot, maxprot, mmap_flags)| {
                Box::new(MapCall {
                    file_pos,
                    prot,
                    maxprot,
                    mmap_flags,
                    timestamp_ns: 0,
                })
            });
            ev.call_map = if ev.call.is_some() { call_map.max(1) } else { 0 };
        }
        ev
    }
}

fn any_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        8 => any_ev().prop_map(Item::Event),
        1 => (any::<u16>(), any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
            |(shard, count, before_pos)| Item::Loss(Loss::Dropped { shard, count, before_pos })
        ),
        1 => (any::<u16>(), any::<u64>())
            .prop_map(|(shard, slots)| Item::Loss(Loss::Gap { shard, slots })),
        1 => any::<String>().prop_map(Item::Corrupt),
        1 => any::<u64>().prop_map(|generation| Item::Reload { generation }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_item_is_written_as_the_reference_bytes(item in any_item()) {
        let line = String::from_utf8(written(&item)).unwrap();
        let want = String::from_utf8(reference(&item)).unwrap();
        prop_assert_eq!(line, want);
    }

    #[test]
    fn any_item_with_a_utc_time_is_written_as_the_reference_bytes(
        item in any_item(), unix_ns in any::<u64>(), clock_ns in any::<u64>(),
    ) {
        let a = Anchor { unix_ns, clock_ns };
        let line = String::from_utf8(written_at(&item, &a)).unwrap();
        let want = String::from_utf8(reference_at(&item, &a)).unwrap();
        prop_assert_eq!(line, want);
    }

    #[test]
    fn any_summary_is_written_as_the_reference_bytes(
        batches in any::<u64>(), events in any::<u64>(), dropped in any::<u64>(),
        gap_slots in any::<u64>(), corrupt in any::<u64>(),
    ) {
        let t = Totals { batches, events, dropped, gap_slots, corrupt, ..Totals::default() };
        let mut out = Vec::new();
        output::summary_json(&mut out, &t);
        prop_assert_eq!(out, reference_line(&Line::summary(&t)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The stream's writer (`JsonLines`, lines written in place into a
    /// buffer that keeps its stale bytes) writes the reference bytes too,
    /// across a `clear` (what `stream` does after each batch), with and
    /// without UTC times.
    #[test]
    fn json_lines_are_the_reference_bytes(
        items in proptest::collection::vec(any_item(), 0..40),
        clear_at in 0usize..40,
        wall in proptest::option::of((any::<u64>(), any::<u64>())),
    ) {
        let wall = wall.map(|(unix_ns, clock_ns)| Anchor { unix_ns, clock_ns });
        let mut w = output::JsonLines::new();
        let mut want = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if i == clear_at {
                w.clear();
                want.clear();
            }
            match &wall {
                Some(a) => {
                    w.item_at(item, Some(a));
                    want.extend(reference_at(item, a));
                }
                None => {
                    w.item(item);
                    want.extend(reference(item));
                }
            }
        }
        prop_assert_eq!(w.len(), want.len());
        prop_assert_eq!(
            String::from_utf8(w.as_bytes().to_vec()).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }
}

/// The next value of a field that repeats, rises or falls a little, jumps
/// near a power of ten, or anywhere: what the writer's memo of each
/// field's last digits sees.
fn next_value(v: u64, (how, arg): (u8, u64)) -> u64 {
    match how % 6 {
        0 => v,
        1 => v.wrapping_add(arg % 1000),
        2 => v.wrapping_sub(arg % 1000),
        3 => v.wrapping_add(arg % 200_000_000),
        4 => 10u64
            .pow((arg % 20) as u32)
            .wrapping_add(arg % 3)
            .wrapping_sub(1),
        _ => arg,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Lines whose numbers repeat or move a little from line to line (what
    /// a stream holds) are the reference bytes too: the writer's memo of
    /// the last line's digits never shows a stale digit.
    #[test]
    fn json_lines_of_related_values_are_the_reference_bytes(
        start in any::<(u64, i64, u32, u32)>(),
        steps in proptest::collection::vec(
            (any::<(u8, u64)>(), any::<(u8, u64)>(), any::<(u8, u64)>(), 0u8..4),
            1..60,
        ),
        positions in proptest::collection::vec((0u16..6, any::<u64>(), 0u64..12), 60),
    ) {
        // Shards 0 to 5, so two pairs share a position memo; each shard's
        // positions rise by small steps from where it starts.
        let mut pos: Vec<u64> = positions.iter().map(|&(_, start, _)| start).collect();
        let (mut ts, offset, size, duration) = start;
        let (mut offset, mut size, mut duration) = (offset as u64, u64::from(size), u64::from(duration));
        let mut w = output::JsonLines::new();
        let mut want = Vec::new();
        for (i, (ts_step, offset_step, size_step, kind)) in steps.into_iter().enumerate() {
            ts = next_value(ts, ts_step);
            offset = next_value(offset, offset_step);
            size = next_value(size, size_step);
            duration = next_value(duration, (size_step.0 / 6, offset_step.1));
            let counts = Counts {
                usecount: 2,
                kusecount: 1,
                iocount: Some(1),
                method: ProbeMethod::Offset,
                saturated: false,
            };
            let e = match kind {
                0 | 1 => Event::Pagein {
                    offset: offset as i64,
                    size: size as u32,
                    duration_ns: duration as u32,
                    counts,
                    upl_flags: 0,
                },
                2 => Event::Mnomap { vid: 1, duration_ns: duration as u32, counts },
                _ => Event::Close { vid: 1, fflag: 1, duration_ns: duration as u32, counts },
            };
            let mut ev = event(e, Some(b"/a/b"));
            ev.rec.timestamp_ns = ts;
            let (shard, _, pos_step) = positions[i];
            let p = &mut pos[usize::from(shard)];
            *p = p.wrapping_add(pos_step);
            ev.rec.shard = shard;
            ev.rec.pos = *p;
            let item = Item::Event(ev);
            w.item(&item);
            want.extend(reference(&item));
        }
        prop_assert_eq!(
            String::from_utf8(w.as_bytes().to_vec()).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }
}

#[test]
fn json_lines_grow_and_never_show_stale_bytes() {
    let long = "/x".repeat(2000);
    let long_item = Item::Event(event(
        Event::Path {
            vid: 1,
            path: Vec::new(),
            truncated: true,
        },
        Some(long.as_bytes()),
    ));
    let short_item = Item::Reload { generation: 7 };
    let mut w = output::JsonLines::new();
    w.header();
    let mut want = Vec::new();
    output::header_json(&mut want);
    // Well past the first 64 KiB: the buffer grows mid-stream.
    for _ in 0..100 {
        w.item(&long_item);
        want.extend(reference(&long_item));
    }
    assert!(w.len() > 4 * (64 << 10), "{}", w.len());
    assert!(w.as_bytes() == &want[..]);
    // After a clear only the new lines show, not the long ones under them.
    w.clear();
    assert!(w.is_empty());
    w.item(&short_item);
    w.summary(&Totals::default());
    let mut want = reference(&short_item);
    output::summary_json(&mut want, &Totals::default());
    assert_eq!(
        String::from_utf8_lossy(w.as_bytes()),
        String::from_utf8_lossy(&want)
    );
}

/// The `path` of every page-in line `JsonLines` writes for `batches`,
/// each line also checked against the reference bytes.
fn pagein_paths(batches: &[Vec<u8>]) -> Vec<serde_json::Value> {
    let mut w = output::JsonLines::new();
    let mut paths = Vec::new();
    for item in decode(batches).0 {
        w.clear();
        w.item(&item);
        assert_eq!(w.as_bytes(), &reference(&item)[..]);
        let v: serde_json::Value = serde_json::from_slice(w.as_bytes()).unwrap();
        if v["kind"] == "pagein" {
            paths.push(v["path"].clone());
        }
    }
    paths
}

#[test]
fn cached_path_fragments_follow_a_new_name_and_a_reload() {
    // The escaped path is kept per vnode id (`PathInfo::json`): a later PATH
    // record for the same id replaces it.
    let batches = recorded(1, 256, |t| {
        t.path(0, DB, "/data/old \"name\"");
        t.pagein(0, 200, 2001, DB, (0, 4096), 1);
        t.drain();
        t.path(0, DB, "/data/new\nname");
        t.pagein(0, 200, 2001, DB, (4096, 4096), 1);
        t.drain();
    });
    assert_eq!(
        pagein_paths(&batches),
        ["/data/old \"name\"", "/data/new\nname"]
    );
    // After a reload, a vnode no PATH record of the new load named has no
    // path, whatever the old load called it.
    let mut batches = recorded(1, 256, |t| {
        t.path(0, DB, "/data/app.db");
        t.pagein(0, 200, 2001, DB, (0, 4096), 1);
        t.drain();
    });
    let mut mem = Mem::new(1, 256);
    let e = mem.engine_of(2);
    let mut t = Trace::new(&e);
    t.pagein(0, 200, 2001, DB, (0, 4096), 1);
    t.drain();
    batches.extend(t.batches);
    assert_eq!(
        pagein_paths(&batches),
        [serde_json::json!("/data/app.db"), serde_json::Value::Null]
    );
}

#[test]
fn random_lines_validate() {
    // A few hundred generated items through the schema too (the validator
    // is slower than the byte comparison, so fewer cases).
    let v = validator();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..300 {
        let item = any_item().new_tree(&mut runner).unwrap().current();
        assert_valid(&v, &written(&item));
    }
}

/// `report --json` is one document that names its contract first, as the
/// stream's first line does, and validates against the checked-in schema
/// that `maptrace schema report` prints.
#[test]
fn report_documents_name_their_schema_and_validate() {
    let out = maptrace().args(["schema", "report"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/report.schema.json");
    assert!(
        std::fs::read_to_string(path).unwrap_or_default() == text,
        "{path} is stale: regenerate it with \
         `cargo run -p maptrace -- schema report > companion/schema/report.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    for (name, batches) in [
        ("life.mtr", lifecycle_batches()),
        ("lossy.mtr", lossy_batches(5)),
        ("gap.mtr", gap_batches()),
        ("reload.mtr", reload_batches()),
    ] {
        let f = fixture(&dir, name, &batches);
        let out = maptrace()
            .args(["report", "--json"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.stdout
                .starts_with(b"{\n  \"schema\": \"maptrace.report\",\n  \"version\": 1,\n"),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_valid(&v, &out.stdout);
    }
    // The schema holds the document to its shape.
    let mut doc: serde_json::Value = serde_json::from_slice(
        &maptrace()
            .args(["report", "--json"])
            .arg(fixture(&dir, "again.mtr", &lifecycle_batches()))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    doc["schema"] = "maptrace.events".into();
    assert!(!v.is_valid(&doc), "accepted another contract's name");
    doc["schema"] = "maptrace.report".into();
    doc["totals"]["dropped"] = "5".into();
    assert!(!v.is_valid(&doc), "accepted a string count");
    doc["totals"]["dropped"] = 5.into();
    assert!(v.is_valid(&doc), "refused the document back");
    // Fields left out when there is nothing to say are never null.
    for (at, field) in [
        ("summary", "clock_anchor"),
        ("summary", "first_time"),
        ("totals", "other_files"),
    ] {
        let mut d = doc.clone();
        d[at][field] = serde_json::Value::Null;
        assert!(!v.is_valid(&d), "accepted a null {field}");
    }
}
