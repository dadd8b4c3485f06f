//! `cargo xtask cross`: the core and the shim as Mach-O objects per arch, then the object checks.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exec::{Plan, Step};
use crate::kext::check::{self, Report};
use crate::kext::kernel::{self, Arch, Toolchain, Variant};
use crate::kext::kpi::Table;
use crate::kext::objects;

/// Where cross outputs live, relative to the repository root.
pub const OUT: &str = "target/kext";

/// Paths of the cross build.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Repository root.
    pub root: PathBuf,
    /// Manifest of the crate whose staticlib is the core.
    pub manifest: PathBuf,
    /// Its package name.
    pub package: String,
    /// File name of its staticlib (`libmaptrace_core.a`).
    pub lib_file: String,
    /// Output directory (`target/kext`, or `target/kext/<variant>`).
    pub out: PathBuf,
    /// The build variant (kauth listener, resident MAC policy).
    pub variant: Variant,
}

impl Layout {
    /// The project's layout under `root` (the default variant).
    pub fn project(root: &Path) -> Self {
        Self::for_variant(root, Variant::default())
    }

    /// The layout of `variant`: its own outputs under `target/kext/<variant>`.
    pub fn for_variant(root: &Path, variant: Variant) -> Self {
        let out = variant
            .dir()
            .map_or_else(|| root.join(OUT), |d| root.join(OUT).join(d));
        Self {
            root: root.to_path_buf(),
            manifest: root.join("Cargo.toml"),
            package: "maptrace-core".into(),
            lib_file: "libmaptrace_core.a".into(),
            out,
            variant,
        }
    }

    /// Generated target specs.
    pub fn spec(&self, arch: Arch) -> PathBuf {
        self.out
            .join("specs")
            .join(format!("{}.json", arch.spec_name()))
    }

    /// cargo's own target directory for the cross builds (kept apart from the host one); the
    /// core depends only on the minimum macOS, so variants with the same one share it.
    pub fn cargo_target_dir(&self) -> PathBuf {
        let kext = self.root.join(OUT);
        match self.variant.macos_min() {
            kernel::MACOS_MIN => kext.join("cargo"),
            other => kext.join(format!("cargo-macos{other}")),
        }
    }

    /// The staticlib as cargo writes it.
    pub fn cargo_lib(&self, arch: Arch) -> PathBuf {
        self.cargo_target_dir()
            .join(arch.spec_name())
            .join("release")
            .join(&self.lib_file)
    }

    /// Per-arch output directory.
    pub fn arch_dir(&self, arch: Arch) -> PathBuf {
        self.out.join(arch.name())
    }

    /// The core staticlib for `arch`, copied to a stable place.
    pub fn core_lib(&self, arch: Arch) -> PathBuf {
        self.arch_dir(arch).join(&self.lib_file)
    }

    /// Directory of the shim objects for `arch`.
    pub fn shim_dir(&self, arch: Arch) -> PathBuf {
        self.arch_dir(arch).join("shim")
    }

    /// The object for one C file.
    pub fn shim_obj(&self, arch: Arch, c_file: &Path) -> PathBuf {
        let stem = c_file
            .file_stem()
            .map_or_else(|| "unnamed".into(), |s| s.to_string_lossy().into_owned());
        self.shim_dir(arch).join(format!("{stem}.o"))
    }

