//! The simulator source: boots the XNU simulator (`maptrace-sim`), loads the
//! real kext (C shim + Rust core) into it, runs a scenario script or the
//! built-in demo workload on its own threads, and reads events through the
//! simulated `kern.maptrace.*` sysctls with exactly the logic used on macOS.

use crate::pagesize::PageSize;
use crate::source::{Next, Source, SourceError};
use crate::sysctl::{SysErr, Sysctl, SysctlSource};
use crate::text::shown_path;
use maptrace_abi::raw;
use maptrace_sim::{Config, Cred, DEMO, Scenario, Sim, Step, ViolationPolicy};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the reader polls the simulator (and waits for a lockstep
/// step before it looks at its stop request again).
const POLL: Duration = Duration::from_millis(2);

/// `Sysctl` over the simulated sysctl tree, as a given user.
#[derive(Debug, Clone)]
pub struct SimSysctl {
    sim: Arc<Sim>,
    cred: Cred,
}

impl SimSysctl {
    /// Sysctl access to `sim` with the credentials of `cred`.
    pub fn new(sim: Arc<Sim>, cred: Cred) -> SimSysctl {
        SimSysctl { sim, cred }
    }
}

/// XNU errno values (the simulator reports XNU's numbers).
const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const ENOMEM: i32 = 12;
const EACCES: i32 = 13;
const EINVAL: i32 = 22;

fn errno(e: i32) -> SysErr {
    match e {
        ENOENT => SysErr::NoEnt,
        EPERM | EACCES => SysErr::Perm,
        ENOMEM => SysErr::NoMem,
        EINVAL => SysErr::Inval,
        n => SysErr::Other(n),
    }
}

impl Sysctl for SimSysctl {
    fn read(&mut self, name: &str, buf: Option<&mut [u8]>) -> Result<usize, SysErr> {
        self.sim
            .sysctl_read(name, buf, self.cred)
            .map_err(|e| errno(e.errno))
    }

    fn write(&mut self, name: &str, data: &[u8]) -> Result<(), SysErr> {
        self.sim
            .sysctl_write(name, data, None, self.cred)
            .map(|_| ())
            .map_err(|e| errno(e.errno))
    }

    /// The simulated kernel's clock, as the shim's `mt_now_ns()` reads it
    /// (`absolutetime_to_nanoseconds(mach_absolute_time())`, sim/src/kpi/time.rs).
    fn kext_clock_ns(&mut self) -> Option<u64> {
        let k = self.sim.kernel();
        Some(k.abs_to_ns(k.abs_time()))
    }

    /// The simulated kernel's `PAGE_SIZE` (16 KiB unless booted as Intel).
    fn page_size(&mut self) -> Option<PageSize> {
        PageSize::new(self.sim.config().page_size).ok()
    }
}

/// What the simulator runs.
#[derive(Debug)]
pub enum Workload {
    /// `sim/scenarios/demo.mts`, built in.
    Demo,
    /// A scenario script.
    Script(String),
    /// Nothing: only the kext is loaded (for `stats` and `config`).
    Idle,
}

/// How the workload runs against the reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pace {
    /// On its own thread, at its own speed, while the reader polls (as a
    /// real kernel runs).
    #[default]
    Free,
    /// One step at a time: the next step starts only when the reader found
    /// the kext's ring empty, and the reader does not read while a step
    /// runs. What a step records is then read before the next one starts,
    /// and a step that records more than the ring holds drops an exact,
    /// repeatable number of records (`maptrace demo`).
    Lockstep,
}

/// The chapter headings (`chapter TEXT` steps) the workload has reached
/// and nobody has shown yet.
pub type Chapters = Arc<Mutex<VecDeque<String>>>;

/// The reader's side of [`Pace::Lockstep`]; dropped, the runner goes on
/// alone.
struct Lockstep {
    /// One message lets the runner start its next step.
    go: Sender<()>,
    /// One message: the runner finished a step and waits before the next
    /// (disconnected: the run is over).
    parked: Receiver<()>,
    /// A step runs: the reader waits for it before reading.
    running: bool,
}

