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
const WIDTH: f64 = 1080.0;
const HEIGHT: f64 = 680.0;
/// The plot: its top left corner and size.
const LEFT: f64 = 90.0;
const TOP: f64 = 60.0;
const PW: f64 = 670.0;
const PH: f64 = 420.0;
/// The offset histogram, right of the plot and on its offset axis.
const HIST_X: f64 = LEFT + PW + 10.0;
const HIST_W: f64 = 100.0;
/// The cumulative bytes panel, below the plot and on its time axis.
const CURVE_Y: f64 = TOP + PH + 35.0;
const CURVE_H: f64 = 110.0;
/// The legend's left edge.
const LEGEND_X: f64 = HIST_X + HIST_W + 20.0;
/// Offset buckets of a file's histogram: 512 bytes a file that has page-ins.
pub const HIST_BUCKETS: usize = 64;
/// The smallest histogram bucket: a page.
const HIST_MIN_BUCKET: u64 = 4096;
/// Points of one file's cumulative bytes curve, at most; past it every
/// second goes (see [`Curve`]).
pub const CURVE_POINTS: usize = 512;
/// Curve points over all files: 16 bytes each. Reaching it halves every
/// file's point budget, down to [`MIN_CURVE_POINTS`].
pub const MAX_CURVE_POINTS: usize = 1_000_000;
const MIN_CURVE_POINTS: usize = 8;
/// Idle stretches cut from a compressed time axis, the longest first.
pub const MAX_BREAKS: usize = 12;
/// The width a cut idle stretch is drawn at.
pub const BREAK_W: f64 = 18.0;
/// An idle stretch is cut when longer than this and than [`BREAK_SHARE`]
/// of the span: page-ins take tens of µs, so a burst's own spacing stays
/// to scale.
pub const BREAK_MIN_NS: u64 = 1_000_000;
/// ... and than this fraction of the span (1/20): a shorter one takes
/// under 34 px of the plot, already less than two breaks would.
pub const BREAK_SHARE: u64 = 20;
/// Pixels kept between two time tick labels.
const TICK_GAP: f64 = 70.0;
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
    /// Earliest start and latest end of every page-in, map and unmap seen.
    span: Option<(u64, u64)>,
    /// The largest end offset of every page-in seen.
    max_end_offset: u64,
    /// Bytes of every page-in seen, by offset.
    pub histogram: Histogram,
    /// Bytes of every page-in seen, over time.
    pub curve: Curve,
}

/// Bytes paged in per offset bucket, exact for every page-in seen in a
/// fixed number of buckets: a page-in past the last bucket doubles the
/// bucket width, merging neighbours.
///
/// Invariants: `bytes` is empty or [`HIST_BUCKETS`] long; `width` is a power
/// of two from [`HIST_MIN_BUCKET`] to 2^58, so the buckets cover every u64
/// offset; the buckets sum to `total` (saturating).
#[derive(Clone, Debug)]
pub struct Histogram {
    width: u64,
    bytes: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            width: HIST_MIN_BUCKET,
            bytes: Vec::new(),
            total: 0,
        }
    }
}

impl Histogram {
    /// Counts `size` bytes from `offset`. Bytes past 2^64 (a damaged
    /// recording) count in the last bucket, so the total stays exact.
    pub fn add(&mut self, offset: u64, size: u64) {
        if size == 0 {
            return;
        }
        if self.bytes.is_empty() {
            self.bytes = vec![0; HIST_BUCKETS];
        }
        let end = offset.saturating_add(size);
        let covered = |w: u64| u128::from(w) * HIST_BUCKETS as u128;
        while u128::from(end) > covered(self.width) {
            let merged: Vec<u64> = self
                .bytes
                .chunks(2)
                .map(|p| p.iter().fold(0u64, |n, b| n.saturating_add(*b)))
                .chain(std::iter::repeat(0))
                .take(HIST_BUCKETS)
                .collect();
            self.bytes = merged;
            self.width = self.width.saturating_mul(2);
        }
        let w = u128::from(self.width);
        let (lo, hi) = (u128::from(offset), u128::from(end));
        let first = (lo / w) as usize;
        let last = ((hi - 1) / w) as usize;
        for i in first..=last.min(HIST_BUCKETS - 1) {
            let from = lo.max(i as u128 * w);
            let to = hi.min((i as u128 + 1) * w);
            if let Some(b) = self.bytes.get_mut(i) {
                *b = b.saturating_add(u64::try_from(to - from).unwrap_or(u64::MAX));
            }
        }
        if let Some(b) = self.bytes.get_mut(last.min(HIST_BUCKETS - 1)) {
            *b = b.saturating_add(size - (end - offset));
        }
        self.total = self.total.saturating_add(size);
    }

