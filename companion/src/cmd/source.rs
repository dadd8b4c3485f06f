//! Opening the source a command reads: `--source`, or an INPUT recording.

use crate::cli::TimeArg;
use anyhow::Result;
use maptrace::exit;
use maptrace::replay::FileSource;
use maptrace::source::Source;
use maptrace::sysctl;
use maptrace::wallclock::Anchor;
use std::path::Path;

/// The anchor `--time` asks for: none for relative times; for UTC the
/// source's, and a usage error (status 2) when it has none, rather than
/// relative times under a UTC heading.
pub fn wall_anchor(src: &dyn Source, time: TimeArg) -> Result<Option<Anchor>> {
    match time {
        TimeArg::Rel => Ok(None),
        TimeArg::Wall => src.anchor().map(Some).ok_or_else(|| {
            exit::usage(format!(
                "--time wall: {} has no clock anchor to map the kext's clock to UTC (recordings \
                 before format 4 keep only their start time; `maptrace info FILE` shows the \
                 format); use --time rel for times since boot, or record again with this maptrace",
                src.describe()
            ))
        }),
    }
}

pub fn open_source(spec: Option<&str>, input: Option<&Path>) -> Result<Box<dyn Source>> {
    if let Some(p) = input {
        if spec.is_some_and(|s| !s.starts_with("file:")) {
            return Err(exit::usage(format!(
                "give either an INPUT recording or a source, not both: the source is `{}` (from \
                 --source, or the MAPTRACE_SOURCE environment variable: unset it or give no INPUT)",
                spec.unwrap_or_default()
            )));
        }
        return Ok(Box::new(FileSource::open(p)?));
    }
    let default = if cfg!(target_os = "macos") {
        "sysctl"
    } else {
        "sim"
    };
    let spec = spec.unwrap_or(default);
    match spec.split_once(':') {
        Some(("file", path)) if !path.is_empty() => {
            Ok(Box::new(FileSource::open(Path::new(path))?))
        }
        Some(("sim", path)) if !path.is_empty() => open_sim(Some(Path::new(path))),
        None if spec == "sim" => open_sim(None),
        None if spec == "sysctl" => Ok(Box::new(sysctl::open_kext()?)),
        _ => Err(exit::usage(format!(
            "unknown source `{spec}`: use sysctl, sim, sim:SCENARIO or file:RECORDING"
        ))),
    }
}

#[cfg(feature = "sim")]
fn open_sim(scenario: Option<&Path>) -> Result<Box<dyn Source>> {
    use maptrace::sim::{Pace, SimSource, Workload};
    // In lockstep with the reader: what each step records is read before the
    // next one runs, so the same script gives the same stream every time.
    let workload = match scenario {
        Some(p) => Workload::Script(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", p.display()))?,
        ),
        None => Workload::Demo,
    };
    Ok(Box::new(SimSource::open_paced(workload, Pace::Lockstep)?))
}

#[cfg(not(feature = "sim"))]
fn open_sim(scenario: Option<&Path>) -> Result<Box<dyn Source>> {
    let what = scenario.map_or("the demo workload".to_string(), maptrace::text::shown_path);
    Err(anyhow::anyhow!(
        "this maptrace was built without the simulator, so it cannot run {what}: build it with \
         `--features sim` (as `cargo xtask demo` does), or read a recording with --source file:FILE"
    ))
}
