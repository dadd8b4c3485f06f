//! The order of a report's files and processes, and how many are shown.

use super::{FileReport, ProcessReport, Report};
use std::cmp::{Ordering, Reverse};

/// What files (and processes) are ordered by; the largest first, but paths
/// in alphabetical order.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Page-ins (clusters read).
    #[default]
    Pageins,
    /// Bytes paged in.
    Bytes,
    /// `VNOP_MMAP`s.
    Maps,
    /// The 99th percentile of page-in latency (processes: page-ins).
    Latency,
    /// The highest usecount seen (processes: page-ins).
    Usecount,
    /// Path, alphabetical, unnamed files last (processes: pid).
    Path,
}

impl SortKey {
    /// The name `--sort` takes.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Pageins => "pageins",
            SortKey::Bytes => "bytes",
            SortKey::Maps => "maps",
            SortKey::Latency => "latency",
            SortKey::Usecount => "usecount",
            SortKey::Path => "path",
        }
    }
}

/// Files shown in a terminal unless `--top` says otherwise.
pub const DEFAULT_TOP: usize = 20;

/// How a report is shown: order and how many files and processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// The order.
    pub sort: SortKey,
    /// At most this many files and processes (`None` or 0: all).
    pub top: Option<usize>,
}

impl Default for View {
    fn default() -> View {
        View {
            sort: SortKey::default(),
            top: Some(DEFAULT_TOP),
        }
    }
}

impl View {
    /// Every file and process, in the default order (the JSON default).
    pub fn all() -> View {
        View {
            sort: SortKey::default(),
            top: None,
        }
    }
}

/// A file's `VNOP_MMAP`s by the processes the report covers.
pub fn file_maps(f: &FileReport) -> u64 {
    f.by_process.iter().map(|p| p.maps).sum()
}

fn by_path(a: &FileReport, b: &FileReport) -> Ordering {
    match (&a.path, &b.path) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| a.vnode.cmp(&b.vnode))
}

fn file_order(key: SortKey, a: &FileReport, b: &FileReport) -> Ordering {
    let p99 = |f: &FileReport| f.latency.map(|l| l.p99_ns);
    match key {
        SortKey::Pageins => Reverse(a.pageins.count).cmp(&Reverse(b.pageins.count)),
        SortKey::Bytes => Reverse(a.pageins.bytes).cmp(&Reverse(b.pageins.bytes)),
        SortKey::Maps => Reverse(file_maps(a)).cmp(&Reverse(file_maps(b))),
        SortKey::Latency => Reverse(p99(a)).cmp(&Reverse(p99(b))),
        SortKey::Usecount => Reverse(a.peak_usecount).cmp(&Reverse(b.peak_usecount)),
        SortKey::Path => Ordering::Equal,
    }
    .then_with(|| by_path(a, b))
}

fn process_order(key: SortKey, a: &ProcessReport, b: &ProcessReport) -> Ordering {
    match key {
        SortKey::Bytes => Reverse(a.pagein_bytes).cmp(&Reverse(b.pagein_bytes)),
        SortKey::Maps => Reverse(a.maps).cmp(&Reverse(b.maps)),
        SortKey::Path => Ordering::Equal,
        SortKey::Pageins | SortKey::Latency | SortKey::Usecount => {
            Reverse(a.pageins).cmp(&Reverse(b.pageins))
        }
    }
    .then_with(|| a.pid.cmp(&b.pid))
}

/// Orders the report's files and processes by `view.sort` and keeps the
/// first `view.top` of each, counting what was left out. Suspects and
/// totals stay whole: a suspect is never hidden by `--top`.
pub fn apply(r: &mut Report, view: &View) {
    r.files.sort_by(|a, b| file_order(view.sort, a, b));
    r.processes.sort_by(|a, b| process_order(view.sort, a, b));
    if let Some(n) = view.top.filter(|&n| n > 0) {
        r.summary.files_not_shown = r.files.len().saturating_sub(n) as u64;
        r.summary.processes_not_shown = r.processes.len().saturating_sub(n) as u64;
        r.files.truncate(n);
        r.processes.truncate(n);
    }
    r.summary.sort = view.sort;
}
