//! Running: one OS thread per simulated process, driven step by step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Op, RunError, RunReport, Scenario, Step};
use crate::api::{Proc, Sim};
use crate::vm::TouchStats;

impl Scenario {
    /// Runs the scenario; a failing operation stops the run.
    pub fn run(&self, sim: &Sim) -> Result<RunReport, RunError> {
        self.run_until(sim, &AtomicBool::new(false), |_| {})
    }

    /// Runs the scenario until its end or until `stop` is set: the flag is
    /// checked before each step, after `before_step`, and every few
    /// milliseconds of a `sleep`, so a reader that stops gets the runner
    /// back promptly (a step already running finishes first).
    /// `before_step` sees each step before it runs; a reader uses it to
    /// pace the run or to show a `chapter`.
    pub fn run_until(
        &self,
        sim: &Sim,
        stop: &AtomicBool,
        before_step: impl FnMut(&Step),
    ) -> Result<RunReport, RunError> {
        let mut workers: HashMap<String, Worker> = HashMap::new();
        let mut report = RunReport::default();
        let result = self.run_steps(sim, &mut workers, &mut report, stop, before_step);
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
        stop: &AtomicBool,
        mut before_step: impl FnMut(&Step),
    ) -> Result<(), RunError> {
        let fail = |line: usize, msg: String| RunError { line, msg };
        let stopped = || stop.load(Ordering::Relaxed);
        for (i, step) in self.steps.iter().enumerate() {
            let at = self.lines.get(i).copied().unwrap_or(0);
            if !stopped() {
                before_step(step);
            }
            if stopped() {
                report.stopped = true;
                return Ok(());
            }
            match step {
                Step::Mount { fstype, on, from } => match from {
                    None => sim.mount(fstype, on).map_err(|e| {
                        let hint = if crate::vfs::STACKING_FS.contains(&fstype.as_str()) {
                            format!(
                                " ({fstype} mirrors a directory: `mount {fstype} {on} from DIR`)"
                            )
                        } else {
                            String::new()
                        };
                        fail(at, format!("mount {fstype} {on}: {e}{hint}"))
                    })?,
                    Some(dir) => sim
                        .mount_over(fstype, dir, on)
                        .map_err(|e| fail(at, format!("mount {fstype} {on} from {dir}: {e}")))?,
                },
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
                Step::Sleep(d) => {
                    if !sleep_unless_stopped(*d, stop) {
                        report.stopped = true;
                        return Ok(());
                    }
                }
                Step::Chapter(_) | Step::Ring(_) => {}
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

/// Sleeps for `d` in slices, checking `stop` between them; false when
/// stopped first.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    const SLICE: Duration = Duration::from_millis(5);
    let end = Instant::now().checked_add(d);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = match end {
            Some(end) => end.saturating_duration_since(Instant::now()),
            None => SLICE,
        };
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(SLICE));
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
