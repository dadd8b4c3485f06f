//! Building the kext's objects and checking them: kernel flags, the cross build, the object
//! checks, the stack budget and the KPI table; the commands `cross`, `check` and `kextlibs`.

pub mod check;
pub mod cross;
pub mod kernel;
pub mod kpi;
pub mod objects;
pub mod stack;

use std::path::Path;

use anyhow::{Result, bail};

use crate::cli::{ARCH, Command, CommandSpec, DRY_RUN, KAUTH, RESIDENT};
use crate::exec::{Mode, exec};
use crate::kext::kernel::{Arch, Toolchain, Variant};

/// Takes a build-variant option (`--kauth`, `--resident`); false when `option` is not one.
pub fn set_variant(variant: &mut Variant, option: &str) -> bool {
    match option {
        "--kauth" => variant.kauth = true,
        "--resident" => variant.resident = true,
        _ => return false,
    }
    true
}

/// What `cross`, `check` and `kextlibs` work on: a build variant and its architectures.
#[derive(Debug, Default)]
pub struct Targets {
    /// `--arch` (repeatable); after [`Targets::finish`], the variant's when none was given.
    pub archs: Vec<Arch>,
    /// `--kauth`, `--resident`.
    pub variant: Variant,
}

impl Targets {
    /// Takes `--arch` or a variant option; any other is one `spec` lists but does not handle.
    pub fn set(&mut self, spec: &CommandSpec, option: &str, value: &str) -> Result<()> {
        match option {
            "--arch" => self.archs.push(Arch::parse(value)?),
            other if set_variant(&mut self.variant, other) => {}
            other => return Err(crate::cli::unhandled(spec, other)),
        }
        Ok(())
    }

    /// The variant's architectures when none was given; refuses one the variant has no slice for.
    pub fn finish(&mut self) -> Result<()> {
        if self.archs.is_empty() {
            self.archs = self.variant.archs().to_vec();
        }
        if let Some(a) = self
            .archs
            .iter()
            .find(|a| !self.variant.archs().contains(a))
        {
            bail!(
                "--kauth builds for macOS {} on Intel only: no {} slice",
                kernel::MACOS_MIN_KAUTH,
                a.name()
            );
        }
        Ok(())
    }
}

/// `cargo xtask cross`.
#[derive(Debug, Default)]
pub struct CrossOptions {
    /// `--dry-run`.
    pub mode: Mode,
    /// Variant and architectures.
    pub targets: Targets,
}

impl Command for CrossOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "cross",
        steps: "",
        about: "The core (maptrace-core) as a Mach-O staticlib and kext-shim/src/*.c as Mach-O\n\
            objects per arch in target/kext/<arch>/, then the object checks.",
        options: &[DRY_RUN, ARCH, KAUTH, RESIDENT],
    };

    fn set(&mut self, option: &str, value: &str) -> Result<()> {
        match option {
            "--dry-run" => self.mode = Mode::DryRun,
            other => self.targets.set(Self::SPEC, other, value)?,
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.targets.finish()
    }

    fn run(&self, root: &Path) -> Result<()> {
        cmd_cross(root, &self.targets.archs, self.targets.variant, self.mode)
    }
}

/// `cargo xtask check`.
#[derive(Debug, Default)]
pub struct CheckOptions {
    /// Variant and architectures.
    pub targets: Targets,
}

impl Command for CheckOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "check",
        steps: "",
        about: "Only the object checks, on what `cross` left in target/kext.",
        options: &[ARCH, KAUTH, RESIDENT],
    };

    fn set(&mut self, option: &str, value: &str) -> Result<()> {
        self.targets.set(Self::SPEC, option, value)
    }

    fn finish(&mut self) -> Result<()> {
        self.targets.finish()
    }

    fn run(&self, root: &Path) -> Result<()> {
        cmd_check(root, &self.targets.archs, self.targets.variant)
    }
}

/// `cargo xtask kextlibs`.
#[derive(Debug, Default)]
pub struct KextlibsOptions {
    /// Variant and architectures.
    pub targets: Targets,
}

impl Command for KextlibsOptions {
    const SPEC: &'static CommandSpec = &CommandSpec {
        name: "kextlibs",
        steps: "",
        about: "The KPI bundles (OSBundleLibraries) the objects import, with their symbols.",
        options: &[ARCH, KAUTH, RESIDENT],
    };

    fn set(&mut self, option: &str, value: &str) -> Result<()> {
        self.targets.set(Self::SPEC, option, value)
    }

    fn finish(&mut self) -> Result<()> {
        self.targets.finish()
    }

    fn run(&self, root: &Path) -> Result<()> {
        cmd_kextlibs(root, &self.targets.archs, self.targets.variant)
    }
}

/// `cross`: set-up, build, then check.
pub fn cmd_cross(root: &Path, archs: &[Arch], variant: Variant, mode: Mode) -> Result<()> {
    let layout = cross::Layout::for_variant(root, variant);
    let c_files = layout.c_files()?;
    let plan = cross::plan(&layout, archs, Toolchain::for_host(), &c_files);
    if mode == Mode::DryRun {
        println!(
            "# ensure system packages: {}",
            crate::deps::packages(crate::deps::Task::Cross).join(" ")
        );
        exec(&plan, Mode::DryRun)?;
        println!("# then: object checks on {}/<arch>", layout.out.display());
        return Ok(());
    }
    crate::deps::ensure(crate::deps::Task::Cross)?;
    exec(&plan, Mode::Run)?;
    cmd_check(root, archs, variant)?;
    stack::run(root, archs, variant)
}

/// `check`: object checks on existing outputs.
pub fn cmd_check(root: &Path, archs: &[Arch], variant: Variant) -> Result<()> {
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
pub fn cmd_kextlibs(root: &Path, archs: &[Arch], variant: Variant) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parsed;

    #[test]
    fn variant_and_architectures_parse_and_mistakes_are_reported() {
        let a = parsed::<CrossOptions>(&[]).unwrap();
        assert_eq!(a.targets.archs, Arch::ALL);
        assert_eq!(a.targets.variant, Variant::default());
        assert_eq!(a.mode, Mode::Run);
        let a = parsed::<CrossOptions>(&["--arch", "arm64e", "--dry-run"]).unwrap();
        assert_eq!(a.targets.archs, [Arch::Arm64e]);
        assert_eq!(a.mode, Mode::DryRun);
        assert!(parsed::<CrossOptions>(&["--arch"]).is_err());
        assert!(parsed::<CrossOptions>(&["--arch", "ppc"]).is_err());
        assert!(parsed::<CrossOptions>(&["extra"]).is_err());
        let a = parsed::<CrossOptions>(&["--kauth"]).unwrap();
        assert!(a.targets.variant.kauth && !a.targets.variant.resident);
        assert_eq!(a.targets.archs, [Arch::X86_64]);
        let err = parsed::<CrossOptions>(&["--kauth", "--arch", "arm64e"]).unwrap_err();
        assert!(err.to_string().contains("no arm64e slice"), "{err}");
        let a = parsed::<KextlibsOptions>(&["--resident"]).unwrap();
        assert!(a.targets.variant.resident && !a.targets.variant.kauth);
        assert_eq!(a.targets.archs, Arch::ALL);
        // check prints, it changes nothing: no --dry-run.
        assert!(parsed::<CheckOptions>(&["--dry-run"]).is_err());
    }
}
