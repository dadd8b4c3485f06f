//! `cargo xtask`: cross-build, check, bundle, sign and test the maptrace kext.

mod bundle;
mod check;
mod ci;
mod cross;
mod deps;
mod exec;
mod fuzz;
mod kernel;
mod kpi;
mod link;
mod objects;
mod sanitize;
mod sign;
mod signcheck;
mod vmtest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::exec::Mode;
use crate::kernel::{Arch, Toolchain, Variant};

const HELP: &str = "\
cargo xtask <command> [options]

Commands:
  test                 set-up, fmt, host tests, clippy, loom, ASan/UBSan, TSan, Miri, fuzz,
                       cross + object checks, sign-check (CI)
  demo                 set-up, then `cargo run --release -p maptrace -- demo` (simulator)
  cross [--arch A]     core + shim as checked Mach-O objects (x86_64, arm64e) in target/kext
  check [--arch A]     only the object checks, on what `cross` left in target/kext
  kextlibs [--arch A]  the KPI bundles the objects import (OSBundleLibraries)
  bundle               target/kext/maptrace.kext with Info.plist filled from the template
  build                macOS: cross, final -kext link per arch, universal binary, bundle
                       (cross, check, kextlibs, bundle, build take the variant options)
  sign [--bundle DIR]  sign the bundle: --identity ID (macOS codesign), --pem-cert F --pem-key F,
                       or --adhoc (default); also MT_SIGN_IDENTITY / MT_SIGN_PEM_CERT / MT_SIGN_PEM_KEY;
                       --no-timestamp skips the timestamp server (rcodesign)
  sign-check           sign a real Mach-O bundle with rcodesign (ad hoc and PEM) and verify it
  fuzz [--runs N | --seconds S] [--target T]
                       build the cargo-fuzz targets (fuzz/) and run each (or T, repeatable)
                       for N inputs (default 1000000) or S seconds; fails on any crash
  vm-test --host USER@VM [--loader kmutil|kextutil] [--no-dtrace] [--bundle DIR]
                       load the kext in a test VM, trace a workload, compare with DTrace, unload

Common options:
  --dry-run            print every command and file write instead of doing it
  --arch A             x86_64 or arm64e (repeatable; default both)
  --kauth              the kauth variant for macOS 10.15 VMs (MT_WITH_KAUTH, x86_64 only,
                       org.maptrace.kext.kauth) in target/kext/kauth
  --resident           MAC policy without UNLOADOK (MT_RESIDENT): no cost on every MAC check,
                       but the kext never unloads; in target/kext/resident
";

/// Parsed command line: the command and its options.
#[derive(Debug, Default)]
struct Args {
    command: String,
    dry_run: bool,
    archs: Vec<Arch>,
    host: Option<String>,
    loader: Option<String>,
    no_dtrace: bool,
    bundle: Option<PathBuf>,
    sign: sign::SignArgs,
    fuzz_budget: Option<fuzz::Budget>,
    fuzz_targets: Vec<String>,
    variant: Variant,
}

fn number(flag: &str, v: String) -> Result<u64> {
    v.parse()
        .with_context(|| format!("{flag} takes a whole number, not `{v}`"))
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
            "--host" => args.host = Some(value("--host")?),
            "--loader" => args.loader = Some(value("--loader")?),
            "--no-dtrace" => args.no_dtrace = true,
            "--bundle" => args.bundle = Some(value("--bundle")?.into()),
            "--identity" => args.sign.identity = Some(value("--identity")?),
            "--pem-cert" => args.sign.pem_cert = Some(value("--pem-cert")?.into()),
            "--pem-key" => args.sign.pem_key = Some(value("--pem-key")?.into()),
            "--adhoc" => args.sign.adhoc = true,
            "--runs" => {
                args.fuzz_budget = Some(fuzz::Budget::Runs(number("--runs", value("--runs")?)?))
            }
            "--target" => args.fuzz_targets.push(value("--target")?),
            "--seconds" => {
                args.fuzz_budget = Some(fuzz::Budget::Seconds(number(
                    "--seconds",
                    value("--seconds")?,
                )?))
            }
            "--no-timestamp" => args.sign.no_timestamp = true,
            "--kauth" => args.variant.kauth = true,
            "--resident" => args.variant.resident = true,
            "-h" | "--help" | "help" => args.command = "help".into(),
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n\n{HELP}"),
            cmd if args.command.is_empty() => args.command = cmd.to_string(),
            extra => bail!("unexpected argument {extra}\n\n{HELP}"),
        }
    }
    if args.archs.is_empty() {
        args.archs = args.variant.archs().to_vec();
    }
    if let Some(a) = args
        .archs
        .iter()
        .find(|a| !args.variant.archs().contains(a))
    {
        bail!(
            "--kauth builds for macOS {} on Intel only: no {} slice",
            kernel::MACOS_MIN_KAUTH,
            a.name()
        );
    }
    Ok(args)
}

