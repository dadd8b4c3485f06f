//! `cargo xtask`: cross-build, check, bundle, sign and test the maptrace kext.

mod bundle;
mod check;
mod ci;
mod cross;
mod darwin;
mod deps;
mod exec;
mod fuzz;
mod kernel;
mod kextcheck;
mod kpi;
mod link;
mod objects;
mod sanitize;
mod sign;
mod signcheck;
mod stack;
mod tidy;
mod vmtest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::exec::Mode;
use crate::kernel::{Arch, Toolchain, Variant};

const HELP: &str = "\
cargo xtask <command> [options]        cargo xtask <command> --help: that command's help

Commands:
  test         set-up, fmt, host tests, clippy, loom, ASan/UBSan, TSan, Miri, fuzz,
               the companion type-checked for macOS, cross + object checks, sign-check (CI)
  demo         set-up, then `cargo run --release -p maptrace --features sim -- demo`
  cross        core + shim as checked Mach-O objects (x86_64, arm64e) in target/kext
  check        only the object checks, on what `cross` left in target/kext
  kextlibs     the KPI bundles the objects import (OSBundleLibraries)
  bundle       target/kext/maptrace.kext with Info.plist filled from the template
  build        macOS: cross with Apple clang, final -kext link per arch, universal binary,
               bundle, then the ABI and kmutil checks of the result
  sign         sign the bundle (codesign on macOS, rcodesign elsewhere)
  sign-check   sign a real Mach-O bundle with rcodesign (ad hoc and PEM) and verify it
  fuzz         build the cargo-fuzz targets (fuzz/) and run each; fails on any crash
  vm-test      install the kext on a test VM, or run the traced workload there (macOS)
  help [CMD]   this text, or CMD's help

cross, check, kextlibs, bundle and build take the build variant: --kauth (a kauth listener,
macOS 10.15, Intel only) or --resident (a MAC policy that is never unloadable).

Every command that changes something takes --dry-run: print every command and file write
instead of doing it.
";

/// One option: its name, whether it takes a value, and its help line.
struct Opt {
    name: &'static str,
    value: Option<&'static str>,
    help: &'static str,
}

const DRY_RUN: Opt = Opt {
    name: "--dry-run",
    value: None,
    help: "print every command and file write instead of doing it",
};
const ARCH: Opt = Opt {
    name: "--arch",
    value: Some("A"),
    help: "x86_64 or arm64e (repeatable; default both)",
};
const KAUTH: Opt = Opt {
    name: "--kauth",
    value: None,
    help: "the kauth variant (macOS 10.15, Intel): org.maptrace.kext.kauth",
};
const RESIDENT: Opt = Opt {
    name: "--resident",
    value: None,
    help: "a MAC policy without UNLOADOK: no per-check lock, never unloadable",
};
const BUNDLE: Opt = Opt {
    name: "--bundle",
    value: Some("DIR"),
    help: "the .kext bundle (default target/kext/maptrace.kext)",
};

/// One command: its name, what it does, and the options it accepts.
struct CommandSpec {
    name: &'static str,
    /// Positional words after the command (`vm-test install`), shown in the usage line.
    steps: &'static str,
    about: &'static str,
    options: &'static [Opt],
}

