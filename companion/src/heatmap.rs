//! Heatmaps: one SVG per file, file offset against time, with every page-in
//! as a block (colored by process) and every map and last unmap as a line,
//! with axes on round ticks, a title, a legend and the trace's losses marked
//! on the time axis, so it reads without the tool.
//!
//! Times and offsets come from the kext (or a crafted file): every sum of
//! them saturates and positions are computed in floating point, so no value
//! overflows (see `end_ns`, `end_offset`, `Scale`).

use crate::pipeline::{Item, Loss};
use maptrace_abi::Event;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;

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
/// Marks (page-ins, maps, last unmaps) kept over the whole trace, whatever
/// its length: 48 bytes a page-in, so the builder stays under ~50 MB on any
/// input. Reaching it halves the sampling rate (see [`Builder`]): the marks
/// kept stay spread evenly over the whole trace, and the SVG says how many
/// are not drawn.
pub const MAX_KEPT_MARKS: usize = 1_000_000;
/// Files kept: each costs ~200 bytes before its marks, so hostile input
/// naming a new vnode in every record stays bounded. Later files' events
/// are counted ([`Builder::events_past_file_cap`]), not drawn.
pub const MAX_FILES: usize = 100_000;
/// Loss marks kept; past it neighbours merge pairwise (their records
/// summed), so the total stays exact and the time axis only coarser.
pub const MAX_LOSS_MARKS: usize = 100_000;
/// Bins of a binned heatmap (time × offset).
const BIN_COLS: usize = 200;
const BIN_ROWS: usize = 100;
/// At most this many tick steps per axis: the smallest round step that
/// covers the data in as many wastes at most a step of the plot.
const MAX_STEPS: f64 = 6.0;
/// The smallest page-in mark, in pixels either way: a 16 KiB page-in in a
/// 4 GiB file is far below a pixel and must still show.
pub const MIN_MARK: f64 = 3.0;
/// Processes listed by name in the legend; the rest are counted.
const LEGEND_PIDS: usize = 16;
/// Process colors, cycled.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
];
/// Map and unmap line colors.
const MAP_COLOR: &str = "#2ca02c";
const UNMAP_COLOR: &str = "#d62728";
/// Lost-record markers.
const LOSS_COLOR: &str = "#e00000";

#[derive(Clone, Copy, Debug)]
struct Block {
    ts: u64,
    dur: u64,
    offset: u64,
    size: u64,
    pid: u32,
    /// Its place among its file's marks (see [`Builder`]).
    seq: u64,
}

/// A map or last unmap: a line across the plot.
#[derive(Clone, Copy, Debug)]
struct Line {
    ts: u64,
    pid: u32,
    seq: u64,
}

/// When a page-in ended; saturates rather than wraps on absurd times.
fn end_ns(b: &Block) -> u64 {
    b.ts.saturating_add(b.dur)
}

/// Where a page-in ended in the file; saturates likewise.
fn end_offset(b: &Block) -> u64 {
    b.offset.saturating_add(b.size)
}

/// Records lost (dropped by the kext or skipped by this reader) just
/// before the record of time `ts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossMark {
    /// When: the time of the record that followed the loss.
    pub ts: u64,
    /// How many records.
    pub records: u64,
}

/// One file's events.
#[derive(Clone, Debug, Default)]
pub struct FileEvents {
    /// The vnode id.
    pub vnode_id: u64,
    /// Its path.
    pub path: Option<String>,
    pageins: Vec<Block>,
    maps: Vec<Line>,
    unmaps: Vec<Line>,
    /// Page-ins seen, kept or not.
    pub pageins_seen: u64,
    /// Maps seen, kept or not.
    pub maps_seen: u64,
    /// Last unmaps seen, kept or not.
    pub unmaps_seen: u64,
    /// Marks seen but not kept: the builder's cap was reached.
    pub not_drawn: u64,
    /// One mark in this many was kept, evenly over the trace (1: all).
    pub sampled_one_in: u64,
    /// The whole trace's losses: any of them may have been this file's.
    losses: Rc<Vec<LossMark>>,
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
        self.pageins_seen + self.maps_seen + self.unmaps_seen == 0
    }
}

