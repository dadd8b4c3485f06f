//! Heatmaps: one SVG per file, file offset against time, with every page-in
//! as a block (colored by process) and every map and last unmap as a line,
//! with axes, tick labels, a title and a legend so it reads without the tool.

use crate::pipeline::Item;
use maptrace_abi::Event;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

/// Picture size in pixels.
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
/// Plot area margins.
const LEFT: f64 = 90.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 60.0;
/// Page-ins drawn one by one; beyond this they are binned.
pub const MAX_BLOCKS: usize = 20_000;
/// Bins of a binned heatmap (time × offset).
const BIN_COLS: usize = 200;
const BIN_ROWS: usize = 100;
/// Ticks per axis.
const TICKS: u32 = 5;
/// Process colors, cycled.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
];
/// Map and unmap line colors.
const MAP_COLOR: &str = "#2ca02c";
const UNMAP_COLOR: &str = "#d62728";

#[derive(Clone, Copy, Debug)]
struct Block {
    ts: u64,
    dur: u64,
    offset: u64,
    size: u64,
    pid: u32,
}

/// One file's events.
#[derive(Clone, Debug, Default)]
pub struct FileEvents {
    /// The vnode id.
    pub vnode_id: u64,
    /// Its path.
    pub path: Option<String>,
    pageins: Vec<Block>,
    maps: Vec<(u64, u32)>,
    unmaps: Vec<(u64, u32)>,
}

impl FileEvents {
    /// A name usable as a file name: the path's last part and the vnode id.
    pub fn file_stem(&self) -> String {
        let base = self
            .path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .filter(|b| !b.is_empty())
            .unwrap_or("vnode");
        let clean: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{clean}-{:08x}", self.vnode_id >> 32)
    }

    /// Whether there is anything to draw.
    pub fn is_empty(&self) -> bool {
        self.pageins.is_empty() && self.maps.is_empty() && self.unmaps.is_empty()
    }
}

/// Collects per-file events from the item stream.
#[derive(Debug, Default)]
pub struct Builder {
    files: Vec<FileEvents>,
    index: HashMap<u64, usize>,
}

impl Builder {
    /// Nothing yet.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Takes in one item.
    pub fn observe(&mut self, item: &Item) {
        let Item::Event(ev) = item else { return };
        let r = &ev.rec;
        if r.vnode_id == 0
            || matches!(
                r.event,
                Event::Path { .. }
                    | Event::Mark { .. }
                    | Event::FileMmap { .. }
                    | Event::Open { .. }
                    | Event::Close { .. }
            )
        {
            return;
        }
        let next = self.files.len();
        let i = *self.index.entry(r.vnode_id).or_insert(next);
        if i == next {
            self.files.push(FileEvents {
                vnode_id: r.vnode_id,
                ..FileEvents::default()
            });
        }
        let Some(f) = self.files.get_mut(i) else {
            return;
        };
        if f.path.is_none() {
            f.path = ev.path.as_ref().map(|p| p.text.to_string());
        }
        match &r.event {
            Event::Pagein {
                offset,
                size,
                duration_ns,
                ..
            } => f.pageins.push(Block {
                ts: r.timestamp_ns,
                dur: u64::from(*duration_ns),
                offset: u64::try_from(*offset).unwrap_or(0),
                size: u64::from(*size),
                pid: r.pid,
            }),
            Event::Mmap { .. } => f.maps.push((r.timestamp_ns, r.pid)),
            Event::Mnomap { .. } => f.unmaps.push((r.timestamp_ns, r.pid)),
            _ => {}
        }
    }

    /// The files with something to draw, in order of first appearance.
    pub fn finish(self) -> Vec<FileEvents> {
        self.files.into_iter().filter(|f| !f.is_empty()).collect()
    }
}

use crate::text::xml_text as esc;

