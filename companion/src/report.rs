//! The lifecycle report: per file, its mapped epochs (first `VNOP_MMAP` ...
//! `VNOP_MNOMAP`), the usecount at each step and whether references balance,
//! its page-ins by process, leak suspects, and what was lost.
//!
//! XNU semantics this relies on: `VNOP_MMAP` fires on every map but the
//! usecount goes +1 once per epoch, and MMAP counts are taken before
//! `ubc_map`'s reference; `VNOP_MNOMAP` fires once when the last mapping goes
//! and its counts still include the mapping reference. So an epoch balances
//! when `usecount(MNOMAP) - 1 == usecount(first MMAP)`.
//!
//! Opens hold usecounts too (ABI 1.2): an OPEN takes one, the CLOSE of the
//! last close of that open file drops it. The report keeps each file's live
//! opens by pid, so a reference a live open explains is not called held,
//! and a file still mapped or open at the end names who holds it. A CLOSE
//! without FREAD or FWRITE is vclean's, once for all opens, at a forced
//! unmount (`docs/xnu.md` §9a); a CLOSE no live open matches is a
//! kernel-internal close and is nobody's.

pub mod filter;
pub mod latency;
pub mod sort;
pub mod summary;

pub use filter::{Filter, FilterError, Names};
pub use latency::Latency;
pub use sort::{SortKey, View};
pub use summary::Summary;

use crate::pagesize::{PageBasis, PageSize};
use crate::palette::Palette;
use crate::pipeline::{Item, Totals};
use crate::text::{secs, shown};
use crate::wallclock::{Anchor, shown_time};
use latency::Histogram;
use maptrace_abi::{Counts, Event, EventKind, ProbeMethod};
use rustc_hash::{FxHashMap, FxHashSet};
use schemars::{JsonSchema, Schema};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

/// One MMAP or MNOMAP of an epoch, with the counts it saw.
#[derive(Clone, Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Step {
    /// "mmap" or "mnomap".
    pub kind: &'static str,
    /// Nanoseconds since boot.
    pub ts_ns: u64,
    /// The process.
    pub pid: u32,
    /// Usecount before the operation (`None`: not measured).
    pub usecount: Option<u16>,
    /// Iocount before the operation (`None`: not measured).
    pub iocount: Option<u16>,
    /// For mmap: "mmap" (an mmap(2) call) or "exec" (exec or loader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub via: Option<&'static str>,
}

/// What the usecounts of an epoch say.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The usecount came back to where it was before the first map.
    Balanced,
    /// Fewer references after than before (e.g. the opener closed its fd
    /// while mapped): normal.
    Released,
    /// More references after the last unmap than before the first map, but
    /// no more than the exec'ing processes' text references (`p_textvp`),
    /// which exit releases after the last unmap: not a leak.
    TextRef,
    /// More references after the last unmap than before the first map, but
    /// no more than the opens that were live at the unmap and not at the
    /// first map (and exec's text references): not a leak.
    OpenRef,
    /// More references after the last unmap than before the first map.
    Held,
    /// Still mapped at the end of the trace.
    Open,
    /// Counts missing, or the epoch began before the trace.
    Unknown,
}

/// One mapped epoch of a file.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Epoch {
    /// First MMAP (`None`: mapped before the trace began).
    pub start_ns: Option<u64>,
    /// The MNOMAP (`None`: still mapped at the end).
    pub end_ns: Option<u64>,
    /// `VNOP_MMAP`s in the epoch.
    pub maps: u64,
    /// Of those, from mmap(2) calls.
    pub mmap_calls: u64,
    /// Of those, from exec or the loader.
    pub exec_maps: u64,
    /// Processes that exec-mapped the file in this epoch (each may hold a
    /// text reference at the last unmap).
    pub exec_pids: Vec<u32>,
    /// Usecount before the first map.
    pub usecount_before: Option<u16>,
    /// Usecount at the MNOMAP (includes the mapping reference).
    pub usecount_at_unmap: Option<u16>,
    /// `(usecount_at_unmap - 1) - usecount_before`.
    pub balance: Option<i32>,
    /// Live opens (OPEN not yet matched by a CLOSE) at the first map.
    pub opens_before: u32,
    /// Live opens at the last unmap.
    pub opens_at_unmap: u32,
    /// A forced unmount closed the file during the epoch (vclean's CLOSE).
    pub forced_unmount: bool,
    /// What that means.
    pub verdict: Verdict,
    /// Every MMAP and the MNOMAP, in order; past [`MAX_STEPS`] maps only
    /// the MNOMAP is kept.
    pub steps: Vec<Step>,
    /// MMAPs left out of `steps` (counted in `maps`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub steps_not_kept: u64,
    /// A later epoch started at or below `usecount_before`: a reference
    /// this one held came back.
    #[serde(skip)]
    pub returned: bool,
}

/// Epochs kept per file: past them, a new epoch replaces the last one
/// unless that one held a reference, so a file mapped and unmapped all
/// trace long keeps its first epochs, its held ones and its latest.
pub const MAX_EPOCHS: usize = 16;

/// Epochs a file keeps in all, held ones included: a file whose every
/// epoch leaks (a leak storm under test) would otherwise keep them all,
/// and scan them all at every new one. Past it the latest finished epoch
/// makes room even if it held a reference; such an epoch is remembered by
/// its usecount before only, to know whether a later one returned it.
pub const MAX_KEPT_EPOCHS: usize = 256;

/// A file's epochs and what is remembered of those not kept.
///
/// Invariant: `kept` holds at most [`MAX_KEPT_EPOCHS`]; `held_not_kept`
/// maps a usecount before to the number of epochs left out that held a
/// reference not yet returned (at most one entry per `u16`).
#[derive(Debug, Default)]
struct Epochs {
    kept: Vec<Epoch>,
    not_kept: u64,
    held_not_kept: BTreeMap<u16, u64>,
}

impl Epochs {
    /// Before an epoch starting at usecount `before` is pushed: tells
    /// earlier ones whether a reference came back, and folds the last one
    /// away when enough are kept and it is not needed (or when the file
    /// keeps all it may).
    fn make_room(&mut self, before: Option<u16>) {
        if let Some(u) = before {
            for old in self.kept.iter_mut() {
                old.returned |= old.usecount_before.is_some_and(|b| u <= b);
            }
            // Those left out that started at or above `u` got theirs back.
            self.held_not_kept.split_off(&u);
        }
        let Some(last) = self.kept.last().filter(|l| l.end_ns.is_some()) else {
            return;
        };
        let held = last.verdict == Verdict::Held;
        if self.kept.len() >= MAX_EPOCHS && !held || self.kept.len() >= MAX_KEPT_EPOCHS {
            if let (true, false, Some(b)) = (held, last.returned, last.usecount_before) {
                *self.held_not_kept.entry(b).or_default() += 1;
            }
            self.kept.pop();
            self.not_kept += 1;
        }
    }

    /// Epochs left out that held a reference not returned by the trace's end.
    fn held_not_returned(&self) -> u64 {
        self.held_not_kept.values().sum()
    }
}

/// MMAP steps kept per epoch: a library every process maps (exec of each
/// one) would otherwise keep one step per map for the whole trace.
pub const MAX_STEPS: usize = 32;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Drops the MMAP step just pushed when [`MAX_STEPS`] are kept already
/// (the MNOMAP is always kept).
fn cap_steps(e: &mut Epoch) {
    if e.steps.len() > MAX_STEPS {
        e.steps.pop();
        e.steps_not_kept += 1;
    }
}

/// Page-in figures.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Pageins {
    /// Clusters read.
    pub count: u64,
    /// Bytes requested.
    pub bytes: u64,
    /// Distinct pages covered, of `page_size` bytes.
    pub distinct_pages: u64,
    /// Bytes of a page in `distinct_pages`: the traced machine's page size,
    /// `--page-size`, or 4096 when not known (see `summary.page_size_from`).
    pub page_size: u64,
    /// First page-in.
    pub first_ns: Option<u64>,
    /// Last page-in.
    pub last_ns: Option<u64>,
    /// Time spent in `VNOP_PAGEIN`.
    pub total_duration_ns: u64,
}

/// One holder of a file's references at the end of the trace.
#[derive(Clone, Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Holder {
    /// The process.
    pub pid: u32,
    /// Its name (PROC record), when known.
    pub comm: Option<String>,
    /// "open" (live opens), "map" (mapped it in the current epoch) or
    /// "text" (exec-mapped it: its text reference).
    pub how: &'static str,
    /// Live opens (for "open"), `VNOP_MMAP`s (for "map"), 1 (for "text").
    pub count: u32,
}

/// Who holds a file still mapped or open at the end of the trace.
#[derive(Clone, Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Holders {
    /// The usecount after the last operation a record of the file saw.
    pub usecount: Option<u16>,
    /// By pid, opens first.
    pub holders: Vec<Holder>,
}

