//! The simulator source: boots the XNU simulator (`maptrace-sim`), loads the
//! real kext (C shim + Rust core) into it, runs a scenario script or the
//! built-in demo workload on its own threads, and reads events through the
//! simulated `kern.maptrace.*` sysctls with exactly the logic used on macOS.

use crate::source::{Next, Source, SourceError};
use crate::sysctl::{SysErr, Sysctl, SysctlSource};
use crate::text::shown_path;
use maptrace_abi::raw;
use maptrace_sim::{Config, Cred, DEMO, Scenario, Sim, ViolationPolicy};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

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

/// The simulator as a [`Source`].
pub struct SimSource {
    inner: SysctlSource<SimSysctl>,
    sim: Arc<Sim>,
    scenario: Option<Scenario>,
    worker: Option<JoinHandle<Result<(), String>>>,
    finished: bool,
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
    /// starts at the first read.
    pub fn open(workload: Workload) -> Result<SimSource, SourceError> {
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
        sim.load_shim().map_err(|e| {
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
        })
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
        if let Some(sc) = self.scenario.take() {
            let sim = Arc::clone(&self.sim);
            self.worker = Some(std::thread::spawn(move || {
                sc.run(&sim).map(|_| ()).map_err(|e| e.to_string())
            }));
        }
    }

    /// Whether the workload is over (or there is none).
    fn workload_done(&self) -> bool {
        self.worker.as_ref().is_none_or(JoinHandle::is_finished)
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

    fn next_batch(&mut self, buf: &mut Vec<u8>) -> Result<Next, SourceError> {
        if self.finished {
            return Ok(Next::End);
        }
        self.start();
        // Checked before the read, so a workload that ended just before an
        // empty read has nothing left behind.
        let done = self.workload_done();
        match self.inner.next_batch(buf)? {
            Next::Idle if done => {
                self.finish()?;
                Ok(Next::End)
            }
            other => Ok(other),
        }
    }

    fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(2)
    }

    /// Runs the workload to its end first (nobody reads the events), so the
    /// counters show what it did.
    fn stats(&mut self) -> Result<Vec<u8>, SourceError> {
        self.start();
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
}
