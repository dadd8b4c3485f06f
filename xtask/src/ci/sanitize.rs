//! The sanitizer steps of `cargo xtask test`: ASan/UBSan and TSan over the shim, the
//! simulator and the core, and Miri over the core's unsafe modules (`src/ring.rs`,
//! `src/ffi/`). All run on the machine's rustup nightly (`-Zsanitizer`, `-Zbuild-std`,
//! Miri), each in its own target dir because the flags change every crate's build.

use std::path::Path;

use anyhow::Result;

use super::SYSTEM_TESTS;
use crate::exec::{Cmd, Ctx, Plan, ensure_components, exec, nightly_cargo};

/// The host target: sanitizer runtimes only link with an explicit `--target`.
const HOST: &str = "x86_64-unknown-linux-gnu";

/// The system tests (package `maptrace-system-tests`) that drive the simulator (C shim + C
/// glue + core): every one but those in [`NOT_UNDER_ASAN`].
const SHIM_TESTS: &[&str] = &[
    "shim_e2e",
    "shim_sysctl",
    "shim_lifecycle",
    "shim_concurrency",
    "shim_unload_safety",
    "shim_direct",
    "shim_holders",
    "stacked_fs",
    "vector_churn",
];

/// System tests left out of the ASan/UBSan run, and why (checked against the test
/// directory by a test).
#[cfg(test)]
const NOT_UNDER_ASAN: &[(&str, &str)] = &[
    (
        "shim_resident",
        "needs the `resident` feature; its paths are the default build's start and sweep",
    ),
    (
        "stress",
        "exact accounting over many events: its shim paths are shim_concurrency's, slower",
    ),
];

/// The tests with threads racing each other: producers and a drainer on the ring, several
/// processes through the shim, load/unload under load and in the kauth race window, two
/// sysctl readers, hooks entering during stop's drains. `shim_e2e` is single-threaded, so
/// TSan would add time and find nothing. `ring` is the core's test, the others the system
/// tests'.
const TSAN_TESTS: &[&str] = &[
    "ring",
    "shim_concurrency",
    "shim_lifecycle",
    "shim_sysctl",
    "shim_unload_safety",
];

/// Integration tests of the core that run under Miri: pure Rust over `ring` and `ffi`.
/// The `shim_*` tests are left out (they link the C shim and simulator, which Miri cannot
/// run), and so are `loom` (its own model checker) and abi's `layout` (it reads a C table).
const MIRI_CORE_TESTS: &[&str] = &["ring", "ffi", "decode"];

/// Miri flags for every run. Strict provenance: no integer-to-pointer casts in the core.
const MIRI_FLAGS: &str = "-Zmiri-strict-provenance";

/// Schedules the concurrent ring test is run under, each a different interleaving.
const MIRI_SEEDS: &str = "0..4";

/// The test of concurrent producers and a drainer (tests/ring.rs).
const MIRI_CONCURRENT_TEST: &str = "concurrent_producers_and_drainer";

fn test_args(cmd: Cmd, tests: &[&str]) -> Cmd {
    tests.iter().fold(cmd, |c, t| c.args(["--test", t]))
}

/// The shim's end-to-end tests with the shim and simulator C built under
/// AddressSanitizer + UndefinedBehaviorSanitizer (`MT_SIM_SANITIZE`, read by
/// `sim/build.rs`) and the Rust side under ASan.
pub fn step_asan_ubsan(ctx: &Ctx) -> Result<()> {
    let mut plan = Plan::new();
    plan.run(asan_ubsan_cmd(ctx));
    exec(&plan, ctx.mode)
}

fn asan_ubsan_cmd(ctx: &Ctx) -> Cmd {
    let cmd = nightly_cargo(ctx, "target/sanitize")
        .args(["test", "--locked", "--target", HOST, "-p", SYSTEM_TESTS])
        .env("CC", "clang-19")
        .env("MT_SIM_SANITIZE", "address,undefined")
        .env("RUSTFLAGS", "-Zsanitizer=address");
    test_args(cmd, SHIM_TESTS)
}

/// The concurrent tests under ThreadSanitizer: std rebuilt with `-Zsanitizer=thread`
/// (`-Zbuild-std`, hence `rust-src`), the shim and simulator C with `-fsanitize=thread`.
/// Any report fails the run (`halt_on_error`); the suppressions file, if it lists
/// anything, says why for each line.
pub fn step_tsan(ctx: &Ctx) -> Result<()> {
    ensure_components(&["rust-src"], ctx.mode)?;
    let mut plan = Plan::new();
    plan.run(tsan_cmd(ctx));
    exec(&plan, ctx.mode)
}

fn tsan_cmd(ctx: &Ctx) -> Cmd {
    let cmd = nightly_cargo(ctx, "target/tsan")
        .args(["test", "--locked", "-Zbuild-std", "--target", HOST])
        .args(["-p", "maptrace-core", "-p", SYSTEM_TESTS])
        .env("CC", "clang-19")
        .env("MT_SIM_SANITIZE", "thread")
        .env("RUSTFLAGS", "-Zsanitizer=thread")
        // With the profile's panic=abort, -Zbuild-std builds std twice (abort for the
        // lib, unwind for the test harness) and the second core clashes with the first.
        .env("CARGO_PROFILE_DEV_PANIC", "unwind")
        .env("TSAN_OPTIONS", tsan_options(&ctx.root));
    test_args(cmd, TSAN_TESTS)
}

/// Suppressions for reports from code outside the project (none are needed today).
const TSAN_SUPPRESSIONS: &str = "xtask/tsan.supp";