fn bytes_label(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else if n >= 1 << 10 {
        format!("{:.0} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn time_label(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("+{:.3} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("+{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("+{:.1} µs", ns as f64 / 1e3)
    }
}

/// The `i`-th of [`TICKS`] even steps over `0..=span`, without overflow
/// for any `span`.
fn tick(span: u64, i: u32) -> u64 {
    (u128::from(span) * u128::from(i) / u128::from(TICKS)) as u64
}

/// Draws one file's heatmap as a standalone SVG document.
pub fn render(f: &FileEvents) -> String {
    let times = f
        .pageins
        .iter()
        .flat_map(|b| [b.ts, b.ts.saturating_add(b.dur)])
        .chain(f.maps.iter().map(|m| m.0))
        .chain(f.unmaps.iter().map(|m| m.0));
    let t0 = times.clone().min().unwrap_or(0);
    // Times and offsets come from the recording: hostile values saturate
    // at the axis ends instead of overflowing.
    let span = times.max().unwrap_or(0).saturating_sub(t0).max(1_000);
    let max_off = f
        .pageins
        .iter()
        .map(|b| b.offset.saturating_add(b.size))
        .max()
        .unwrap_or(0)
        .max(4096);
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let x = |t: u64| LEFT + (t.saturating_sub(t0)) as f64 / span as f64 * pw;
    let y = |o: u64| TOP + o as f64 / max_off as f64 * ph;
    let pids: Vec<u32> = f
        .pageins
        .iter()
        .map(|b| b.pid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let color =
        |pid: u32| PALETTE[pids.iter().position(|&p| p == pid).unwrap_or(0) % PALETTE.len()];
    let title = f.path.clone().unwrap_or_else(|| "(path unknown)".into());

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<title>maptrace heatmap: {}</title>"#, esc(&title));
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text id="title" x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let _ = writeln!(
        s,
        r##"<text id="subtitle" x="{LEFT}" y="44" fill="#555">vnode {:016x} · {} page-ins, {} maps, {} last unmaps · time from {:.6} s after boot</text>"##,
        f.vnode_id,
        f.pageins.len(),
        f.maps.len(),
        f.unmaps.len(),
        t0 as f64 / 1e9
    );
    // Plot frame and axes.
    let _ = writeln!(
        s,
        r##"<rect id="plot" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#333"/>"##
    );
    let _ = writeln!(s, r#"<g id="x-axis">"#);
    for i in 0..=TICKS {
        let t = tick(span, i);
        let xp = x(t0.saturating_add(t));
        let _ = writeln!(
            s,
            r##"<line x1="{xp:.1}" y1="{}" x2="{xp:.1}" y2="{}" stroke="#333"/>"##,
            TOP + ph,
            TOP + ph + 5.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{xp:.1}" y="{}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            esc(&time_label(t))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time since first event</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 16.0
    );
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r#"<g id="y-axis">"#);
    for i in 0..=TICKS {
        let o = tick(max_off, i);
        let yp = y(o);
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{yp:.1}" x2="{LEFT}" y2="{yp:.1}" stroke="#333"/>"##,
            LEFT - 5.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            yp + 4.0,
            bytes_label(o)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">file offset</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    let _ = writeln!(s, "</g>");
    // Data.
    let _ = writeln!(s, r#"<g id="pageins">"#);
    if f.pageins.len() <= MAX_BLOCKS {
        for b in &f.pageins {
            let x0 = x(b.ts);
            let w = (x(b.ts.saturating_add(b.dur)) - x0).max(2.0);
            let y0 = y(b.offset);
            let h = (y(b.offset.saturating_add(b.size)) - y0).max(1.5);
            let _ = writeln!(
                s,
                r#"<rect class="pagein" x="{x0:.2}" y="{y0:.2}" width="{w:.2}" height="{h:.2}" fill="{}" fill-opacity="0.8"><title>pid {} page-in {} at offset {:#x} ({} after start, {:.1} µs)</title></rect>"#,
                color(b.pid),
                b.pid,
                bytes_label(b.size),
                b.offset,
                time_label(b.ts.saturating_sub(t0)),
                b.dur as f64 / 1e3
            );
        }
    } else {
        // Too many to draw one by one: count page-ins per cell and shade.
        let (cols, rows) = (BIN_COLS, BIN_ROWS);
        let mut bins = vec![0u32; cols * rows];
        for b in &f.pageins {
            let c = ((b.ts.saturating_sub(t0)) as f64 / span as f64 * cols as f64) as usize;
            let r = (b.offset as f64 / max_off as f64 * rows as f64) as usize;
            if let Some(n) = bins.get_mut(r.min(rows - 1) * cols + c.min(cols - 1)) {
                *n += 1;
            }
        }
        let top = bins.iter().copied().max().unwrap_or(1).max(1);
        let (cw, ch) = (pw / cols as f64, ph / rows as f64);
        for (i, n) in bins.iter().enumerate().filter(|(_, n)| **n > 0) {
            let (c, r) = (i % cols, i / cols);
            let _ = writeln!(
                s,
                r#"<rect class="pagein-bin" x="{:.2}" y="{:.2}" width="{cw:.2}" height="{ch:.2}" fill="{}" fill-opacity="{:.2}"><title>{n} page-ins</title></rect>"#,
                LEFT + c as f64 * cw,
                TOP + r as f64 * ch,
                PALETTE[0],
                0.15 + 0.85 * f64::from(*n) / f64::from(top)
            );
        }
        let _ = writeln!(
            s,
            r##"<text id="binned" x="{LEFT}" y="{}" fill="#555">{} page-ins binned into {cols} × {rows} cells (darker: more)</text>"##,
            HEIGHT - 4.0,
            f.pageins.len()
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r#"<g id="maps">"#);
    for (list, class, col, dash, what) in [
        (&f.maps, "map", MAP_COLOR, "", "map"),
        (
            &f.unmaps,
            "unmap",
            UNMAP_COLOR,
            r#" stroke-dasharray="6 3""#,
            "last unmap",
        ),
    ] {
        for (t, pid) in list {
            let xp = x(*t);
            let _ = writeln!(
                s,
                r#"<line class="{class}" x1="{xp:.2}" y1="{TOP}" x2="{xp:.2}" y2="{}" stroke="{col}" stroke-width="1.5"{dash}><title>pid {pid} {what} at {}</title></line>"#,
                TOP + ph,
                time_label(t.saturating_sub(t0))
            );
        }
    }
    let _ = writeln!(s, "</g>");
    // Legend.
    let lx = WIDTH - RIGHT + 20.0;
    let _ = writeln!(
        s,
        r#"<g id="legend"><text x="{lx}" y="{}" font-weight="bold">legend</text>"#,
        TOP + 10.0
    );
    let mut ly = TOP + 30.0;
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{MAP_COLOR}" stroke-width="2"/><text x="{}" y="{}">map (VNOP_MMAP)</text>"#,
        lx + 20.0,
        lx + 26.0,
        ly + 4.0
    );
    ly += 20.0;
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{UNMAP_COLOR}" stroke-width="2" stroke-dasharray="6 3"/><text x="{}" y="{}">last unmap (MNOMAP)</text>"#,
        lx + 20.0,
        lx + 26.0,
        ly + 4.0
    );
    for pid in &pids {
        ly += 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="20" height="10" fill="{}"/><text x="{}" y="{}">page-in, pid {pid}</text>"#,
            ly - 5.0,
            color(*pid),
            lx + 26.0,
            ly + 4.0
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, "</svg>");
    s
}
