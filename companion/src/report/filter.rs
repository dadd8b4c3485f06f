//! Which events and files a report covers: processes by pid or name, files
//! by path glob, and a time window relative to the start of the trace.
//!
//! Processes and the window select events; a file is listed when a selected
//! event touched it and its path matches. A listed file's mapped epochs stay
//! whole (every map and unmap of every process), because a usecount verdict
//! compares the count before the first map with the count at the last
//! unmap: half an epoch would give a false one.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use rustc_hash::FxHashMap;

/// Process names by pid, as PROC records tell them. Empty while no record
/// names processes; a `--comm` filter then selects nothing.
pub type Names = FxHashMap<u32, String>;

/// Why a filter cannot be built. The messages name the flag.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    /// A `--path` glob does not parse.
    #[error("--path `{glob}` is not a valid glob: {reason}")]
    BadGlob {
        /// The glob given.
        glob: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The window ends before it starts.
    #[error("--since {since} is after --until {until}: the window would be empty")]
    EmptyWindow {
        /// Seconds after the start of the trace.
        since: f64,
        /// Seconds after the start of the trace.
        until: f64,
    },
    /// UTC bounds in the wrong order.
    #[error("--since {since} is after --until {until}: the window would be empty")]
    EmptyClockWindow {
        /// The `--since` time as given.
        since: String,
        /// The `--until` time as given.
        until: String,
    },
    /// A window bound that is no number of seconds.
    #[error("--{flag} {value}: give seconds after the start of the trace, 0 or more")]
    BadSeconds {
        /// "since" or "until".
        flag: &'static str,
        /// The value given.
        value: f64,
    },
}

/// A glob for paths: `*` and `?` stay within one component, `**` crosses
/// them, as in a shell.
pub fn path_glob(text: &str) -> Result<Glob, FilterError> {
    GlobBuilder::new(text)
        .literal_separator(true)
        .build()
        .map_err(|e| FilterError::BadGlob {
            glob: text.to_string(),
            reason: e.kind().to_string(),
        })
}

/// What a report covers. The default covers everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pids: Vec<u32>,
    comms: Vec<String>,
    paths: Option<GlobSet>,
    since_ns: Option<u64>,
    until_ns: Option<u64>,
    /// Bounds on the kext's clock itself (UTC times given, mapped through
    /// the source's anchor).
    since_clock_ns: Option<u64>,
    until_clock_ns: Option<u64>,
}

fn secs_to_ns(flag: &'static str, s: Option<f64>) -> Result<Option<u64>, FilterError> {
    match s {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some((v * 1e9).round() as u64)),
        Some(value) => Err(FilterError::BadSeconds { flag, value }),
    }
}

impl Filter {
    /// Everything.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Only these pids (any of them; none given: every process).
    pub fn pids(mut self, pids: &[u32]) -> Filter {
        self.pids = pids.to_vec();
        self
    }

    /// Only processes with one of these names (exact; none given: every
    /// process), as the name lookup has them when their events come.
    pub fn comms(mut self, comms: &[String]) -> Filter {
        self.comms = comms.to_vec();
        self
    }

    /// Only files whose path matches one of these globs (none given: every
    /// file, named or not).
    pub fn paths(mut self, globs: &[String]) -> Result<Filter, FilterError> {
        if globs.is_empty() {
            self.paths = None;
            return Ok(self);
        }
        let mut set = GlobSetBuilder::new();
        for g in globs {
            set.add(path_glob(g)?);
        }
        self.paths = Some(set.build().map_err(|e| FilterError::BadGlob {
            glob: globs.join(" "),
            reason: e.kind().to_string(),
        })?);
        Ok(self)
    }