/// The repository root (xtask lives one level below it).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `cross`: set-up, build, then check.
pub(crate) fn cmd_cross(root: &Path, archs: &[Arch], variant: Variant, mode: Mode) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let c_files = layout.c_files()?;
    let plan = cross::plan(&layout, archs, Toolchain::for_host(), &c_files);
    if mode == Mode::DryRun {
        println!(
            "# ensure system packages: {}",
            deps::packages(deps::Task::Cross).join(" ")
        );
        exec::exec(&plan, Mode::DryRun)?;
        println!("# then: object checks on {}/<arch>", layout.out.display());
        return Ok(());
    }
    deps::ensure(deps::Task::Cross)?;
    exec::exec(&plan, Mode::Run)?;
    cmd_check(root, archs, variant)
}

/// `check`: object checks on existing outputs.
fn cmd_check(root: &Path, archs: &[Arch], variant: Variant) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let reports = cross::check_outputs(&layout, archs)?;
    for (arch, r) in &reports {
        print!("{}", r.render(*arch));
    }
    check::require_clean(&reports)?;
    println!("object checks passed");
    let table = kpi::Table::load(root)?;
    let unused: Vec<&str> = table
        .entries
        .iter()
        .filter(|e| {
            !reports
                .iter()
                .any(|(_, r)| r.imports.contains_key(&e.symbol))
        })
        // Rows only the kauth variant imports.
        .filter(|e| {
            !table
                .unsupported
                .iter()
                .any(|u| u.symbol == e.symbol && u.kauth_variant_ok)
        })
        .map(|e| e.symbol.as_str())
        .collect();
    if !unused.is_empty() && archs.len() == Arch::ALL.len() && variant == Variant::default() {
        println!(
            "note: {} lists symbols no object imports (remove them if no longer called): {}",
            kpi::TABLE,
            unused.join(" ")
        );
    }
    check_kpi_table(root)
}

/// The project's KPI table against the XNU export tables beside the clone, when present.
fn check_kpi_table(root: &Path) -> Result<()> {
    let Some(dir) = kpi::reference_dir(root) else {
        println!("note: ../shared/reference/xnu-data absent: KPI table not cross-checked");
        return Ok(());
    };
    let table = kpi::Table::load(root)?;
    for file in ["symbol_bundles.tsv", "symbol_bundles.xnu-7195.141.2.tsv"] {
        let path = dir.join(file);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let problems = kpi::check_against_reference(&table, &text);
        if !problems.is_empty() {
            bail!(
                "{}: KPI table disagrees with {file}:\n{}",
                kpi::TABLE,
                problems.join("\n")
            );
        }
    }
    println!("KPI table matches the XNU export tables (macOS 11 and 15)");
    Ok(())
}

/// `kextlibs`: the OSBundleLibraries the objects need.
fn cmd_kextlibs(root: &Path, archs: &[Arch], variant: Variant) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let reports = cross::check_outputs(&layout, archs)?;
    for (arch, r) in &reports {
        println!("{}:", arch.name());
        for (bundle, version) in kpi::libraries_for(variant.macos_min(), r.bundles()) {
            let syms: Vec<&str> = r
                .imports
                .iter()
                .filter(|(_, b)| **b == bundle)
                .map(|(s, _)| s.as_str())
                .collect();
            println!("  {bundle} = {version}   ({} symbols)", syms.len());
            println!("      {}", syms.join(" "));
        }
        for e in &r.errors {
            println!("  problem: {e}");
        }
    }
    check::require_clean(&reports)
}

/// OSBundleLibraries for the union of all arches' imports; empty (with a note) when there are
/// no objects yet and this is a dry run.
fn libraries(root: &Path, variant: Variant, mode: Mode) -> Result<BTreeMap<String, String>> {
    let layout = cross::Layout::for_variant(root, variant);
    match cross::check_outputs(&layout, variant.archs()) {
        Ok(reports) => Ok(kpi::libraries_for(
            variant.macos_min(),
            reports
                .iter()
                .flat_map(|(_, r)| r.bundles())
                .collect::<std::collections::BTreeSet<_>>(),
        )),
        Err(e) if mode == Mode::DryRun => {
            println!("# OSBundleLibraries come from the cross objects, not built yet ({e:#})");
            Ok(BTreeMap::new())
        }
        Err(e) => Err(e),
    }
}

/// The filled Info.plist.
fn info_plist(root: &Path, variant: Variant, mode: Mode) -> Result<Vec<u8>> {
    let info = bundle::gather_info(root, variant, libraries(root, variant, mode)?)?;
    let template_path = bundle::template(variant);
    let template =
        std::fs::read(root.join(template_path)).with_context(|| format!("read {template_path}"))?;
    bundle::fill_info_plist(&template, &info)
}