/// A process's part in one file.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, PartialEq, Eq)]
pub struct FileProcess {
    /// The process.
    pub pid: u32,
    /// Its name, when known.
    pub comm: Option<String>,
    /// Its opens of the file.
    pub opens: u64,
    /// Its `VNOP_MMAP`s.
    pub maps: u64,
    /// Its page-ins.
    pub pageins: u64,
    /// Bytes of those.
    pub pagein_bytes: u64,
    /// Last unmaps it caused.
    pub unmaps: u64,
}

/// (File, process) pairs kept over the whole report: one [`FileProcess`]
/// and one set entry each, so the builder stays under ~10 MB of them on
/// any input. Past it a new pair's events fold into its file's
/// `other_processes`; every total stays exact.
pub const MAX_PAIRS: usize = 100_000;

/// Files kept over the whole report: each costs a few hundred bytes before
/// its pages, latency histogram and epochs, so hostile input naming a new
/// vnode in every record would otherwise grow the report without bound.
/// Past it a new file's events are added up in `totals.other_files`;
/// processes keep their exact maps and page-ins.
pub const MAX_FILES: usize = 100_000;

/// Processes kept over the whole report (their figures and names): the
/// pipeline's bound on named pids, one more than XNU's `PID_MAX`, so only
/// input no kernel wrote reaches it. Past it a new pid's events still count
/// for their files, and in `totals.unlisted_process_events`.
pub const MAX_PROCESSES: usize = crate::pipeline::MAX_NAMED_PIDS;

/// The events of files past [`MAX_FILES`], added up by kind (selected
/// events only, like a file's own figures).
#[derive(Clone, Debug, Default, Serialize, JsonSchema, PartialEq, Eq)]
pub struct OtherFiles {
    /// Events folded here.
    pub events: u64,
    /// Their opens.
    pub opens: u64,
    /// Their `VNOP_MMAP`s.
    pub maps: u64,
    /// Their `VNOP_MNOMAP`s (whether each was a last unmap is not known
    /// without the file's history).
    pub mnomaps: u64,
    /// Their page-ins.
    pub pageins: u64,
    /// Bytes of those.
    pub pagein_bytes: u64,
}

/// The events of a file's processes past [`MAX_PAIRS`], added up.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, PartialEq, Eq)]
pub struct OtherProcesses {
    /// Events folded here.
    pub events: u64,
    /// Their opens of the file.
    pub opens: u64,
    /// Their `VNOP_MMAP`s.
    pub maps: u64,
    /// Their page-ins.
    pub pageins: u64,
    /// Bytes of those.
    pub pagein_bytes: u64,
    /// Last unmaps they caused.
    pub unmaps: u64,
}

/// Everything about one file.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FileReport {
    /// The vnode id, 16 hex digits.
    pub vnode: String,
    /// Its path, when a PATH record named it.
    pub path: Option<String>,
    /// Mapped epochs in order (at most [`MAX_EPOCHS`] but for held ones,
    /// and at most [`MAX_KEPT_EPOCHS`]).
    pub epochs: Vec<Epoch>,
    /// Epochs left out of `epochs` (held ones only past
    /// [`MAX_KEPT_EPOCHS`]: see `held_epochs_not_kept`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epochs_not_kept: u64,
    /// Of those, the ones that held a reference no later epoch returned.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_epochs_not_kept: u64,
    /// Page-ins.
    pub pageins: Pageins,
    /// By process, by pid.
    pub by_process: Vec<FileProcess>,
    /// Processes past the report's cap of (file, process) pairs, added up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "OtherProcesses")]
    pub other_processes: Option<OtherProcesses>,
    /// Who holds it at the end (`None`: neither mapped nor open then).
    pub holders: Option<Holders>,
    /// Page-in latency (`None`: no page-in).
    pub latency: Option<Latency>,
    /// The highest usecount any of its events saw.
    pub peak_usecount: Option<u16>,
}

/// Why a file is suspected of leaking a reference.
#[derive(Clone, Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Suspect {
    /// The vnode id.
    pub vnode: String,
    /// Its path.
    pub path: Option<String>,
    /// "still_mapped" or "usecount_not_returned".
    pub reason: &'static str,
    /// In words.
    pub detail: String,
}

/// A process across all files.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, PartialEq, Eq)]
pub struct ProcessReport {
    /// The process.
    pub pid: u32,
    /// Its name (the last PROC record), when known.
    pub comm: Option<String>,
    /// Files it mapped or paged in (past [`MAX_PAIRS`], those of its kept
    /// pairs: see `totals.folded_events`).
    pub files: u64,
    /// Its `VNOP_MMAP`s.
    pub maps: u64,
    /// Its mmap(2) calls (MAC checks).
    pub mmap_calls: u64,
    /// Its page-ins.
    pub pageins: u64,
    /// Bytes of those.
    pub pagein_bytes: u64,
    /// Last unmaps it caused (in files the report keeps: see
    /// [`MAX_FILES`]).
    pub unmaps: u64,
}

/// Distinct pages as disjoint, non-touching ranges of page numbers
/// (`start -> end`, end exclusive). A page-in costs at most one entry
/// whatever its size: a corrupt or hostile record claiming 4 GiB is one
/// range, not a million pages (a 673-byte recording once cost 227 MB here).
#[derive(Clone, Debug, Default)]
struct PageSet {
    ranges: BTreeMap<u64, u64>,
}

impl PageSet {
    /// Adds pages `start..end`.
    fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A range that starts before and reaches `start` absorbs it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        // So do the ranges that start inside (or right after) the new one.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// Pages in the set.
    fn count(&self) -> u64 {
        self.ranges
            .iter()
            .fold(0u64, |n, (s, e)| n.saturating_add(e - s))
    }

    /// Entries held: bounded by the page-ins, not by their sizes.
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.ranges.len()
    }
}

/// Totals and losses.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, PartialEq, Eq)]
pub struct ReportTotals {
    /// Batches read.
    pub batches: u64,
    /// Records read.
    pub events: u64,
    /// Records by kind name.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Files seen.
    pub files: u64,
    /// Processes seen.
    pub processes: u64,
    /// Records the kext dropped.
    pub dropped: u64,
    /// Slots skipped by position gaps.
    pub gap_slots: u64,
    /// Corrupt parts of the stream.
    pub corrupt: u64,
    /// mmap(2) checks with no `VNOP_MMAP` after them on their thread.
    pub unpaired_mmap_calls: u64,
    /// Bytes of a recording's last frame left unread because the file was
    /// cut off inside it (0: not cut).
    pub cut_bytes: u64,
    /// Whether anything was lost (the report may then be incomplete).
    pub incomplete: bool,
    /// Events counted in files' `other_processes`: past [`MAX_PAIRS`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub folded_events: u64,
    /// Events of files past [`MAX_FILES`], added up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "OtherFiles")]
    pub other_files: Option<OtherFiles>,
    /// Events of processes past [`MAX_PROCESSES`]: counted for their files,
    /// listed under no process.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlisted_process_events: u64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Report {
    /// What it covers, in a few figures.
    pub summary: Summary,
    /// Files, in order of first appearance (see [`sort::apply`]).
    pub files: Vec<FileReport>,
    /// Leak suspects.
    pub leak_suspects: Vec<Suspect>,
    /// Processes, by pid.
    pub processes: Vec<ProcessReport>,
    /// Totals and losses.
    pub totals: ReportTotals,
}

/// The name `report --json` carries in its `schema` field.
pub const SCHEMA_NAME: &str = "maptrace.report";
/// The report document's version, under the stream contract's rules
/// (`contract::SCHEMA_VERSION`): adding a field keeps it; renaming,
/// removing or retyping one bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// The document `report --json` writes: which contract, then the report.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Document<'a> {
    /// Always `maptrace.report`.
    #[schemars(extend("const" = "maptrace.report"))]
    pub schema: &'static str,
    /// The document's version.
    pub version: u32,
    /// The report.
    #[serde(flatten)]
    pub report: &'a Report,
}

impl Document<'_> {
    /// `r` under the current contract.
    pub fn of(r: &Report) -> Document<'_> {
        Document {
            schema: SCHEMA_NAME,
            version: SCHEMA_VERSION,
            report: r,
        }
    }
}