    /// Each bucket: its first offset, its width and its bytes.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let w = self.width;
        self.bytes
            .iter()
            .enumerate()
            .map(move |(i, b)| ((i as u64).saturating_mul(w), w, *b))
    }

    /// Bytes of every page-in counted.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Cumulative bytes paged in over time: after a page-in of time `ts`, the
/// bytes of all page-ins so far. Every point is exact; past its budget the
/// curve drops every second point (the last stays), so what is kept is
/// spread over the page-ins, dense where they are.
///
/// Invariants: `points` are in time order (a record older than the one
/// before takes its time) and their bytes never decrease; the last point's
/// bytes are `total`.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    points: Vec<(u64, u64)>,
    total: u64,
}

impl Curve {
    fn push(&mut self, ts: u64, size: u64) {
        self.total = self.total.saturating_add(size);
        let ts = self.points.last().map_or(ts, |p| p.0.max(ts));
        self.points.push((ts, self.total));
    }

    /// Keeps at most `cap` points; returns how many went.
    fn thin_to(&mut self, cap: usize) -> usize {
        let before = self.points.len();
        while self.points.len() > cap.max(1) {
            let last = self.points.len() - 1;
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 0 || i - 1 == last
            });
        }
        before - self.points.len()
    }

    /// The points: time and bytes so far.
    pub fn points(&self) -> &[(u64, u64)] {
        &self.points
    }

    /// Bytes of every page-in.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Characters of a path's last part kept in a picture's file name: with the
/// id (9) and the extension (4) it stays under the 255 bytes a file name
/// may have (NAME_MAX on macOS and Linux), which a last part can reach alone.
pub const STEM_NAME_MAX: usize = 200;