const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "test",
        steps: "",
        about: "What CI runs (.ci/run): set-up, fmt, host tests, clippy, loom, ASan/UBSan, TSan,\n\
                Miri, short fuzz runs, the companion type-checked for macOS, cross + object\n\
                checks, sign-check; every step timed, a summary of failures at the end.",
        options: &[DRY_RUN],
    },
    CommandSpec {
        name: "demo",
        steps: "",
        about: "Set-up, then `cargo run --release -p maptrace --features sim -- demo`: the simulator\n\
                with the real kext loaded, a live event stream, then the report.",
        options: &[DRY_RUN],
    },
    CommandSpec {
        name: "cross",
        steps: "",
        about: "The core (maptrace-core) as a Mach-O staticlib and kext-shim/src/*.c as Mach-O\n\
                objects per arch in target/kext/<arch>/, then the object checks.",
        options: &[DRY_RUN, ARCH, KAUTH, RESIDENT],
    },
    CommandSpec {
        name: "check",
        steps: "",
        about: "Only the object checks, on what `cross` left in target/kext.",
        options: &[ARCH, KAUTH, RESIDENT],
    },
    CommandSpec {
        name: "kextlibs",
        steps: "",
        about: "The KPI bundles (OSBundleLibraries) the objects import, with their symbols.",
        options: &[ARCH, KAUTH, RESIDENT],
    },
    CommandSpec {
        name: "bundle",
        steps: "",
        about: "target/kext/maptrace.kext: Info.plist filled from the top-level template, plus\n\
                Contents/MacOS/maptrace when `build` has linked it.",
        options: &[DRY_RUN, KAUTH, RESIDENT],
    },
    CommandSpec {
        name: "build",
        steps: "",
        about: "macOS: `cross` with Apple's clang (xcrun), the final `ld -kext` link per arch,\n\
                the universal binary, the bundle; then checks of the result: every slice is an\n\
                MH_KEXT_BUNDLE, the arm64e slice carries the ptrauth ABI bit, and kmutil finds\n\
                every imported symbol in OSBundleLibraries. --dry-run prints the macOS plan on\n\
                any machine.",
        options: &[DRY_RUN, KAUTH, RESIDENT],
    },
    CommandSpec {
        name: "sign",
        steps: "",
        about: "Sign the linked bundle, then verify it. Refuses a bundle without its executable\n\
                (link it first with `cargo xtask build` on a Mac). The identity never comes from\n\
                the repository: flags or MT_SIGN_IDENTITY / MT_SIGN_PEM_CERT / MT_SIGN_PEM_KEY.",
        options: &[
            DRY_RUN,
            BUNDLE,
            Opt {
                name: "--identity",
                value: Some("ID"),
                help: "macOS codesign with this keychain identity",
            },
            Opt {
                name: "--pem-cert",
                value: Some("F"),
                help: "rcodesign with this certificate (with --pem-key)",
            },
            Opt {
                name: "--pem-key",
                value: Some("F"),
                help: "the certificate's private key",
            },
            Opt {
                name: "--adhoc",
                value: None,
                help: "ad hoc signature (the default; codesign on macOS)",
            },
            Opt {
                name: "--no-timestamp",
                value: None,
                help: "rcodesign: no timestamp server (offline machines)",
            },
        ],
    },
    CommandSpec {
        name: "sign-check",
        steps: "",
        about: "Sign a real Mach-O bundle with rcodesign, ad hoc and with a self-signed PEM\n\
                certificate, and verify both signatures (the signing rehearsal of CI).",
        options: &[DRY_RUN],
    },
    CommandSpec {
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
    },
    CommandSpec {
        name: "vm-test",
        steps: "install|run|collect|uninstall",
        about: concat!(
            "The kext in a macOS test VM (an Intel VM; xtask/README.md: preparing the VM).\n",
            "Runs on a Mac, after `cargo xtask build` and `cargo xtask sign`.\n",
            "  install    preflight (macOS, CPU, SIP, sudo), copy the bundle to\n",
            "             /Library/Extensions (root-owned), kmutil load. A new build needs\n",
            "             approval in System Settings and a restart: it prints what to do\n",
            "  run        preflight, prove the loaded kext is this build (its UUID), load it\n",
            "             if needed, trace the workload with maptrace and DTrace, unload, and\n",
            "             gather logs, panic reports, the recording and the report in\n",
            "             target/vm-test/\n",
            "  collect    only gather logs and panic reports (after a panic and restart)\n",
            "  uninstall  unload, remove from /Library/Extensions, clear kmutil's staging",
        ),
        options: &[
            DRY_RUN,
            BUNDLE,
            Opt {
                name: "--host",
                value: Some("USER@VM"),
                help: "the VM, as ssh takes it (required)",
            },
            Opt {
                name: "--no-dtrace",
                value: None,
                help: "run: skip the DTrace comparison",
            },
        ],
    },
];

