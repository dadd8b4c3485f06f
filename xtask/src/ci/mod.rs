//! What `cargo xtask test` runs (.ci/run): the steps, the sanitizers, fuzzing, the companion's
//! macOS check and repository hygiene; the commands `test`, `demo` and `fuzz`.

pub mod darwin;
pub mod fuzz;
pub mod sanitize;
pub mod steps;
mod tidy;

use std::path::Path;

use anyhow::Result;

use crate::cli::{Command, CommandSpec, DRY_RUN, Opt, number, set_dry_run};
use crate::exec::Mode;

/// The package of the system tests: the real shim and core on the simulator.
pub const SYSTEM_TESTS: &str = "maptrace-system-tests";

/// `cargo xtask test`.
#[derive(Debug, Default)]
pub struct TestOptions {
    /// `--dry-run`.
    pub mode: Mode,
}

impl Command for TestOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "test",
        steps: "",
        about: "What CI runs (.ci/run): set-up, fmt, host tests, clippy, loom, ASan/UBSan, TSan,\n\
            Miri, short fuzz runs, the companion type-checked for macOS, cross + object\n\
            checks, sign-check; every step timed, a summary of failures at the end.",
        options: &[DRY_RUN],
    };

    fn set(&mut self, option: &str, _: &str) -> Result<()> {
        set_dry_run(Self::SPEC, &mut self.mode, option)
    }

    fn run(&self, root: &Path) -> Result<()> {
        steps::test(root, self.mode)
    }
}

/// `cargo xtask demo`.
#[derive(Debug, Default)]
pub struct DemoOptions {
    /// `--dry-run`.
    pub mode: Mode,
}

impl Command for DemoOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "demo",
        steps: "",
        about: "Set-up, then `cargo run --release -p maptrace -- demo`: the simulator with the real\n\
            kext loaded, a live event stream, then the report.",
        options: &[DRY_RUN],
    };

    fn set(&mut self, option: &str, _: &str) -> Result<()> {
        set_dry_run(Self::SPEC, &mut self.mode, option)
    }

    fn run(&self, root: &Path) -> Result<()> {
        steps::demo(root, self.mode)
    }
}

/// `cargo xtask fuzz`.
#[derive(Debug, Default)]
pub struct FuzzOptions {
    /// `--dry-run`.
    pub mode: Mode,
    /// `--runs` or `--seconds`; [`fuzz::LONG_RUNS`] inputs when neither is given.
    pub budget: Option<fuzz::Budget>,
    /// `--target` (repeatable); every target when none is given.
    pub targets: Vec<String>,
}

impl Command for FuzzOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "fuzz",
        steps: "",
        about: "Build the cargo-fuzz targets (fuzz/) and run each; fails on any crash.",
        options: &[
            DRY_RUN,
            Opt {
                name: "--runs",
                value: Some("N"),
                help: "inputs per target (default 1000000)",
            },
            Opt {
                name: "--seconds",
                value: Some("S"),
                help: "seconds per target instead of a number of inputs",
            },
            Opt {
                name: "--target",
                value: Some("T"),
                help: "only this target (repeatable)",
            },
        ],
    };

    fn set(&mut self, option: &str, value: &str) -> Result<()> {
        match option {
            "--runs" => self.budget = Some(fuzz::Budget::Runs(number(option, value)?)),
            "--seconds" => self.budget = Some(fuzz::Budget::Seconds(number(option, value)?)),
            "--target" => self.targets.push(value.into()),
            other => set_dry_run(Self::SPEC, &mut self.mode, other)?,
        }
        Ok(())
    }

    fn run(&self, root: &Path) -> Result<()> {
        let budget = self.budget.unwrap_or(fuzz::Budget::Runs(fuzz::LONG_RUNS));
        fuzz::fuzz(root, budget, &self.targets, self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parsed;

    #[test]
    fn fuzz_options_parse_and_mistakes_are_reported() {
        let a = parsed::<FuzzOptions>(&[]).unwrap();
        assert_eq!((a.budget, a.mode), (None, Mode::Run));
        let a = parsed::<FuzzOptions>(&["--runs", "5000"]).unwrap();
        assert_eq!(a.budget, Some(fuzz::Budget::Runs(5000)));
        let a = parsed::<FuzzOptions>(&["--seconds", "9", "--dry-run"]).unwrap();
        assert_eq!(a.budget, Some(fuzz::Budget::Seconds(9)));
        assert_eq!(a.mode, Mode::DryRun);
        assert!(parsed::<FuzzOptions>(&["--runs", "many"]).is_err());
        let a = parsed::<FuzzOptions>(&["--target", "decode", "--target", "scenario"]).unwrap();
        assert_eq!(a.targets, ["decode", "scenario"]);
        assert_eq!(
            parsed::<TestOptions>(&["--dry-run"]).unwrap().mode,
            Mode::DryRun
        );
        assert!(parsed::<DemoOptions>(&["--runs", "1"]).is_err());
    }
}
