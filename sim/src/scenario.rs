//! Scenario scripts: a small line-based language (documented in
//! `sim/README.md`) parsed with line/column errors, a seeded random workload
//! generator, and a runner that drives a [`Sim`] with one OS thread per
//! simulated process.

use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::api::{Proc, Sim};
use crate::vm::{OpenMode, TouchStats, map_flags, prot};

/// The built-in demo `maptrace demo` runs.
pub const DEMO: &str = include_str!("../scenarios/demo.mts");

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
    /// `mount FSTYPE PATH`.
    Mount {
        /// Filesystem type.
        fstype: String,
        /// Mount point.
        on: String,
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
}

// ---------------------------------------------------------------- lexing

#[derive(Clone, Debug)]
struct Tok<'a> {
    text: &'a str,
    col: usize,
}

fn tokens(line: &str) -> Vec<Tok<'_>> {
    let code = line.split('#').next().unwrap_or("");
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push(Tok {
                    text: &code[s..i],
                    col: s + 1,
                });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Tok {
            text: &code[s..],
            col: s + 1,
        });
    }
    out
}

struct Cursor<'a> {
    line: usize,
    toks: Vec<Tok<'a>>,
    i: usize,
    end_col: usize,
}

impl<'a> Cursor<'a> {
    fn err<T>(&self, col: usize, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            col,
            msg: msg.into(),
        })
    }

    fn next(&mut self, what: &str) -> Result<Tok<'a>, ParseError> {
        match self.toks.get(self.i) {
            Some(t) => {
                self.i += 1;
                Ok(t.clone())
            }
            None => self.err(self.end_col, format!("expected {what}")),
        }
    }

    fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.i)
    }

    fn done(&self) -> Result<(), ParseError> {
        match self.peek() {
            Some(t) => self.err(t.col, format!("unexpected `{}`", t.text)),
            None => Ok(()),
        }
    }

    fn path(&mut self) -> Result<String, ParseError> {
        let t = self.next("a path")?;
        if !t.text.starts_with('/') {
            return self.err(t.col, format!("`{}` is not an absolute path", t.text));
        }
        Ok(t.text.to_string())
    }

    fn label(&mut self, what: &str) -> Result<String, ParseError> {
        let t = self.next(what)?;
        if !is_label(t.text) {
            return self.err(t.col, format!("`{}` is not a valid {what}", t.text));
        }
        Ok(t.text.to_string())
    }

    fn size(&mut self, what: &str) -> Result<u64, ParseError> {
        let t = self.next(what)?;
        parse_size(t.text).ok_or_else(|| ParseError {
            line: self.line,
            col: t.col,
            msg: format!("bad {what} `{}`", t.text),
        })
    }

    /// An optional `force`.
    fn force_flag(&mut self) -> bool {
        match self.peek() {
            Some(t) if t.text == "force" => {
                self.i += 1;
                true
            }
            _ => false,
        }
    }

    /// `as LABEL` at the end of the line.
    fn as_label(&mut self, what: &str) -> Result<String, ParseError> {
        let t = self.next("`as`")?;
        if t.text != "as" {
            return self.err(t.col, format!("expected `as`, found `{}`", t.text));
        }
        self.label(what)
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// `4096`, `16K`, `1M`, `2G` (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = if let Some(hex) = num.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()?
    } else {
        num.parse().ok()?
    };
    n.checked_mul(mul)
}

fn fmt_size(n: u64) -> String {
    if n != 0 && n % (1 << 20) == 0 {
        format!("{}M", n >> 20)
    } else if n != 0 && n % (1 << 10) == 0 {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    if let Some(n) = s.strip_suffix("ms") {
        return n.parse().ok().map(Duration::from_millis);
    }
    if let Some(n) = s.strip_suffix("us") {
        return n.parse().ok().map(Duration::from_micros);
    }
    s.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .map(Duration::from_secs)
}

/// A duration in the largest unit that holds it exactly, so it parses back
/// (a long sleep in microseconds would overflow the parser's u64).
fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

fn parse_prot(s: &str) -> Option<i32> {
    if s == "none" || s == "-" {
        return Some(0);
    }
    let mut p = 0;
    for c in s.chars() {
        let bit = match c {
            'r' => prot::READ,
            'w' => prot::WRITE,
            'x' => prot::EXEC,
            _ => return None,
        };
        if p & bit != 0 {
            return None;
        }
        p |= bit;
    }
    Some(p)
}

fn fmt_prot(p: i32) -> String {
    if p == 0 {
        return "none".into();
    }
    [(prot::READ, 'r'), (prot::WRITE, 'w'), (prot::EXEC, 'x')]
        .iter()
        .filter(|(b, _)| p & b != 0)
        .map(|(_, c)| *c)
        .collect()
}

fn parse_open_mode(s: &str) -> Option<OpenMode> {
    match s {
        "ro" => Some(OpenMode::ReadOnly),
        "rw" => Some(OpenMode::ReadWrite),
        "evtonly" => Some(OpenMode::EvtOnly),
        _ => None,
    }
}

fn fmt_open_mode(m: OpenMode) -> &'static str {
    match m {
        OpenMode::ReadOnly => "",
        OpenMode::ReadWrite => " rw",
        OpenMode::EvtOnly => " evtonly",
    }
}

