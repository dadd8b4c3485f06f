//! The output targets: a recording read as `maptrace` reads it, then drawn
//! by one renderer (report, heatmap, export) or every formatter (stream
//! table and JSON lines, and the escaping they share). Oracles: nothing
//! panics or overflows, no raw control character reaches a human output
//! (file names come from the traced machine), JSON parses and SVG is
//! well-formed XML. Memory and time stay bounded by libFuzzer's limits.

use std::io::Cursor;

use maptrace::pagesize::{PageBasis, PageSize};
use maptrace::pipeline::{Item, Pipeline, Totals};
use maptrace::recording::{Frame, Reader};
use maptrace::wallclock::Anchor;

/// The items `maptrace` makes of `data` as a recording (none when the
/// header is refused), closing items included.
pub fn items(data: &[u8]) -> (Vec<Item>, Totals) {
    let (items, totals, _) = items_dated(data);
    (items, totals)
}

/// [`items`], with the recording's clock anchor (format 4 on).
pub fn items_dated(data: &[u8]) -> (Vec<Item>, Totals, Option<Anchor>) {
    let mut items = Vec::new();
    let mut p = Pipeline::new();
    let Ok(mut reader) = Reader::new(Cursor::new(data), "fuzz.mtr") else {
        return (items, p.totals(), None);
    };
    let anchor = reader.header().anchor();
    let mut buf = Vec::new();
    while let Ok(Some(f)) = reader.next_frame(&mut buf) {
        match f {
            Frame::Batch(n) => {
                p.feed(&buf[..n], &mut items);
            }
            Frame::Corrupt(msg) => items.push(Item::Corrupt(msg)),
        }
    }
    p.finish(&mut items);
    (items, p.totals(), anchor)
}

/// The page size the recording's header keeps, as `maptrace report` reads
/// it (format 5 on).
fn page_size(data: &[u8]) -> Result<PageSize, String> {
    Reader::new(Cursor::new(data), "fuzz.mtr")
        .ok()
        .and_then(|r| r.header().page_size)
        .ok_or_else(|| "no page size in the header".into())
}

/// Panics when `text` holds a control character other than a newline.
fn assert_printable(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\n') {
        panic!("{what} carries the raw control character {c:?}: {text:?}");
    }
}

/// `report`: the human report is printable, the JSON report parses.
pub fn report(data: &[u8]) {
    let (items, totals) = items(data);
    let mut b = maptrace::report::Builder::new();
    b.set_page_basis(PageBasis::resolve(None, page_size(data)));
    items.iter().for_each(|i| b.observe(i));
    let r = b.finish(&totals);
    // Every file's pages are counted in the one size the summary names.
    for f in &r.files {
        assert_eq!(f.pageins.page_size, r.summary.page_size);
    }
    let mut human = Vec::new();
    maptrace::report::write_human(&mut human, &r).expect("writing to memory");
    assert_printable("the report", &human);
    let json = serde_json::to_vec(&r).expect("the report serialises");
    let back: serde_json::Value = serde_json::from_slice(&json).expect("the JSON report parses");
    assert_eq!(back["totals"]["files"], r.files.len());
}

/// `heatmap`: every SVG, on either time axis, is well-formed XML with a
/// printable title.
pub fn heatmap(data: &[u8]) {
    let (items, _) = items(data);
    let mut b = maptrace::heatmap::Builder::new();
    items.iter().for_each(|i| b.observe(i));
    for f in b.finish() {
        use maptrace::heatmap::TimeAxis;
        for axis in [TimeAxis::Linear, TimeAxis::Compressed] {
            let svg = maptrace::heatmap::render_with(&f, axis);
            assert_printable("an SVG", svg.as_bytes());
            if let Err(e) = roxmltree::Document::parse(&svg) {
                panic!("the SVG is not well-formed ({e}): {svg}");
            }
        }
        let stem = f.file_stem();
        assert!(
            stem.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-_".contains(&c)),
            "{stem:?}"
        );
    }
}