/// The JSON Schema of the report document, as `maptrace schema report`
/// prints it and `companion/schema/report.schema.json` holds it.
pub fn schema() -> Schema {
    let mut s = schemars::schema_for!(Document<'static>);
    s.insert("$id".into(), "maptrace.report.schema.json".into());
    s.insert(
        "description".into(),
        format!(
            "The document `maptrace report --json` writes (contract {SCHEMA_NAME} version \
             {SCHEMA_VERSION}): `schema` and `version` first, then the summary, files, leak \
             suspects, processes and totals. Readers ignore fields they do not know."
        )
        .into(),
    );
    s
}

/// [`schema`] as pretty JSON text with a final newline.
pub fn schema_text() -> String {
    let mut t = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    t.push('\n');
    t
}

#[derive(Debug, Default)]
struct FileState {
    vnode_id: u64,
    path: Option<String>,
    epochs: Epochs,
    open: bool,
    pageins: Pageins,
    pages: PageSet,
    latency: Histogram,
    peak_usecount: Option<u16>,
    /// An event the filter selects touched it.
    selected: bool,
    procs: FxHashMap<u32, FileProcess>,
    /// Processes whose pair came past the cap, added up (pid unused).
    other: FileProcess,
    other_events: u64,
    /// Live opens by pid.
    opens: Opens,
    /// The usecount after the last operation a record saw.
    last_use: Option<u16>,
}

/// Processes in pid order (their maps are hashed for speed).
fn by_pid<P: HasPid>(it: impl Iterator<Item = P>) -> Vec<P> {
    let mut v: Vec<P> = it.collect();
    v.sort_unstable_by_key(HasPid::pid);
    v
}

trait HasPid {
    fn pid(&self) -> u32;
}

impl HasPid for FileProcess {
    fn pid(&self) -> u32 {
        self.pid
    }
}

impl HasPid for ProcessReport {
    fn pid(&self) -> u32 {
        self.pid
    }
}

/// `FREAD | FWRITE` (bsd/sys/fcntl.h): every open has one.
const FREAD_FWRITE: u32 = 0x3;
/// `O_EVTONLY` (bsd/sys/fcntl.h): the open's usecount is a kusecount too.
const O_EVTONLY: u32 = 0x8000;

/// Live opens a file tracks: a usecount past `u16::MAX` saturates in the
/// records anyway, and OPENs whose CLOSEs were lost (or a crafted file)
/// would otherwise grow the list, and the scan of it on every map, without
/// bound. Opens past it are not tracked: their closes find another's.
const MAX_LIVE_OPENS: usize = u16::MAX as usize;

/// Live opens of one file by pid: their fmodes.
///
/// Invariant: `tracked` is the number of fmodes in `by_pid`, at most
/// [`MAX_LIVE_OPENS`].
#[derive(Debug, Default)]
struct Opens {
    by_pid: BTreeMap<u32, Vec<u32>>,
    tracked: usize,
}

impl Opens {
    /// An OPEN by `pid` (untracked past [`MAX_LIVE_OPENS`]).
    fn open(&mut self, pid: u32, fmode: u32) {
        if self.tracked < MAX_LIVE_OPENS {
            self.by_pid.entry(pid).or_default().push(fmode);
            self.tracked += 1;
        }
    }

    /// Every open went (vclean's closes on a forced unmount).
    fn clear(&mut self) {
        self.by_pid.clear();
        self.tracked = 0;
    }

    /// Live opens whose references `counts` include: with
    /// [`ProbeMethod::IsInUse`] the usecount excludes kusecounts, so
    /// event-only opens do not count.
    fn live(&self, counts: &Counts) -> u32 {
        let evtonly_seen = counts.method != ProbeMethod::IsInUse;
        self.by_pid
            .values()
            .flatten()
            .filter(|m| evtonly_seen || *m & O_EVTONLY == 0)
            .count() as u32
    }

    /// A CLOSE by `pid`: the closer's own open if it has one (the usual
    /// close), else the oldest other pid's (an inherited descriptor); none
    /// live: a kernel-internal close. Returns whether an open went.
    fn close(&mut self, pid: u32, fflag: u32) -> bool {
        let owner = if self.by_pid.get(&pid).is_some_and(|v| !v.is_empty()) {
            Some(pid)
        } else {
            self.by_pid
                .iter()
                .find(|(_, v)| v.iter().any(|m| *m & FREAD_FWRITE == fflag & FREAD_FWRITE))
                .map(|(p, _)| *p)
        };
        let Some(v) = owner.and_then(|o| self.by_pid.get_mut(&o)) else {
            return false;
        };
        let i = v
            .iter()
            .position(|m| *m & (FREAD_FWRITE | O_EVTONLY) == fflag & (FREAD_FWRITE | O_EVTONLY))
            .unwrap_or(0);
        v.remove(i);
        self.tracked -= 1;
        if v.is_empty() {
            let o = owner.unwrap_or(pid);
            self.by_pid.remove(&o);
        }
        true
    }
}

fn use_of(c: &Counts) -> Option<u16> {
    (c.method != ProbeMethod::None).then_some(c.usecount)
}

/// A process's figures and the files it touched.
type ProcessState = (ProcessReport, FxHashSet<usize>);

/// The state of process `pid`; `None` for a new one once [`MAX_PROCESSES`]
/// are kept.
fn process(procs: &mut FxHashMap<u32, ProcessState>, pid: u32) -> Option<&mut ProcessState> {
    if procs.len() >= MAX_PROCESSES && !procs.contains_key(&pid) {
        return None;
    }
    Some(procs.entry(pid).or_default())
}

/// Builds a [`Report`] from the item stream.
///
/// Invariants: `pairs`, the (file, process) pairs held (each one entry of a
/// file's `procs` and one of its process' file set), never exceeds
/// `pair_cap`; `files` (and `index`) never exceed `file_cap`; `procs` and
/// `names` never exceed [`MAX_PROCESSES`] entries.
#[derive(Debug)]
pub struct Builder {
    files: Vec<FileState>,
    index: FxHashMap<(u64, u64), usize>,
    generation: u64,
    procs: FxHashMap<u32, ProcessState>,
    corrupt: u64,
    filter: Filter,
    /// pid -> name, from PROC records (the latest wins: exec renames).
    names: Names,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
    pairs: usize,
    pair_cap: usize,
    file_cap: usize,
    other_files: Option<OtherFiles>,
    unlisted_process_events: u64,
    /// The clock anchor of `--time wall`: suspect details name UTC times.
    wall: Option<Anchor>,
    /// The page size distinct pages are counted in.
    pages: PageBasis,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::with_pair_cap(MAX_PAIRS)
    }
}

impl Builder {
    /// An empty report that keeps at most `cap` (file, process) pairs.
    pub fn with_pair_cap(cap: usize) -> Builder {
        Builder::with_caps(cap, MAX_FILES)
    }

    /// An empty report that keeps at most `pairs` (file, process) pairs and
    /// `files` files.
    pub fn with_caps(pairs: usize, files: usize) -> Builder {
        Builder {
            files: Vec::new(),
            index: FxHashMap::default(),
            generation: 0,
            procs: FxHashMap::default(),
            corrupt: 0,
            filter: Filter::default(),
            names: Names::default(),
            first_ns: None,
            last_ns: None,
            pairs: 0,
            pair_cap: pairs,
            file_cap: files,
            other_files: None,
            unlisted_process_events: 0,
            wall: None,
            pages: PageBasis::default(),
        }
    }

    /// An empty report.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// An empty report covering what `filter` selects.
    pub fn with_filter(filter: Filter) -> Builder {
        Builder {
            filter,
            ..Builder::default()
        }
    }

    /// Writes the times in suspect details as UTC through `anchor` (the
    /// rest of the report is rendered with [`Summary::set_wall_clock`]).
    pub fn set_wall_clock(&mut self, anchor: Anchor) {
        self.wall = Some(anchor);
    }

    /// Counts distinct pages in `pages.size` (4 KiB, not known, unless
    /// set); call before the first item.
    pub fn set_page_basis(&mut self, pages: PageBasis) {
        self.pages = pages;
    }

    /// Process names by pid, for `--comm`: PROC records fill it.
    pub fn names_mut(&mut self) -> &mut Names {
        &mut self.names
    }

    /// The index of the file `vnode_id` names in this generation; `None`
    /// for a new one once [`MAX_FILES`] are kept.
    fn file(&mut self, vnode_id: u64) -> Option<usize> {
        let key = (self.generation, vnode_id);
        if let Some(&i) = self.index.get(&key) {
            return Some(i);
        }
        if self.files.len() >= self.file_cap {
            return None;
        }
        let i = self.files.len();
        self.index.insert(key, i);
        self.files.push(FileState {
            vnode_id,
            ..FileState::default()
        });
        Some(i)
    }