fn parse_flags(s: &str) -> Option<i32> {
    let mut f = 0;
    for part in s.split(',') {
        f |= match part {
            "shared" => map_flags::SHARED,
            "private" => map_flags::PRIVATE,
            "fixed" => map_flags::FIXED,
            _ => return None,
        };
    }
    let kinds = f & (map_flags::SHARED | map_flags::PRIVATE);
    (kinds == map_flags::SHARED || kinds == map_flags::PRIVATE).then_some(f)
}

fn fmt_flags(f: i32) -> String {
    let mut v = Vec::new();
    if f & map_flags::SHARED != 0 {
        v.push("shared");
    }
    if f & map_flags::PRIVATE != 0 {
        v.push("private");
    }
    if f & map_flags::FIXED != 0 {
        v.push("fixed");
    }
    v.join(",")
}

// ---------------------------------------------------------------- parsing

fn parse_op(c: &mut Cursor<'_>) -> Result<Op, ParseError> {
    let t = c.next("an operation")?;
    let op = match t.text {
        "open" => {
            let path = c.path()?;
            let mut mode = OpenMode::ReadOnly;
            if let Some(t) = c.peek().cloned()
                && t.text != "as"
            {
                mode = parse_open_mode(t.text).ok_or_else(|| ParseError {
                    line: c.line,
                    col: t.col,
                    msg: format!("bad open mode `{}` (use ro, rw or evtonly)", t.text),
                })?;
                c.i += 1;
            }
            let fd = c.as_label("descriptor name")?;
            Op::Open { path, mode, fd }
        }
        "close" => Op::Close {
            fd: c.label("descriptor name")?,
        },
        "mmap" => {
            let fd = c.label("descriptor name")?;
            let (mut p, mut flags, mut offset, mut len) = (prot::READ, map_flags::PRIVATE, 0, None);
            while let Some(t) = c.peek().cloned() {
                let Some((key, val)) = t.text.split_once('=') else {
                    break;
                };
                c.i += 1;
                let bad = |what: &str| ParseError {
                    line: c.line,
                    col: t.col + key.len() + 1,
                    msg: format!("bad {what} `{val}`"),
                };
                match key {
                    "prot" => p = parse_prot(val).ok_or_else(|| bad("prot (use r, w, x, none)"))?,
                    "flags" => {
                        flags = parse_flags(val)
                            .ok_or_else(|| bad("flags (shared or private[,fixed])"))?
                    }
                    "offset" => offset = parse_size(val).ok_or_else(|| bad("offset"))?,
                    "len" => {
                        len = Some(
                            parse_size(val)
                                .filter(|n| *n > 0)
                                .ok_or_else(|| bad("len"))?,
                        )
                    }
                    _ => return c.err(t.col, format!("unknown mmap option `{key}`")),
                }
            }
            let map = c.as_label("mapping name")?;
            Op::Mmap {
                fd,
                prot: p,
                flags,
                offset,
                len,
                map,
            }
        }
        "touch" => {
            let map = c.label("mapping name")?;
            let offset = if c.peek().is_some() {
                c.size("offset")?
            } else {
                0
            };
            let len = if c.peek().is_some() {
                Some(c.size("length")?)
            } else {
                None
            };
            Op::Touch { map, offset, len }
        }
        "munmap" => Op::Munmap {
            map: c.label("mapping name")?,
        },
        "exec" => Op::Exec { path: c.path()? },
        "unmount" => {
            let on = c.path()?;
            Op::Unmount {
                on,
                force: c.force_flag(),
            }
        }
        "exit" => Op::Exit,
        "fork" => Op::Fork {
            child: c.as_label("process name")?,
        },
        "spawn" => {
            let path = c.path()?;
            Op::Spawn {
                path,
                child: c.as_label("process name")?,
            }
        }
        other => return c.err(t.col, format!("unknown operation `{other}`")),
    };
    c.done()?;
    Ok(op)
}