/// `export`: the Perfetto document parses, its names are printable, and
/// every epoch slice's begin has exactly one end, later, with its name,
/// category and track.
pub fn export(data: &[u8]) {
    let (items, _) = items(data);
    let mut x = maptrace::perfetto::Exporter::new(Vec::new()).expect("writing to memory");
    for i in &items {
        x.observe(i).expect("writing to memory");
    }
    let out = x.finish().expect("writing to memory");
    let doc: serde_json::Value = serde_json::from_slice(&out).expect("the export parses");
    let mut open = std::collections::HashMap::new();
    for e in doc["traceEvents"].as_array().into_iter().flatten() {
        if let Some(name) = e["name"].as_str() {
            assert_printable("a trace event name", name.as_bytes());
        }
        let id = || {
            e["id2"]["local"]
                .as_u64()
                .expect("an epoch slice has an id")
        };
        let key = |e: &serde_json::Value| (e["name"].clone(), e["cat"].clone(), e["pid"].clone());
        match e["ph"].as_str() {
            Some("b") => assert!(open.insert(id(), e).is_none(), "id reused: {e}"),
            Some("e") => {
                let b = open.remove(&id()).expect("an end has a begin");
                assert_eq!(key(b), key(e), "an end matches its begin");
                assert!(
                    e["ts"].as_f64() >= b["ts"].as_f64(),
                    "{b} ends before it begins"
                );
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "every begin is ended: {open:?}");
}

/// Undoes [`maptrace::text::shown`], so the oracle can check nothing is lost.
fn unshown(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'u' => {
                let rest: String = it.by_ref().take_while(|&c| c != '}').collect();
                let hex = rest.strip_prefix('{')?;
                out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Bytes of the input the text oracles take.
const TEXT_MAX: usize = 4096;

/// `formatters`: the input as text through every escaping function, and as
/// a recording through the stream's table and JSON lines.
pub fn formatters(data: &[u8]) {
    // Names are at most MT_PATH_MAX bytes: a few KiB of text exercise every
    // escape, and keep the oracles' cost off the recording half.
    let s = String::from_utf8_lossy(data.get(..TEXT_MAX).unwrap_or(data));
    let shown = maptrace::text::shown(&s);
    assert_printable("shown text", shown.as_bytes());
    assert_eq!(
        unshown(&shown).as_deref(),
        Some(&*s),
        "shown text is lossless"
    );
    let xml = maptrace::text::xml_text(&s);
    let doc = format!("<t a=\"{xml}\">{xml}</t>");
    let parsed = roxmltree::Document::parse(&doc).expect("XML text is well-formed");
    let text = parsed.root_element().text().unwrap_or("");
    assert_eq!(unshown(text).as_deref(), Some(&*s), "XML text is lossless");
    let mut json = Vec::new();
    maptrace::json::push_str(&mut json, &s);
    let back: String = serde_json::from_slice(&json).expect("a JSON string literal");
    assert_eq!(back, *s);

    // With the recording's anchor, as `stream --time wall` draws it.
    let (items, totals, anchor) = items_dated(data);
    let mut table = Vec::new();
    let mut lines = Vec::new();
    for i in &items {
        maptrace::output::item_line_at(&mut table, i, anchor.as_ref());
        maptrace::output::item_json_at(&mut lines, i, anchor.as_ref());
    }
    maptrace::output::summary_row(&mut table, &totals).expect("writing to memory");
    maptrace::output::summary_json(&mut lines, &totals);
    assert_printable("the stream table", &table);
    for l in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(l) {
            panic!(
                "a JSON line does not parse ({e}): {}",
                String::from_utf8_lossy(l)
            );
        }
    }
    // One row per item at most: no path can add a line.
    let rows = table.iter().filter(|&&b| b == b'\n').count();
    assert!(
        rows <= items.len() + 1,
        "{rows} rows for {} items",
        items.len()
    );
}
