//! Fuzzing with cargo-fuzz (libFuzzer): the CI step (short, time-bounded runs
//! of every target) and `cargo xtask fuzz` (long runs, a number of inputs).
//!
//! The fuzz crate (`fuzz/`) is its own workspace, built with nightly in
//! `target/fuzz`. Its seed corpus is made by its `seeds` program (real
//! batches from the real shim and core on the simulator).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::exec::{Cmd, Mode, Plan, Step, exec};

/// The cargo-fuzz release that was tested.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz targets (`fuzz/fuzz_targets/*.rs`).
pub const TARGETS: &[&str] = &[
    "decode",
    "config_sysctl",
    "scenario",
    "recording",
    "report",
    "heatmap",
    "export",
    "formatters",
];

/// Seconds each target runs in CI (all at once, so the step's wall time
/// stays near this plus the build).
pub const CI_SECONDS: u64 = 30;

/// Inputs per target of `cargo xtask fuzz` without `--runs`/`--seconds`.
pub const LONG_RUNS: u64 = 1_000_000;

/// libFuzzer's memory cap: the recording target checks that declared lengths
/// cost no memory, this catches what the oracle does not.
const RSS_LIMIT_MB: u32 = 1024;

/// libFuzzer's limit per input, in seconds: an input that takes longer is
/// a finding (work driven by a size field, as report's page set once was),
/// not a slow machine: the output targets' worst seeds take milliseconds.
const INPUT_TIMEOUT_SECS: u32 = 30;

/// How long each target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// `-max_total_time`.
    Seconds(u64),
    /// `-runs`: this many inputs.
    Runs(u64),
}

/// Where everything lives.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `fuzz/`.
    pub dir: PathBuf,
    /// The fuzz crate's target dir.
    pub target_dir: PathBuf,
    /// Where cargo-fuzz is installed when it is not on PATH.
    pub tools: PathBuf,
}

impl Layout {
    /// The project's layout.
    pub fn project(root: &Path) -> Layout {
        Layout {
            dir: root.join("fuzz"),
            target_dir: root.join("target/fuzz"),
            tools: crate::exec::tools_root(root),
        }
    }

    /// A built fuzz program.
    pub fn binary(&self, name: &str) -> PathBuf {
        self.target_dir
            .join("x86_64-unknown-linux-gnu/release")
            .join(name)
    }

    /// The corpus of `target`.
    pub fn corpus(&self, target: &str) -> PathBuf {
        self.dir.join("corpus").join(target)
    }

    /// Where `target`'s crashing inputs go.
    pub fn artifacts(&self, target: &str) -> PathBuf {
        self.dir.join("artifacts").join(target)
    }
}

/// The cargo-fuzz program to run: on PATH at the tested version, else the
/// one under `tools` (installed by [`install_plan`] when missing).
fn cargo_fuzz(l: &Layout) -> (String, bool) {
    let on_path = Cmd::new("cargo-fuzz").arg("--version");
    let version_ok = |c: &Cmd| {
        c.output()
            .is_ok_and(|o| String::from_utf8_lossy(&o).contains(CARGO_FUZZ_VERSION))
    };
    if version_ok(&on_path) {
        return ("cargo-fuzz".into(), true);
    }
    let local = l.tools.join("bin/cargo-fuzz");
    let installed = version_ok(&Cmd::new(local.display().to_string()).arg("--version"));
    (local.display().to_string(), installed)
}

/// Installs the pinned cargo-fuzz under `tools` (CI machines start clean).
pub fn install_plan(l: &Layout) -> Plan {
    let mut plan = Plan::new();
    plan.push(Step::Note(format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION}"
    )));
    plan.run(
        crate::exec::cargo()
            .args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION])
            // It only drives cargo: a debug build is as good and compiles faster.
            .args(["--locked", "--debug", "--root"])
            .path_arg(&l.tools)
            .env_remove("CARGO_TARGET_DIR"),
    );
    plan
}

/// Builds every target (and the seed program) with nightly, the shim's C
/// under ASan + UBSan too, then writes the seed corpus.
pub fn build_plan(l: &Layout, cargo_fuzz: &str) -> Plan {
    let mut plan = Plan::new();
    plan.run(
        Cmd::new(cargo_fuzz)
            .args(["build", "--target-dir"])
            .path_arg(&l.target_dir)
            .env("RUSTUP_TOOLCHAIN", "nightly")
            .env("CC", "clang-19")
            .env("MT_SIM_SANITIZE", "address,undefined")
            .cwd(&l.dir),
    );
    plan.run(Cmd::new(l.binary("seeds").display().to_string()).path_arg(&l.dir.join("corpus")));
    for t in TARGETS {
        plan.push(Step::MkDir(l.artifacts(t)));
    }
    plan
}