fn spec(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// The help of one command: usage, what it does, its options.
fn command_help(c: &CommandSpec) -> String {
    let mut s = format!("cargo xtask {}", c.name);
    if !c.steps.is_empty() {
        s.push_str(&format!(" <{}>", c.steps));
    }
    if !c.options.is_empty() {
        s.push_str(" [options]");
    }
    s.push_str("\n\n");
    for line in c.about.lines() {
        s.push_str(line);
        s.push('\n');
    }
    if !c.options.is_empty() {
        s.push_str("\nOptions:\n");
        for o in c.options {
            let flag = o
                .value
                .map_or_else(|| o.name.to_string(), |v| format!("{} {v}", o.name));
            s.push_str(&format!("  {flag:<20} {}\n", o.help));
        }
    }
    s
}

/// Parsed command line: the command and its options.
#[derive(Debug, Default)]
struct Args {
    command: String,
    /// `help` asked for: the global help when `command` is empty, else that command's.
    help: bool,
    /// vm-test's step.
    step: Option<String>,
    dry_run: bool,
    archs: Vec<Arch>,
    variant: Variant,
    host: Option<String>,
    no_dtrace: bool,
    bundle: Option<PathBuf>,
    sign: sign::SignArgs,
    fuzz_budget: Option<fuzz::Budget>,
    fuzz_targets: Vec<String>,
}

fn number(flag: &str, v: String) -> Result<u64> {
    v.parse()
        .with_context(|| format!("{flag} takes a whole number, not `{v}`"))
}

fn see_help(command: &str) -> String {
    if command.is_empty() {
        "see `cargo xtask --help`".into()
    } else {
        format!("see `cargo xtask {command} --help`")
    }
}

fn parse_args(raw: &[String]) -> Result<Args> {
    let mut args = Args::default();
    let mut it = raw.iter();
    while let Some(a) = it.next() {
        let a = a.as_str();
        if a == "-h" || a == "--help" {
            args.help = true;
            continue;
        }
        if !a.starts_with('-') {
            if args.command.is_empty() && !args.help && a == "help" {
                args.help = true;
            } else if args.command.is_empty() {
                if spec(a).is_none() {
                    bail!("unknown command `{a}`\n\n{HELP}");
                }
                args.command = a.to_string();
            } else if spec(&args.command).is_none_or(|c| c.steps.is_empty()) || args.step.is_some()
            {
                bail!("unexpected argument `{a}`; {}", see_help(&args.command));
            } else {
                args.step = Some(a.to_string());
            }
            continue;
        }
        let Some(cmd) = spec(&args.command) else {
            bail!("option {a} comes after a command; {}", see_help(""));
        };
        let Some(opt) = cmd.options.iter().find(|o| o.name == a) else {
            bail!(
                "unknown option {a} for `cargo xtask {}`; {}",
                cmd.name,
                see_help(cmd.name)
            );
        };
        let mut value = || {
            it.next().cloned().with_context(|| {
                format!(
                    "{a} needs a value ({}); {}",
                    opt.value.unwrap_or("?"),
                    see_help(cmd.name)
                )
            })
        };
        match a {
            "--dry-run" => args.dry_run = true,
            "--arch" => args.archs.push(Arch::parse(&value()?)?),
            "--host" => args.host = Some(value()?),
            "--no-dtrace" => args.no_dtrace = true,
            "--bundle" => args.bundle = Some(value()?.into()),
            "--identity" => args.sign.identity = Some(value()?),
            "--pem-cert" => args.sign.pem_cert = Some(value()?.into()),
            "--pem-key" => args.sign.pem_key = Some(value()?.into()),
            "--adhoc" => args.sign.adhoc = true,
            "--no-timestamp" => args.sign.no_timestamp = true,
            "--runs" => args.fuzz_budget = Some(fuzz::Budget::Runs(number(a, value()?)?)),
            "--seconds" => args.fuzz_budget = Some(fuzz::Budget::Seconds(number(a, value()?)?)),
            "--target" => args.fuzz_targets.push(value()?),
            "--kauth" => args.variant.kauth = true,
            "--resident" => args.variant.resident = true,
            other => bail!(
                "option {other} is listed for `{}` but not handled",
                cmd.name
            ),
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

/// What `help` prints: the global help, or one command's.
fn help_text(command: &str) -> String {
    spec(command).map_or_else(|| HELP.to_string(), command_help)
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
    cmd_check(root, archs, variant)?;
    stack::run(root, archs, variant)
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

/// The project's KPI table against the XNU export tables kept in the repo.
fn check_kpi_table(root: &Path) -> Result<()> {
    let table = kpi::Table::load(root)?;
    let problems = kpi::check_against_references(root, &table)?;
    if !problems.is_empty() {
        bail!(
            "{}: KPI table disagrees with XNU's exports:\n{}",
            kpi::TABLE,
            problems.join("\n")
        );
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
pub(crate) fn cmd_bundle(root: &Path, variant: Variant, mode: Mode) -> Result<()> {
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

/// `build` (macOS): cross with Apple clang + object checks, link, universal binary, bundle,
/// then checks of the result. The dry run prints the macOS plan on any machine.
fn cmd_build(root: &Path, variant: Variant, mode: Mode) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let archs = variant.archs();
    let kext = bundle::KextPaths::under(&layout.out);
    println!("# kext variant: {}", variant.name());
    if mode == Mode::DryRun {
        println!("# the macOS plan, whatever machine prints it");
        println!("# ensure: Xcode command line tools (xcrun clang), rustup nightly with rust-src");
        let c_files = layout.c_files()?;
        let mac = Toolchain::RustupNightly;
        exec::exec(&cross::plan(&layout, archs, mac, &c_files), mode)?;
        println!("# then: object checks on target/kext/<arch>");
        let objs = link::planned_shim_objects(&layout, archs, &c_files);
        exec::exec(&link::plan(&layout, archs, &objs), mode)?;
        let plist = info_plist(root, variant, mode)?;
        let exe = link::universal_executable(&layout);
        exec::exec(&bundle::plan(&kext, plist, Some(&exe)), mode)?;
        println!(
            "# then: every slice of {} is an MH_KEXT_BUNDLE with an LC_UUID; arm64e carries the \
             versioned ptrauth ABI bit (printed with the kernel-ABI bit and version)",
            kext.executable().display()
        );
        println!("{}", link::kmutil_libraries(&kext.bundle));
        println!("# fails on unresolved symbols or libraries missing from OSBundleLibraries");
        println!(
            "{} > {}",
            link::kmutil_diagnostics(&kext.bundle),
            layout.out.join(DIAGNOSTICS).display()
        );
        println!("# shown, not fatal: the bundle is not signed yet (next: cargo xtask sign)");
        return Ok(());
    }
    link::require_macos()?;
    cmd_cross(root, archs, variant, mode)?;
    let objs = link::shim_objects(&layout, archs)?;
    exec::exec(&link::plan(&layout, archs, &objs), mode)?;
    cmd_bundle(root, variant, mode)?;
    check_built(&layout, &kext, archs)
}

/// Where `build` keeps kmutil's diagnostics of the bundle.
const DIAGNOSTICS: &str = "print-diagnostics.txt";

/// The checks of a linked bundle on macOS: slices and ABI bits, then kmutil's view.
fn check_built(layout: &cross::Layout, kext: &bundle::KextPaths, archs: &[Arch]) -> Result<()> {
    let exe = kext.executable();
    let data = std::fs::read(&exe).with_context(|| format!("read {}", exe.display()))?;
    let (text, problems) = kextcheck::check_linked(&kextcheck::slices(&data)?, archs);
    print!("linked kext {}:\n{text}", exe.display());
    if !problems.is_empty() {
        bail!(
            "the linked kext is not loadable:\n  {}",
            problems.join("\n  ")
        );
    }
    let (ok, out) = link::kmutil_libraries(&kext.bundle).capture()?;
    let declared = kextcheck::declared_libraries(&std::fs::read(kext.info_plist())?)?;
    kextcheck::libraries_verdict(ok, &out, &declared)?;
    println!("kmutil libraries: every import resolves in OSBundleLibraries");
    let (ok, out) = link::kmutil_diagnostics(&kext.bundle).capture()?;
    let path = layout.out.join(DIAGNOSTICS);
    std::fs::write(&path, &out).with_context(|| format!("write {}", path.display()))?;
    println!(
        "kmutil print-diagnostics ({}; saved in {}):\n{out}\n\
         note: complaints about the signature are expected until `cargo xtask sign`",
        if ok { "passed" } else { "reported problems" },
        path.display()
    );
    Ok(())
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
    match (sign::require_linked(&kext, bundle::EXECUTABLE), mode) {
        (Err(e), Mode::DryRun) => println!("# a real run would refuse: {e:#}"),
        (r, _) => r?,
    }
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

/// The identifier kmutil knows the bundle by: its Info.plist's (build variants have their own),
/// or `MT_BUNDLE_ID` when there is no bundle yet (dry runs).
fn vm_bundle_id(root: &Path, kext: &Path) -> Result<String> {
    let plist = kext.join("Contents/Info.plist");
    if let Ok(bytes) = std::fs::read(&plist) {
        let v: plist::Value = plist::from_bytes(&bytes)
            .with_context(|| format!("{} is not a plist", plist.display()))?;
        return v
            .as_dictionary()
            .and_then(|d| d.get("CFBundleIdentifier"))
            .and_then(plist::Value::as_string)
            .map(str::to_string)
            .with_context(|| format!("{} has no CFBundleIdentifier", plist.display()));
    }
    let header = std::fs::read_to_string(root.join(bundle::ABI_HEADER))?;
    bundle::bundle_id_from_header(&header)
}

/// `vm-test <install|run|collect|uninstall>`.
fn cmd_vm_test(root: &Path, args: &Args, mode: Mode) -> Result<()> {
    let phase = vmtest::Phase::parse(args.step.as_deref())?;
    let host = args
        .host
        .clone()
        .context("vm-test needs --host USER@VM (see xtask/README.md for preparing the VM)")?;
    let layout = cross::Layout::project(root);
    let kext = args
        .bundle
        .clone()
        .unwrap_or_else(|| bundle::KextPaths::under(&layout.out).bundle);
    let test = vmtest::VmTest {
        host,
        bundle_id: vm_bundle_id(root, &kext)?,
        bundle: kext,
        root: root.to_path_buf(),
        dtrace: !args.no_dtrace,
    };
    vmtest::run(&test, phase, mode)
}

fn run(raw: &[String]) -> Result<()> {
    let args = parse_args(raw)?;
    let root = repo_root();
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Run
    };
    if args.help || args.command.is_empty() {
        print!("{}", help_text(&args.command));
        return Ok(());
    }
    match args.command.as_str() {
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
        assert!(a.dry_run && a.no_dtrace && !a.help);
        assert_eq!(a.archs, Arch::ALL);
        assert_eq!(a.variant, Variant::default());
        let a = args(&["cross", "--arch", "arm64e"]).unwrap();
        assert_eq!(a.archs, [Arch::Arm64e]);
        assert!(args(&["cross", "--arch"]).is_err());
        assert!(args(&["cross", "--arch", "ppc"]).is_err());
        assert!(args(&["cross", "extra"]).is_err());
        assert!(args(&["bogus"]).is_err());
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
    fn every_command_has_its_own_help() {
        for c in COMMANDS {
            for form in [
                vec![c.name, "--help"],
                vec![c.name, "-h"],
                vec!["help", c.name],
            ] {
                let a = args(&form).unwrap();
                assert!(a.help && a.command == c.name, "{form:?}");
                let text = help_text(&a.command);
                assert!(
                    text.starts_with(&format!("cargo xtask {}", c.name)),
                    "{form:?}: {text}"
                );
                assert_ne!(text, HELP);
                for o in c.options {
                    assert!(text.contains(o.name), "{} lacks {}", c.name, o.name);
                }
            }
        }
        // Only its own options: cross has no --host, vm-test has no --arch.
        assert!(!help_text("cross").contains("--host"));
        assert!(help_text("cross").contains("--arch"));
        assert!(!help_text("vm-test").contains("--arch"));
        // Help comes first even with options the command would refuse later.
        assert!(args(&["sign", "--help", "--bundle", "x"]).unwrap().help);
        let bare = args(&[]).unwrap();
        assert!(bare.command.is_empty());
        assert_eq!(help_text(&bare.command), HELP);
        assert!(args(&["help"]).unwrap().help);
        let err = args(&["help", "nonsense"]).unwrap_err().to_string();
        assert!(err.contains("unknown command `nonsense`"), "{err}");
    }

    #[test]
    fn unknown_or_foreign_options_point_at_the_commands_help() {
        let err = args(&["cross", "--bogus"]).unwrap_err().to_string();
        assert!(
            err.contains("unknown option --bogus for `cargo xtask cross`"),
            "{err}"
        );
        assert!(err.contains("see `cargo xtask cross --help`"), "{err}");
        // An option of another command is refused, not silently ignored.
        let err = args(&["cross", "--host", "me@vm"]).unwrap_err().to_string();
        assert!(err.contains("see `cargo xtask cross --help`"), "{err}");
        let err = args(&["sign", "--identity"]).unwrap_err().to_string();
        assert!(err.contains("--identity needs a value"), "{err}");
        assert!(err.contains("cargo xtask sign --help"), "{err}");
        let err = args(&["--dry-run"]).unwrap_err().to_string();
        assert!(err.contains("cargo xtask --help"), "{err}");
    }

    #[test]
    fn sign_without_a_linked_executable_refuses_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A stand-in rcodesign that would half-sign, as the real one did before the refusal.
        let tool = sign::tools_root(root).join("bin/rcodesign");
        std::fs::create_dir_all(tool.parent().unwrap()).unwrap();
        std::fs::write(
            &tool,
            "#!/bin/sh\nfor b; do :; done\nmkdir -p \"$b/Contents/_CodeSignature\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kext = root.join("maptrace.kext");
        std::fs::create_dir_all(kext.join("Contents")).unwrap();
        std::fs::write(kext.join("Contents/Info.plist"), "<plist/>").unwrap();
        let before = tree(&kext);
        let a = args(&["sign", "--bundle", kext.to_str().unwrap()]).unwrap();
        let err = format!("{:#}", cmd_sign(root, &a, Mode::Run).unwrap_err());
        assert!(err.contains("no linked executable"), "{err}");
        assert!(err.contains("cargo xtask build"), "{err}");
        assert_eq!(tree(&kext), before, "the bundle changed");
        // Not a Mach-O either: refused the same way.
        std::fs::create_dir_all(kext.join("Contents/MacOS")).unwrap();
        std::fs::write(kext.join("Contents/MacOS/maptrace"), "#!/bin/sh\n").unwrap();
        let before = tree(&kext);
        let err = format!("{:#}", cmd_sign(root, &a, Mode::Run).unwrap_err());
        assert!(err.contains("not a Mach-O"), "{err}");
        assert_eq!(tree(&kext), before, "the bundle changed");
        // A missing bundle says to build it.
        let gone = args(&["sign", "--bundle", root.join("none.kext").to_str().unwrap()]).unwrap();
        let err = format!("{:#}", cmd_sign(root, &gone, Mode::Run).unwrap_err());
        assert!(err.contains("cargo xtask build"), "{err}");
    }

    /// Every path under `dir` with its contents (directories as empty).
    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    out.push((p.clone(), Vec::new()));
                    todo.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn vm_test_uses_the_bundles_own_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let kext = dir.path().join("maptrace.kext");
        let root = repo_root();
        let header = std::fs::read_to_string(root.join(bundle::ABI_HEADER)).unwrap();
        let from_header = bundle::bundle_id_from_header(&header).unwrap();
        assert_eq!(vm_bundle_id(&root, &kext).unwrap(), from_header);
        std::fs::create_dir_all(kext.join("Contents")).unwrap();
        let plist = r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>CFBundleIdentifier</key><string>org.example.kext.variant</string></dict></plist>"#;
        std::fs::write(kext.join("Contents/Info.plist"), plist).unwrap();
        assert_eq!(
            vm_bundle_id(&root, &kext).unwrap(),
            "org.example.kext.variant"
        );
        std::fs::write(
            kext.join("Contents/Info.plist"),
            "<plist version=\"1.0\"><dict/></plist>",
        )
        .unwrap();
        assert!(vm_bundle_id(&root, &kext).is_err());
    }

    #[test]
    fn vm_test_without_host_says_how() {
        let a = args(&["vm-test", "run", "--dry-run"]).unwrap();
        let err = cmd_vm_test(&repo_root(), &a, Mode::DryRun).unwrap_err();
        assert!(err.to_string().contains("--host USER@VM"));
        let a = args(&["vm-test", "--host", "me@vm"]).unwrap();
        let err = cmd_vm_test(&repo_root(), &a, Mode::DryRun).unwrap_err();
        assert!(err.to_string().contains("install"), "{err}");
        assert!(args(&["vm-test", "run", "again"]).is_err());
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
        for step in ["install", "run", "collect", "uninstall"] {
            let a = args(&["vm-test", step, "--host", "me@vm"]).unwrap();
            cmd_vm_test(&root, &a, Mode::DryRun).unwrap();
        }
        let bad = args(&["vm-test", "load", "--host", "me@vm"]).unwrap();
        assert!(cmd_vm_test(&root, &bad, Mode::DryRun).is_err());
    }
}