impl FileEvents {
    /// A name usable as a file name: the path's last part (ASCII letters,
    /// digits and `.-_`, others as `_`, at most [`STEM_NAME_MAX`]) and the
    /// vnode id.
    pub fn file_stem(&self) -> String {
        let base = self
            .path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .filter(|b| !b.is_empty())
            .unwrap_or("vnode");
        let clean: String = base
            .chars()
            .take(STEM_NAME_MAX)
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
/// `losses` at most [`MAX_LOSS_MARKS`] marks. Every page-in seen counts in
/// its file's histogram and curve, whatever the sampling; `curve_points`
/// (held over all files) stays at most the larger of [`MAX_CURVE_POINTS`]
/// and [`MIN_CURVE_POINTS`] a file, each file holding at most `curve_cap`.
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
    curve_points: usize,
    curve_cap: usize,
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
            curve_points: 0,
            curve_cap: CURVE_POINTS,
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
        self.bound_curves();
        let Some(f) = self.files.get_mut(i) else {
            return;
        };
        if f.path.is_none() {
            f.path = ev.path.as_ref().map(|p| p.text.to_string());
        }
        let mut end = r.timestamp_ns;
        match &r.event {
            Event::Pagein {
                offset,
                size,
                duration_ns,
                ..
            } => {
                f.pageins_seen += 1;
                let (offset, size) = (u64::try_from(*offset).unwrap_or(0), u64::from(*size));
                end = end.saturating_add(u64::from(*duration_ns));
                f.max_end_offset = f.max_end_offset.max(offset.saturating_add(size));
                f.histogram.add(offset, size);
                f.curve.push(r.timestamp_ns, size);
                self.curve_points += 1;
                self.curve_points -= f.curve.thin_to(self.curve_cap);
            }
            Event::Mmap { .. } => f.maps_seen += 1,
            Event::Mnomap { .. } => f.unmaps_seen += 1,
            _ => return,
        }
        f.span = Some(match f.span {
            Some((a, b)) => (a.min(r.timestamp_ns), b.max(end)),
            None => (r.timestamp_ns, end),
        });
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

    /// Halves every file's curve budget once the curves together reach
    /// theirs.
    fn bound_curves(&mut self) {
        if self.curve_points < MAX_CURVE_POINTS || self.curve_cap <= MIN_CURVE_POINTS {
            return;
        }
        self.curve_cap = (self.curve_cap / 2).max(MIN_CURVE_POINTS);
        let cap = self.curve_cap;
        for f in &mut self.files {
            self.curve_points -= f.curve.thin_to(cap);
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

/// `ns` in the largest of s, ms and µs it reaches, with `digits` decimals
/// for each of them.
fn in_unit(ns: u64, digits: [usize; 3]) -> String {
    let [s, ms, us] = digits;
    if ns >= 1_000_000_000 {
        format!("{:.s$} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.ms$} ms", ns as f64 / 1e6)
    } else {
        format!("{:.us$} µs", ns as f64 / 1e3)
    }
}

/// A time since the first event: `+1.250 s`, `+3.25 ms`, `+12.5 µs`.
fn time_label(ns: u64) -> String {
    format!("+{}", in_unit(ns, [3, 2, 1]))
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

/// How time runs along the x axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeAxis {
    /// To scale from the first event to the last.
    #[default]
    Linear,
    /// To scale, but idle stretches longer than [`BREAK_MIN_NS`] and a
    /// [`BREAK_SHARE`]th of the span are cut to [`BREAK_W`] pixels each.
    Compressed,
}

/// A stretch of the time axis: real times `from..=to` drawn over
/// `x0..=x1`; a break is a cut idle stretch.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Piece {
    from: u64,
    to: u64,
    x0: f64,
    x1: f64,
    is_break: bool,
}

/// Real time (ns since boot) to x, monotonic: either one round [`Scale`]
/// from `t0`, or contiguous pieces (each `to` the next `from`, each `x1`
/// the next `x0`) from `LEFT` to `LEFT + PW`.
#[derive(Clone, Debug)]
enum TimeMap {
    Linear {
        t0: u64,
        scale: Scale,
    },
    Compressed {
        t0: u64,
        pieces: Vec<Piece>,
        /// Idle stretches longer than this were cut.
        threshold: u64,
    },
}

impl TimeMap {
    /// The map of `axis` for activity `spans` (start, end; unsorted).
    fn new(axis: TimeAxis, mut spans: Vec<(u64, u64)>) -> TimeMap {
        let t0 = spans.iter().map(|s| s.0).min().unwrap_or(0);
        let t1 = spans.iter().map(|s| s.1).max().unwrap_or(0).max(t0);
        let linear = TimeMap::Linear {
            t0,
            scale: Scale::new(t1.saturating_sub(t0).max(1_000) as f64, &TIME_UNITS),
        };
        if axis == TimeAxis::Linear {
            return linear;
        }
        let span = t1 - t0;
        let threshold = BREAK_MIN_NS.max(span / BREAK_SHARE);
        spans.sort_unstable();
        let mut gaps = Vec::new();
        let mut reach = t0;
        for (a, b) in spans {
            if a > reach && a - reach > threshold {
                gaps.push((reach, a));
            }
            reach = reach.max(b.max(a));
        }
        if gaps.is_empty() {
            return linear;
        }
        // The longest, back in time order.
        gaps.sort_unstable_by_key(|g| std::cmp::Reverse(g.1 - g.0));
        gaps.truncate(MAX_BREAKS);
        gaps.sort_unstable();
        // Segments between the breaks share what the breaks leave, a few
        // pixels each at least so an instant stays visible.
        let mut segments = Vec::with_capacity(gaps.len() + 1);
        let mut from = t0;
        for &(a, b) in &gaps {
            segments.push((from, a));
            from = b;
        }
        segments.push((from, t1));
        let active: u64 = segments
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.1 - s.0));
        let min_seg = 2.0 * MIN_MARK;
        let free = PW - gaps.len() as f64 * BREAK_W - segments.len() as f64 * min_seg;
        let mut pieces = Vec::with_capacity(2 * segments.len());
        let mut x = LEFT;
        for (i, &(a, b)) in segments.iter().enumerate() {
            let share = if active == 0 {
                1.0 / segments.len() as f64
            } else {
                (b - a) as f64 / active as f64
            };
            let x1 = x + min_seg + free * share;
            pieces.push(Piece {
                from: a,
                to: b,
                x0: x,
                x1,
                is_break: false,
            });
            x = x1;
            if let Some(&(ga, gb)) = gaps.get(i) {
                pieces.push(Piece {
                    from: ga,
                    to: gb,
                    x0: x,
                    x1: x + BREAK_W,
                    is_break: true,
                });
                x += BREAK_W;
            }
        }
        // Float sums may stray a hair; the last piece ends the plot.
        if let Some(last) = pieces.last_mut() {
            last.x1 = LEFT + PW;
        }
        TimeMap::Compressed {
            t0,
            pieces,
            threshold,
        }
    }

    /// The time of the axis' origin.
    fn t0(&self) -> u64 {
        match self {
            TimeMap::Linear { t0, .. } | TimeMap::Compressed { t0, .. } => *t0,
        }
    }

    /// Where time `t` falls; times outside the axis sit at its ends.
    fn x(&self, t: u64) -> f64 {
        match self {
            TimeMap::Linear { t0, scale } => LEFT + scale.frac(t.saturating_sub(*t0)) * PW,
            TimeMap::Compressed { pieces, .. } => {
                let i = pieces.partition_point(|p| p.to < t);
                let Some(p) = pieces.get(i) else {
                    return LEFT + PW;
                };
                if t <= p.from {
                    return p.x0;
                }
                let frac = (t - p.from) as f64 / (p.to - p.from).max(1) as f64;
                p.x0 + frac.clamp(0.0, 1.0) * (p.x1 - p.x0)
            }
        }
    }

    /// The ticks: x and label (real time since `t0`), round within each
    /// stretch drawn to scale, at least [`TICK_GAP`] apart.
    fn ticks(&self) -> Vec<(f64, String)> {
        match self {
            TimeMap::Linear { scale, .. } => scale
                .ticks()
                .map(|(v, label)| (LEFT + (v / scale.end()).clamp(0.0, 1.0) * PW, label))
                .collect(),
            TimeMap::Compressed { t0, pieces, .. } => {
                let mut ticks: Vec<(f64, String)> = Vec::new();
                for p in pieces.iter().filter(|p| !p.is_break) {
                    let (a, b) = (p.from - t0, p.to - t0);
                    let room = ((p.x1 - p.x0) / TICK_GAP).floor().max(1.0);
                    let step = nice_step((b - a) as f64 / room).max(1.0);
                    let (unit, name) = TIME_UNITS
                        .iter()
                        .copied()
                        .rfind(|(u, _)| (b as f64).max(step) >= *u)
                        .unwrap_or((1.0, "ns"));
                    let decimals = (-(step / unit).log10().floor()).clamp(0.0, 9.0) as usize;
                    // Counted, not summed: near 2^64 ns a step may be
                    // below a float's resolution.
                    let first = (a as f64 / step).ceil();
                    let count = ((b as f64 / step).floor() - first).clamp(0.0, 100.0) as u32;
                    for k in 0..=count {
                        let v = (first + f64::from(k)) * step;
                        if v > b as f64 {
                            break;
                        }
                        let xp = self.x(t0.saturating_add(v as u64));
                        if ticks.last().is_none_or(|l| xp - l.0 >= TICK_GAP) {
                            ticks.push((xp, format!("{:.*} {name}", decimals, v / unit)));
                        }
                    }
                }
                ticks
            }
        }
    }

    /// The cut idle stretches.
    fn breaks(&self) -> impl Iterator<Item = &Piece> {
        let pieces = match self {
            TimeMap::Compressed { pieces, .. } => pieces.as_slice(),
            TimeMap::Linear { .. } => &[],
        };
        pieces.iter().filter(|p| p.is_break)
    }
}

/// A duration for people: `4.8 s`, `12.5 ms`, `350 µs`.
fn duration_label(ns: u64) -> String {
    in_unit(ns, [1, 1, 0])
}

/// Draws one file's heatmap as a standalone SVG document, time to scale.
pub fn render(f: &FileEvents) -> String {
    render_with(f, TimeAxis::Linear)
}

/// Draws one file's heatmap with time along `axis`.
pub fn render_with(f: &FileEvents, axis: TimeAxis) -> String {
    let spans: Vec<(u64, u64)> = f
        .pageins
        .iter()
        .map(|b| (b.ts, end_ns(b)))
        .chain(f.maps.iter().chain(&f.unmaps).map(|m| (m.ts, m.ts)))
        .chain(f.span.into_iter().flat_map(|(a, b)| [(a, a), (b, b)]))
        .chain(f.curve.points.iter().map(|p| (p.0, p.0)))
        .collect();
    let tm = TimeMap::new(axis, spans);
    let t0 = tm.t0();
    let max_off = f
        .pageins
        .iter()
        .map(end_offset)
        .max()
        .unwrap_or(0)
        .max(f.max_end_offset)
        .max(4096);
    let ty = Scale::new(max_off as f64, &BYTE_UNITS);
    let (pw, ph) = (PW, PH);
    let x = |t: u64| tm.x(t);
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
    let ticks = tm.ticks();
    for (xp, label) in &ticks {
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
            esc(label)
        );
    }
    let cut = match &tm {
        TimeMap::Compressed { threshold, .. } => format!(
            " (idle stretches over {} cut, hatched)",
            duration_label(*threshold)
        ),
        TimeMap::Linear { .. } => String::new(),
    };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time since first event{}</text>"#,
        LEFT + pw / 2.0,
        CURVE_Y + CURVE_H + 28.0,
        esc(&cut)
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
            ((x(b.ts) - LEFT) / PW, ty.frac(b.offset))
        });
    }
    let _ = writeln!(s, "</g>");
    breaks(&mut s, &tm);
    histogram(&mut s, f, &y);
    cumulative(&mut s, f, &tm, &ticks);
    losses(&mut s, f, t0, &x);
    legend(&mut s, &pids, &colors, lost);
    let _ = writeln!(s, "</svg>");
    s
}