/// The libFuzzer command running `target` within `budget`.
pub fn run_cmd(l: &Layout, target: &str, budget: Budget) -> Cmd {
    let limit = match budget {
        Budget::Seconds(s) => format!("-max_total_time={s}"),
        Budget::Runs(n) => format!("-runs={n}"),
    };
    Cmd::new(l.binary(target).display().to_string())
        .path_arg(&l.corpus(target))
        .arg(limit)
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!(
            "-artifact_prefix={}/",
            l.artifacts(target).display()
        ))
        .args(["-print_final_stats=1", "-close_fd_mask=1"])
        .cwd(&l.dir)
}

/// `stat::number_of_executed_units` from libFuzzer's final stats.
pub fn parse_execs(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
}

/// What a crash log says in a few lines: the panic and its message, the
/// sanitizer's verdict, and where the input was written; else its tail.
pub fn crash_summary(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut keep: Vec<&str> = Vec::new();
    for (i, &l) in lines.iter().enumerate() {
        if l.contains("panicked at") {
            keep.extend(lines.iter().skip(i).take(2));
        } else if l.contains("ERROR: AddressSanitizer")
            || l.starts_with("SUMMARY:")
            || l.contains("Test unit written to")
        {
            keep.push(l);
        }
    }
    if keep.is_empty() {
        keep = lines[lines.len().saturating_sub(20)..].to_vec();
    }
    keep.join("\n")
}

/// Where a run's libFuzzer output goes (a file, not a pipe: a pipe nobody
/// reads while another target is awaited fills up and stalls the fuzzer).
pub fn log_path(l: &Layout, target: &str) -> PathBuf {
    l.artifacts(target).join("last-run.log")
}

/// Runs `targets` at once and reports each as it ends; fails on any crash.
fn run_all(l: &Layout, targets: &[&str], budget: Budget) -> Result<()> {
    let started = Instant::now();
    let mut running = Vec::new();
    for &t in targets {
        let cmd = run_cmd(l, t, budget);
        eprintln!("+ {cmd} 2> {}", log_path(l, t).display());
        let log = std::fs::File::create(log_path(l, t))
            .with_context(|| format!("create {}", log_path(l, t).display()))?;
        let child = Command::new(&cmd.program)
            .args(&cmd.args)
            .current_dir(&l.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start `{cmd}`"))?;
        running.push((t, child));
    }
    let mut failures = Vec::new();
    while !running.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
        let mut still = Vec::new();
        for (t, mut child) in running {
            let Some(status) = child.try_wait()? else {
                still.push((t, child));
                continue;
            };
            let log = std::fs::read(log_path(l, t)).unwrap_or_default();
            let log = String::from_utf8_lossy(&log);
            let corpus = std::fs::read_dir(l.corpus(t)).map_or(0, |d| d.count());
            let execs = parse_execs(&log);
            let took = started.elapsed();
            println!("{}", report_line(t, execs, took, corpus, status.success()));
            if !status.success() || execs.is_none() {
                failures.push(format!("{t} ({status}):\n{}", crash_summary(&log)));
            }
        }
        running = still;
    }
    if !failures.is_empty() {
        bail!(
            "fuzzing found crashes (inputs and logs under fuzz/artifacts/):\n{}",
            failures.join("\n\n")
        );
    }
    Ok(())
}

/// One target's summary line.
pub fn report_line(
    target: &str,
    execs: Option<u64>,
    took: Duration,
    corpus: usize,
    ok: bool,
) -> String {
    let secs = took.as_secs_f64().max(0.001);
    let execs = execs.unwrap_or(0);
    format!(
        "fuzz {target:<14} {execs:>10} inputs in {secs:>7.1} s ({:>7.0}/s), corpus {corpus:>5}, {}",
        execs as f64 / secs,
        if ok { "0 crashes" } else { "CRASHED" }
    )
}

/// Installs cargo-fuzz if needed, builds, seeds, then runs `targets` (all
/// when empty).
pub fn fuzz(root: &Path, budget: Budget, targets: &[String], mode: Mode) -> Result<()> {
    let l = Layout::project(root);
    let targets = pick(targets)?;
    let (tool, installed) = if mode == Mode::DryRun {
        (l.tools.join("bin/cargo-fuzz").display().to_string(), false)
    } else {
        cargo_fuzz(&l)
    };
    if !installed {
        exec(&install_plan(&l), mode)?;
    }
    exec(&build_plan(&l, &tool), mode)?;
    if mode == Mode::DryRun {
        for t in &targets {
            println!("{}", run_cmd(&l, t, budget));
        }
        return Ok(());
    }
    run_all(&l, &targets, budget)
}

