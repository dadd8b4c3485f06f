//! From checked objects to a kext on a Mac: the final link, the bundle, its checks, signing,
//! and the test VM; the commands `bundle`, `build`, `sign`, `sign-check` and `vm-test`.

pub mod bundle;
pub mod kextcheck;
pub mod link;
pub mod sign;
pub mod signcheck;
pub mod vmtest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::{BUNDLE, Command, CommandSpec, DRY_RUN, KAUTH, Opt, RESIDENT, set_dry_run};
use crate::exec::{Mode, exec, tools_root};
use crate::kext::kernel::{Arch, Toolchain, Variant};
use crate::kext::{cross, kpi, set_variant};

/// `cargo xtask bundle`.
#[derive(Debug, Default)]
pub struct BundleOptions {
    /// `--dry-run`.
    pub mode: Mode,
    /// `--kauth`, `--resident`.
    pub variant: Variant,
}

impl Command for BundleOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "bundle",
        steps: "",
        about: "target/kext/maptrace.kext: Info.plist filled from the top-level template, plus\n\
            Contents/MacOS/maptrace when `build` has linked it.",
        options: &[DRY_RUN, KAUTH, RESIDENT],
    };

    fn set(&mut self, option: &str, _: &str) -> Result<()> {
        if !set_variant(&mut self.variant, option) {
            set_dry_run(Self::SPEC, &mut self.mode, option)?;
        }
        Ok(())
    }

    fn run(&self, root: &Path) -> Result<()> {
        cmd_bundle(root, self.variant, self.mode)
    }
}

/// `cargo xtask build`.
#[derive(Debug, Default)]
pub struct BuildOptions {
    /// `--dry-run`.
    pub mode: Mode,
    /// `--kauth`, `--resident`.
    pub variant: Variant,
}

impl Command for BuildOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "build",
        steps: "",
        about: "macOS: `cross` with Apple's clang (xcrun), the final `ld -kext` link per arch,\n\
            the universal binary, the bundle; then checks of the result: every slice is an\n\
            MH_KEXT_BUNDLE, the arm64e slice carries the ptrauth ABI bit, and kmutil finds\n\
            every imported symbol in OSBundleLibraries. --dry-run prints the macOS plan on\n\
            any machine.",
        options: &[DRY_RUN, KAUTH, RESIDENT],
    };

    fn set(&mut self, option: &str, _: &str) -> Result<()> {
        if !set_variant(&mut self.variant, option) {
            set_dry_run(Self::SPEC, &mut self.mode, option)?;
        }
        Ok(())
    }

    fn run(&self, root: &Path) -> Result<()> {
        cmd_build(root, self.variant, self.mode)
    }
}

/// `cargo xtask sign`.
#[derive(Debug, Default)]
pub struct SignOptions {
    /// `--dry-run`.
    pub mode: Mode,
    /// `--bundle`.
    pub bundle: Option<PathBuf>,
    /// The identity and timestamp options.
    pub sign: sign::SignArgs,
}

impl Command for SignOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
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
    };

    fn set(&mut self, option: &str, value: &str) -> Result<()> {
        match option {
            "--bundle" => self.bundle = Some(value.into()),
            "--identity" => self.sign.identity = Some(value.into()),
            "--pem-cert" => self.sign.pem_cert = Some(value.into()),
            "--pem-key" => self.sign.pem_key = Some(value.into()),
            "--adhoc" => self.sign.adhoc = true,
            "--no-timestamp" => self.sign.no_timestamp = true,
            other => set_dry_run(Self::SPEC, &mut self.mode, other)?,
        }
        Ok(())
    }

    fn run(&self, root: &Path) -> Result<()> {
        cmd_sign(root, self)
    }
}

/// `cargo xtask sign-check`.
#[derive(Debug, Default)]
pub struct SignCheckOptions {
    /// `--dry-run`.
    pub mode: Mode,
}

impl Command for SignCheckOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "sign-check",
        steps: "",
        about: "Sign a real Mach-O bundle with rcodesign, ad hoc and with a self-signed PEM\n\
            certificate, and verify both signatures (the signing rehearsal of CI).",
        options: &[DRY_RUN],
    };

    fn set(&mut self, option: &str, _: &str) -> Result<()> {
        set_dry_run(Self::SPEC, &mut self.mode, option)
    }

    fn run(&self, root: &Path) -> Result<()> {
        cmd_sign_check(root, self.mode)
    }
}

