//! `cargo xtask`: cross-build, check, bundle, sign and test the maptrace kext.

mod check;
mod cross;
mod deps;
mod exec;
mod kernel;
mod kpi;
mod objects;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::exec::Mode;
use crate::kernel::{Arch, Toolchain};

const HELP: &str = "\
cargo xtask <command> [options]

Commands:
  test                 set-up, host tests, cross + object checks, signing rehearsal (what CI runs)
  demo                 set-up, then `cargo run --release -p maptrace -- demo`
  cross [--arch A]     core + shim as checked Mach-O objects (x86_64, arm64e) in target/kext
  check [--arch A]     only the object checks, on what `cross` left in target/kext
  kextlibs             the KPI bundles the objects import (OSBundleLibraries), per arch

Common options:
  --dry-run            print every command and file write instead of doing it
";

/// Parsed command line: the command and its options.
#[derive(Debug, Default)]
struct Args {
    command: String,
    dry_run: bool,
    archs: Vec<Arch>,
}

fn parse_args(raw: &[String]) -> Result<Args> {
    let mut args = Args::default();
    let mut it = raw.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--dry-run" => args.dry_run = true,
            "--arch" => args.archs.push(Arch::parse(&value("--arch")?)?),
            "-h" | "--help" | "help" => args.command = "help".into(),
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n\n{HELP}"),
            cmd if args.command.is_empty() => args.command = cmd.to_string(),
            extra => bail!("unexpected argument {extra}\n\n{HELP}"),
        }
    }
    if args.archs.is_empty() {
        args.archs = Arch::ALL.to_vec();
    }
    Ok(args)
}

/// The repository root (xtask lives one level below it).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn mode(args: &Args) -> Mode {
    if args.dry_run { Mode::DryRun } else { Mode::Run }
}

/// `cross`: set-up, build, then check.
fn cmd_cross(root: &Path, args: &Args) -> Result<()> {
    let layout = cross::Layout::project(root);
    let c_files = layout.c_files()?;
    let plan = cross::plan(&layout, &args.archs, Toolchain::for_host(), &c_files);
    if args.dry_run {
        exec::exec(&plan, Mode::DryRun)?;
        println!("# then: object checks on target/kext/<arch>");
        return Ok(());
    }
    deps::ensure(deps::Task::Cross)?;
    exec::exec(&plan, Mode::Run)?;
    cmd_check(root, args)
}

/// `check`: object checks on existing outputs.
fn cmd_check(root: &Path, args: &Args) -> Result<()> {
    let layout = cross::Layout::project(root);
    let reports = cross::check_outputs(&layout, &args.archs)?;
    for (arch, r) in &reports {
        print!("{}", r.render(*arch));
    }
    check::require_clean(&reports)?;
    println!("object checks passed");
    Ok(())
}

/// `kextlibs`: the OSBundleLibraries the objects need.
fn cmd_kextlibs(root: &Path, args: &Args) -> Result<()> {
    let layout = cross::Layout::project(root);
    let reports = cross::check_outputs(&layout, &args.archs)?;
    for (arch, r) in &reports {
        println!("{}:", arch.name());
        for (bundle, version) in kpi::libraries(r.bundles()) {
            let n = r.imports.values().filter(|b| **b == bundle).count();
            println!("  {bundle} = {version}   ({n} symbols)");
        }
        for e in &r.errors {
            println!("  problem: {e}");
        }
    }
    check::require_clean(&reports)
}

fn run(raw: &[String]) -> Result<()> {
    let args = parse_args(raw)?;
    let root = repo_root();
    let _ = mode(&args);
    match args.command.as_str() {
        "" | "help" => {
            print!("{HELP}");
            Ok(())
        }
        "cross" => cmd_cross(&root, &args),
        "check" => cmd_check(&root, &args),
        "kextlibs" => cmd_kextlibs(&root, &args),
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Err(err) = run(&raw) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
