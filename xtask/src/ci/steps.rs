//! `cargo xtask test` and `cargo xtask demo`: the README's two commands, each with its own set-up.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::SYSTEM_TESTS;
use crate::exec::{Cmd, Ctx, Mode, cargo, exec};

/// One step of `cargo xtask test`. To add one (sanitizer runs, short fuzz runs), append
/// it to `TEST_STEPS`; each prints its name and duration and a failure fails the run.
#[derive(Debug, Clone, Copy)]
pub struct TestStep {
    /// Shown in the log and the summary.
    pub name: &'static str,
    /// Runs the step.
    pub run: fn(&Ctx) -> Result<()>,
    /// When it fails, later steps are pointless (set-up).
    pub fatal: bool,
}

fn step_deps(ctx: &Ctx) -> Result<()> {
    if ctx.mode == Mode::DryRun {
        println!(
            "# ensure system packages: {}",
            crate::deps::packages(crate::deps::Task::Test).join(" ")
        );
        return Ok(());
    }
    crate::deps::ensure(crate::deps::Task::Test)
}

fn step_fmt(ctx: &Ctx) -> Result<()> {
    let mut plan = crate::exec::Plan::new();
    plan.run(cargo().args(["fmt", "--all", "--check"]).cwd(&ctx.root));
    exec(&plan, ctx.mode)
}

/// The workspace tests (the companion's with its simulator source), then the system tests'
/// shim tests (`system-tests/tests/shim_*.rs`) again against the shim's other build variants:
/// kauth (`MT_WITH_KAUTH`) and resident (`MT_RESIDENT`, only its own test file: the others
/// unload). Last, every benchmark once in criterion's test mode (`cargo test --bench`): a bench
/// whose set-up asserts no longer hold fails here, not months later on a quiet machine.
fn host_tests_plan(root: &Path) -> crate::exec::Plan {
    let mut plan = crate::exec::Plan::new();
    plan.run(
        cargo()
            .args(["test", "--workspace", "--locked"])
            .args(["--features", "maptrace/sim"])
            .cwd(root),
    );
    plan.run(
        cargo()
            .args(["test", "--locked", "-p", SYSTEM_TESTS])
            .args(["--features", "kauth", "--test", "shim_*"])
            .cwd(root),
    );
    plan.run(
        cargo()
            .args(["test", "--locked", "-p", SYSTEM_TESTS])
            .args(["--features", "resident", "--test", "shim_resident"])
            .cwd(root),
    );
    plan.run(
        cargo()
            .args(["test", "--workspace", "--locked"])
            .args(["--features", "maptrace/sim", "--bench", "*"])
            .cwd(root),
    );
    plan
}

fn step_host_tests(ctx: &Ctx) -> Result<()> {
    exec(&host_tests_plan(&ctx.root), ctx.mode)
}

fn step_clippy(ctx: &Ctx) -> Result<()> {
    let mut plan = crate::exec::Plan::new();
    plan.run(
        cargo()
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ])
            .cwd(&ctx.root),
    );
    exec(&plan, ctx.mode)
}

fn step_cross(ctx: &Ctx) -> Result<()> {
    crate::kext::cmd_cross(
        &ctx.root,
        &crate::kext::kernel::Arch::ALL,
        crate::kext::kernel::Variant::default(),
        ctx.mode,
    )
}

/// The kauth variant (macOS 10.15 test VMs, Intel only): its own objects, checked like the
/// default ones, and its own bundle, so a kauth build cannot rot unseen.
fn step_cross_kauth(ctx: &Ctx) -> Result<()> {
    let kauth = crate::kext::kernel::Variant {
        kauth: true,
        resident: false,
    };
    crate::kext::cmd_cross(&ctx.root, kauth.archs(), kauth, ctx.mode)?;
    crate::package::cmd_bundle(&ctx.root, kauth, ctx.mode)
}

/// The loom models of the ring protocol (`tests/loom.rs`), of the shim's
/// hook counters and unload drain (`tests/loom_drain.rs`) and of the
/// vnode-id memo's seqlock (`tests/loom_memo.rs`) and of the vector
/// table's remove and revive (`tests/loom_vectors.rs`), in their own
/// target dir because `--cfg loom` changes every crate's build.
fn step_loom(ctx: &Ctx) -> Result<()> {
    let mut plan = crate::exec::Plan::new();
    plan.run(
        cargo()
            .args([
                "test",
                "--release",
                "--locked",
                "-p",
                "maptrace-core",
                "--test",
                "loom",
                "--test",
                "loom_drain",
                "--test",
                "loom_memo",
                "--test",
                "loom_vectors",
            ])
            .env("RUSTFLAGS", "--cfg loom")
            .env(
                "CARGO_TARGET_DIR",
                ctx.root.join("target/loom").display().to_string(),
            )
            .cwd(&ctx.root),
    );
    exec(&plan, ctx.mode)
}