    /// The shim's C sources: `kext-shim/src/*.c`, sorted.
    pub fn c_files(&self) -> Result<Vec<PathBuf>> {
        let dir = self.root.join("kext-shim/src");
        let mut out = Vec::new();
        if dir.is_dir() {
            for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "c") && path.is_file() {
                    out.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The shim objects present on disk for `arch`, sorted.
    pub fn shim_objects(&self, arch: Arch) -> Result<Vec<PathBuf>> {
        let dir = self.shim_dir(arch);
        let mut out = Vec::new();
        if dir.is_dir() {
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "o") {
                    out.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Builds the cross plan for `archs`: specs, core staticlibs, shim objects.
pub fn plan(layout: &Layout, archs: &[Arch], toolchain: Toolchain, c_files: &[PathBuf]) -> Plan {
    let mut plan = Plan::new();
    if c_files.is_empty() {
        plan.push(Step::Note(
            "kext-shim/src has no C files yet: building and checking the core only".into(),
        ));
    }
    for &arch in archs {
        let spec = layout.spec(arch);
        plan.push(Step::Generate {
            cmd: toolchain.spec_dump(arch),
            transform: kernel::spec_transform(arch, toolchain),
            path: spec.clone(),
        });
        plan.run(
            toolchain
                .core_build(
                    arch,
                    (&layout.manifest, &layout.package),
                    &spec,
                    (&layout.cargo_target_dir(), layout.variant.macos_min()),
                )
                .cwd(&layout.root),
        );
        plan.push(Step::Copy {
            from: layout.cargo_lib(arch),
            to: layout.core_lib(arch),
        });
        // Stale objects of deleted C files must not reach the checks or the link.
        plan.push(Step::RemoveDir(layout.shim_dir(arch)));
        plan.push(Step::MkDir(layout.shim_dir(arch)));
        for c in c_files {
            plan.run(
                toolchain
                    .clang()
                    .args(kernel::clang_flags_for(arch, layout.variant))
                    .arg("-I")
                    .path_arg(&layout.root.join("kext-shim/include"))
                    .arg("-I")
                    .path_arg(&layout.root.join("kext-shim/src"))
                    // Frame sizes for the stack check (a .su beside the object).
                    .arg("-fstack-usage")
                    .arg("-c")
                    .path_arg(c)
                    .arg("-o")
                    .path_arg(&layout.shim_obj(arch, c)),
            );
        }
    }
    plan
}

/// Runs the checks on what is on disk for each arch.
pub fn check_outputs(layout: &Layout, archs: &[Arch]) -> Result<Vec<(Arch, Report)>> {
    let table = Table::load(&layout.root)?;
    let mut reports = Vec::new();
    for &arch in archs {
        let shim = objects::load_all(layout.shim_objects(arch)?.iter().map(PathBuf::as_path))?;
        let core_path = layout.core_lib(arch);
        let core = objects::load(&core_path).with_context(|| {
            format!("no core for {}: run `cargo xtask cross` first", arch.name())
        })?;
        reports.push((
            arch,
            check::check_variant(layout.variant, arch, &shim, &core, &table),
        ));
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Cmd;

    fn layout() -> Layout {
        Layout::project(Path::new("/repo"))
    }

    #[test]
    fn plan_without_c_files_builds_both_cores_and_says_so() {
        let plan = plan(&layout(), &Arch::ALL, Toolchain::DebianWeb, &[]);
        assert!(matches!(&plan.steps[0], Step::Note(n) if n.contains("no C files")));
        let cmds: Vec<_> = plan.commands().collect();
        // Per arch: the spec dump and the cargo build; no clang.
        assert_eq!(cmds.len(), 4);
        assert!(cmds.iter().all(|c| !c.program.starts_with("clang")));
        let builds: Vec<_> = cmds.iter().filter(|c| c.has_arg("rustc")).collect();
        assert!(builds[0].has_arg("/repo/target/kext/specs/x86_64-apple-macos-kext.json"));
        assert!(builds[1].has_arg("/repo/target/kext/specs/arm64e-apple-macos-kext.json"));
        assert!(builds.iter().all(|c| c.has_arg("/repo/target/kext/cargo")));
        let written: Vec<_> = plan.written_files().collect();
        assert!(written.contains(&Path::new("/repo/target/kext/x86_64/libmaptrace_core.a")));
        assert!(written.contains(&Path::new("/repo/target/kext/arm64e/libmaptrace_core.a")));
    }

    #[test]
    fn each_c_file_is_compiled_per_arch_with_kernel_flags_and_includes() {
        let files = [
            PathBuf::from("/repo/kext-shim/src/mt_main.c"),
            PathBuf::from("/repo/kext-shim/src/mt_sysctl.c"),
        ];
        let plan = plan(&layout(), &Arch::ALL, Toolchain::DebianWeb, &files);
        let clang: Vec<_> = plan
            .commands()
            .filter(|c| c.program == kernel::clang_program())
            .collect();
        assert_eq!(clang.len(), 4);
        for c in &clang {
            assert!(c.has_arg("-mkernel") && c.has_arg("-Werror") && c.has_arg("-c"));
            assert!(c.has_arg("/repo/kext-shim/include") && c.has_arg("/repo/kext-shim/src"));
        }
        assert!(
            clang[2].has_arg("--target=arm64e-apple-macos11")
                && clang[2].has_arg("-fptrauth-calls")
        );
        assert!(clang[3].has_arg("/repo/target/kext/arm64e/shim/mt_sysctl.o"));
        // Stale objects are removed before compiling.
        let rm = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::RemoveDir(p) if p.ends_with("x86_64/shim")))
            .unwrap();
        let first_clang = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::Run(c) if c.program == kernel::clang_program()))
            .unwrap();
        assert!(rm < first_clang);
    }

    #[test]
    fn the_macos_toolchain_compiles_with_apple_clang_through_xcrun() {
        let files = [PathBuf::from("/repo/kext-shim/src/mt_main.c")];
        let plan = plan(&layout(), &Arch::ALL, Toolchain::RustupNightly, &files);
        let compiles: Vec<_> = plan.commands().filter(|c| c.has_arg("-mkernel")).collect();
        assert_eq!(compiles.len(), 2);
        for c in compiles {
            assert_eq!(
                (c.program.as_str(), c.args[0].as_str()),
                ("xcrun", "clang"),
                "{c}"
            );
        }
    }

    #[test]
    fn the_kauth_variant_builds_apart_for_macos_10_15_with_its_define() {
        let kauth = Variant {
            kauth: true,
            resident: false,
        };
        let l = Layout::for_variant(Path::new("/repo"), kauth);
        let files = [PathBuf::from("/repo/kext-shim/src/mt_kauth.c")];
        let plan = plan(&l, kauth.archs(), Toolchain::DebianWeb, &files);
        let cmds: Vec<_> = plan.commands().collect();
        let clang: Vec<_> = cmds
            .iter()
            .filter(|c| c.program == kernel::clang_program())
            .collect();
        assert_eq!(clang.len(), 1);
        assert!(clang[0].has_arg("-DMT_WITH_KAUTH"));
        assert!(clang[0].has_arg("--target=x86_64-apple-macos10.15"));
        assert!(clang[0].has_arg("/repo/target/kext/kauth/x86_64/shim/mt_kauth.o"));
        let build = cmds.iter().find(|c| c.has_arg("rustc")).unwrap();
        assert_eq!(build.env_value("MACOSX_DEPLOYMENT_TARGET"), Some("10.15"));
        assert!(build.has_arg("/repo/target/kext/cargo-macos10.15"));
        // The default variant has neither.
        let d = plan_default_clang(&files);
        assert!(!d.has_arg("-DMT_WITH_KAUTH") && d.has_arg("--target=x86_64-apple-macos11"));
        // The resident variant shares the default core build.
        let resident = Variant {
            kauth: false,
            resident: true,
        };
        let r = Layout::for_variant(Path::new("/repo"), resident);
        assert_eq!(r.cargo_target_dir(), layout().cargo_target_dir());
        assert_eq!(r.out, Path::new("/repo/target/kext/resident"));
    }

    fn plan_default_clang(files: &[PathBuf]) -> Cmd {
        plan(&layout(), &[Arch::X86_64], Toolchain::DebianWeb, files)
            .commands()
            .find(|c| c.program == kernel::clang_program())
            .unwrap()
            .clone()
    }

    #[test]
    fn one_arch_plans_only_that_arch() {
        let plan = plan(&layout(), &[Arch::Arm64e], Toolchain::DebianWeb, &[]);
        let text = plan.render();
        assert!(text.contains("arm64e") && !text.contains("x86_64-apple"));
    }

    #[test]
    fn c_files_lists_only_top_level_c_sources() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("kext-shim/src");
        fs::create_dir_all(src.join("xnu")).unwrap();
        for f in ["b.c", "a.c", "h.h", "xnu/inner.c"] {
            fs::write(src.join(f), "").unwrap();
        }
        let l = Layout::project(dir.path());
        let names: Vec<_> = l
            .c_files()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.c", "b.c"]);
        assert!(
            Layout::project(&dir.path().join("none"))
                .c_files()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn planned_clang_steps_build_clean_objects_from_a_real_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("kext-shim/include")).unwrap();
        fs::create_dir_all(root.join("kext-shim/src/xnu")).unwrap();
        fs::write(root.join("kext-shim/include/api.h"), "int mt_api(int);\n").unwrap();
        fs::write(
            root.join("kext-shim/src/xnu/k.h"),
            "extern void IOLog(const char *, ...);\n",
        )
        .unwrap();
        fs::write(
            root.join("kext-shim/src/a.c"),
            "#include \"api.h\"\n#include \"xnu/k.h\"\n\
             int mt_api(int x) { IOLog(\"%d\", x); return x * 2; }\n",
        )
        .unwrap();
        let l = Layout::project(root);
        let c = l.c_files().unwrap();
        let full = plan(&l, &Arch::ALL, Toolchain::DebianWeb, &c);
        // Only the shim part: the core build is exercised by `cargo xtask cross` itself.
        let mut shim = Plan::new();
        for s in full.steps {
            match &s {
                Step::MkDir(_) | Step::RemoveDir(_) => shim.push(s),
                Step::Run(cmd) if cmd.program == kernel::clang_program() => shim.push(s),
                _ => {}
            }
        }
        crate::exec::exec(&shim, crate::exec::Mode::Run).unwrap();
        let table = Table::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        for arch in Arch::ALL {
            let objs = l.shim_objects(arch).unwrap();
            assert_eq!(objs.len(), 1, "{arch:?}");
            let loaded = objects::load_all(objs.iter().map(PathBuf::as_path)).unwrap();
            let r = check::check(arch, &loaded, &[], &table);
            assert!(r.errors.is_empty(), "{}", r.render(arch));
            assert_eq!(r.imports.len(), 1);
        }
    }

    #[test]
    fn checking_without_outputs_says_to_run_cross() {
        let dir = tempfile::tempdir().unwrap();
        let kpi = dir.path().join(crate::kext::kpi::TABLE);
        fs::create_dir_all(kpi.parent().unwrap()).unwrap();
        fs::write(&kpi, "").unwrap();
        let err = check_outputs(&Layout::project(dir.path()), &[Arch::X86_64]).unwrap_err();
        assert!(format!("{err:#}").contains("run `cargo xtask cross` first"));
    }
}