/// The targets named (all when none is), each checked.
pub fn pick(names: &[String]) -> Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            TARGETS
                .iter()
                .copied()
                .find(|t| t == n)
                .with_context(|| format!("no fuzz target `{n}` (there are {})", TARGETS.join(", ")))
        })
        .collect()
}

/// The CI step: short, time-bounded runs.
pub fn step_short_runs(ctx: &crate::exec::Ctx) -> Result<()> {
    fuzz(&ctx.root, Budget::Seconds(CI_SECONDS), &[], ctx.mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(plan: &Plan) -> String {
        plan.steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_target_has_its_source_and_a_bin_entry() {
        let root = crate::exec::repo_root();
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        assert!(
            manifest.contains("\n[workspace]"),
            "fuzz/ is its own workspace"
        );
        for t in TARGETS {
            assert!(
                root.join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(),
                "{t}"
            );
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
        }
    }

    #[test]
    fn runs_are_bounded_and_keep_crashes() {
        let l = Layout::project(Path::new("/r"));
        let c = run_cmd(&l, "decode", Budget::Seconds(30));
        assert_eq!(
            c.program,
            "/r/target/fuzz/x86_64-unknown-linux-gnu/release/decode"
        );
        assert!(c.has_arg("/r/fuzz/corpus/decode") && c.has_arg("-max_total_time=30"));
        assert!(c.has_arg("-artifact_prefix=/r/fuzz/artifacts/decode/"));
        assert!(c.has_arg("-rss_limit_mb=1024"));
        assert!(c.has_arg("-timeout=30"));
        let c = run_cmd(&l, "scenario", Budget::Runs(1_000_000));
        assert!(c.has_arg("-runs=1000000") && !c.args.iter().any(|a| a.contains("total_time")));
    }

    #[test]
    fn install_is_pinned_and_build_uses_nightly_with_sanitized_c() {
        let l = Layout::project(Path::new("/r"));
        let install = shown(&install_plan(&l));
        assert!(
            install.contains("install cargo-fuzz --version 0.13.2 --locked"),
            "{install}"
        );
        assert!(install.contains("--root /r/target/tools"), "{install}");
        let build = shown(&build_plan(&l, "cargo-fuzz"));
        assert!(build.contains("RUSTUP_TOOLCHAIN=nightly"), "{build}");
        assert!(
            build.contains("MT_SIM_SANITIZE=address,undefined"),
            "{build}"
        );
        assert!(build.contains("release/seeds /r/fuzz/corpus"), "{build}");
    }

    #[test]
    fn final_stats_are_read_and_reported() {
        let log = "INFO: seed\n#100\tDONE cov: 3\nstat::number_of_executed_units: 170906\n\
                   stat::average_exec_per_sec:     5513\n";
        assert_eq!(parse_execs(log), Some(170906));
        assert_eq!(parse_execs("==1== ERROR: libFuzzer: deadly signal"), None);
        let line = report_line("decode", Some(1000), Duration::from_secs(2), 7, true);
        assert!(
            line.contains("1000 inputs") && line.contains("500/s"),
            "{line}"
        );
        assert!(line.contains("corpus     7, 0 crashes"), "{line}");
        assert!(report_line("x", None, Duration::ZERO, 0, false).ends_with("CRASHED"));
    }

    #[test]
    fn targets_are_picked_by_name() {
        assert_eq!(pick(&[]).unwrap(), TARGETS);
        let names = ["scenario".to_string(), "decode".to_string()];
        assert_eq!(pick(&names).unwrap(), ["scenario", "decode"]);
        let err = pick(&["decoder".to_string()]).unwrap_err().to_string();
        assert!(
            err.contains("no fuzz target `decoder`") && err.contains("recording"),
            "{err}"
        );
    }

    #[test]
    fn a_crash_is_summed_up_by_its_panic_and_input() {
        let mut log = String::from("INFO: Seed: 1\n");
        log.push_str("thread '<unnamed>' panicked at abi/src/decode.rs:484:32:\n");
        log.push_str("attempt to add with overflow\n");
        log.push_str(&"    #1 0x55 in frame\n".repeat(40));
        log.push_str("SUMMARY: libFuzzer: deadly signal\n");
        log.push_str("artifact_prefix='a/'; Test unit written to a/crash-79\n");
        let s = crash_summary(&log);
        assert_eq!(s.lines().count(), 4, "{s}");
        assert!(s.contains("decode.rs:484") && s.contains("overflow") && s.contains("a/crash-79"));
        assert_eq!(
            crash_summary("a\nb").lines().count(),
            2,
            "no markers: the tail"
        );
    }
}