fn step_sign(ctx: &Ctx) -> Result<()> {
    crate::package::cmd_sign_check(&ctx.root, ctx.mode)
}

/// The steps of `cargo xtask test`, in order.
pub const TEST_STEPS: &[TestStep] = &[
    TestStep {
        name: "set-up: system packages",
        run: step_deps,
        fatal: true,
    },
    TestStep {
        name: "rustfmt check",
        run: step_fmt,
        fatal: false,
    },
    TestStep {
        name: "host tests (cargo test --workspace)",
        run: step_host_tests,
        fatal: false,
    },
    TestStep {
        name: "clippy -D warnings",
        run: step_clippy,
        fatal: false,
    },
    TestStep {
        name: "loom models of the ring, the hook drain and the id memo",
        run: step_loom,
        fatal: false,
    },
    TestStep {
        name: "sanitizers: shim + simulator under ASan/UBSan",
        run: crate::ci::sanitize::step_asan_ubsan,
        fatal: false,
    },
    TestStep {
        name: "sanitizers: ring + shim + simulator under TSan",
        run: crate::ci::sanitize::step_tsan,
        fatal: false,
    },
    TestStep {
        name: "miri: the core's unsafe modules (ring, ffi)",
        run: crate::ci::sanitize::step_miri,
        fatal: false,
    },
    TestStep {
        name: "companion: type-checks for macOS (aarch64, x86_64)",
        run: crate::ci::darwin::step_companion_check,
        fatal: false,
    },
    TestStep {
        name: "cross: Mach-O objects + checks",
        run: step_cross,
        fatal: false,
    },
    TestStep {
        name: "cross: the kauth variant (macOS 10.15) + checks + bundle",
        run: step_cross_kauth,
        fatal: false,
    },
    TestStep {
        name: "sign-check: rcodesign on a real Mach-O bundle",
        run: step_sign,
        fatal: false,
    },
    TestStep {
        name: "fuzz: short runs",
        run: crate::ci::fuzz::step_short_runs,
        fatal: false,
    },
];