/// `cargo xtask vm-test`.
#[derive(Debug, Default)]
pub struct VmTestOptions {
    /// `--dry-run`.
    pub mode: Mode,
    /// install, run, collect or uninstall (checked when it runs).
    pub step: Option<String>,
    /// `--bundle`.
    pub bundle: Option<PathBuf>,
    /// `--host`.
    pub host: Option<String>,
    /// `--no-dtrace`.
    pub no_dtrace: bool,
}

impl Command for VmTestOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
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
    };

    fn set(&mut self, option: &str, value: &str) -> Result<()> {
        match option {
            "--bundle" => self.bundle = Some(value.into()),
            "--host" => self.host = Some(value.into()),
            "--no-dtrace" => self.no_dtrace = true,
            other => set_dry_run(Self::SPEC, &mut self.mode, other)?,
        }
        Ok(())
    }

    fn step(&mut self, word: &str) -> Result<()> {
        self.step = Some(word.into());
        Ok(())
    }

    fn run(&self, root: &Path) -> Result<()> {
        cmd_vm_test(root, self)
    }
}

/// The bundle a command was given, else the one `bundle` makes under target/kext.
fn given_or_default_bundle(root: &Path, given: Option<&Path>) -> PathBuf {
    given.map_or_else(
        || bundle::KextPaths::under(&cross::Layout::project(root).out).bundle,
        Path::to_path_buf,
    )
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
pub fn cmd_bundle(root: &Path, variant: Variant, mode: Mode) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let exe = link::universal_executable(&layout);
    let plist = info_plist(root, variant, mode)?;
    let exe = (exe.is_file() || mode == Mode::DryRun && cfg!(target_os = "macos")).then_some(exe);
    let plan = bundle::plan(
        &bundle::KextPaths::under(&layout.out),
        plist,
        exe.as_deref(),
    );
    exec(&plan, mode)
}

/// `build` (macOS): cross with Apple clang + object checks, link, universal binary, bundle,
/// then checks of the result. The dry run prints the macOS plan on any machine.
pub fn cmd_build(root: &Path, variant: Variant, mode: Mode) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let archs = variant.archs();
    let kext = bundle::KextPaths::under(&layout.out);
    println!("# kext variant: {}", variant.name());
    if mode == Mode::DryRun {
        println!("# the macOS plan, whatever machine prints it");
        println!("# ensure: Xcode command line tools (xcrun clang), rustup nightly with rust-src");
        let c_files = layout.c_files()?;
        let mac = Toolchain::RustupNightly;
        exec(&cross::plan(&layout, archs, mac, &c_files), mode)?;
        println!("# then: object checks on target/kext/<arch>");
        let objs = link::planned_shim_objects(&layout, archs, &c_files);
        exec(&link::plan(&layout, archs, &objs), mode)?;
        let plist = info_plist(root, variant, mode)?;
        let exe = link::universal_executable(&layout);
        exec(&bundle::plan(&kext, plist, Some(&exe)), mode)?;
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
    crate::kext::cmd_cross(root, archs, variant, mode)?;
    let objs = link::shim_objects(&layout, archs)?;
    exec(&link::plan(&layout, archs, &objs), mode)?;
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
    exec(&sign::install_rcodesign_plan(root), mode)?;
    Ok(tools_root(root).join("bin/rcodesign").display().to_string())
}