/// The simulator as a [`Source`].
pub struct SimSource {
    inner: SysctlSource<SimSysctl>,
    sim: Arc<Sim>,
    scenario: Option<Scenario>,
    worker: Option<JoinHandle<Result<(), String>>>,
    finished: bool,
    pace: Pace,
    lockstep: Option<Lockstep>,
    stop: Arc<AtomicBool>,
    chapters: Chapters,
}

impl std::fmt::Debug for SimSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSource")
            .field("finished", &self.finished)
            .finish()
    }
}

impl SimSource {
    /// Boots the simulator, loads the kext and prepares the workload (a bad
    /// script is reported here, with its line and column). The workload
    /// starts at the first read, at its own pace.
    pub fn open(workload: Workload) -> Result<SimSource, SourceError> {
        SimSource::open_paced(workload, Pace::Free)
    }

    /// As [`SimSource::open`], with the workload run at `pace`. A script's
    /// `ring` line sizes the kext's ring for this load.
    pub fn open_paced(workload: Workload, pace: Pace) -> Result<SimSource, SourceError> {
        let scenario = match &workload {
            Workload::Demo => Some(DEMO.to_string()),
            Workload::Script(text) => Some(text.clone()),
            Workload::Idle => None,
        };
        let scenario = scenario
            .map(|text| {
                Scenario::parse(&text)
                    .map_err(|e| SourceError::Unsupported(format!("scenario: {e}")))
            })
            .transpose()?;
        let sim = Arc::new(Sim::boot(Config {
            cpus: 2,
            policy: ViolationPolicy::Collect,
            ..Config::default()
        }));
        let loaded = match scenario.as_ref().and_then(Scenario::ring) {
            Some(ring) => sim.load_shim_with_ring(ring),
            None => sim.load_shim(),
        };
        loaded.map_err(|e| {
            SourceError::Unsupported(format!("the simulator could not load the kext: {e:?}"))
        })?;
        let api = SimSysctl {
            sim: Arc::clone(&sim),
            cred: Cred::Root,
        };
        let inner = SysctlSource::open(api, "the simulator")?;
        publish_kernel_ranges(&sim);
        Ok(SimSource {
            inner,
            sim,
            scenario,
            worker: None,
            finished: false,
            pace,
            lockstep: None,
            stop: Arc::new(AtomicBool::new(false)),
            chapters: Chapters::default(),
        })
    }

    /// The chapter headings the workload reached; a reader takes them from
    /// the front as it shows them.
    pub fn chapters(&self) -> Chapters {
        Arc::clone(&self.chapters)
    }

    /// Reads a scenario script from `path`.
    pub fn open_script(path: &Path) -> Result<SimSource, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SourceError::Unsupported(format!("cannot read scenario {}: {e}", shown_path(path)))
        })?;
        SimSource::open(Workload::Script(text))
    }

    /// The simulator (tests use it to read ground truth).
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    fn start(&mut self) {
        let Some(sc) = self.scenario.take() else {
            return;
        };
        let sim = Arc::clone(&self.sim);
        let stop = Arc::clone(&self.stop);
        let chapters = Arc::clone(&self.chapters);
        let (go_tx, go_rx) = channel::<()>();
        let (parked_tx, parked_rx) = channel::<()>();
        let lockstep = self.pace == Pace::Lockstep;
        self.worker = Some(std::thread::spawn(move || {
            let before_step = |step: &Step| {
                if lockstep {
                    // Parked until the reader found the ring empty; a
                    // reader gone (or stopping) lets the run go on alone.
                    let _ = parked_tx.send(());
                    let _ = go_rx.recv();
                }
                if let Step::Chapter(title) = step {
                    chapters
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_back(title.clone());
                }
            };
            sc.run_until(&sim, &stop, before_step)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }));
        if lockstep {
            // Wait until the runner is parked before its first step.
            let _ = parked_rx.recv();
            self.lockstep = Some(Lockstep {
                go: go_tx,
                parked: parked_rx,
                running: false,
            });
        }
    }

    /// Lockstep: lets the workload run its next step. False when the
    /// runner is not paced or no longer there to run one.
    fn go(&mut self) -> bool {
        let Some(l) = &mut self.lockstep else {
            return false;
        };
        l.running = l.go.send(()).is_ok();
        l.running
    }

    /// Lockstep: whether the step that runs is still running after waiting
    /// up to a poll interval for it (a reader must not read meanwhile, and
    /// must still see its stop request and deadline in time).
    fn step_running(&mut self) -> bool {
        let Some(l) = &mut self.lockstep else {
            return false;
        };
        if l.running && l.parked.recv_timeout(POLL) == Err(RecvTimeoutError::Timeout) {
            return true;
        }
        l.running = false;
        false
    }

    /// Whether the workload is over (or there is none).
    fn workload_done(&self) -> bool {
        self.worker.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Lets the workload run on alone (the reader no longer paces it).
    fn unpace(&mut self) {
        self.lockstep = None;
    }

    /// Collects the workload's result and what the simulator caught.
    fn finish(&mut self) -> Result<(), SourceError> {
        self.finished = true;
        if let Some(w) = self.worker.take() {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(SourceError::Unsupported(format!(
                        "the scenario failed: {e}"
                    )));
                }
                Err(_) => {
                    return Err(SourceError::Unsupported(
                        "the scenario thread panicked".into(),
                    ));
                }
            }
        }
        publish_kernel_ranges(&self.sim);
        let v = self.sim.take_violations();
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
            return Err(SourceError::Unsupported(format!(
                "the simulator caught the kext doing what a real kernel would punish: {}",
                list.join("; ")
            )));
        }
        Ok(())
    }
}