/// The cut idle stretches: hatched bands across the plot, each labelled
/// with its real length.
fn breaks(s: &mut String, tm: &TimeMap) {
    if tm.breaks().next().is_none() {
        return;
    }
    let _ = writeln!(
        s,
        r##"<g id="breaks"><defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f0f0f0"/><line x1="0" y1="0" x2="0" y2="6" stroke="#bbb" stroke-width="2"/></pattern></defs>"##
    );
    for p in tm.breaks() {
        let idle = duration_label(p.to - p.from);
        let (cx, cy) = ((p.x0 + p.x1) / 2.0, TOP + PH / 2.0);
        let _ = writeln!(
            s,
            r##"<g class="break"><rect x="{:.2}" y="{TOP}" width="{:.2}" height="{PH}" fill="url(#hatch)"/><text x="{cx:.2}" y="{cy:.1}" text-anchor="middle" dominant-baseline="middle" fill="#555" font-size="11" transform="rotate(-90 {cx:.2} {cy:.1})">⋯ {idle} idle ⋯</text><title>{idle} idle, from {} to {}, cut</title></g>"##,
            p.x0,
            p.x1 - p.x0,
            time_label(p.from - tm.t0()),
            time_label(p.to - tm.t0()),
        );
    }
    let _ = writeln!(s, "</g>");
}