/// Collects per-file events and the trace's losses from the item stream.
///
/// A file's marks are numbered in the order they come (`seq`: 0 for its
/// first); the builder keeps those whose number is a multiple of `stride`.
/// When `kept` reaches the cap, `stride` doubles and the marks whose number
/// is no longer a multiple go: what is kept of each file is always one mark
/// in `stride` of its own, evenly over its whole trace (not its start, and
/// never nothing: its first mark stays).
///
/// Invariants: `kept` (marks held over all files) stays below the larger of
/// `cap` and twice the files (each file keeps at least its first mark);
/// `stride` is a power of two; `files` holds at most `file_cap` files and
/// `losses` at most [`MAX_LOSS_MARKS`] marks.
#[derive(Debug)]
pub struct Builder {
    files: Vec<FileEvents>,
    index: HashMap<u64, usize>,
    losses: Vec<LossMark>,
    /// Records lost just before the next record, whose time they take.
    pending_loss: u64,
    last_ts: u64,
    kept: usize,
    cap: usize,
    stride: u64,
    file_cap: usize,
    events_past_file_cap: u64,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::with_cap(MAX_KEPT_MARKS)
    }
}

impl Builder {
    /// Nothing yet.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Nothing yet; keeps fewer than `cap` marks.
    pub fn with_cap(cap: usize) -> Builder {
        Builder::with_caps(cap, MAX_FILES)
    }

    /// Nothing yet; keeps fewer than `marks` marks and at most `files` files.
    pub fn with_caps(marks: usize, files: usize) -> Builder {
        Builder {
            files: Vec::new(),
            index: HashMap::new(),
            losses: Vec::new(),
            pending_loss: 0,
            last_ts: 0,
            kept: 0,
            cap: marks,
            stride: 1,
            file_cap: files,
            events_past_file_cap: 0,
        }
    }

    /// Page-ins, maps and last unmaps of files past [`MAX_FILES`]: not drawn.
    pub fn events_past_file_cap(&self) -> u64 {
        self.events_past_file_cap
    }

    /// Halves the sampling rate: keeps the marks whose number is a
    /// multiple of the doubled stride.
    fn thin(&mut self) {
        self.stride = self.stride.saturating_mul(2);
        let stride = self.stride;
        let mut kept = 0;
        for f in &mut self.files {
            f.pageins.retain(|b| b.seq % stride == 0);
            f.maps.retain(|l| l.seq % stride == 0);
            f.unmaps.retain(|l| l.seq % stride == 0);
            kept += f.pageins.len() + f.maps.len() + f.unmaps.len();
        }
        self.kept = kept;
    }

    fn add_loss(&mut self, ts: u64, records: u64) {
        match self.losses.last_mut() {
            Some(last) if last.ts == ts => last.records = last.records.saturating_add(records),
            _ => self.losses.push(LossMark { ts, records }),
        }
        if self.losses.len() >= MAX_LOSS_MARKS {
            // Neighbours merge at the first one's time.
            self.losses = self
                .losses
                .chunks(2)
                .map(|pair| LossMark {
                    ts: pair[0].ts,
                    records: pair.iter().fold(0u64, |n, m| n.saturating_add(m.records)),
                })
                .collect();
        }
    }

    fn place_pending_loss(&mut self, ts: u64) {
        if self.pending_loss > 0 {
            self.add_loss(ts, self.pending_loss);
            self.pending_loss = 0;
        }
    }

