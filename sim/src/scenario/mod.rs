//! Scenario scripts: a small line-based language (documented in
//! `sim/README.md`) parsed with line/column errors, a seeded random workload
//! generator, and a runner that drives a [`Sim`](crate::Sim) with one OS
//! thread per simulated process.
//!
//! This file holds the syntax tree and the results; `lex` (tokens and value
//! syntaxes), `parse`, `print`, `run` and `generate` each do one job on it.

use std::fmt;
use std::time::Duration;

use crate::vm::{OpenMode, TouchStats};

mod generate;
mod lex;
mod parse;
mod print;
mod run;

pub use generate::{GenParams, generate};
pub use lex::parse_size;

/// The built-in demo `maptrace demo` runs.
pub const DEMO: &str = include_str!("../../scenarios/demo.mts");

/// One operation of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `open PATH [ro|rw|evtonly] as FD`.
    Open {
        /// File.
        path: String,
        /// Access mode (default `ro`).
        mode: OpenMode,
        /// Label of the descriptor.
        fd: String,
    },
    /// `close FD`.
    Close {
        /// Descriptor label.
        fd: String,
    },
    /// `mmap FD [prot=..] [flags=..] [offset=..] [len=..] as MAP`.
    Mmap {
        /// Descriptor label.
        fd: String,
        /// PROT_* bits.
        prot: i32,
        /// MAP_* bits.
        flags: i32,
        /// File offset.
        offset: u64,
        /// Length; None maps to the end of the file.
        len: Option<u64>,
        /// Label of the mapping.
        map: String,
    },
    /// `touch MAP [OFFSET [LEN]]`: reads part of a mapping.
    Touch {
        /// Mapping label.
        map: String,
        /// Offset into the mapping.
        offset: u64,
        /// Bytes; None to the end of the mapping.
        len: Option<u64>,
    },
    /// `munmap MAP`.
    Munmap {
        /// Mapping label.
        map: String,
    },
    /// `exec PATH`.
    Exec {
        /// Executable.
        path: String,
    },
    /// `fork as CHILD`: CHILD is a new process label from this line on.
    Fork {
        /// Label of the child.
        child: String,
    },
    /// `spawn PATH as CHILD`: posix_spawn; CHILD is a new process label
    /// from this line on.
    Spawn {
        /// Executable.
        path: String,
        /// Label of the child.
        child: String,
    },
    /// `unmount PATH [force]`: unmount(2) called by this process.
    Unmount {
        /// Mount point.
        on: String,
        /// MNT_FORCE.
        force: bool,
    },
    /// `exit`.
    Exit,
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `mount FSTYPE PATH [from DIR]`: `from` mirrors DIR, a directory of
    /// another mount, with a stacking filesystem (nullfs, bindfs).
    Mount {
        /// Filesystem type.
        fstype: String,
        /// Mount point.
        on: String,
        /// The mirrored directory (stacking filesystems only).
        from: Option<String>,
    },
    /// `file PATH SIZE`.
    File {
        /// Path.
        path: String,
        /// Bytes.
        size: u64,
    },
    /// `proc NAME [uid=N]`.
    Proc {
        /// Label.
        name: String,
        /// uid.
        uid: u32,
    },
    /// `NAME: OP ...`.
    Op {
        /// Source line.
        line: usize,
        /// Process label.
        proc: String,
        /// The operation.
        op: Op,
    },
    /// `parallel` ... `end`: the operations run at once, one thread per
    /// process (a process's own operations keep their order).
    Parallel(Vec<ParallelOp>),
    /// `sleep DURATION`.
    Sleep(Duration),
    /// `unmount PATH [force]`: by the modelled diskarbitrationd.
    Unmount {
        /// Mount point.
        on: String,
        /// MNT_FORCE.
        force: bool,
    },
    /// `jetsam NAME`: memorystatus kills the process (its teardown is
    /// kernel_task's).
    Jetsam {
        /// Process label.
        proc: String,
    },
    /// `recycle PATH`.
    Recycle {
        /// File.
        path: String,
    },
    /// `evict PATH`: memory pressure drops the file's cached pages.
    Evict {
        /// File.
        path: String,
    },
    /// `chapter TEXT`: a heading for the part that follows. Running it does
    /// nothing; a reader shows it (`maptrace demo` prints it between parts).
    Chapter(String),
    /// `ring slots=N [shards=N]`: the size of the kext's ring, read by the
    /// companion's simulator source when it loads the kext, before any step
    /// runs (the shim reads its tunables once, at start). Running it does
    /// nothing.
    Ring(RingSize),
}

/// The kext's ring size a scenario asks for (`ring slots=N [shards=N]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSize {
    /// Shards (default 1).
    pub shards: u32,
    /// 64-byte slots per shard (a power of two, as the shim requires).
    pub slots: u32,
}

/// One operation of a `parallel` block: (line, process, operation).
pub type ParallelOp = (usize, String, Op);

/// A parsed scenario.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Scenario {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Source line of each step (0 where the step was generated).
    pub lines: Vec<usize>,
}

impl Scenario {
    /// The ring size the script asks for (its first `ring` line), if any.
    pub fn ring(&self) -> Option<RingSize> {
        self.steps.iter().find_map(|s| match s {
            Step::Ring(r) => Some(*r),
            _ => None,
        })
    }
}

/// A syntax error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.msg)
    }
}

impl std::error::Error for ParseError {}

/// A step that failed while running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunError {
    /// Source line (0 for generated steps without one).
    pub line: usize,
    /// What failed.
    pub msg: String,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for RunError {}

/// Totals of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Operations run.
    pub ops: usize,
    /// Sum of every touch.
    pub touches: TouchStats,
    /// The run was asked to stop before its last step.
    pub stopped: bool,
}