    /// Adds up a selected event of a file past [`MAX_FILES`]; its process
    /// keeps its map or page-in.
    fn fold_file_event(&mut self, pid: u32, event: &Event) {
        let o = self.other_files.get_or_insert_default();
        o.events += 1;
        match event {
            Event::Open { .. } => o.opens += 1,
            Event::Mmap { .. } => o.maps += 1,
            Event::Mnomap { .. } => o.mnomaps += 1,
            Event::Pagein { size, .. } => {
                o.pageins += 1;
                o.pagein_bytes += u64::from(*size);
            }
            _ => {}
        }
        let Some((p, _)) = process(&mut self.procs, pid) else {
            self.unlisted_process_events += 1;
            return;
        };
        p.pid = pid;
        match event {
            Event::Mmap { .. } => p.maps += 1,
            Event::Pagein { size, .. } => {
                p.pageins += 1;
                p.pagein_bytes += u64::from(*size);
            }
            _ => {}
        }
    }

    /// Takes in one item.
    pub fn observe(&mut self, item: &Item) {
        let ev = match item {
            Item::Event(ev) => ev,
            Item::Reload { .. } => {
                self.generation += 1;
                return;
            }
            Item::Corrupt(_) => {
                self.corrupt += 1;
                return;
            }
            Item::Loss(_) => return,
        };
        let r = &ev.rec;
        let page = self.pages.size.bytes();
        if let Event::Proc { name, .. } = &r.event {
            if self.names.len() < MAX_PROCESSES || self.names.contains_key(&r.pid) {
                self.names
                    .insert(r.pid, String::from_utf8_lossy(name).into_owned());
            }
            return;
        }
        // The trace starts at its first record about files: a MARK (the
        // kext's start, a config change) may be long before.
        if r.kind == EventKind::Mark {
            return;
        }
        let first = *self.first_ns.get_or_insert(r.timestamp_ns);
        self.last_ns = Some(self.last_ns.unwrap_or(0).max(r.timestamp_ns));
        if matches!(r.kind, EventKind::Mark | EventKind::Path) {
            return;
        }
        // Unselected events still shape the file's epochs (see `filter`),
        // but count for no process and no page-in.
        let selected = self
            .filter
            .selects(r.pid, r.timestamp_ns, first, &self.names);
        if r.kind == EventKind::FileMmap {
            if selected {
                match process(&mut self.procs, r.pid) {
                    Some((p, _)) => p.mmap_calls += 1,
                    None => self.unlisted_process_events += 1,
                }
            }
            return;
        }
        if !selected && r.kind == EventKind::Pagein {
            return;
        }
        let Some(fi) = self.file(r.vnode_id) else {
            if selected {
                self.fold_file_event(r.pid, &r.event);
            }
            return;
        };
        let mut unlisted = (ProcessReport::default(), FxHashSet::default());
        let listed = if selected {
            process(&mut self.procs, r.pid)
        } else {
            None
        };
        if selected && listed.is_none() {
            self.unlisted_process_events += 1;
        }
        let (proc_report, proc_files) = listed.unwrap_or(&mut unlisted);
        proc_report.pid = r.pid;
        let Some(f) = self.files.get_mut(fi) else {
            return;
        };
        if f.path.is_none() {
            f.path = ev.path.as_ref().map(|p| p.text.to_string());
        }
        f.selected |= selected;
        if let Event::Mmap { counts, .. }
        | Event::Mnomap { counts, .. }
        | Event::Pagein { counts, .. } = &r.event
        {
            f.peak_usecount = f.peak_usecount.max(use_of(counts));
        }
        let mut unselected_fp = FileProcess::default();
        let folded = selected && !f.procs.contains_key(&r.pid) && self.pairs >= self.pair_cap;
        let fp = if !selected {
            &mut unselected_fp
        } else if folded {
            f.other_events += 1;
            &mut f.other
        } else {
            f.procs.entry(r.pid).or_insert_with(|| {
                self.pairs += 1;
                FileProcess {
                    pid: r.pid,
                    ..FileProcess::default()
                }
            })
        };
        match &r.event {
            Event::Path { .. } | Event::Proc { .. } => return,
            Event::Open { fmode, counts, .. } => {
                f.opens.open(r.pid, *fmode);
                // Taken after the open's reference.
                f.last_use = use_of(counts);
                fp.opens += 1;
            }
            Event::Close { fflag, counts, .. } => {
                // Taken before vnode_rele_ext drops the open's reference
                // (vclean's close drops none).
                let drops = fflag & FREAD_FWRITE != 0
                    && (counts.method != ProbeMethod::IsInUse || fflag & O_EVTONLY == 0);
                f.last_use = use_of(counts).map(|u| u.saturating_sub(u16::from(drops)));
                if fflag & FREAD_FWRITE == 0 {
                    // vclean's one close for every open: a forced unmount.
                    f.opens.clear();
                    if let Some(e) = f.epochs.kept.last_mut().filter(|_| f.open) {
                        e.forced_unmount = true;
                    }
                } else if !f.opens.close(r.pid, *fflag) {
                    // Nobody's: a kernel-internal close.
                    return;
                }
            }
            Event::Mmap { counts, .. } => {
                let via = if ev.call.is_some() { "mmap" } else { "exec" };
                // Before ubc_map, which takes one reference per epoch.
                f.last_use = use_of(counts).map(|u| u + u16::from(!f.open));
                if !f.open {
                    let opens_before = f.opens.live(counts);
                    f.open = true;
                    f.epochs.make_room(use_of(counts));
                    f.epochs.kept.push(Epoch {
                        start_ns: Some(r.timestamp_ns),
                        end_ns: None,
                        maps: 0,
                        mmap_calls: 0,
                        exec_maps: 0,
                        exec_pids: Vec::new(),
                        usecount_before: use_of(counts),
                        usecount_at_unmap: None,
                        balance: None,
                        opens_before,
                        opens_at_unmap: 0,
                        forced_unmount: false,
                        verdict: Verdict::Open,
                        steps: Vec::new(),
                        steps_not_kept: 0,
                        returned: false,
                    });
                }
                if let Some(e) = f.epochs.kept.last_mut() {
                    e.maps += 1;
                    if ev.call.is_some() {
                        // A shared call's second VNOP_MMAP is the same call.
                        if ev.call_map <= 1 {
                            e.mmap_calls += 1;
                        }
                    } else {
                        e.exec_maps += 1;
                        if !e.exec_pids.contains(&r.pid) {
                            e.exec_pids.push(r.pid);
                        }
                    }
                    e.steps.push(Step {
                        kind: "mmap",
                        ts_ns: r.timestamp_ns,
                        pid: r.pid,
                        usecount: use_of(counts),
                        iocount: counts.iocount,
                        via: Some(via),
                    });
                    cap_steps(e);
                }
                fp.maps += 1;
                proc_report.maps += 1;
            }
            Event::Mnomap { counts, .. } => {
                // Still holding the mapping reference that goes next.
                f.last_use = use_of(counts).map(|u| u.saturating_sub(1));
                let opens_now = f.opens.live(counts);
                if !f.open {
                    // Mapped before the trace began.
                    f.epochs.make_room(None);
                    f.epochs.kept.push(Epoch {
                        start_ns: None,
                        end_ns: None,
                        maps: 0,
                        mmap_calls: 0,
                        exec_maps: 0,
                        exec_pids: Vec::new(),
                        usecount_before: None,
                        usecount_at_unmap: None,
                        balance: None,
                        opens_before: 0,
                        opens_at_unmap: 0,
                        forced_unmount: false,
                        verdict: Verdict::Unknown,
                        steps: Vec::new(),
                        steps_not_kept: 0,
                        returned: false,
                    });
                }
                f.open = false;
                if let Some(e) = f.epochs.kept.last_mut() {
                    e.end_ns = Some(r.timestamp_ns);
                    e.usecount_at_unmap = use_of(counts);
                    e.opens_at_unmap = opens_now;
                    e.steps.push(Step {
                        kind: "mnomap",
                        ts_ns: r.timestamp_ns,
                        pid: r.pid,
                        usecount: use_of(counts),
                        iocount: counts.iocount,
                        via: None,
                    });
                    e.balance = match (e.usecount_before, e.usecount_at_unmap) {
                        (Some(b), Some(u)) => Some(i32::from(u) - 1 - i32::from(b)),
                        _ => None,
                    };
                    // References the opens taken (and not closed) since
                    // the first map explain.
                    let by_opens = i64::from(e.opens_at_unmap) - i64::from(e.opens_before);
                    let exec = e.exec_pids.len() as i64;
                    e.verdict = match e.balance.map(i64::from) {
                        Some(0) => Verdict::Balanced,
                        Some(d) if d < 0 => Verdict::Released,
                        Some(d) if d <= exec => Verdict::TextRef,
                        Some(d) if d <= exec + by_opens.max(0) => Verdict::OpenRef,
                        Some(_) => Verdict::Held,
                        None => Verdict::Unknown,
                    };
                }
                fp.unmaps += 1;
                proc_report.unmaps += 1;
            }
            Event::Pagein {
                offset,
                size,
                duration_ns,
                ..
            } => {
                let p = &mut f.pageins;
                p.count += 1;
                p.bytes += u64::from(*size);
                p.total_duration_ns += u64::from(*duration_ns);
                f.latency.record(u64::from(*duration_ns));
                p.first_ns = Some(p.first_ns.map_or(r.timestamp_ns, |t| t.min(r.timestamp_ns)));
                p.last_ns = Some(p.last_ns.map_or(r.timestamp_ns, |t| t.max(r.timestamp_ns)));
                let start = u64::try_from(*offset).unwrap_or(0);
                let end = start.saturating_add(u64::from(*size));
                f.pages.insert(start / page, end.div_ceil(page));
                fp.pageins += 1;
                fp.pagein_bytes += u64::from(*size);
                proc_report.pageins += 1;
                proc_report.pagein_bytes += u64::from(*size);
            }
            Event::FileMmap { .. } | Event::Mark { .. } => return,
        }
        if !folded {
            proc_files.insert(fi);
        }
    }