/// The outcome of one step.
#[derive(Debug)]
pub struct Outcome {
    /// Step name.
    pub name: &'static str,
    /// How long it took.
    pub took: Duration,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// Runs `steps` in order, printing each with its duration; stops after a failing fatal step.
pub fn run_steps(steps: &[TestStep], ctx: &Ctx) -> Vec<Outcome> {
    let mut out = Vec::new();
    for step in steps {
        eprintln!("==> {}", step.name);
        let started = Instant::now();
        let result = (step.run)(ctx);
        let took = started.elapsed();
        let error = result.err().map(|e| format!("{e:#}"));
        eprintln!(
            "<== {} {} in {:.1} s",
            step.name,
            if error.is_some() { "FAILED" } else { "ok" },
            took.as_secs_f64()
        );
        let stop = error.is_some() && step.fatal;
        out.push(Outcome {
            name: step.name,
            took,
            error,
        });
        if stop {
            break;
        }
    }
    out
}

/// The summary table, and an error when any step failed.
pub fn summarize(outcomes: &[Outcome]) -> (String, Result<()>) {
    let mut text = String::from("summary:\n");
    let mut total = Duration::ZERO;
    for o in outcomes {
        total += o.took;
        text.push_str(&format!(
            "  {:>7.1} s  {:<6} {}\n",
            o.took.as_secs_f64(),
            if o.error.is_some() { "FAILED" } else { "ok" },
            o.name
        ));
    }
    text.push_str(&format!("  {:>7.1} s  total\n", total.as_secs_f64()));
    let failed: Vec<_> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    let result = if failed.is_empty() {
        Ok(())
    } else {
        let list: String = failed
            .iter()
            .map(|o| format!("\n- {}: {}", o.name, o.error.as_deref().unwrap_or("")))
            .collect();
        Err(anyhow::anyhow!("{} step(s) failed:{list}", failed.len()))
    };
    (text, result)
}

/// `cargo xtask test`.
pub fn test(root: &Path, mode: Mode) -> Result<()> {
    let ctx = Ctx {
        root: root.to_path_buf(),
        mode,
    };
    let outcomes = run_steps(TEST_STEPS, &ctx);
    let (text, result) = summarize(&outcomes);
    eprint!("{text}");
    result
}

/// True when the workspace has the companion package `maptrace`.
pub fn companion_present(root: &Path) -> bool {
    std::fs::read_to_string(root.join("companion/Cargo.toml"))
        .is_ok_and(|t| t.lines().any(|l| l.replace(' ', "") == "name=\"maptrace\""))
}

/// The demo run: the companion with its simulator source, a cargo feature the binary a user
/// installs leaves out.
fn demo_cmd(root: &Path) -> Cmd {
    cargo()
        .args(["run", "--release", "--locked", "-p", "maptrace"])
        .args(["--features", "sim", "--", "demo"])
        .cwd(root)
}

/// `cargo xtask demo`: set-up, then the companion's simulator demo.
pub fn demo(root: &Path, mode: Mode) -> Result<()> {
    if !companion_present(root) {
        bail!(
            "the companion crate (companion/, package `maptrace`) is not in the workspace yet: no demo to run"
        );
    }
    let mut plan = crate::exec::Plan::new();
    plan.run(demo_cmd(root));
    if mode == Mode::Run {
        crate::deps::ensure(crate::deps::Task::Demo).context("demo set-up")?;
    }
    exec(&plan, mode)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn ok(_: &Ctx) -> Result<()> {
        Ok(())
    }

    fn boom(_: &Ctx) -> Result<()> {
        bail!("boom")
    }

    fn ctx() -> Ctx {
        Ctx {
            root: PathBuf::from("/nonexistent"),
            mode: Mode::DryRun,
        }
    }

    #[test]
    fn failures_are_collected_and_fatal_ones_stop_the_run() {
        let steps = [
            TestStep {
                name: "a",
                run: ok,
                fatal: false,
            },
            TestStep {
                name: "b",
                run: boom,
                fatal: false,
            },
            TestStep {
                name: "c",
                run: ok,
                fatal: false,
            },
            TestStep {
                name: "d",
                run: boom,
                fatal: true,
            },
            TestStep {
                name: "e",
                run: ok,
                fatal: false,
            },
        ];
        let outcomes = run_steps(&steps, &ctx());
        let names: Vec<_> = outcomes.iter().map(|o| o.name).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        let (text, result) = summarize(&outcomes);
        assert!(
            text.contains("FAILED b") && text.contains("total"),
            "{text}"
        );
        let err = result.unwrap_err().to_string();
        assert!(
            err.starts_with("2 step(s) failed") && err.contains("- d: boom"),
            "{err}"
        );
        assert!(summarize(&outcomes[..1]).1.is_ok());
    }

    #[test]
    fn host_tests_run_the_shim_tests_again_for_each_variant_then_the_benches_once() {
        let plan = host_tests_plan(Path::new("/repo"));
        let cmds: Vec<_> = plan.commands().collect();
        assert_eq!(cmds.len(), 4);
        assert!(cmds[0].has_arg("--workspace") && cmds[0].has_arg("maptrace/sim"));
        assert!(cmds[1].has_arg("kauth") && cmds[1].has_arg("shim_*"));
        assert!(cmds[2].has_arg("resident") && cmds[2].has_arg("shim_resident"));
        // The benches once each, with the features they need, and nothing else.
        assert!(cmds[3].has_arg("--bench") && cmds[3].has_arg("*") && !cmds[3].has_arg("--lib"));
        assert!(cmds[3].has_arg("--workspace") && cmds[3].has_arg("maptrace/sim"));
        assert!(
            cmds[1..3]
                .iter()
                .all(|c| !c.has_arg("--workspace") && c.has_arg(SYSTEM_TESTS))
        );
    }

    #[test]
    fn test_steps_start_with_set_up_and_cover_host_cross_and_signing() {
        assert!(TEST_STEPS[0].fatal && TEST_STEPS[0].name.starts_with("set-up"));
        let names: Vec<_> = TEST_STEPS.iter().map(|s| s.name).collect();
        let pos = |n: &str| names.iter().position(|x| x.starts_with(n)).unwrap();
        assert!(pos("host tests") < pos("cross") && pos("cross") < pos("sign-check"));
    }

    #[test]
    fn demo_without_companion_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let err = demo(dir.path(), Mode::DryRun).unwrap_err().to_string();
        assert!(err.contains("companion crate"), "{err}");
        std::fs::create_dir_all(dir.path().join("companion")).unwrap();
        std::fs::write(
            dir.path().join("companion/Cargo.toml"),
            "[package]\nname = \"maptrace\"\n",
        )
        .unwrap();
        assert!(companion_present(dir.path()));
        demo(dir.path(), Mode::DryRun).unwrap();
    }

    #[test]
    fn demo_turns_on_the_companions_simulator_source() {
        let cmd = demo_cmd(Path::new("/repo"));
        assert!(cmd.has_arg("--features") && cmd.has_arg("sim") && cmd.has_arg("demo"));
    }
}