/// `bundle`: the .kext tree with Info.plist (and the executable when linked).
fn cmd_bundle(root: &Path, variant: Variant, mode: Mode) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let exe = link::universal_executable(&layout);
    let plist = info_plist(root, variant, mode)?;
    let exe = (exe.is_file() || mode == Mode::DryRun && cfg!(target_os = "macos")).then_some(exe);
    let plan = bundle::plan(
        &bundle::KextPaths::under(&layout.out),
        plist,
        exe.as_deref(),
    );
    exec::exec(&plan, mode)
}

/// `build` (macOS): cross + checks, link, universal binary, bundle.
fn cmd_build(root: &Path, variant: Variant, mode: Mode) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let archs = variant.archs();
    if mode == Mode::DryRun {
        cmd_cross(root, archs, variant, mode)?;
        let objs = link::planned_shim_objects(&layout, archs, &layout.c_files()?);
        exec::exec(&link::plan(&layout, archs, &objs), mode)?;
        let plist = info_plist(root, variant, mode)?;
        let exe = link::universal_executable(&layout);
        let plan = bundle::plan(&bundle::KextPaths::under(&layout.out), plist, Some(&exe));
        return exec::exec(&plan, mode);
    }
    link::require_macos()?;
    cmd_cross(root, archs, variant, mode)?;
    let objs = link::shim_objects(&layout, archs)?;
    exec::exec(&link::plan(&layout, archs, &objs), mode)?;
    cmd_bundle(root, variant, mode)
}

/// The rcodesign program, installed under target/tools when missing.
fn rcodesign(root: &Path, mode: Mode) -> Result<String> {
    if let Some(found) = sign::find_rcodesign(root) {
        return Ok(found);
    }
    exec::exec(&sign::install_rcodesign_plan(root), mode)?;
    Ok(sign::tools_root(root)
        .join("bin/rcodesign")
        .display()
        .to_string())
}

/// `sign`: sign the bundle, then verify what was signed.
fn cmd_sign(root: &Path, args: &Args, mode: Mode) -> Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let sign_mode = sign::mode(&args.sign, &env, cfg!(target_os = "macos"))?;
    let layout = cross::Layout::project(root);
    let kext = args
        .bundle
        .clone()
        .unwrap_or_else(|| bundle::KextPaths::under(&layout.out).bundle);
    let tool = match sign_mode {
        sign::SignMode::Codesign { .. } => String::new(),
        _ => rcodesign(root, mode)?,
    };
    exec::exec(
        &sign::plan(&sign_mode, &kext, &tool, args.sign.no_timestamp),
        mode,
    )?;
    if mode == Mode::Run && !matches!(sign_mode, sign::SignMode::Codesign { .. }) {
        for s in sign::verify_bundle(&kext, bundle::EXECUTABLE)? {
            println!(
                "signed slice cpu {:#x}: {} flags {:#x}, {} pages, CMS {}",
                s.cputype, s.identifier, s.flags, s.code_slots, s.has_cms
            );
        }
    }
    Ok(())
}

/// `sign-check`: the signing rehearsal on a real Mach-O bundle.
pub(crate) fn cmd_sign_check(root: &Path, mode: Mode) -> Result<()> {
    if mode == Mode::Run {
        deps::ensure(deps::Task::SignCheck)?;
    }
    let tool = rcodesign(root, mode)?;
    let layout = cross::Layout::project(root);
    let mut x86 = layout.shim_objects(Arch::X86_64)?;
    let core = layout.core_lib(Arch::X86_64);
    if core.is_file() {
        x86.push(core);
    } else {
        x86.clear();
    }
    let r = signcheck::Rehearsal {
        dir: layout.out.join("sign-check"),
        rcodesign: tool,
        x86_inputs: x86,
        info_plist: info_plist(root, Variant::default(), Mode::DryRun)?,
    };
    exec::exec(&signcheck::plan(&r), mode)?;
    if mode == Mode::Run {
        let header = std::fs::read_to_string(root.join(bundle::ABI_HEADER))?;
        print!(
            "{}",
            signcheck::verify(&r, &bundle::bundle_id_from_header(&header)?)?
        );
    }
    Ok(())
}