    /// Finishes the report with the pipeline's totals.
    pub fn finish(self, t: &Totals) -> Report {
        let mut files = Vec::with_capacity(self.files.len());
        let mut suspects = Vec::new();
        let names = &self.names;
        let comm = |pid: u32| names.get(&pid).cloned();
        let named = |pid: u32| match names.get(&pid) {
            Some(n) => format!("{pid} ({})", shown(n)),
            None => pid.to_string(),
        };
        let mut latency = Histogram::new();
        let mut folded_events = 0;
        for mut f in self.files {
            for p in f.procs.values_mut() {
                p.comm = comm(p.pid);
            }
            let holders = holders_of(&f, &comm);
            if f.epochs.kept.is_empty() && f.pageins.count == 0 && holders.is_none() {
                // Only a PATH record: nothing happened to the file.
                continue;
            }
            if (self.filter.selects_events() && !f.selected)
                || !self.filter.selects_path(f.path.as_deref())
            {
                continue;
            }
            f.pageins.distinct_pages = f.pages.count();
            f.pageins.page_size = self.pages.size.bytes();
            latency.merge(&f.latency);
            folded_events += f.other_events;
            let other_processes = (f.other_events > 0).then_some(OtherProcesses {
                events: f.other_events,
                opens: f.other.opens,
                maps: f.other.maps,
                pageins: f.other.pageins,
                pagein_bytes: f.other.pagein_bytes,
                unmaps: f.other.unmaps,
            });
            let vnode = format!("{:016x}", f.vnode_id);
            if let Some(e) = f.epochs.kept.last().filter(|e| e.end_ns.is_none()) {
                let who: Vec<String> = e
                    .steps
                    .iter()
                    .map(|s| s.pid)
                    .collect::<BTreeSet<_>>()
                    .iter()
                    .map(|p| named(*p))
                    .collect();
                suspects.push(Suspect {
                    vnode: vnode.clone(),
                    path: f.path.clone(),
                    reason: "still_mapped",
                    detail: format!(
                        "mapped {} time(s) since {} by pid {} with no last unmap (VNOP_MNOMAP) before the trace ended{}",
                        e.maps,
                        e.start_ns.map_or("?".into(), |t| match &self.wall {
                            Some(a) => shown_time(t, Some(a)),
                            None => format!("{}s", secs(t)),
                        }),
                        who.join(","),
                        holders.as_ref().map_or(String::new(), |h| format!("; {}", holders_line(h)))
                    ),
                });
            }
            // A held reference counts as returned if a later epoch starts at
            // or below the baseline again.
            for (i, e) in f.epochs.kept.iter().enumerate() {
                let (Verdict::Held, Some(before), Some(at)) =
                    (e.verdict, e.usecount_before, e.usecount_at_unmap)
                else {
                    continue;
                };
                if !e.returned {
                    suspects.push(Suspect {
                        vnode: vnode.clone(),
                        path: f.path.clone(),
                        reason: "usecount_not_returned",
                        detail: format!(
                            "epoch {}: usecount {before} before the first map, {} after the last unmap ({at} minus the mapping reference): {} reference(s) not returned by the end of the trace",
                            i + 1,
                            at - 1,
                            e.balance.unwrap_or(0)
                        ),
                    });
                }
            }
            let held_epochs_not_kept = f.epochs.held_not_returned();
            if held_epochs_not_kept > 0 {
                suspects.push(Suspect {
                    vnode: vnode.clone(),
                    path: f.path.clone(),
                    reason: "usecount_not_returned",
                    detail: format!(
                        "{held_epochs_not_kept} more epoch(s), not kept (the report keeps {MAX_KEPT_EPOCHS} a file), held a reference no later epoch returned"
                    ),
                });
            }
            files.push(FileReport {
                vnode,
                path: f.path,
                epochs: f.epochs.kept,
                epochs_not_kept: f.epochs.not_kept,
                held_epochs_not_kept,
                pageins: f.pageins,
                by_process: by_pid(
                    f.procs
                        .into_values()
                        .filter(|p| p.maps + p.pageins + p.unmaps + p.opens > 0),
                ),
                other_processes,
                holders,
                latency: f.latency.summary(),
                peak_usecount: f.peak_usecount,
            });
        }
        let processes = by_pid(self.procs.into_iter().map(|(pid, (mut p, fs))| {
            p.pid = pid;
            p.comm = comm(pid);
            p.files = fs.len() as u64;
            p
        }));
        let mut by_kind = BTreeMap::new();
        for k in EventKind::ALL {
            by_kind.insert(k.name(), t.by_kind.get(k as usize).copied().unwrap_or(0));
        }
        let totals = ReportTotals {
            batches: t.batches,
            events: t.events,
            by_kind,
            files: files.len() as u64,
            processes: processes.len() as u64,
            dropped: t.dropped,
            gap_slots: t.gap_slots,
            corrupt: t.corrupt.max(self.corrupt),
            unpaired_mmap_calls: t.unpaired_calls,
            cut_bytes: t.cut_bytes,
            incomplete: t.lossy() || t.corrupt > 0,
            folded_events,
            other_files: self.other_files,
            unlisted_process_events: self.unlisted_process_events,
        };
        let summary = Summary {
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            files: files.len() as u64,
            processes: processes.len() as u64,
            suspects: suspects.len() as u64,
            latency: latency.summary(),
            filtered: self.filter.selects_events() || !self.filter.selects_path(None),
            page_size: self.pages.size.bytes(),
            page_size_from: self.pages.from,
            page_size_note: self.pages.note.clone(),
            ..Summary::default()
        };
        Report {
            summary,
            files,
            leak_suspects: suspects,
            processes,
            totals,
        }
    }
}

/// Who holds `f` at the end: its live opens, and when it is still mapped
/// the mappers and exec'ing processes of its current epoch.
fn holders_of(f: &FileState, comm: &impl Fn(u32) -> Option<String>) -> Option<Holders> {
    let mapped = f
        .epochs
        .kept
        .last()
        .filter(|e| e.end_ns.is_none() && f.open);
    if f.opens.by_pid.is_empty() && mapped.is_none() {
        return None;
    }
    let mut holders: Vec<Holder> = f
        .opens
        .by_pid
        .iter()
        .map(|(pid, v)| Holder {
            pid: *pid,
            comm: comm(*pid),
            how: "open",
            count: v.len() as u32,
        })
        .collect();
    if let Some(e) = mapped {
        let mut maps: BTreeMap<u32, u32> = BTreeMap::new();
        for s in e.steps.iter().filter(|s| s.via == Some("mmap")) {
            *maps.entry(s.pid).or_default() += 1;
        }
        holders.extend(maps.into_iter().map(|(pid, n)| Holder {
            pid,
            comm: comm(pid),
            how: "map",
            count: n,
        }));
        holders.extend(e.exec_pids.iter().map(|pid| Holder {
            pid: *pid,
            comm: comm(*pid),
            how: "text",
            count: 1,
        }));
    }
    Some(Holders {
        usecount: f.last_use,
        holders,
    })
}

/// "usecount N, held by pid P (name) open x1, ..." for text output.
fn holders_line(h: &Holders) -> String {
    let who: Vec<String> = h
        .holders
        .iter()
        .map(|x| {
            let name = x
                .comm
                .as_deref()
                .map_or(String::new(), |n| format!(" ({})", shown(n)));
            format!("pid {}{name} {} x{}", x.pid, x.how, x.count)
        })
        .collect();
    format!(
        "usecount {}, held by {}",
        opt_num(h.usecount),
        who.join(", ")
    )
}

fn opt_time(t: Option<u64>, wall: Option<&Anchor>) -> String {
    t.map_or("(before trace)".into(), |t| shown_time(t, wall))
}