/// `sign`: sign the bundle, then verify what was signed.
fn cmd_sign(root: &Path, options: &SignOptions) -> Result<()> {
    let mode = options.mode;
    let env = |k: &str| std::env::var(k).ok();
    let sign_mode = sign::mode(&options.sign, &env, cfg!(target_os = "macos"))?;
    let kext = given_or_default_bundle(root, options.bundle.as_deref());
    match (sign::require_linked(&kext, bundle::EXECUTABLE), mode) {
        (Err(e), Mode::DryRun) => println!("# a real run would refuse: {e:#}"),
        (r, _) => r?,
    }
    let tool = match sign_mode {
        sign::SignMode::Codesign { .. } => String::new(),
        _ => rcodesign(root, mode)?,
    };
    exec(
        &sign::plan(&sign_mode, &kext, &tool, options.sign.no_timestamp),
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
pub fn cmd_sign_check(root: &Path, mode: Mode) -> Result<()> {
    if mode == Mode::Run {
        crate::deps::ensure(crate::deps::Task::SignCheck)?;
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
    exec(&signcheck::plan(&r), mode)?;
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
fn cmd_vm_test(root: &Path, options: &VmTestOptions) -> Result<()> {
    let phase = vmtest::Phase::parse(options.step.as_deref())?;
    let host = options
        .host
        .clone()
        .context("vm-test needs --host USER@VM (see xtask/README.md for preparing the VM)")?;
    let kext = given_or_default_bundle(root, options.bundle.as_deref());
    let test = vmtest::VmTest {
        host,
        bundle_id: vm_bundle_id(root, &kext)?,
        bundle: kext,
        root: root.to_path_buf(),
        dtrace: !options.no_dtrace,
    };
    vmtest::run(&test, phase, options.mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parsed;

    #[test]
    fn options_parse_and_mistakes_are_reported() {
        let a = parsed::<VmTestOptions>(&["--host", "me@vm", "--dry-run", "--no-dtrace"]).unwrap();
        assert_eq!(a.host.as_deref(), Some("me@vm"));
        assert!(a.mode == Mode::DryRun && a.no_dtrace && a.step.is_none());
        let a = parsed::<BundleOptions>(&["--resident"]).unwrap();
        assert!(a.variant.resident && !a.variant.kauth);
        assert_eq!(a.mode, Mode::Run);
        let a = parsed::<BuildOptions>(&["--kauth", "--dry-run"]).unwrap();
        assert!(a.variant.kauth && a.mode == Mode::DryRun);
        let a = parsed::<SignOptions>(&["--pem-cert", "c", "--pem-key", "k", "--no-timestamp"])
            .unwrap();
        assert_eq!(a.sign.pem_cert.as_deref(), Some(Path::new("c")));
        assert_eq!(a.sign.pem_key.as_deref(), Some(Path::new("k")));
        assert!(a.sign.no_timestamp && !a.sign.adhoc && a.sign.identity.is_none());
        let err = parsed::<SignOptions>(&["--identity"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--identity needs a value"), "{err}");
        assert!(err.contains("cargo xtask sign --help"), "{err}");
        assert!(parsed::<SignCheckOptions>(&["--bundle", "x"]).is_err());
        assert!(parsed::<BundleOptions>(&["--arch", "x86_64"]).is_err());
    }

    #[test]
    fn sign_without_a_linked_executable_refuses_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A stand-in rcodesign that would half-sign, as the real one did before the refusal.
        let tool = tools_root(root).join("bin/rcodesign");
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
        let a = parsed::<SignOptions>(&["--bundle", kext.to_str().unwrap()]).unwrap();
        let err = format!("{:#}", a.run(root).unwrap_err());
        assert!(err.contains("no linked executable"), "{err}");
        assert!(err.contains("cargo xtask build"), "{err}");
        assert_eq!(tree(&kext), before, "the bundle changed");
        // Not a Mach-O either: refused the same way.
        std::fs::create_dir_all(kext.join("Contents/MacOS")).unwrap();
        std::fs::write(kext.join("Contents/MacOS/maptrace"), "#!/bin/sh\n").unwrap();
        let before = tree(&kext);
        let err = format!("{:#}", a.run(root).unwrap_err());
        assert!(err.contains("not a Mach-O"), "{err}");
        assert_eq!(tree(&kext), before, "the bundle changed");
        // A missing bundle says to build it.
        let gone =
            parsed::<SignOptions>(&["--bundle", root.join("none.kext").to_str().unwrap()]).unwrap();
        let err = format!("{:#}", gone.run(root).unwrap_err());
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
        let root = crate::exec::repo_root();
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
        let root = crate::exec::repo_root();
        let a = parsed::<VmTestOptions>(&["run", "--dry-run"]).unwrap();
        let err = a.run(&root).unwrap_err();
        assert!(err.to_string().contains("--host USER@VM"));
        let a = parsed::<VmTestOptions>(&["--host", "me@vm", "--dry-run"]).unwrap();
        let err = a.run(&root).unwrap_err();
        assert!(err.to_string().contains("install"), "{err}");
        assert!(parsed::<VmTestOptions>(&["run", "again"]).is_err());
    }

    #[test]
    fn dry_runs_of_every_plan_succeed_on_this_machine() {
        let root = crate::exec::repo_root();
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
            crate::kext::cmd_cross(&root, variant.archs(), variant, Mode::DryRun).unwrap();
            cmd_build(&root, variant, Mode::DryRun).unwrap();
            cmd_bundle(&root, variant, Mode::DryRun).unwrap();
        }
        for step in ["install", "run", "collect", "uninstall"] {
            let a = parsed::<VmTestOptions>(&[step, "--host", "me@vm", "--dry-run"]).unwrap();
            a.run(&root).unwrap();
        }
        let bad = parsed::<VmTestOptions>(&["load", "--host", "me@vm", "--dry-run"]).unwrap();
        assert!(bad.run(&root).is_err());
    }
}
