//! `cargo xtask build` (macOS): the final `-kext` link per arch, then the universal binary.

use std::path::{Path, PathBuf};

use crate::exec::{Cmd, Plan};
use crate::kext::cross::Layout;
use crate::kext::kernel::{Arch, MACOS_MIN};

/// The linked kext executable for one arch.
pub fn arch_executable(layout: &Layout, arch: Arch) -> PathBuf {
    layout
        .arch_dir(arch)
        .join(crate::package::bundle::EXECUTABLE)
}

/// The universal kext executable.
pub fn universal_executable(layout: &Layout) -> PathBuf {
    layout.out.join(crate::package::bundle::EXECUTABLE)
}

/// Link per arch with Apple's toolchain (Kernel.framework's libkmod and libcc_kext), then lipo.
/// `shim_objects` are the objects per arch, as `cross` wrote them.
pub fn plan(layout: &Layout, archs: &[Arch], shim_objects: &[(Arch, Vec<PathBuf>)]) -> Plan {
    let mut plan = Plan::new();
    let mut outputs = Vec::new();
    for &arch in archs {
        let objs: &[PathBuf] = shim_objects
            .iter()
            .find(|(a, _)| *a == arch)
            .map_or(&[], |(_, o)| o.as_slice());
        let out = arch_executable(layout, arch);
        plan.run(
            Cmd::new("xcrun")
                .args(["clang", "-arch", arch.name()])
                .arg(format!("-mmacosx-version-min={MACOS_MIN}"))
                // A kext is an MH_KEXT_BUNDLE: no crt, no libSystem, kernel symbols left for the loader.
                .args(["-mkernel", "-nostdlib", "-Xlinker", "-kext"])
                .args(objs.iter().map(|o| o.display().to_string()))
                .path_arg(&layout.core_lib(arch))
                .args(["-lkmod", "-lcc_kext"])
                .arg("-o")
                .path_arg(&out),
        );
        outputs.push(out);
    }
    plan.run(
        Cmd::new("xcrun")
            .args(["lipo", "-create", "-output"])
            .path_arg(&universal_executable(layout))
            .args(outputs.iter().map(|o| o.display().to_string())),
    );
    plan
}

/// `kmutil libraries` (kextlibs' successor): which library kexts resolve the bundle's imports
/// on this Mac, with the names of symbols none resolves.
pub fn kmutil_libraries(bundle: &Path) -> Cmd {
    Cmd::new("kmutil")
        .args(["libraries", "-p"])
        .path_arg(bundle)
        .arg("--undef-symbols")
}

/// `kmutil print-diagnostics`: every check kernelmanagerd would make before building the kext
/// into the auxiliary kext collection (signature, ownership, dependencies).
pub fn kmutil_diagnostics(bundle: &Path) -> Cmd {
    Cmd::new("kmutil")
        .args(["print-diagnostics", "-p"])
        .path_arg(bundle)
}

/// Fails unless the final link can run here.
pub fn require_macos() -> anyhow::Result<()> {
    if !cfg!(target_os = "macos") {
        anyhow::bail!(
            "the final kext link needs Apple's ld (`-kext`), which exists only on macOS \
             (docs/toolchain.md section 2); use `cargo xtask build --dry-run` to see the plan"
        );
    }
    Ok(())
}

/// The objects `cross` left for each arch.
pub fn shim_objects(layout: &Layout, archs: &[Arch]) -> anyhow::Result<Vec<(Arch, Vec<PathBuf>)>> {
    archs
        .iter()
        .map(|&a| Ok((a, layout.shim_objects(a)?)))
        .collect()
}

/// Expected shim objects when nothing is on disk yet (dry runs): one per C file.
pub fn planned_shim_objects(
    layout: &Layout,
    archs: &[Arch],
    c_files: &[PathBuf],
) -> Vec<(Arch, Vec<PathBuf>)> {
    archs
        .iter()
        .map(|&a| (a, c_files.iter().map(|c| layout.shim_obj(a, c)).collect()))
        .collect()
}

/// True when `p` is one of the per-arch executables (used by tests).
#[cfg(test)]
fn is_arch_output(layout: &Layout, p: &std::path::Path) -> bool {
    Arch::ALL.iter().any(|&a| arch_executable(layout, a) == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_each_arch_as_a_kext_then_makes_it_universal() {
        let layout = Layout::project(Path::new("/repo"));
        let c = [PathBuf::from("/repo/kext-shim/src/mt_main.c")];
        let objs = planned_shim_objects(&layout, &Arch::ALL, &c);
        let plan = plan(&layout, &Arch::ALL, &objs);
        let cmds: Vec<_> = plan.commands().collect();
        assert_eq!(cmds.len(), 3);
        for (cmd, arch) in cmds.iter().zip(Arch::ALL) {
            for flag in [
                "-kext",
                "-lkmod",
                "-lcc_kext",
                "-nostdlib",
                "-mkernel",
                arch.name(),
            ] {
                assert!(cmd.has_arg(flag), "{flag} missing: {cmd}");
            }
            assert!(cmd.has_arg(&format!("/repo/target/kext/{}/shim/mt_main.o", arch.name())));
            assert!(cmd.has_arg(&format!(
                "/repo/target/kext/{}/libmaptrace_core.a",
                arch.name()
            )));
            let out = cmd.args.last().unwrap();
            assert!(is_arch_output(&layout, Path::new(out)));
        }
        let lipo = cmds[2];
        assert!(lipo.has_arg("lipo") && lipo.has_arg("-create"));
        assert!(lipo.has_arg("/repo/target/kext/maptrace"));
        assert!(lipo.has_arg("/repo/target/kext/arm64e/maptrace"));
    }

    #[test]
    fn kmutil_checks_read_the_bundle() {
        let b = Path::new("/r/maptrace.kext");
        assert_eq!(
            kmutil_libraries(b).to_string(),
            "kmutil libraries -p /r/maptrace.kext --undef-symbols"
        );
        assert_eq!(
            kmutil_diagnostics(b).to_string(),
            "kmutil print-diagnostics -p /r/maptrace.kext"
        );
    }

    #[test]
    fn linking_is_refused_off_macos() {
        assert_eq!(require_macos().is_ok(), cfg!(target_os = "macos"));
    }
}