/// Bytes paged in per offset bucket, every page-in counted: bars right of
/// the plot on its offset axis, the longest the busiest bucket.
fn histogram(s: &mut String, f: &FileEvents, y: &impl Fn(u64) -> f64) {
    let h = &f.histogram;
    let top = h.buckets().map(|b| b.2).max().unwrap_or(0);
    let _ = writeln!(
        s,
        r##"<g id="histogram"><rect x="{HIST_X}" y="{TOP}" width="{HIST_W}" height="{PH}" fill="#fafafa" stroke="#333"/>"##
    );
    for (from, width, bytes) in h.buckets().filter(|b| b.2 > 0) {
        let to = from.saturating_add(width);
        let (y0, len) = visible(y(from), y(to), TOP, TOP + PH);
        let share = bytes as f64 / h.total().max(1) as f64;
        let _ = writeln!(
            s,
            r##"<rect class="hist" x="{HIST_X}" y="{y0:.2}" width="{:.2}" height="{:.2}" fill="#4c72b0"><title>{} paged in at offsets {from:#x}–{to:#x} ({:.1} % of the file's)</title></rect>"##,
            (bytes as f64 / top.max(1) as f64 * HIST_W).max(1.0),
            (len - 0.5).max(1.0),
            bytes_label(bytes),
            100.0 * share
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{HIST_X}" y="{}">bytes by offset</text><text x="{HIST_X}" y="{}" fill="#555" font-size="11">bar: {} max</text></g>"##,
        TOP + PH + 34.0,
        TOP + PH + 48.0,
        bytes_label(top)
    );
}

/// Bytes paged in so far against time, every page-in counted: how fast
/// the file was read. On the plot's time axis, ending at the total.
fn cumulative(s: &mut String, f: &FileEvents, tm: &TimeMap, ticks: &[(f64, String)]) {
    let c = &f.curve;
    let sy = Scale::new(c.total().max(1) as f64, &BYTE_UNITS);
    let bottom = CURVE_Y + CURVE_H;
    let y = |b: u64| bottom - sy.frac(b) * CURVE_H;
    let _ = writeln!(
        s,
        r##"<g id="cumulative"><rect x="{LEFT}" y="{CURVE_Y}" width="{PW}" height="{CURVE_H}" fill="#fafafa" stroke="#333"/>"##
    );
    for (xp, _) in ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{xp:.1}" y1="{CURVE_Y}" x2="{xp:.1}" y2="{bottom}" stroke="#ddd"/>"##
        );
    }
    for p in tm.breaks() {
        let _ = writeln!(
            s,
            r##"<rect x="{:.2}" y="{CURVE_Y}" width="{:.2}" height="{CURVE_H}" fill="url(#hatch)"/>"##,
            p.x0,
            p.x1 - p.x0
        );
    }
    for (v, label) in sy.ticks() {
        let yp = bottom - (v / sy.end()).clamp(0.0, 1.0) * CURVE_H;
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{yp:.1}" x2="{LEFT}" y2="{yp:.1}" stroke="#333"/><text class="tick" x="{}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"##,
            LEFT - 4.0,
            LEFT - 6.0,
            yp + 3.0,
            esc(&label)
        );
    }
    if let (Some(first), Some(last)) = (c.points().first(), c.points().last()) {
        // From nothing at the first page-in (its bytes are the first step).
        let mut pts = format!("{:.2},{bottom}", tm.x(first.0));
        for &(t, b) in c.points() {
            let _ = write!(pts, " {:.2},{:.2}", tm.x(t), y(b));
        }
        let _ = writeln!(
            s,
            r##"<polyline id="cumulative-curve" points="{pts}" fill="none" stroke="#4c72b0" stroke-width="1.5"><title>{} paged in by {} page-ins, the last at {}</title></polyline>"##,
            bytes_label(c.total()),
            f.pageins_seen,
            time_label(last.0.saturating_sub(tm.t0()))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="11">bytes paged in so far: {}</text></g>"#,
        LEFT + 6.0,
        CURVE_Y + 14.0,
        bytes_label(c.total())
    );
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
    let (cw, ch) = (PW / cols as f64, PH / rows as f64);
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
    let base = TOP + PH;
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
    let lx = LEGEND_X;
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

    #[test]
    fn file_names_stay_short_and_plain_whatever_the_path() {
        let stem = |path: &str| {
            let mut it = pagein(1, 100, 0xabcd_ef01_0000_0001);
            if let Item::Event(ev) = &mut it {
                ev.path = Some(std::rc::Rc::new(crate::pipeline::PathInfo::new(
                    0xabcd_ef01_0000_0001,
                    path.as_bytes(),
                    false,
                )));
            }
            let mut b = Builder::new();
            b.observe(&it);
            b.finish().remove(0).file_stem()
        };
        assert_eq!(stem("/usr/lib/dyld"), "dyld-abcdef01");
        // A last part of 255 bytes (the most a file system allows) would
        // make a 268-byte name with the id and ".svg": ENAMETOOLONG.
        let s = stem(&format!("/data/{}", "a".repeat(255)));
        assert_eq!(s, format!("{}-abcdef01", "a".repeat(STEM_NAME_MAX)));
        assert!(s.len() + ".svg".len() <= 255);
        // Two bytes a character, one `_` each.
        let s = stem(&format!("/data/{}", "é".repeat(127)));
        assert_eq!(s, format!("{}-abcdef01", "_".repeat(127)));
        assert_eq!(stem("/a/b c/$(x)"), "__x_-abcdef01");
        assert_eq!(stem("/"), "vnode-abcdef01");
    }

    fn pagein_at(ts: u64, offset: i64, size: u32, vnode_id: u64) -> Item {
        let mut it = pagein(ts, 100, vnode_id);
        if let Item::Event(ev) = &mut it {
            ev.rec.event = Event::Pagein {
                offset,
                size,
                duration_ns: 10_000,
                counts: Counts::default(),
                upl_flags: 0,
            };
        }
        it
    }

    fn map_at(ts: u64, vnode_id: u64) -> Item {
        let mut it = pagein(ts, 100, vnode_id);
        if let Item::Event(ev) = &mut it {
            ev.rec.kind = EventKind::Mmap;
            ev.rec.event = Event::Mmap {
                fflags: 1,
                vid: 1,
                duration_ns: 5,
                counts: Counts::default(),
            };
        }
        it
    }

    /// A launch: 2 ms of page-ins, `sleep` 4.8 s, 2 ms more.
    fn burst_sleep_burst() -> FileEvents {
        let mut b = Builder::new();
        for i in 0..20u64 {
            b.observe(&pagein_at(
                1_000_000 + i * 100_000,
                (i * 4096) as i64,
                4096,
                7,
            ));
        }
        for i in 0..20u64 {
            let t = 4_803_000_000 + i * 100_000;
            b.observe(&pagein_at(t, ((64 + i) * 4096) as i64, 4096, 7));
        }
        b.finish().remove(0)
    }

    fn map_of(f: &FileEvents, axis: TimeAxis) -> TimeMap {
        let spans = f.pageins.iter().map(|b| (b.ts, end_ns(b))).collect();
        TimeMap::new(axis, spans)
    }

    #[test]
    fn a_compressed_axis_cuts_a_long_idle_stretch_to_a_labelled_band() {
        let f = burst_sleep_burst();
        let tm = map_of(&f, TimeAxis::Compressed);
        let breaks: Vec<&Piece> = tm.breaks().collect();
        assert_eq!(breaks.len(), 1, "{tm:?}");
        // The idle stretch: from the first burst's end to the second's start.
        assert_eq!((breaks[0].from, breaks[0].to), (2_910_000, 4_803_000_000));
        assert!((breaks[0].x1 - breaks[0].x0 - BREAK_W).abs() < 1e-9);
        // The bursts share the rest: each about half the plot, not 0.04 %.
        let first = tm.x(2_910_000) - tm.x(1_000_000);
        assert!(first > (PW - BREAK_W) / 2.0 - 10.0, "{first}");
        let linear = map_of(&f, TimeAxis::Linear);
        assert!(linear.x(2_910_000) - linear.x(1_000_000) < 1.0);
        assert_eq!(linear.breaks().count(), 0);
        // Drawn as a hatched band with its real length; ticks label real
        // times: the second burst's start is 4.802 s after the first event.
        let svg = render_with(&f, TimeAxis::Compressed);
        assert!(svg.contains(">⋯ 4.8 s idle ⋯<"), "{svg}");
        assert!(
            svg.contains(r#"class="tick""#) && svg.contains(">4.8020 s<"),
            "{svg}"
        );
        // Over 5 % of the 4.804 s span.
        assert!(svg.contains("(idle stretches over 240.2 ms cut, hatched)"));
        let plain = render_with(&f, TimeAxis::Linear);
        assert!(!plain.contains("idle") && plain == render(&f));
    }

    #[test]
    fn the_compressed_mapping_is_monotonic_and_keeps_order() {
        let f = burst_sleep_burst();
        let tm = map_of(&f, TimeAxis::Compressed);
        let mut probes: Vec<u64> = (0..2000u64).map(|i| i * 2_500_000).collect();
        probes.extend([0, 1, 2_910_000, 4_803_000_000, u64::MAX - 1, u64::MAX]);
        probes.sort_unstable();
        let xs: Vec<f64> = probes.iter().map(|t| tm.x(*t)).collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]), "{xs:?}");
        assert_eq!((xs[0], *xs.last().unwrap()), (LEFT, LEFT + PW));
        // Distinct page-ins stay distinct and in order.
        let starts: Vec<f64> = f.pageins.iter().map(|b| tm.x(b.ts)).collect();
        assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
        // Short gaps (100 µs apart) are not cut.
        let short = map_of(&f, TimeAxis::Compressed);
        assert_eq!(short.breaks().count(), 1);
    }

    /// Map lines, page-ins and loss ▲ all go through the same mapping.
    #[test]
    fn marks_lines_and_losses_share_the_compressed_mapping() {
        let mut b = Builder::new();
        b.observe(&pagein_at(1_000_000, 0, 4096, 7));
        b.observe(&Item::Loss(Loss::Gap { shard: 0, slots: 5 }));
        b.observe(&map_at(3_000_000_000, 7));
        b.observe(&pagein_at(3_000_500_000, 8192, 4096, 7));
        let f = b.finish().remove(0);
        let spans = f
            .pageins
            .iter()
            .map(|b| (b.ts, end_ns(b)))
            .chain(f.maps.iter().map(|m| (m.ts, m.ts)))
            .collect();
        let tm = TimeMap::new(TimeAxis::Compressed, spans);
        let cut = *tm.breaks().next().unwrap();
        assert_eq!(tm.breaks().count(), 1);
        let svg = render_with(&f, TimeAxis::Compressed);
        let map_x = tm.x(3_000_000_000);
        assert_eq!(map_x, cut.x1, "right after the break");
        assert!(
            svg.contains(&format!(r#"class="map" x1="{map_x:.2}""#)),
            "{svg}"
        );
        let pagein_x = tm.x(3_000_500_000);
        assert!(svg.contains(&format!(r#"class="pagein" x="{pagein_x:.2}""#)));
        // The loss came just before the map: at its time, its x.
        let loss = format!(r#"class="loss" points="{},"#, map_x.round() as i64);
        assert!(svg.contains(&loss), "{loss} in {svg}");
        // Tooltips keep real times.
        assert!(svg.contains("map at +2.999 s"), "{svg}");
    }

    /// The histogram and the curve count every page-in, past the mark cap
    /// too; the curve ends at the total.
    #[test]
    fn the_histogram_and_curve_count_every_page_in_exactly() {
        let mut b = Builder::with_cap(100);
        let mut total = 0u64;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let size = (seed % 64 + 1) as u32 * 4096;
            // The file grows: offsets reach past 1 GiB, widening buckets.
            let offset = (seed >> 20) % (1 + i * 65_536);
            total += u64::from(size);
            b.observe(&pagein_at(i * 1000, offset as i64, size, 3));
        }
        let f = b.finish().remove(0);
        assert!(
            f.not_drawn > 19_000,
            "the mark cap thinned: {}",
            f.not_drawn
        );
        let buckets: u64 = f.histogram.buckets().map(|b| b.2).sum();
        assert_eq!((buckets, f.histogram.total()), (total, total));
        assert_eq!(f.histogram.buckets().count(), HIST_BUCKETS);
        let pts = f.curve.points();
        assert!(pts.len() <= CURVE_POINTS);
        assert_eq!(pts.last().unwrap(), &(19_999_000, total));
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let svg = render(&f);
        assert!(svg.contains(r#"id="cumulative-curve""#));
        assert!(svg.contains(&format!("bytes paged in so far: {}", bytes_label(total))));
    }

    #[test]
    fn histogram_buckets_split_page_ins_and_saturate() {
        let mut h = Histogram::default();
        // Across two 4 KiB buckets: 1 KiB in the first, 3 in the second.
        h.add(3 * 1024, 4096);
        let b: Vec<(u64, u64, u64)> = h.buckets().filter(|b| b.2 > 0).collect();
        assert_eq!(b, [(0, 4096, 1024), (4096, 4096, 3072)]);
        // Past 2^64: the buckets cover all of it, the total stays exact.
        h.add(u64::MAX - 5, 100);
        h.add(u64::MAX, u64::MAX);
        let sum = h.buckets().fold(0u64, |n, b| n.saturating_add(b.2));
        assert_eq!((sum, h.total()), (u64::MAX, u64::MAX));
        assert_eq!(h.buckets().last().unwrap().1, 1 << 58);
        let mut h = Histogram::default();
        h.add(u64::MAX - 5, 100);
        assert_eq!(h.buckets().map(|b| b.2).sum::<u64>(), 100);
    }

    #[test]
    fn a_thinned_curve_keeps_exact_points_and_its_last() {
        let mut c = Curve::default();
        for i in 0..1001u64 {
            c.push(i, 10);
        }
        assert_eq!(c.thin_to(100), 1001 - c.points().len());
        assert!(c.points().len() <= 100);
        assert!(c.points().iter().all(|(t, b)| *b == (t + 1) * 10));
        assert_eq!(c.points().last(), Some(&(1000, 10_010)));
        // A record out of order takes its predecessor's time.
        c.push(3, 1);
        assert_eq!(c.points().last(), Some(&(1000, 10_011)));
    }

    /// Hostile times: at 0, at the end of time, all equal.
    #[test]
    fn hostile_times_do_not_break_either_axis() {
        let cases: [&[u64]; 4] = [
            &[0, 0, 0],
            &[u64::MAX, u64::MAX],
            &[0, u64::MAX],
            &[0, 5_000_000_000, u64::MAX - 1, u64::MAX],
        ];
        for times in cases {
            let mut b = Builder::new();
            for (i, t) in times.iter().enumerate() {
                b.observe(&pagein_at(*t, i as i64 * 4096, 4096, 5));
                b.observe(&map_at(*t, 5));
            }
            let f = b.finish().remove(0);
            for axis in [TimeAxis::Linear, TimeAxis::Compressed] {
                let svg = render_with(&f, axis);
                assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
                let tm = map_of(&f, axis);
                for t in times {
                    let x = tm.x(*t);
                    assert!((LEFT..=LEFT + PW).contains(&x), "{times:?} {axis:?}: {x}");
                }
            }
        }
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