impl Scenario {
    /// Parses a script.
    pub fn parse(text: &str) -> Result<Scenario, ParseError> {
        let mut steps = Vec::new();
        let mut lines = Vec::new();
        let mut procs: HashMap<String, usize> = HashMap::new();
        let mut parallel: Option<(usize, Vec<ParallelOp>)> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let toks = tokens(raw);
            if toks.is_empty() {
                continue;
            }
            let end_col = raw.split('#').next().unwrap_or("").trim_end().len() + 1;
            let mut c = Cursor {
                line,
                toks,
                i: 0,
                end_col,
            };
            let first = c.peek().cloned().ok_or_else(|| ParseError {
                line,
                col: 1,
                msg: "empty".into(),
            })?;
            if let Some(name) = first.text.strip_suffix(':') {
                if !procs.contains_key(name) {
                    return c.err(
                        first.col,
                        format!("unknown process `{name}` (declare it with `proc {name}`)"),
                    );
                }
                c.i += 1;
                let op = parse_op(&mut c)?;
                if let Op::Fork { child } | Op::Spawn { child, .. } = &op {
                    if procs.contains_key(child) {
                        return c.err(first.col, format!("process `{child}` declared twice"));
                    }
                    procs.insert(child.clone(), line);
                }
                match &mut parallel {
                    Some((_, ops)) => ops.push((line, name.to_string(), op)),
                    None => {
                        steps.push(Step::Op {
                            line,
                            proc: name.to_string(),
                            op,
                        });
                        lines.push(line);
                    }
                }
                continue;
            }
            c.i += 1;
            if parallel.is_some() && first.text != "end" {
                return c.err(
                    first.col,
                    "only `NAME: operation` lines may appear inside `parallel`",
                );
            }
            let step = match first.text {
                "mount" => {
                    let fstype = c.label("filesystem type")?;
                    Step::Mount {
                        fstype,
                        on: c.path()?,
                    }
                }
                "file" => {
                    let path = c.path()?;
                    Step::File {
                        path,
                        size: c.size("size")?,
                    }
                }
                "proc" => {
                    let name = c.label("process name")?;
                    if procs.contains_key(&name) {
                        return c.err(first.col + 5, format!("process `{name}` declared twice"));
                    }
                    let mut uid = 501;
                    if let Some(t) = c.peek().cloned() {
                        let Some(v) = t.text.strip_prefix("uid=") else {
                            return c.err(t.col, format!("expected uid=N, found `{}`", t.text));
                        };
                        uid = v.parse().map_err(|_| ParseError {
                            line,
                            col: t.col + 4,
                            msg: format!("bad uid `{v}`"),
                        })?;
                        c.i += 1;
                    }
                    procs.insert(name.clone(), line);
                    Step::Proc { name, uid }
                }
                "sleep" => {
                    let t = c.next("a duration")?;
                    Step::Sleep(parse_duration(t.text).ok_or_else(|| ParseError {
                        line,
                        col: t.col,
                        msg: format!("bad duration `{}` (use 10ms, 500us or 1s)", t.text),
                    })?)
                }
                "unmount" => {
                    let on = c.path()?;
                    Step::Unmount {
                        on,
                        force: c.force_flag(),
                    }
                }
                "jetsam" => {
                    let t = c.peek().cloned();
                    let name = c.label("process name")?;
                    if !procs.contains_key(&name) {
                        let col = t.map_or(c.end_col, |t| t.col);
                        return c.err(col, format!("unknown process `{name}`"));
                    }
                    Step::Jetsam { proc: name }
                }
                "recycle" => Step::Recycle { path: c.path()? },
                "evict" => Step::Evict { path: c.path()? },
                "parallel" => {
                    c.done()?;
                    parallel = Some((line, Vec::new()));
                    continue;
                }
                "end" => {
                    c.done()?;
                    let Some((_, ops)) = parallel.take() else {
                        return c.err(first.col, "`end` without `parallel`");
                    };
                    steps.push(Step::Parallel(ops));
                    lines.push(line);
                    continue;
                }
                other => return c.err(first.col, format!("unknown command `{other}`")),
            };
            c.done()?;
            steps.push(step);
            lines.push(line);
        }
        if let Some((line, _)) = parallel {
            return Err(ParseError {
                line,
                col: 1,
                msg: "`parallel` without `end`".into(),
            });
        }
        Ok(Scenario { steps, lines })
    }

    /// Runs the scenario; a failing operation stops the run.
    pub fn run(&self, sim: &Sim) -> Result<RunReport, RunError> {
        let mut workers: HashMap<String, Worker> = HashMap::new();
        let mut report = RunReport::default();
        let result = self.run_steps(sim, &mut workers, &mut report);
        for (_, w) in workers.drain() {
            w.finish();
        }
        result.map(|()| report)
    }

    fn run_steps(
        &self,
        sim: &Sim,
        workers: &mut HashMap<String, Worker>,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let fail = |line: usize, msg: String| RunError { line, msg };
        for (i, step) in self.steps.iter().enumerate() {
            let at = self.lines.get(i).copied().unwrap_or(0);
            match step {
                Step::Mount { fstype, on } => sim
                    .mount(fstype, on)
                    .map_err(|e| fail(at, format!("mount {fstype} {on}: {e}")))?,
                Step::File { path, size } => sim
                    .add_file(path, *size)
                    .map_err(|e| fail(at, format!("file {path}: {e}")))?,
                Step::Proc { name, uid } => {
                    let w = Worker::spawn(name, sim.spawn(name, *uid), ProcState::default(), false);
                    workers.insert(name.clone(), w);
                }
                Step::Op { line, proc, op } => {
                    let w = workers
                        .get(proc)
                        .ok_or_else(|| fail(*line, format!("no process {proc}")))?;
                    w.send(*line, op.clone());
                    let reply = w.recv(*line)?;
                    merge(report, workers, *line, op, reply)?;
                }
                Step::Parallel(ops) => {
                    for (line, proc, op) in ops {
                        let w = workers
                            .get(proc)
                            .ok_or_else(|| fail(*line, format!("no process {proc}")))?;
                        w.send(*line, op.clone());
                    }
                    let mut first_err = None;
                    for (line, proc, op) in ops {
                        let reply = match workers.get(proc) {
                            Some(w) => w.recv(*line),
                            None => continue,
                        };
                        if let Err(e) = reply.and_then(|r| merge(report, workers, *line, op, r)) {
                            first_err = first_err.or(Some(e));
                        }
                    }
                    if let Some(e) = first_err {
                        return Err(e);
                    }
                }
                Step::Sleep(d) => std::thread::sleep(*d),
                Step::Unmount { on, force } => sim
                    .unmount(on, *force)
                    .map_err(|e| fail(at, format!("unmount {on}: {e}")))?,
                Step::Jetsam { proc } => {
                    let w = workers
                        .get(proc)
                        .ok_or_else(|| fail(at, format!("no process {proc}")))?;
                    sim.jetsam(&w.proc)
                        .map_err(|e| fail(at, format!("jetsam {proc}: {e}")))?;
                }
                Step::Recycle { path } => {
                    sim.recycle(path)
                        .map_err(|e| fail(at, format!("recycle {path}: {e}")))?;
                }
                Step::Evict { path } => {
                    sim.evict(path)
                        .map_err(|e| fail(at, format!("evict {path}: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

/// Accounts one reply; a fork starts the child's thread, and a spawned
/// child's thread first faults its entry pages.
fn merge(
    r: &mut RunReport,
    workers: &mut HashMap<String, Worker>,
    line: usize,
    op: &Op,
    reply: Reply,
) -> Result<(), RunError> {
    r.ops += 1;
    let add = |r: &mut RunReport, t: TouchStats| {
        r.touches.pages += t.pages;
        r.touches.hits += t.hits;
        r.touches.pageins += t.pageins;
    };
    match (reply, op) {
        (Reply::Done(Some(t)), _) => add(r, t),
        (Reply::Forked(p, st), Op::Fork { child }) => {
            workers.insert(child.clone(), Worker::spawn(child, p, st, false));
        }
        (Reply::Forked(p, st), Op::Spawn { child, .. }) => {
            let w = Worker::spawn(child, p, st, true);
            let started = w.recv(line);
            workers.insert(child.clone(), w);
            if let Reply::Done(Some(t)) = started.map_err(|e| RunError { line, msg: e.msg })? {
                add(r, t);
            }
        }
        _ => {}
    }
    Ok(())
}

/// What a process thread reports for one operation.
enum Reply {
    /// Done; a touch reports its stats.
    Done(Option<TouchStats>),
    /// fork made this child, with the parent's labels.
    Forked(Proc, ProcState),
}

/// A process's OS thread: runs its operations in order.
struct Worker {
    name: String,
    proc: Proc,
    tx: Option<mpsc::Sender<(usize, Op)>>,
    rx: mpsc::Receiver<Result<Reply, RunError>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// `start`: the process was spawned; its thread first runs
    /// [`Proc::start`] and replies.
    fn spawn(name: &str, p: Proc, st: ProcState, start: bool) -> Worker {
        let (tx, op_rx) = mpsc::channel::<(usize, Op)>();
        let (res_tx, rx) = mpsc::channel();
        let label = name.to_string();
        let handle_proc = p.clone();
        let handle = std::thread::Builder::new()
            .name(format!("sim-{name}"))
            .spawn(move || {
                if start {
                    let r = p
                        .start()
                        .map(|t| Reply::Done(Some(t)))
                        .map_err(|e| RunError {
                            line: 0,
                            msg: format!("start {label}: {e}"),
                        });
                    if res_tx.send(r).is_err() {
                        return;
                    }
                }
                let mut st = st;
                for (line, op) in op_rx {
                    let r = st.apply(&p, &op).map_err(|msg| RunError { line, msg });
                    if res_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn a process thread");
        Worker {
            name: name.to_string(),
            proc: handle_proc,
            tx: Some(tx),
            rx,
            handle: Some(handle),
        }
    }

    fn send(&self, line: usize, op: Op) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((line, op));
        }
    }

    /// The next result; a thread that panicked (a violation) re-raises here.
    fn recv(&self, line: usize) -> Result<Reply, RunError> {
        match self.rx.recv() {
            Ok(r) => r,
            Err(_) => Err(RunError {
                line,
                msg: format!("process {} died", self.name),
            }),
        }
    }

    fn finish(mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take()
            && let Err(panic) = h.join()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A process's descriptor and mapping labels.
#[derive(Clone, Default)]
struct ProcState {
    fds: HashMap<String, (i32, String)>,
    maps: HashMap<String, (u64, u64)>,
}

impl ProcState {
    fn apply(&mut self, p: &Proc, op: &Op) -> Result<Reply, String> {
        let e = |what: String| move |err: crate::api::SimError| format!("{what}: {err}");
        match op {
            Op::Open { path, mode, fd } => {
                let n = p
                    .open_mode(path, *mode)
                    .map_err(e(format!("open {path}")))?;
                self.fds.insert(fd.clone(), (n, path.clone()));
            }
            Op::Close { fd } => {
                let (n, _) = self.fds.remove(fd).ok_or(format!("no descriptor {fd}"))?;
                p.close(n).map_err(e(format!("close {fd}")))?;
            }
            Op::Mmap {
                fd,
                prot,
                flags,
                offset,
                len,
                map,
            } => {
                let (n, _) = self
                    .fds
                    .get(fd)
                    .cloned()
                    .ok_or(format!("no descriptor {fd}"))?;
                let len = match len {
                    Some(l) => *l,
                    None => {
                        let size = p
                            .file_size(n)
                            .ok_or(format!("descriptor {fd} is not open"))?;
                        size.saturating_sub(*offset).max(1)
                    }
                };
                let a = p
                    .mmap(n, len, *prot, *flags, *offset)
                    .map_err(e(format!("mmap {fd}")))?;
                self.maps.insert(map.clone(), (a, len));
            }
            Op::Touch { map, offset, len } => {
                let (a, l) = *self.maps.get(map).ok_or(format!("no mapping {map}"))?;
                if *offset >= l {
                    return Err(format!(
                        "touch {map}: offset {offset} is past its {l} bytes"
                    ));
                }
                let len = len.unwrap_or(l - offset);
                return p
                    .touch(a + offset, len)
                    .map(|t| Reply::Done(Some(t)))
                    .map_err(e(format!("touch {map}")));
            }
            Op::Munmap { map } => {
                let (a, _) = self.maps.remove(map).ok_or(format!("no mapping {map}"))?;
                p.munmap(a).map_err(e(format!("munmap {map}")))?;
            }
            Op::Exec { path } => {
                p.exec(path).map_err(e(format!("exec {path}")))?;
                self.maps.clear();
            }
            Op::Unmount { on, force } => {
                p.unmount(on, *force).map_err(e(format!("unmount {on}")))?;
            }
            Op::Exit => {
                p.exit();
                self.maps.clear();
                self.fds.clear();
            }
            Op::Fork { child } => {
                let c = p.fork().map_err(e(format!("fork as {child}")))?;
                return Ok(Reply::Forked(c, self.clone()));
            }
            Op::Spawn { path, child } => {
                let c = p
                    .posix_spawn(path)
                    .map_err(e(format!("spawn {path} as {child}")))?;
                return Ok(Reply::Forked(c, ProcState::default()));
            }
        }
        Ok(Reply::Done(None))
    }
}

// ---------------------------------------------------------------- printing

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Open { path, mode, fd } => {
                write!(f, "open {path}{} as {fd}", fmt_open_mode(*mode))
            }
            Op::Close { fd } => write!(f, "close {fd}"),
            Op::Mmap {
                fd,
                prot,
                flags,
                offset,
                len,
                map,
            } => {
                write!(
                    f,
                    "mmap {fd} prot={} flags={} offset={}",
                    fmt_prot(*prot),
                    fmt_flags(*flags),
                    fmt_size(*offset)
                )?;
                if let Some(l) = len {
                    write!(f, " len={}", fmt_size(*l))?;
                }
                write!(f, " as {map}")
            }
            Op::Touch { map, offset, len } => {
                write!(f, "touch {map} {}", fmt_size(*offset))?;
                if let Some(l) = len {
                    write!(f, " {}", fmt_size(*l))?;
                }
                Ok(())
            }
            Op::Munmap { map } => write!(f, "munmap {map}"),
            Op::Exec { path } => write!(f, "exec {path}"),
            Op::Exit => write!(f, "exit"),
            Op::Fork { child } => write!(f, "fork as {child}"),
            Op::Spawn { path, child } => write!(f, "spawn {path} as {child}"),
            Op::Unmount { on, force } => {
                write!(f, "unmount {on}{}", if *force { " force" } else { "" })
            }
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            match s {
                Step::Mount { fstype, on } => writeln!(f, "mount {fstype} {on}")?,
                Step::File { path, size } => writeln!(f, "file {path} {}", fmt_size(*size))?,
                Step::Proc { name, uid } => writeln!(f, "proc {name} uid={uid}")?,
                Step::Op { proc, op, .. } => writeln!(f, "{proc}: {op}")?,
                Step::Parallel(ops) => {
                    writeln!(f, "parallel")?;
                    for (_, proc, op) in ops {
                        writeln!(f, "  {proc}: {op}")?;
                    }
                    writeln!(f, "end")?;
                }
                Step::Sleep(d) => writeln!(f, "sleep {}", fmt_duration(*d))?,
                Step::Unmount { on, force } => {
                    writeln!(f, "unmount {on}{}", if *force { " force" } else { "" })?
                }
                Step::Jetsam { proc } => writeln!(f, "jetsam {proc}")?,
                Step::Recycle { path } => writeln!(f, "recycle {path}")?,
                Step::Evict { path } => writeln!(f, "evict {path}")?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- generator

/// Shape of a generated workload.
#[derive(Clone, Copy, Debug)]
pub struct GenParams {
    /// Processes.
    pub procs: usize,
    /// Data files.
    pub files: usize,
    /// Operations per process (besides exec and exit).
    pub ops_per_proc: usize,
    /// Run the processes' operations in `parallel` blocks.
    pub parallel: bool,
    /// End with a forced unmount of the data volume.
    pub force_unmount: bool,
    /// Sizes and offsets are multiples of this (16 KiB by default: valid
    /// on 4 KiB and 16 KiB page platforms alike).
    pub page_size: u64,
}

impl Default for GenParams {
    fn default() -> GenParams {
        GenParams {
            procs: 4,
            files: 6,
            ops_per_proc: 40,
            parallel: true,
            force_unmount: true,
            page_size: 16384,
        }
    }
}

/// A random but valid workload: the same seed gives the same scenario.
pub fn generate(seed: u64, g: &GenParams) -> Scenario {
    let mut rng = fastrand::Rng::with_seed(seed);
    let ps = g.page_size;
    let mut steps = vec![
        Step::Mount {
            fstype: "apfs".into(),
            on: "/".into(),
        },
        Step::Mount {
            fstype: "hfs".into(),
            on: "/Volumes/Data".into(),
        },
    ];
    let files: Vec<(String, u64)> = (0..g.files.max(1))
        .map(|i| (format!("/Volumes/Data/f{i}"), ps * rng.u64(1..=64)))
        .collect();
    let tools: Vec<(String, u64)> = (0..2)
        .map(|i| (format!("/bin/tool{i}"), ps * rng.u64(4..=32)))
        .collect();
    for (path, size) in files.iter().chain(tools.iter()) {
        steps.push(Step::File {
            path: path.clone(),
            size: *size,
        });
    }
    let names: Vec<String> = (0..g.procs.max(1)).map(|i| format!("p{i}")).collect();
    for n in &names {
        steps.push(Step::Proc {
            name: n.clone(),
            uid: 501,
        });
    }
    // Per-process op lists, generated with label bookkeeping so every op is valid.
    let mut lists: Vec<Vec<Op>> = Vec::new();
    for _ in &names {
        let mut ops = Vec::new();
        if rng.bool() {
            ops.push(Op::Exec {
                path: tools[rng.usize(..tools.len())].0.clone(),
            });
        }
        let mut fds: Vec<(String, u64)> = Vec::new();
        let mut maps: Vec<(String, u64)> = Vec::new();
        let mut next = 0;
        for _ in 0..g.ops_per_proc {
            next += 1;
            let choice = rng.u32(..100);
            if fds.is_empty() || choice < 15 {
                let (path, size) = files[rng.usize(..files.len())].clone();
                let fd = format!("fd{next}");
                ops.push(Op::Open {
                    path,
                    mode: OpenMode::ReadOnly,
                    fd: fd.clone(),
                });
                fds.push((fd, size));
            } else if maps.is_empty() || choice < 40 {
                let (fd, size) = fds[rng.usize(..fds.len())].clone();
                let pages = size / ps;
                let off = rng.u64(..pages);
                let len = ps * rng.u64(1..=pages - off);
                let map = format!("m{next}");
                let flags = if rng.bool() {
                    map_flags::SHARED
                } else {
                    map_flags::PRIVATE
                };
                ops.push(Op::Mmap {
                    fd,
                    prot: prot::READ,
                    flags,
                    offset: off * ps,
                    len: Some(len),
                    map: map.clone(),
                });
                maps.push((map, len));
            } else if choice < 80 {
                let (map, len) = maps[rng.usize(..maps.len())].clone();
                let pages = len / ps;
                let off = rng.u64(..pages);
                let n = rng.u64(1..=(pages - off).min(8));
                ops.push(Op::Touch {
                    map,
                    offset: off * ps,
                    len: Some(n * ps),
                });
            } else if choice < 92 {
                let (map, _) = maps.swap_remove(rng.usize(..maps.len()));
                ops.push(Op::Munmap { map });
            } else if choice < 97 {
                let (fd, _) = fds.swap_remove(rng.usize(..fds.len()));
                ops.push(Op::Close { fd });
            } else {
                // exec replaces the address space; descriptors stay open.
                ops.push(Op::Exec {
                    path: tools[rng.usize(..tools.len())].0.clone(),
                });
                maps.clear();
            }
        }
        ops.push(Op::Exit);
        lists.push(ops);
    }
    if g.parallel {
        let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..longest {
            let block: Vec<ParallelOp> = names
                .iter()
                .zip(&lists)
                .filter_map(|(n, ops)| ops.get(i).map(|op| (0, n.clone(), op.clone())))
                .collect();
            steps.push(Step::Parallel(block));
        }
    } else {
        for (n, ops) in names.iter().zip(lists) {
            steps.extend(ops.into_iter().map(|op| Step::Op {
                line: 0,
                proc: n.clone(),
                op,
            }));
        }
    }
    if g.force_unmount {
        steps.push(Step::Unmount {
            on: "/Volumes/Data".into(),
            force: true,
        });
    }
    let lines = vec![0; steps.len()];
    Scenario { steps, lines }
}