/// `vm-test`.
fn cmd_vm_test(root: &Path, args: &Args, mode: Mode) -> Result<()> {
    let host = args
        .host
        .clone()
        .context("vm-test needs --host USER@VM (see xtask/README.md for preparing the VM)")?;
    let loader = match args.loader.as_deref() {
        None | Some("kmutil") => vmtest::Loader::Kmutil,
        Some("kextutil") => vmtest::Loader::Kextutil,
        Some(other) => bail!("--loader {other}: expected kmutil or kextutil"),
    };
    if mode == Mode::Run {
        vmtest::require_macos()?;
    }
    let header = std::fs::read_to_string(root.join(bundle::ABI_HEADER))?;
    let layout = cross::Layout::project(root);
    let test = vmtest::VmTest {
        host,
        bundle: args
            .bundle
            .clone()
            .unwrap_or_else(|| bundle::KextPaths::under(&layout.out).bundle),
        bundle_id: bundle::bundle_id_from_header(&header)?,
        root: root.to_path_buf(),
        loader,
        dtrace: !args.no_dtrace,
    };
    vmtest::run(&test, mode)
}

fn run(raw: &[String]) -> Result<()> {
    let args = parse_args(raw)?;
    let root = repo_root();
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Run
    };
    match args.command.as_str() {
        "" | "help" => {
            print!("{HELP}");
            Ok(())
        }
        "test" => ci::test(&root, mode),
        "demo" => ci::demo(&root, mode),
        "cross" => cmd_cross(&root, &args.archs, args.variant, mode),
        "check" => cmd_check(&root, &args.archs, args.variant),
        "kextlibs" => cmd_kextlibs(&root, &args.archs, args.variant),
        "bundle" => cmd_bundle(&root, args.variant, mode),
        "build" => cmd_build(&root, args.variant, mode),
        "sign" => cmd_sign(&root, &args, mode),
        "sign-check" => cmd_sign_check(&root, mode),
        "vm-test" => cmd_vm_test(&root, &args, mode),
        "fuzz" => fuzz::fuzz(
            &root,
            args.fuzz_budget
                .unwrap_or(fuzz::Budget::Runs(fuzz::LONG_RUNS)),
            &args.fuzz_targets,
            mode,
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args> {
        parse_args(&list.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_parse_and_mistakes_are_reported() {
        let a = args(&["vm-test", "--host", "me@vm", "--dry-run", "--no-dtrace"]).unwrap();
        assert_eq!(a.command, "vm-test");
        assert_eq!(a.host.as_deref(), Some("me@vm"));
        assert!(a.dry_run && a.no_dtrace);
        assert_eq!(a.archs, Arch::ALL);
        let a = args(&["cross", "--arch", "arm64e"]).unwrap();
        assert_eq!(a.archs, [Arch::Arm64e]);
        assert!(args(&["cross", "--arch"]).is_err());
        assert!(args(&["cross", "--arch", "ppc"]).is_err());
        assert!(args(&["cross", "--bogus"]).is_err());
        assert!(args(&["cross", "extra"]).is_err());
        let a = args(&["cross", "--kauth"]).unwrap();
        assert!(a.variant.kauth && !a.variant.resident);
        assert_eq!(a.archs, [Arch::X86_64]);
        assert!(args(&["cross", "--kauth", "--arch", "arm64e"]).is_err());
        let a = args(&["bundle", "--resident"]).unwrap();
        assert!(a.variant.resident && !a.variant.kauth);
        assert_eq!(a.archs, Arch::ALL);
        let a = args(&["fuzz", "--runs", "5000"]).unwrap();
        assert_eq!(a.fuzz_budget, Some(fuzz::Budget::Runs(5000)));
        let a = args(&["fuzz", "--seconds", "9"]).unwrap();
        assert_eq!(a.fuzz_budget, Some(fuzz::Budget::Seconds(9)));
        assert!(args(&["fuzz", "--runs", "many"]).is_err());
        let a = args(&["fuzz", "--target", "decode", "--target", "scenario"]).unwrap();
        assert_eq!(a.fuzz_targets, ["decode", "scenario"]);
    }

    #[test]
    fn vm_test_without_host_says_how() {
        let a = args(&["vm-test", "--dry-run"]).unwrap();
        let err = cmd_vm_test(&repo_root(), &a, Mode::DryRun).unwrap_err();
        assert!(err.to_string().contains("--host USER@VM"));
    }

    #[test]
    fn dry_runs_of_every_plan_succeed_on_this_machine() {
        let root = repo_root();
        for variant in [
            Variant::default(),
            Variant {
                kauth: true,
                resident: false,
            },
            Variant {
                kauth: false,
                resident: true,
            },
        ] {
            cmd_cross(&root, variant.archs(), variant, Mode::DryRun).unwrap();
            cmd_build(&root, variant, Mode::DryRun).unwrap();
            cmd_bundle(&root, variant, Mode::DryRun).unwrap();
        }
        let a = args(&["vm-test", "--host", "me@vm", "--loader", "kextutil"]).unwrap();
        cmd_vm_test(&root, &a, Mode::DryRun).unwrap();
        let bad = args(&["vm-test", "--host", "me@vm", "--loader", "insmod"]).unwrap();
        assert!(cmd_vm_test(&root, &bad, Mode::DryRun).is_err());
    }
}