impl Drop for SimSource {
    /// A workload still running stops at its next step.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.unpace();
    }
}

/// Test support for the no-kernel-address scan: with
/// `MAPTRACE_SIM_KERNEL_RANGES=FILE`, writes every simulated kernel address
/// range of this process (the arena, the kext's text and globals, the stacks
/// its code ran on) to FILE, one `start end` pair in hex per line, so a test
/// can scan this process's output for them. Unset (always, outside that
/// test), nothing is written.
fn publish_kernel_ranges(sim: &Sim) {
    let Some(path) = std::env::var_os("MAPTRACE_SIM_KERNEL_RANGES") else {
        return;
    };
    let text: String = sim
        .kernel_address_ranges()
        .iter()
        .map(|r| format!("{:x} {:x}\n", r.start, r.end))
        .collect();
    // Best effort: a test that asked for the file fails without it.
    let _ = std::fs::write(path, text);
}

impl Source for SimSource {
    fn describe(&self) -> String {
        "the simulator".into()
    }

    fn is_live(&self) -> bool {
        true
    }

    fn anchor(&self) -> Option<crate::wallclock::Anchor> {
        self.inner.anchor()
    }

    fn page_size(&self) -> Result<PageSize, String> {
        self.inner.page_size()
    }

    fn next_batch(&mut self, buf: &mut Vec<u8>) -> Result<Next, SourceError> {
        if self.finished {
            return Ok(Next::End);
        }
        self.start();
        loop {
            if self.step_running() {
                return Ok(Next::Idle);
            }
            // Checked before the read, so a workload that ended just before
            // an empty read has nothing left behind.
            let done = self.workload_done();
            match self.inner.next_batch(buf)? {
                Next::Idle if done => {
                    self.finish()?;
                    return Ok(Next::End);
                }
                // The ring is empty: the next step may run.
                Next::Idle if self.go() => {}
                other => return Ok(other),
            }
        }
    }

    /// Asks the workload to stop: it finishes the step it is in (a `sleep`
    /// within a few milliseconds) and runs no further step.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.unpace();
    }

    fn poll_interval(&self) -> Duration {
        POLL
    }

    /// Runs the workload to its end first (nobody reads the events), so the
    /// counters show what it did.
    fn stats(&mut self) -> Result<Vec<u8>, SourceError> {
        self.start();
        self.unpace();
        if let Some(w) = self.worker.take() {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(SourceError::Unsupported(format!(
                        "the scenario failed: {e}"
                    )));
                }
                Err(_) => {
                    return Err(SourceError::Unsupported(
                        "the scenario thread panicked".into(),
                    ));
                }
            }
        }
        publish_kernel_ranges(&self.sim);
        self.inner.stats()
    }

    fn config(&mut self) -> Result<raw::mt_config, SourceError> {
        self.inner.config()
    }

    fn set_config(&mut self, cfg: &raw::mt_config) -> Result<(), SourceError> {
        self.inner.set_config(cfg)
    }

    fn config_persists(&self) -> bool {
        false
    }
}