    /// Takes in one item.
    pub fn observe(&mut self, item: &Item) {
        let ev = match item {
            Item::Event(ev) => ev,
            // Drops after a shard's last record have no later record.
            Item::Loss(Loss::Dropped {
                count,
                before_pos: None,
                ..
            }) => return self.add_loss(self.last_ts, *count),
            Item::Loss(Loss::Dropped { count: n, .. } | Loss::Gap { slots: n, .. }) => {
                self.pending_loss = self.pending_loss.saturating_add(*n);
                return;
            }
            Item::Reload { .. } => return self.place_pending_loss(self.last_ts),
            Item::Corrupt(_) => return,
        };
        let r = &ev.rec;
        self.last_ts = self.last_ts.max(r.timestamp_ns);
        self.place_pending_loss(r.timestamp_ns);
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
        let i = match self.index.get(&r.vnode_id) {
            Some(&i) => i,
            None if self.files.len() >= self.file_cap => {
                if matches!(
                    r.event,
                    Event::Pagein { .. } | Event::Mmap { .. } | Event::Mnomap { .. }
                ) {
                    self.events_past_file_cap += 1;
                }
                return;
            }
            None => {
                let i = self.files.len();
                self.index.insert(r.vnode_id, i);
                self.files.push(FileEvents {
                    vnode_id: r.vnode_id,
                    ..FileEvents::default()
                });
                i
            }
        };
        let Some(f) = self.files.get_mut(i) else {
            return;
        };
        if f.path.is_none() {
            f.path = ev.path.as_ref().map(|p| p.text.to_string());
        }
        match &r.event {
            Event::Pagein { .. } => f.pageins_seen += 1,
            Event::Mmap { .. } => f.maps_seen += 1,
            Event::Mnomap { .. } => f.unmaps_seen += 1,
            _ => return,
        }
        let seq = (f.pageins_seen + f.maps_seen + f.unmaps_seen).saturating_sub(1);
        if seq % self.stride != 0 {
            return;
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
                seq,
            }),
            Event::Mmap { .. } => f.maps.push(Line {
                ts: r.timestamp_ns,
                pid: r.pid,
                seq,
            }),
            _ => f.unmaps.push(Line {
                ts: r.timestamp_ns,
                pid: r.pid,
                seq,
            }),
        }
        self.kept += 1;
        if self.kept >= self.cap.max(2 * self.files.len()) {
            self.thin();
        }
    }

    /// The files with something to draw, in order of first appearance,
    /// each with the trace's losses.
    pub fn finish(mut self) -> Vec<FileEvents> {
        self.place_pending_loss(self.last_ts);
        let losses = Rc::new(self.losses);
        let stride = self.stride;
        self.files
            .into_iter()
            .filter(|f| !f.is_empty())
            .map(|f| {
                let kept = (f.pageins.len() + f.maps.len() + f.unmaps.len()) as u64;
                FileEvents {
                    losses: Rc::clone(&losses),
                    not_drawn: (f.pageins_seen + f.maps_seen + f.unmaps_seen).saturating_sub(kept),
                    sampled_one_in: stride,
                    ..f
                }
            })
            .collect()
    }
}

use crate::text::xml_text as esc;

fn bytes_label(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30))
    } else if n >= 1 << 20 {
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

/// Units of the time axis (nanoseconds each).
const TIME_UNITS: [(f64, &str); 4] = [(1.0, "ns"), (1e3, "µs"), (1e6, "ms"), (1e9, "s")];
/// Units of the offset axis (bytes each).
const BYTE_UNITS: [(f64, &str); 5] = [
    (1.0, "B"),
    (1024.0, "KiB"),
    (1_048_576.0, "MiB"),
    (1_073_741_824.0, "GiB"),
    (1_099_511_627_776.0, "TiB"),
];

/// The round step (1, 2 or 5 × 10^k) at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    let mantissa = if m <= 1.0 + 1e-9 {
        1.0
    } else if m <= 2.0 + 1e-9 {
        2.0
    } else if m <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    mantissa * magnitude
}

/// An axis from 0 to a whole number of round steps covering the data, in
/// the largest unit the data reaches.
#[derive(Clone, Copy, Debug)]
struct Scale {
    /// Base units (ns, bytes) per axis unit.
    unit: f64,
    name: &'static str,
    /// Tick step and axis end, in axis units.
    step: f64,
    steps: u32,
    decimals: usize,
}

impl Scale {
    fn new(max: f64, units: &[(f64, &'static str)]) -> Scale {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let (unit, name) = units
            .iter()
            .copied()
            .rfind(|(u, _)| max >= *u)
            .or_else(|| units.first().copied())
            .unwrap_or((1.0, ""));
        let step = nice_step(max / unit / MAX_STEPS);
        // Whole steps up to the data's end; at least one, and never a silly
        // count whatever float does.
        let steps = ((max / unit / step) - 1e-9).ceil().clamp(1.0, 100.0) as u32;
        let decimals = if step >= 1.0 {
            0
        } else {
            (-step.log10().floor()).clamp(0.0, 9.0) as usize
        };
        Scale {
            unit,
            name,
            step,
            steps,
            decimals,
        }
    }

    /// The axis' end in base units.
    fn end(&self) -> f64 {
        self.step * f64::from(self.steps) * self.unit
    }

    /// Where `v` (base units from the axis' start) falls, 0..=1.
    fn frac(&self, v: u64) -> f64 {
        (v as f64 / self.end()).clamp(0.0, 1.0)
    }

    /// The ticks: base-unit value and label.
    fn ticks(&self) -> impl Iterator<Item = (f64, String)> + '_ {
        (0..=self.steps).map(move |i| {
            let v = self.step * f64::from(i);
            (
                v * self.unit,
                format!("{v:.*} {}", self.decimals, self.name),
            )
        })
    }
}

/// A mark from `a` to `b` on one axis, at least [`MIN_MARK`] long and
/// moved inside `lo..=hi`: start and length.
fn visible(a: f64, b: f64, lo: f64, hi: f64) -> (f64, f64) {
    let len = (b - a).max(MIN_MARK).min(hi - lo);
    (a.min(hi - len).max(lo), len)
}

/// Colors by process, in pid order; cycled past the palette.
struct Colors(HashMap<u32, usize>);

impl Colors {
    fn new(pids: &[u32]) -> Colors {
        Colors(pids.iter().enumerate().map(|(i, p)| (*p, i)).collect())
    }