fn tsan_options(root: &Path) -> String {
    format!(
        "halt_on_error=1 second_deadlock_stack=1 suppressions={}",
        root.join(TSAN_SUPPRESSIONS).display()
    )
}

/// The core's pure-Rust tests under Miri (Stacked Borrows, strict provenance, data-race
/// detection), then the concurrent ring test under several schedules.
pub fn step_miri(ctx: &Ctx) -> Result<()> {
    ensure_components(&["miri", "rust-src"], ctx.mode)?;
    let mut plan = Plan::new();
    for cmd in miri_cmds(ctx) {
        plan.run(cmd);
    }
    exec(&plan, ctx.mode)
}

fn miri_cmds(ctx: &Ctx) -> Vec<Cmd> {
    let miri = |flags: String| {
        nightly_cargo(ctx, "target/miri")
            .args(["miri", "test", "--locked"])
            .env("MIRIFLAGS", flags)
    };
    let core = test_args(
        miri(MIRI_FLAGS.into()).args(["-p", "maptrace-core", "--lib"]),
        MIRI_CORE_TESTS,
    );
    let abi = miri(MIRI_FLAGS.into()).args(["-p", "maptrace-abi", "--lib"]);
    let seeds = miri(format!("{MIRI_FLAGS} -Zmiri-many-seeds={MIRI_SEEDS}"))
        .args(["-p", "maptrace-core", "--test", "ring", "--"])
        .arg(MIRI_CONCURRENT_TEST);
    vec![
        nightly_cargo(ctx, "target/miri").args(["miri", "setup"]),
        core,
        abi,
        seeds,
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::exec::Mode;

    fn ctx() -> Ctx {
        Ctx {
            root: PathBuf::from("/repo"),
            mode: Mode::DryRun,
        }
    }

    fn tests_of(cmd: &Cmd) -> Vec<&str> {
        cmd.args
            .windows(2)
            .filter(|w| w[0] == "--test")
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn tsan_rebuilds_std_and_instruments_the_c_too() {
        let cmd = tsan_cmd(&ctx());
        assert!(cmd.has_arg("-Zbuild-std") && cmd.has_arg(HOST) && cmd.has_arg("--locked"));
        assert_eq!(cmd.env_value("RUSTFLAGS"), Some("-Zsanitizer=thread"));
        assert_eq!(cmd.env_value("MT_SIM_SANITIZE"), Some("thread"));
        assert_eq!(cmd.env_value("CARGO_PROFILE_DEV_PANIC"), Some("unwind"));
        assert_eq!(cmd.env_value("CC"), Some("clang-19"));
        assert_eq!(cmd.env_value("CARGO_TARGET_DIR"), Some("/repo/target/tsan"));
        let opts = cmd.env_value("TSAN_OPTIONS").unwrap();
        assert!(opts.contains("halt_on_error=1") && opts.contains("/repo/xtask/tsan.supp"));
        assert!(cmd.has_arg("maptrace-core") && cmd.has_arg(SYSTEM_TESTS));
        assert_eq!(tests_of(&cmd), TSAN_TESTS);
    }

    #[test]
    fn asan_ubsan_covers_every_shim_test() {
        let cmd = asan_ubsan_cmd(&ctx());
        assert_eq!(cmd.env_value("MT_SIM_SANITIZE"), Some("address,undefined"));
        assert_eq!(cmd.env_value("RUSTFLAGS"), Some("-Zsanitizer=address"));
        assert!(cmd.has_arg(SYSTEM_TESTS) && !cmd.has_arg("maptrace-core"));
        assert_eq!(tests_of(&cmd), SHIM_TESTS);
    }

    /// A new system test runs under ASan/UBSan unless it is left out on
    /// purpose, with a reason.
    #[test]
    fn every_system_test_is_sanitized_or_left_out_with_a_reason() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../system-tests/tests");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".rs").map(str::to_string)
            })
            .collect();
        files.sort();
        let mut listed: Vec<String> = SHIM_TESTS
            .iter()
            .chain(NOT_UNDER_ASAN.iter().map(|(t, _)| t))
            .map(|t| t.to_string())
            .collect();
        listed.sort();
        assert_eq!(
            files, listed,
            "system-tests/tests against SHIM_TESTS + NOT_UNDER_ASAN"
        );
        assert!(NOT_UNDER_ASAN.iter().all(|(_, why)| !why.is_empty()));
    }

    #[test]
    fn miri_runs_no_test_that_needs_c() {
        let cmds = miri_cmds(&ctx());
        assert!(cmds[0].has_arg("setup"));
        for cmd in &cmds[1..] {
            assert!(cmd.has_arg("miri") && cmd.has_arg("--locked"));
            let flags = cmd.env_value("MIRIFLAGS").unwrap();
            assert!(flags.contains("-Zmiri-strict-provenance"), "{flags}");
            for t in tests_of(cmd) {
                assert!(
                    !t.starts_with("shim_") && t != "loom",
                    "{t} needs C or loom"
                );
            }
        }
        let seeds = cmds.last().unwrap();
        assert!(seeds.env_value("MIRIFLAGS").unwrap().contains("many-seeds"));
        assert!(seeds.has_arg(MIRI_CONCURRENT_TEST));
    }

    #[test]
    fn the_suppressions_file_exists_and_every_entry_says_why() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = std::fs::read_to_string(root.join(TSAN_SUPPRESSIONS)).unwrap();
        let mut why = false;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.starts_with('#') {
                why = true;
            } else {
                assert!(
                    why,
                    "suppression `{line}` has no comment above it saying why"
                );
                why = false;
            }
        }
    }
}