    /// Only events from `since` to `until` seconds after the trace's first
    /// record about a file (MARK records do not count), both included.
    pub fn window(mut self, since: Option<f64>, until: Option<f64>) -> Result<Filter, FilterError> {
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(FilterError::EmptyWindow { since: s, until: u });
            }
        }
        self.since_ns = secs_to_ns("since", since)?;
        self.until_ns = secs_to_ns("until", until)?;
        Ok(self)
    }

    /// Only events the kext stamped from `since` to `until` on its own
    /// clock, both included: UTC bounds (`--since 2026-12-05T06:28:09Z`)
    /// mapped through the source's anchor. `shown` names them in an error.
    pub fn clock_window(
        mut self,
        since: Option<u64>,
        until: Option<u64>,
        shown: (&str, &str),
    ) -> Result<Filter, FilterError> {
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(FilterError::EmptyClockWindow {
                    since: shown.0.to_string(),
                    until: shown.1.to_string(),
                });
            }
        }
        self.since_clock_ns = since;
        self.until_clock_ns = until;
        Ok(self)
    }

    /// Whether it selects events at all (a pid, a name or a window), so
    /// that files nothing selected touched are left out.
    pub fn selects_events(&self) -> bool {
        !self.pids.is_empty()
            || !self.comms.is_empty()
            || self.since_ns.is_some()
            || self.until_ns.is_some()
            || self.since_clock_ns.is_some()
            || self.until_clock_ns.is_some()
    }

    /// Whether the event of `pid` at `ts_ns` is covered, the trace having
    /// begun at `start_ns`.
    pub fn selects(&self, pid: u32, ts_ns: u64, start_ns: u64, names: &Names) -> bool {
        let rel = ts_ns.saturating_sub(start_ns);
        self.since_ns.is_none_or(|s| rel >= s)
            && self.until_ns.is_none_or(|u| rel <= u)
            && self.since_clock_ns.is_none_or(|s| ts_ns >= s)
            && self.until_clock_ns.is_none_or(|u| ts_ns <= u)
            && (self.pids.is_empty() && self.comms.is_empty()
                || self.pids.contains(&pid)
                || names
                    .get(&pid)
                    .is_some_and(|n| self.comms.iter().any(|c| c == n)))
    }

    /// Whether a file with this path is covered (an unnamed file only when
    /// no glob is given).
    pub fn selects_path(&self, path: Option<&str>) -> bool {
        match (&self.paths, path) {
            (None, _) => true,
            (Some(set), Some(p)) => set.is_match(p),
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_and_names_select_any_of_them() {
        let mut names = Names::default();
        names.insert(7, "mds".into());
        let f = Filter::all().pids(&[5]).comms(&["mds".into()]);
        assert!(f.selects(5, 0, 0, &names));
        assert!(f.selects(7, 0, 0, &names));
        assert!(!f.selects(8, 0, 0, &names));
        // A name the lookup does not know yet selects nothing.
        let f = Filter::all().comms(&["Safari".into()]);
        assert!(!f.selects(7, 0, 0, &names));
        assert!(!f.selects(7, 0, 0, &Names::default()));
        assert!(Filter::all().selects(7, 0, 0, &Names::default()));
    }

    #[test]
    fn the_window_counts_from_the_start_of_the_trace() {
        let f = Filter::all().window(Some(1.0), Some(2.5)).unwrap();
        let start = 1_000_000_000_000;
        assert!(!f.selects(1, start + 999_999_999, start, &Names::default()));
        assert!(f.selects(1, start + 1_000_000_000, start, &Names::default()));
        assert!(f.selects(1, start + 2_500_000_000, start, &Names::default()));
        assert!(!f.selects(1, start + 2_500_000_001, start, &Names::default()));
        assert_eq!(
            Filter::all().window(Some(3.0), Some(2.0)).unwrap_err(),
            FilterError::EmptyWindow {
                since: 3.0,
                until: 2.0
            }
        );
        assert!(matches!(
            Filter::all().window(Some(-1.0), None),
            Err(FilterError::BadSeconds { flag: "since", .. })
        ));
    }

    #[test]
    fn a_clock_window_bounds_the_kexts_own_clock() {
        let shown = ("a", "b");
        let f = Filter::all()
            .clock_window(Some(5_000), Some(7_000), shown)
            .unwrap();
        assert!(f.selects_events());
        let names = Names::default();
        // The trace's start does not move it.
        for start in [0, 4_000, 6_000] {
            assert!(!f.selects(1, 4_999, start, &names));
            assert!(f.selects(1, 5_000, start, &names));
            assert!(f.selects(1, 7_000, start, &names));
            assert!(!f.selects(1, 7_001, start, &names));
        }
        // With a relative window too, both must hold.
        let f = f.window(Some(0.000_002), None).unwrap();
        assert!(!f.selects(1, 5_000, 4_000, &names));
        assert!(f.selects(1, 6_000, 4_000, &names));
        assert_eq!(
            Filter::all()
                .clock_window(Some(2), Some(1), shown)
                .unwrap_err()
                .to_string(),
            "--since a is after --until b: the window would be empty"
        );
    }

    #[test]
    fn globs_match_whole_components() {
        let f = Filter::all()
            .paths(&["/usr/lib/*.dylib".into(), "/data/**".into()])
            .unwrap();
        assert!(f.selects_path(Some("/usr/lib/libleak.dylib")));
        assert!(!f.selects_path(Some("/usr/lib/system/libc.dylib")));
        assert!(f.selects_path(Some("/data/a/b/app.db")));
        assert!(!f.selects_path(None));
        assert!(Filter::all().selects_path(None));
        let e = Filter::all().paths(&["/usr/[lib".into()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--path `/usr/[lib` is not a valid glob"),
            "{e}"
        );
    }
}