    fn of(&self, pid: u32) -> &'static str {
        let i = self.0.get(&pid).copied().unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    }
}

/// Draws one file's heatmap as a standalone SVG document.
pub fn render(f: &FileEvents) -> String {
    let times = f
        .pageins
        .iter()
        .flat_map(|b| [b.ts, end_ns(b)])
        .chain(f.maps.iter().map(|m| m.ts))
        .chain(f.unmaps.iter().map(|m| m.ts));
    let t0 = times.clone().min().unwrap_or(0);
    let span = times.max().unwrap_or(0).saturating_sub(t0).max(1_000);
    let max_off = f
        .pageins
        .iter()
        .map(end_offset)
        .max()
        .unwrap_or(0)
        .max(4096);
    let tx = Scale::new(span as f64, &TIME_UNITS);
    let ty = Scale::new(max_off as f64, &BYTE_UNITS);
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let x = |t: u64| LEFT + tx.frac(t.saturating_sub(t0)) * pw;
    let y = |o: u64| TOP + ty.frac(o) * ph;
    let pids: Vec<u32> = f
        .pageins
        .iter()
        .map(|b| b.pid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let colors = Colors::new(&pids);
    let title = f.path.clone().unwrap_or_else(|| "(path unknown)".into());
    let lost: u64 = f
        .losses
        .iter()
        .fold(0u64, |n, l| n.saturating_add(l.records));

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
    let lost_note = if lost > 0 {
        format!(" · {lost} records lost in the trace (marked ▲)")
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        r##"<text id="subtitle" x="{LEFT}" y="44" fill="#555">vnode {:016x} · {} page-ins, {} maps, {} last unmaps · from {:.6} s after boot{lost_note}</text>"##,
        f.vnode_id,
        f.pageins_seen,
        f.maps_seen,
        f.unmaps_seen,
        t0 as f64 / 1e9
    );
    if f.not_drawn > 0 {
        let _ = writeln!(
            s,
            r##"<text id="not-drawn" x="{}" y="{}" text-anchor="end" fill="{LOSS_COLOR}" font-size="11">{} page-ins, maps and unmaps not drawn: one in {} of the trace's is, evenly over it (memory cap)</text>"##,
            WIDTH - 10.0,
            HEIGHT - 5.0,
            f.not_drawn,
            f.sampled_one_in
        );
    }
    // Plot frame and axes.
    let _ = writeln!(
        s,
        r##"<rect id="plot" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#333"/>"##
    );
    let _ = writeln!(s, r#"<g id="x-axis">"#);
    for (v, label) in tx.ticks() {
        let xp = LEFT + (v / tx.end()).clamp(0.0, 1.0) * pw;
        let _ = writeln!(
            s,
            r##"<line x1="{xp:.1}" y1="{}" x2="{xp:.1}" y2="{}" stroke="#333"/>"##,
            TOP + ph,
            TOP + ph + 5.0
        );
        let _ = writeln!(
            s,
            r#"<text class="tick" x="{xp:.1}" y="{}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            esc(&label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time since first event</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 22.0
    );
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r#"<g id="y-axis">"#);
    for (v, label) in ty.ticks() {
        let yp = TOP + (v / ty.end()).clamp(0.0, 1.0) * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{yp:.1}" x2="{LEFT}" y2="{yp:.1}" stroke="#333"/>"##,
            LEFT - 5.0
        );
        let _ = writeln!(
            s,
            r#"<text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            yp + 4.0,
            esc(&label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">file offset</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    let _ = writeln!(s, "</g>");
    // Map lines first, so the page-ins are drawn over them.
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
        for &Line { ts: t, pid, .. } in list {
            let xp = x(t);
            let _ = writeln!(
                s,
                r#"<line class="{class}" x1="{xp:.2}" y1="{TOP}" x2="{xp:.2}" y2="{}" stroke="{col}" stroke-width="1.5" stroke-opacity="0.7"{dash}><title>pid {pid} {what} at {}</title></line>"#,
                TOP + ph,
                time_label(t.saturating_sub(t0))
            );
        }
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r#"<g id="pageins">"#);
    if f.pageins.len() <= MAX_BLOCKS {
        for b in &f.pageins {
            let (x0, w) = visible(x(b.ts), x(end_ns(b)), LEFT, LEFT + pw);
            let (y0, h) = visible(y(b.offset), y(end_offset(b)), TOP, TOP + ph);
            let _ = writeln!(
                s,
                r#"<rect class="pagein" x="{x0:.2}" y="{y0:.2}" width="{w:.2}" height="{h:.2}" fill="{}" fill-opacity="0.85"><title>pid {} page-in {} at offset {:#x} ({} after start, {:.1} µs)</title></rect>"#,
                colors.of(b.pid),
                b.pid,
                bytes_label(b.size),
                b.offset,
                time_label(b.ts.saturating_sub(t0)),
                b.dur as f64 / 1e3
            );
        }
    } else {
        binned(&mut s, f, &colors, |b| {
            (tx.frac(b.ts.saturating_sub(t0)), ty.frac(b.offset))
        });
    }
    let _ = writeln!(s, "</g>");
    losses(&mut s, f, t0, &x);
    legend(&mut s, &pids, &colors, lost);
    let _ = writeln!(s, "</svg>");
    s
}

/// Too many page-ins to draw one by one: counts per cell, each cell in the
/// color of the process with most page-ins there, darker with more.
fn binned(s: &mut String, f: &FileEvents, colors: &Colors, at: impl Fn(&Block) -> (f64, f64)) {
    let (cols, rows) = (BIN_COLS, BIN_ROWS);
    let mut bins = vec![0u32; cols * rows];
    let mut by_pid: HashMap<(usize, u32), u32> = HashMap::new();
    for b in &f.pageins {
        let (fx, fy) = at(b);
        let c = ((fx * cols as f64) as usize).min(cols - 1);
        let r = ((fy * rows as f64) as usize).min(rows - 1);
        let cell = r * cols + c;
        if let Some(n) = bins.get_mut(cell) {
            *n = n.saturating_add(1);
        }
        let n = by_pid.entry((cell, b.pid)).or_insert(0);
        *n = n.saturating_add(1);
    }
    // The leading process per cell; the lower pid on a tie, so the picture
    // does not depend on hash order.
    let mut lead: Vec<Option<(u32, u32)>> = vec![None; cols * rows];
    for ((cell, pid), n) in by_pid {
        if let Some(l) = lead.get_mut(cell) {
            match *l {
                Some((p, m)) if m > n || (m == n && p < pid) => {}
                _ => *l = Some((pid, n)),
            }
        }
    }
    let top = bins.iter().copied().max().unwrap_or(1).max(1);
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let (cw, ch) = (pw / cols as f64, ph / rows as f64);
    for (i, (n, l)) in bins.iter().zip(&lead).enumerate() {
        let (&n, Some((pid, most))) = (n, l) else {
            continue;
        };
        let (c, r) = (i % cols, i / cols);
        let _ = writeln!(
            s,
            r#"<rect class="pagein-bin" x="{:.2}" y="{:.2}" width="{cw:.2}" height="{ch:.2}" fill="{}" fill-opacity="{:.2}"><title>{n} page-ins, {most} by pid {pid}</title></rect>"#,
            LEFT + c as f64 * cw,
            TOP + r as f64 * ch,
            colors.of(*pid),
            0.25 + 0.75 * f64::from(n) / f64::from(top)
        );
    }
    let _ = writeln!(
        s,
        r##"<text id="binned" x="{}" y="{}" fill="#555" font-size="11">{} page-ins binned into {cols} × {rows} cells, each in its leading process' color (darker: more)</text>"##,
        LEFT,
        HEIGHT - 5.0,
        f.pageins.len()
    );
}

/// The trace's lost records as ▲ on the time axis, one per pixel column
/// (losses outside this file's span sit at the nearer edge).
fn losses(s: &mut String, f: &FileEvents, t0: u64, x: &impl Fn(u64) -> f64) {
    if f.losses.is_empty() {
        return;
    }
    let mut columns: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for l in f.losses.iter() {
        let col = columns.entry(x(l.ts).round() as i64).or_insert((l.ts, 0));
        col.1 = col.1.saturating_add(l.records);
    }
    let base = HEIGHT - BOTTOM;
    let _ = writeln!(s, r#"<g id="losses">"#);
    for (xp, (ts, n)) in columns {
        let when = if ts < t0 {
            "before this file's first event".to_string()
        } else {
            format!("at {}", time_label(ts - t0))
        };
        let _ = writeln!(
            s,
            r#"<polygon class="loss" points="{xp},{} {},{base} {},{base}" fill="{LOSS_COLOR}"><title>{n} records lost {when} (any file's)</title></polygon>"#,
            base - 9.0,
            xp - 5,
            xp + 5
        );
    }
    let _ = writeln!(s, "</g>");
}

fn legend(s: &mut String, pids: &[u32], colors: &Colors, lost: u64) {
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
    if lost > 0 {
        ly += 20.0;
        let _ = writeln!(
            s,
            r#"<polygon points="{},{} {},{} {},{}" fill="{LOSS_COLOR}"/><text x="{}" y="{}">{lost} records lost</text>"#,
            lx + 10.0,
            ly - 5.0,
            lx + 5.0,
            ly + 4.0,
            lx + 15.0,
            ly + 4.0,
            lx + 26.0,
            ly + 4.0
        );
    }
    for pid in pids.iter().take(LEGEND_PIDS) {
        ly += 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="20" height="10" fill="{}"/><text x="{}" y="{}">page-in, pid {pid}</text>"#,
            ly - 5.0,
            colors.of(*pid),
            lx + 26.0,
            ly + 4.0
        );
    }
    if pids.len() > LEGEND_PIDS {
        ly += 20.0;
        let _ = writeln!(
            s,
            r#"<text x="{lx}" y="{}">… and {} more processes (colors repeat)</text>"#,
            ly + 4.0,
            pids.len() - LEGEND_PIDS
        );
    }
    let _ = writeln!(s, "</g>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Ev;
    use maptrace_abi::{Counts, EventKind, Record};

    fn pagein(ts: u64, pid: u32, vnode_id: u64) -> Item {
        Item::Event(Ev {
            rec: Record {
                shard: 0,
                pos: ts,
                lost_before: 0,
                kind: EventKind::Pagein,
                flags: 0,
                error: 0,
                pid,
                timestamp_ns: ts,
                tid: 1,
                vnode_id,
                event: Event::Pagein {
                    offset: (ts % 64 * 4096) as i64,
                    size: 4096,
                    duration_ns: 10,
                    counts: Counts::default(),
                    upl_flags: 0,
                },
            },
            path: None,
            call: None,
            call_map: 0,
            comm: None,
        })
    }

    /// Hostile input: however many page-ins, the builder keeps fewer than
    /// its cap of marks, spread evenly over each file's whole trace; the
    /// rest are counted and said to be missing.
    #[test]
    fn page_ins_past_the_cap_are_sampled_evenly_and_counted() {
        let mut b = Builder::with_cap(1000);
        for i in 0..5000u64 {
            b.observe(&pagein(i, 100 + (i % 3) as u32, 1 + i % 2));
        }
        let files = b.finish();
        assert_eq!(files.len(), 2);
        for f in &files {
            // 2500 page-ins each, every 8th of its own kept (0, 8, .., 2496).
            assert_eq!((f.pageins_seen, f.pageins.len()), (2500, 313));
            assert_eq!((f.not_drawn, f.sampled_one_in), (2187, 8));
            let ts: Vec<u64> = f.pageins.iter().map(|b| b.ts).collect();
            assert!(
                ts[0] <= 1 && *ts.last().unwrap() >= 4992,
                "covers the whole trace"
            );
            assert!(ts.windows(2).all(|w| w[1] - w[0] == 16), "evenly: {ts:?}");
        }
        let svg = render(&files[0]);
        assert!(svg.contains("2500 page-ins,"), "the subtitle counts all");
        assert!(
            svg.contains(">2187 page-ins, maps and unmaps not drawn: one in 8 "),
            "{svg}"
        );
    }

    /// A file with one page-in among a storm of another's keeps it.
    #[test]
    fn sampling_never_empties_a_file() {
        let mut b = Builder::with_cap(100);
        b.observe(&pagein(0, 1, 9));
        for i in 1..10_000u64 {
            b.observe(&pagein(i, 1, 1));
        }
        let files = b.finish();
        assert_eq!(files[0].vnode_id, 9);
        assert_eq!((files[0].pageins.len(), files[0].not_drawn), (1, 0));
        assert!(files[1].pageins.len() < 100);
    }

    /// Hostile input: a new vnode in every record. Files past the cap are
    /// counted, not kept.
    #[test]
    fn files_past_the_cap_are_counted_not_kept() {
        let mut b = Builder::with_caps(MAX_KEPT_MARKS, 10);
        for i in 0..50u64 {
            b.observe(&pagein(i, 1, 1 + i));
        }
        assert_eq!(b.events_past_file_cap(), 40);
        assert_eq!((b.files.len(), b.index.len()), (10, 10));
        assert_eq!(b.finish().len(), 10);
    }

    /// Hostile input: a loss before every record. Loss marks merge pairwise
    /// past their cap; the records lost stay exact.
    #[test]
    fn loss_marks_stay_bounded_and_exact() {
        let mut b = Builder::new();
        let n = 3 * MAX_LOSS_MARKS as u64;
        for ts in 0..n {
            b.add_loss(ts, 2);
        }
        assert!(b.losses.len() < MAX_LOSS_MARKS);
        let total: u64 = b.losses.iter().map(|m| m.records).sum();
        assert_eq!(total, 2 * n);
        assert!(b.losses.windows(2).all(|w| w[0].ts < w[1].ts));
        assert_eq!(b.losses[0].ts, 0);
    }

    #[test]
    fn steps_are_one_two_or_five_times_a_power_of_ten() {
        for (raw, step) in [
            (0.13, 0.2),
            (1.0, 1.0),
            (1.01, 2.0),
            (2.3, 5.0),
            (7.0, 10.0),
            (13.6, 20.0),
            (4.0e9, 5.0e9),
        ] {
            assert!((nice_step(raw) - step).abs() < 1e-9 * step, "{raw}");
        }
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn scales_cover_the_data_in_whole_round_steps() {
        let s = Scale::new(68.0 * 1024.0, &BYTE_UNITS);
        assert_eq!((s.name, s.step, s.steps), ("KiB", 20.0, 4));
        let labels: Vec<String> = s.ticks().map(|t| t.1).collect();
        assert_eq!(labels, ["0 KiB", "20 KiB", "40 KiB", "60 KiB", "80 KiB"]);
        let t = Scale::new(1.23e6, &TIME_UNITS);
        assert_eq!((t.name, t.step, t.steps, t.decimals), ("ms", 0.5, 3, 1));
        assert!(t.end() >= 1.23e6);
        // Not 3 steps of 500 MiB for 1024 MiB of data: a third wasted.
        let g = Scale::new(1_073_725_440.0, &BYTE_UNITS);
        assert_eq!((g.name, g.step, g.steps), ("MiB", 200.0, 6));
        // Absurd spans still give a few ticks.
        let far = Scale::new(u64::MAX as f64, &TIME_UNITS);
        assert!(far.steps <= 100 && far.end().is_finite());
    }

    #[test]
    fn marks_keep_a_minimum_size_inside_the_plot() {
        assert_eq!(visible(10.0, 10.1, 0.0, 100.0), (10.0, MIN_MARK));
        assert_eq!(
            visible(99.0, 99.5, 0.0, 100.0),
            (100.0 - MIN_MARK, MIN_MARK)
        );
        assert_eq!(visible(-5.0, 300.0, 0.0, 100.0), (0.0, 100.0));
    }

    #[test]
    fn names_are_escaped_for_xml() {
        // Markup characters as entities; a control character shown escaped
        // (text::shown), never raw: XML 1.0 cannot carry it.
        let e = esc("a<b>&\"c'\u{1}");
        assert!(e.starts_with("a&lt;b&gt;&amp;&quot;c&apos;"), "{e}");
        assert!(!e.contains('\u{1}'), "{e}");
    }
}