/// "16 KiB" for a page size in bytes (any value: the report's are valid).
fn shown_page_size(bytes: u64) -> String {
    PageSize::new(bytes).map_or_else(|_| format!("{bytes} B"), |p| p.to_string())
}

fn opt_num(n: Option<u16>) -> String {
    n.map_or("?".into(), |n| n.to_string())
}

/// Writes the report as text for people: the summary, then each file, the
/// suspects, the processes and the totals.
pub fn write_human(w: &mut impl Write, r: &Report) -> io::Result<()> {
    write_human_styled(w, r, &Palette::PLAIN)
}

/// [`write_human`] in `palette`'s colours: headings in bold, losses in
/// the loss style, HELD verdicts and suspects in the suspect style.
pub fn write_human_styled(w: &mut impl Write, r: &Report, palette: &Palette) -> io::Result<()> {
    let t = &r.totals;
    let wall = r.summary.clock_anchor.as_ref();
    let (h, sus) = (palette.heading, palette.suspect);
    summary::write_summary(w, r, palette)?;
    for f in &r.files {
        writeln!(w)?;
        writeln!(
            w,
            "{h}FILE {}{h:#}  (vnode {})",
            shown(f.path.as_deref().unwrap_or("<path unknown>")),
            f.vnode
        )?;
        for (i, e) in f.epochs.iter().enumerate() {
            let end = e
                .end_ns
                .map_or("still mapped".into(), |t| shown_time(t, wall));
            writeln!(
                w,
                "  epoch {}  {} .. {}  maps {} ({} mmap(2), {} exec)",
                i + 1,
                opt_time(e.start_ns, wall),
                end,
                e.maps,
                e.mmap_calls,
                e.exec_maps
            )?;
            let v = match e.verdict {
                Verdict::Held => sus,
                _ => anstyle::Style::new(),
            };
            let balance = match (e.usecount_before, e.usecount_at_unmap) {
                (Some(b), Some(u)) => format!(
                    "usecount {b} before first map, {u} at last unmap ({} without the mapping ref): {v}{}{v:#}",
                    i32::from(u) - 1,
                    verdict_word(e.verdict)
                ),
                _ => format!(
                    "usecount {} before first map, {} at last unmap: {v}{}{v:#}",
                    opt_num(e.usecount_before),
                    opt_num(e.usecount_at_unmap),
                    verdict_word(e.verdict)
                ),
            };
            writeln!(w, "    {balance}")?;
            if e.opens_before + e.opens_at_unmap > 0 {
                writeln!(
                    w,
                    "    live opens {} at first map, {} at last unmap",
                    e.opens_before, e.opens_at_unmap
                )?;
            }
            if e.forced_unmount {
                writeln!(w, "    closed by a forced unmount (vclean)")?;
            }
            let steps: Vec<String> = e
                .steps
                .iter()
                .map(|s| {
                    format!(
                        "{}{} pid {} use {}",
                        s.kind,
                        s.via.map_or(String::new(), |v| format!("/{v}")),
                        s.pid,
                        opt_num(s.usecount)
                    )
                })
                .collect();
            let more = match e.steps_not_kept {
                0 => String::new(),
                n => format!(" (and {n} more maps)"),
            };
            writeln!(w, "    steps: {}{more}", steps.join(" -> "))?;
        }
        match (f.epochs_not_kept, f.held_epochs_not_kept) {
            (0, _) => {}
            (n, 0) => writeln!(
                w,
                "  ({n} more epochs before the last, not listed: none held a reference that was not returned)"
            )?,
            (n, held) => writeln!(
                w,
                "  ({n} more epochs before the last, not listed: {sus}{held} of them held a reference{sus:#} no later epoch returned)"
            )?,
        }
        let p = &f.pageins;
        if p.count > 0 {
            writeln!(
                w,
                "  page-ins {} clusters, {} bytes, {} distinct {} pages, first {} last {}, {:.1}us in VNOP_PAGEIN",
                p.count,
                p.bytes,
                p.distinct_pages,
                shown_page_size(p.page_size),
                opt_time(p.first_ns, wall),
                opt_time(p.last_ns, wall),
                p.total_duration_ns as f64 / 1e3
            )?;
            if let Some(l) = &f.latency {
                writeln!(w, "  latency  {}", summary::latency_line(l))?;
            }
        } else {
            writeln!(w, "  page-ins none")?;
        }
        let procs: Vec<String> = f
            .by_process
            .iter()
            .map(|p| {
                let name = p
                    .comm
                    .as_deref()
                    .map_or(String::new(), |n| format!(" ({})", shown(n)));
                format!(
                    "pid {}{name}: {} opens, {} maps, {} page-ins ({} bytes), {} last unmaps",
                    p.pid, p.opens, p.maps, p.pageins, p.pagein_bytes, p.unmaps
                )
            })
            .collect();
        let mut procs = procs;
        if let Some(o) = &f.other_processes {
            procs.push(format!(
                "other processes: {} opens, {} maps, {} page-ins ({} bytes), {} last unmaps",
                o.opens, o.maps, o.pageins, o.pagein_bytes, o.unmaps
            ));
        }
        writeln!(w, "  by process: {}", procs.join("; "))?;
        if let Some(h) = &f.holders {
            writeln!(w, "  at the end: {}", holders_line(h))?;
        }
    }
    writeln!(w)?;
    if r.leak_suspects.is_empty() {
        writeln!(w, "{h}LEAK SUSPECTS: none{h:#}")?;
    } else {
        writeln!(w, "{sus}LEAK SUSPECTS: {}{sus:#}", r.leak_suspects.len())?;
        for s in &r.leak_suspects {
            writeln!(
                w,
                "  {sus}{}{sus:#} [{}] {}",
                shown(s.path.as_deref().unwrap_or(&s.vnode)),
                s.reason,
                s.detail
            )?;
        }
    }
    writeln!(w)?;
    writeln!(w, "{h}PROCESSES{h:#}")?;
    for p in &r.processes {
        writeln!(
            w,
            "  pid {:>7} {:<16} {} files, {} maps ({} mmap(2) calls), {} page-ins ({} bytes), {} last unmaps",
            p.pid,
            p.comm.as_deref().map_or(Cow::Borrowed("-"), shown),
            p.files,
            p.maps,
            p.mmap_calls,
            p.pageins,
            p.pagein_bytes,
            p.unmaps
        )?;
    }
    writeln!(w)?;
    summary::write_totals(w, t, palette)
}

/// The cut of a recording, said in a losses line.
pub(crate) fn cut_note(cut_bytes: u64) -> String {
    if cut_bytes > 0 {
        format!(", recording CUT OFF ({cut_bytes} bytes of its last frame unread)")
    } else {
        String::new()
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Balanced => "balanced",
        Verdict::Released => "released (references dropped while mapped, e.g. fd closed)",
        Verdict::TextRef => {
            "balanced but for exec's text reference (released at exit, after the unmap)"
        }
        Verdict::OpenRef => "balanced but for opens still live at the last unmap",
        Verdict::Held => "HELD (more references after than before)",
        Verdict::Open => "still mapped",
        Verdict::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagesize::PageSizeFrom;
    use crate::pipeline::Ev;
    use maptrace_abi::Record;

    fn counts(usecount: u16) -> Counts {
        Counts {
            usecount,
            kusecount: 0,
            iocount: Some(1),
            method: ProbeMethod::Offset,
            saturated: false,
        }
    }

    fn item(ts: u64, pid: u32, event: Event) -> Item {
        let kind = match event {
            Event::Mmap { .. } => EventKind::Mmap,
            Event::Mnomap { .. } => EventKind::Mnomap,
            Event::Proc { .. } => EventKind::Proc,
            Event::Open { .. } => EventKind::Open,
            _ => EventKind::Pagein,
        };
        let rec = Record {
            shard: 0,
            pos: ts,
            lost_before: 0,
            kind,
            flags: 1,
            error: 0,
            pid,
            timestamp_ns: ts,
            tid: 1,
            vnode_id: 42,
            event,
        };
        Item::Event(Ev {
            rec,
            path: None,
            call: None,
            call_map: 0,
            comm: None,
        })
    }

    /// A map from an mmap(2) call (not exec, so no text reference).
    fn map(ts: u64, u: u16) -> Item {
        let mut i = item(
            ts,
            7,
            Event::Mmap {
                fflags: 1,
                vid: 1,
                duration_ns: 0,
                counts: counts(u),
            },
        );
        if let Item::Event(ev) = &mut i {
            ev.call = Some(Box::new(crate::pipeline::MapCall {
                file_pos: 0,
                prot: 1,
                maxprot: 7,
                mmap_flags: 1,
                timestamp_ns: ts,
            }));
            ev.call_map = 1;
        }
        i
    }

    fn unmap(ts: u64, u: u16) -> Item {
        item(
            ts,
            7,
            Event::Mnomap {
                vid: 1,
                duration_ns: 0,
                counts: counts(u),
            },
        )
    }

    /// A page-in of `size` bytes at `offset` by pid 7, 10 ns long, at
    /// usecount 2 (mapped once).
    fn pagein(ts: u64, offset: i64, size: u32) -> Item {
        item(
            ts,
            7,
            Event::Pagein {
                offset,
                size,
                duration_ns: 10,
                counts: counts(2),
                upl_flags: 0,
            },
        )
    }

    fn build(items: &[Item]) -> Report {
        let mut b = Builder::new();
        items.iter().for_each(|i| b.observe(i));
        b.finish(&Totals::default())
    }

    #[test]
    fn verdicts_follow_the_usecount_before_and_after() {
        // Opener closed its fd while mapped: fewer references after.
        let r = build(&[map(1, 2), unmap(2, 1)]);
        let e = &r.files[0].epochs[0];
        assert_eq!((e.balance, e.verdict), (Some(-2), Verdict::Released));
        assert!(r.leak_suspects.is_empty());
        // A last unmap with no map in the trace: mapped before it began.
        let r = build(&[unmap(5, 2)]);
        let e = &r.files[0].epochs[0];
        assert_eq!((e.start_ns, e.verdict), (None, Verdict::Unknown));
        assert!(r.leak_suspects.is_empty());
        // Counts not measured: nothing can be said.
        let mut none = counts(0);
        none.method = ProbeMethod::None;
        let r = build(&[
            item(
                1,
                7,
                Event::Mmap {
                    fflags: 1,
                    vid: 1,
                    duration_ns: 0,
                    counts: none,
                },
            ),
            item(
                2,
                7,
                Event::Mnomap {
                    vid: 1,
                    duration_ns: 0,
                    counts: none,
                },
            ),
        ]);
        assert_eq!(r.files[0].epochs[0].verdict, Verdict::Unknown);
    }

    #[test]
    fn a_held_reference_that_later_returns_is_not_a_suspect() {
        let r = build(&[map(1, 1), unmap(2, 3), map(3, 1), unmap(4, 2)]);
        let v: Vec<Verdict> = r.files[0].epochs.iter().map(|e| e.verdict).collect();
        assert_eq!(v, vec![Verdict::Held, Verdict::Balanced]);
        assert!(r.leak_suspects.is_empty());
        // Without the second epoch it is one.
        let r = build(&[map(1, 1), unmap(2, 3)]);
        assert_eq!(r.leak_suspects.len(), 1);
        assert_eq!(r.leak_suspects[0].reason, "usecount_not_returned");
    }

    #[test]
    fn comm_selects_the_processes_the_name_lookup_knows() {
        let pagein = |pid| {
            item(
                2,
                pid,
                Event::Pagein {
                    offset: 0,
                    size: 4096,
                    duration_ns: 10,
                    counts: counts(2),
                    upl_flags: 0,
                },
            )
        };
        let run = |names: &[(u32, &str)]| {
            let mut b = Builder::with_filter(Filter::all().comms(&["mds".into()]));
            for &(pid, name) in names {
                b.names_mut().insert(pid, name.into());
            }
            b.observe(&pagein(7));
            b.observe(&pagein(8));
            b.finish(&Totals::default())
        };
        let r = run(&[(7, "mds"), (8, "Safari")]);
        assert_eq!(r.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [7]);
        assert_eq!(r.files[0].pageins.count, 1);
        assert_eq!(r.files[0].by_process.len(), 1);
        assert!(r.summary.filtered);
        // Nobody named: nothing selected, no file listed.
        let r = run(&[]);
        assert!(r.files.is_empty() && r.processes.is_empty());
    }

    #[test]
    fn an_epoch_keeps_its_first_maps_and_its_unmap() {
        let mut items: Vec<Item> = (0..100).map(|i| map(i + 1, 1)).collect();
        items.push(unmap(200, 2));
        let r = build(&items);
        let e = &r.files[0].epochs[0];
        assert_eq!(
            (e.maps, e.steps.len(), e.steps_not_kept),
            (100, MAX_STEPS + 1, 100 - MAX_STEPS as u64)
        );
        assert_eq!(e.steps.last().map(|s| s.kind), Some("mnomap"));
        assert_eq!(e.verdict, Verdict::Balanced);
    }

    /// A leak storm: every epoch keeps a reference. The file keeps at most
    /// `MAX_KEPT_EPOCHS`, remembers the ones left out by their baseline,
    /// and a later epoch back at the start returns them all.
    #[test]
    fn a_leak_storm_keeps_its_epochs_bounded_and_its_suspects_exact() {
        let storm = |n: u64| -> Vec<Item> {
            (0..n)
                .flat_map(|i| {
                    let before = 1 + i as u16;
                    [map(10 * i + 1, before), unmap(10 * i + 2, before + 2)]
                })
                .collect()
        };
        let mut items = storm(1000);
        let r = build(&items);
        let f = &r.files[0];
        assert_eq!(f.epochs.len(), MAX_KEPT_EPOCHS);
        assert_eq!((f.epochs_not_kept, f.held_epochs_not_kept), (744, 744));
        assert!(f.epochs.iter().all(|e| e.verdict == Verdict::Held));
        assert_eq!(f.epochs.last().and_then(|e| e.end_ns), Some(9992));
        assert_eq!(r.leak_suspects.len(), MAX_KEPT_EPOCHS + 1);
        assert!(
            r.leak_suspects
                .iter()
                .any(|s| s.detail.starts_with("744 more epoch(s), not kept")),
            "{:?}",
            r.leak_suspects.last()
        );
        let mut text = Vec::new();
        write_human(&mut text, &r).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("744 of them held a reference no later epoch returned"),
            "{text}"
        );

        // Everything comes back: an epoch starts at the first baseline.
        items.push(map(20_000, 1));
        let r = build(&items);
        assert_eq!(r.files[0].held_epochs_not_kept, 0);
        assert!(
            r.leak_suspects
                .iter()
                .all(|s| s.reason != "usecount_not_returned")
        );
    }

    #[test]
    fn a_file_keeps_its_first_epochs_its_held_ones_and_its_last() {
        let mut items = Vec::new();
        for i in 0..100u64 {
            // Epoch 50 holds a reference that never comes back: later
            // epochs start at 2, above its 1.
            let (before, at) = match i {
                ..50 => (1, 2),
                50 => (1, 3),
                _ => (2, 3),
            };
            items.push(map(10 * i + 1, before));
            items.push(unmap(10 * i + 2, at));
        }
        let r = build(&items);
        let f = &r.files[0];
        assert_eq!(f.epochs.len(), MAX_EPOCHS + 1);
        assert_eq!(f.epochs_not_kept, 100 - (MAX_EPOCHS as u64 + 1));
        assert_eq!(f.epochs.last().and_then(|e| e.end_ns), Some(992));
        assert_eq!(
            f.epochs
                .iter()
                .filter(|e| e.verdict == Verdict::Held)
                .count(),
            1
        );
        assert_eq!(r.leak_suspects.len(), 1);
        assert_eq!(r.leak_suspects[0].reason, "usecount_not_returned");
    }

    #[test]
    fn overlapping_pageins_count_pages_once() {
        let r = build(&[
            map(1, 1),
            pagein(2, 0, 8192),
            pagein(3, 4096, 8192),
            pagein(4, 1 << 20, 100),
        ]);
        let p = &r.files[0].pageins;
        assert_eq!((p.count, p.bytes, p.distinct_pages), (3, 16484, 4));
        assert_eq!(
            (p.first_ns, p.last_ns, p.total_duration_ns),
            (Some(2), Some(4), 30)
        );
        assert_eq!(r.leak_suspects[0].reason, "still_mapped");
    }

    #[test]
    fn distinct_pages_count_in_the_page_size_given() {
        // One 16 KiB page-in, then 4 KiB inside that page, then one that
        // straddles two 16 KiB pages.
        let items = [
            map(1, 1),
            pagein(2, 0, 16384),
            pagein(3, 8192, 4096),
            pagein(4, 30 << 10, 4096),
        ];
        let pages_at = |basis: PageBasis| {
            let mut b = Builder::new();
            b.set_page_basis(basis);
            items.iter().for_each(|i| b.observe(i));
            let r = b.finish(&Totals::default());
            let p = &r.files[0].pageins;
            (p.distinct_pages, p.page_size, r.summary.page_size)
        };
        let trace = |size| PageBasis::resolve(None, Ok(size));
        assert_eq!(pages_at(trace(PageSize::SIXTEEN_K)), (3, 16384, 16384));
        assert_eq!(pages_at(trace(PageSize::FOUR_K)), (6, 4096, 4096));
        let r = {
            let mut b = Builder::new();
            items[..2].iter().for_each(|i| b.observe(i));
            b.finish(&Totals::default())
        };
        // A 16 KiB page-in is 1 page at 16 KiB, 4 at the default 4 KiB,
        // which the summary says it does not know better.
        assert_eq!(r.files[0].pageins.distinct_pages, 4);
        assert_eq!(r.summary.page_size_from, PageSizeFrom::Unknown);
        assert!(r.summary.page_size_note.is_some());
        let mut text = Vec::new();
        write_human(&mut text, &r).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("4 distinct 4 KiB pages"), "{text}");
        assert!(text.contains("page size unknown"), "{text}");
    }

    #[test]
    fn huge_pageins_cost_one_entry_not_one_per_page() {
        // A 673-byte recording of 4 GiB page-ins once made report insert a
        // million pages each (227 MB, 4.7 s): the set is bounded by the
        // page-ins, whatever their sizes claim.
        let huge = |ts, offset| {
            item(
                ts,
                7,
                Event::Pagein {
                    offset,
                    size: u32::MAX,
                    duration_ns: u32::MAX,
                    counts: counts(2),
                    upl_flags: 0,
                },
            )
        };
        let mut b = Builder::new();
        for (i, offset) in [0, 1 << 40, 1 << 41, i64::MAX - 10, 5 << 40]
            .into_iter()
            .enumerate()
        {
            b.observe(&huge(i as u64, offset));
        }
        let entries = b.files[0].pages.entries();
        assert!(entries <= 5, "{entries} entries for 5 page-ins");
        let r = b.finish(&Totals::default());
        let pages_each = u64::from(u32::MAX).div_ceil(PageSize::FOUR_K.bytes());
        assert!(r.files[0].pageins.distinct_pages >= 4 * pages_each);
    }

    /// A page-in of 4 KiB by `pid` of the file `vnode_id`.
    fn pagein_of(ts: u64, pid: u32, vnode_id: u64) -> Item {
        let mut it = item(
            ts,
            pid,
            Event::Pagein {
                offset: 0,
                size: 4096,
                duration_ns: 1,
                counts: counts(1),
                upl_flags: 0,
            },
        );
        if let Item::Event(ev) = &mut it {
            ev.rec.vnode_id = vnode_id;
        }
        it
    }

    /// OPENs whose CLOSEs never come (lost, or a crafted file): a file
    /// tracks at most `MAX_LIVE_OPENS` of them, as a usecount saturates.
    #[test]
    fn live_opens_stay_bounded() {
        let mut b = Builder::new();
        let open = |ts| {
            item(
                ts,
                9,
                Event::Open {
                    vid: 1,
                    fmode: 1,
                    counts: counts(u16::MAX),
                },
            )
        };
        for ts in 0..MAX_LIVE_OPENS as u64 + 100 {
            b.observe(&open(ts));
        }
        assert_eq!(b.files[0].opens.tracked, MAX_LIVE_OPENS);
        let r = b.finish(&Totals::default());
        let holders = r.files[0].holders.as_ref().unwrap();
        assert_eq!(holders.holders[0].count, MAX_LIVE_OPENS as u32);
        assert_eq!(r.processes[0].pid, 9);
    }

    /// Hostile input: a new vnode in every record. The builder keeps at
    /// most its cap of files; the rest are added up in `other_files`, and
    /// processes keep their exact page-ins.
    #[test]
    fn files_past_the_cap_are_added_up_and_processes_stay_exact() {
        let mut b = Builder::with_caps(MAX_PAIRS, 10);
        for i in 0..300u64 {
            b.observe(&pagein_of(i, 1000 + (i % 3) as u32, 1 + i));
            // A kept file's later events still go to it.
            b.observe(&pagein_of(i, 1000, 1 + i % 10));
        }
        let mut m = map(400, 1);
        if let Item::Event(ev) = &mut m {
            (ev.rec.pid, ev.rec.vnode_id) = (2000, 999);
        }
        b.observe(&m);
        assert_eq!((b.files.len(), b.index.len()), (10, 10));
        let r = b.finish(&Totals::default());
        let kept: u64 = r.files.iter().map(|f| f.pageins.count).sum();
        let other = r.totals.other_files.clone().unwrap();
        assert_eq!(kept, 10 + 300);
        assert_eq!((other.events, other.pageins, other.maps), (291, 290, 1));
        assert_eq!(other.pagein_bytes, 290 * 4096);
        assert_eq!(kept + other.pageins, 600);
        let pageins: BTreeMap<u32, u64> = r.processes.iter().map(|p| (p.pid, p.pageins)).collect();
        assert_eq!(
            pageins,
            BTreeMap::from([(1000, 400), (1001, 100), (1002, 100), (2000, 0)])
        );
        assert_eq!(
            r.processes.iter().find(|p| p.pid == 2000).map(|p| p.maps),
            Some(1)
        );
        let mut text = Vec::new();
        write_human(&mut text, &r).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("… 291 events of files past the first 100000 added up: 1 maps, 0 VNOP_MNOMAPs, 290 page-ins (1187840 bytes), 0 opens"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["totals"]["other_files"]["pageins"], 290);
    }

    /// Hostile input: more pids than XNU can have. Past `MAX_PROCESSES`
    /// neither names nor figures are kept for new pids; their events still
    /// count for their files.
    #[test]
    fn processes_past_the_cap_are_counted_but_not_listed() {
        let mut b = Builder::new();
        let extra = 5u32;
        for pid in 0..MAX_PROCESSES as u32 + extra {
            b.observe(&item(
                1,
                pid,
                Event::Proc {
                    name: b"p".to_vec(),
                    truncated: false,
                },
            ));
            b.observe(&pagein_of(2, pid, 7));
        }
        assert_eq!(
            (b.names.len(), b.procs.len()),
            (MAX_PROCESSES, MAX_PROCESSES)
        );
        // A kept pid is still renamed.
        b.observe(&item(
            3,
            1,
            Event::Proc {
                name: b"renamed".to_vec(),
                truncated: false,
            },
        ));
        assert_eq!(b.names.get(&1).map(String::as_str), Some("renamed"));
        let r = b.finish(&Totals::default());
        assert_eq!(r.totals.unlisted_process_events, u64::from(extra));
        assert_eq!(r.processes.len(), MAX_PROCESSES);
        assert_eq!(
            r.files[0].pageins.count,
            MAX_PROCESSES as u64 + u64::from(extra)
        );
        let mut text = Vec::new();
        write_human(&mut text, &r).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("… 5 events of processes past the first 100000 listed under no process"),
            "{text}"
        );
    }

    /// Hostile input: many processes paging in many files. The builder
    /// keeps at most its cap of (file, process) pairs; the rest fold into
    /// each file's `other_processes`, and every total stays exact.
    #[test]
    fn file_process_pairs_past_the_cap_fold_and_totals_stay_exact() {
        let mut b = Builder::with_pair_cap(10);
        for i in 0..500u64 {
            b.observe(&pagein_of(i, 1000 + (i % 50) as u32, 1 + i % 10));
        }
        let pairs: usize = b.files.iter().map(|f| f.procs.len()).sum();
        let listed: usize = b.procs.values().map(|(_, fs)| fs.len()).sum();
        assert_eq!((pairs, listed), (10, 10));
        let r = b.finish(&Totals::default());
        let pageins: u64 = r.files.iter().map(|f| f.pageins.count).sum();
        assert_eq!(pageins, 500);
        let by_process: u64 = r
            .files
            .iter()
            .flat_map(|f| f.by_process.iter().map(|p| p.pageins))
            .sum();
        let other: u64 = r
            .files
            .iter()
            .filter_map(|f| f.other_processes.as_ref())
            .map(|o| o.pageins)
            .sum();
        // The first ten pairs (i % 50 < 10) keep all their events.
        assert_eq!((by_process, other), (100, 400));
        assert_eq!(r.totals.folded_events, 400);
        // Processes keep their exact figures.
        assert_eq!(r.processes.len(), 50);
        assert!(r.processes.iter().all(|p| p.pageins == 10));
        let mut text = Vec::new();
        write_human(&mut text, &r).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("… 400 events of further (file, process) pairs folded"),
            "{text}"
        );
        assert!(text.contains("other processes: "), "{text}");
    }

    #[test]
    fn page_ranges_merge_like_a_set_of_pages() {
        let mut set = PageSet::default();
        let mut naive = std::collections::BTreeSet::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let start = x % 300;
            let end = start + (x >> 32) % 12;
            set.insert(start, end);
            naive.extend(start..end);
            assert_eq!(set.count(), naive.len() as u64);
        }
        let mut last_end = None;
        for (&s, &e) in &set.ranges {
            assert!(s < e && last_end.is_none_or(|l| l < s), "{:?}", set.ranges);
            last_end = Some(e);
        }
    }
}
