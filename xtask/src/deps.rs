//! The system packages each task needs, and installing the missing ones (Debian) or saying what to install.

use anyhow::{Result, bail};

use crate::exec::{Cmd, Plan, Step};

/// A task with its own set of system requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Cross-building the shim and the core to Mach-O objects.
    Cross,
    /// Linking a stand-in Mach-O to rehearse signing on Linux.
    SignCheck,
    /// `cargo xtask test`: everything above.
    Test,
    /// `cargo xtask demo`: the host build only (bindgen needs libclang).
    Demo,
}

/// libclang for bindgen (pulls `libclang1-19` and clang's builtin headers).
const BINDGEN: &[&str] = &["libclang-19-dev"];
/// clang-19 for the sanitizer and fuzz builds of the C (matching the LLVM of libclang-19).
const CLANG: &[&str] = &["clang-19", "llvm-19"];
/// clang-22 for the shim's Mach-O objects and the synthetic-object tests: the first Debian clang
/// whose arm64e objects sign static function pointers (`kmod_info.start/stop`) and carry
/// `CPU_SUBTYPE_PTRAUTH_ABI`. Debian 12 ships it in bookworm-security (1:22.1.8-1~deb12u1), a
/// suite every stock Debian 12 image has in its apt sources.
const SHIM_CLANG: &[&str] = &["clang-22"];
/// The apt source that provides [`SHIM_CLANG`] on Debian 12.
pub const SHIM_CLANG_SOURCE: &str =
    "deb http://deb.debian.org/debian-security bookworm-security main";
/// Debian's Rust with its library sources, for `-Zbuild-std=core` on Apple targets.
const RUST_WEB: &[&str] = &["rustc-web", "cargo-web", "rust-web-src"];
/// lld's Mach-O linker, for the stand-in executable signed on Linux.
const LLD: &[&str] = &["lld-19"];
/// A TrueType font, for the text of `heatmap --format png` in the companion's tests.
const FONTS: &[&str] = &["fonts-dejavu-core"];

/// The Debian packages `task` needs, without duplicates, in a stable order.
pub fn packages(task: Task) -> Vec<&'static str> {
    let groups: &[&[&str]] = match task {
        Task::Demo => &[BINDGEN],
        // The core's build script runs bindgen on the host during the cross build too.
        Task::Cross => &[BINDGEN, SHIM_CLANG, RUST_WEB],
        Task::SignCheck => &[CLANG, LLD],
        Task::Test => &[BINDGEN, CLANG, SHIM_CLANG, RUST_WEB, LLD, FONTS],
    };
    let mut out: Vec<&'static str> = Vec::new();
    for p in groups.iter().flat_map(|g| g.iter()) {
        if !out.contains(p) {
            out.push(p);
        }
    }
    out
}

/// What the machine looks like, as far as installing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// `apt-get` and `dpkg-query` exist (Debian or a derivative).
    pub debian: bool,
    /// Running as uid 0.
    pub root: bool,
}

/// The install plan for `task`: empty when nothing is missing, apt-get when root on Debian;
/// otherwise an error saying exactly what to install.
pub fn plan(task: Task, host: Host, installed: &dyn Fn(&str) -> bool) -> Result<Plan> {
    let missing: Vec<&str> = packages(task)
        .into_iter()
        .filter(|p| !installed(p))
        .collect();
    let mut plan = Plan::new();
    if missing.is_empty() {
        return Ok(plan);
    }
    let list = missing.join(" ");
    if !host.debian {
        bail!(
            "this task needs the equivalent of the Debian packages {list}; \
             on Debian, run: sudo apt-get install --no-install-recommends {list}"
        );
    }
    if !host.root {
        bail!(
            "missing packages: {list}\n\
             install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends {list}"
        );
    }
    plan.push(Step::Note(format!("installing missing packages: {list}")));
    if missing.iter().any(|p| SHIM_CLANG.contains(p)) {
        plan.push(Step::Note(format!(
            "{} comes from Debian 12's bookworm-security suite; if apt-get cannot find it, add \
             `{SHIM_CLANG_SOURCE}` to the apt sources",
            SHIM_CLANG.join(" ")
        )));
    }
    plan.run(apt_get().arg("update"));
    plan.run(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(missing),
    );
    Ok(plan)
}

/// apt-get that never asks a question (CI has no stdin).
fn apt_get() -> Cmd {
    Cmd::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "Dpkg::Use-Pty=0", "-q"])
}

/// True when dpkg says `package` is installed.
pub fn dpkg_installed(package: &str) -> bool {
    Cmd::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| out.starts_with(b"install ok installed"))
}

/// Looks at the machine this runs on.
pub fn this_host() -> Host {
    let debian = Cmd::new("dpkg-query").arg("--version").succeeds()
        && Cmd::new("apt-get").arg("--version").succeeds();
    let root = Cmd::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.trim_ascii() == b"0");
    Host { debian, root }
}

/// True when rustup's nightly has the library sources `-Zbuild-std` needs.
pub fn nightly_has_rust_src() -> bool {
    Cmd::new("rustup")
        .args(["+nightly", "component", "list", "--installed"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out).contains("rust-src"))
}

/// Checks the macOS requirements (Xcode tools, a nightly with rust-src); installs nothing.
fn ensure_macos(task: Task) -> Result<()> {
    let needs_cross = matches!(task, Task::Cross | Task::Test);
    if needs_cross && !Cmd::new("xcrun").args(["-f", "clang"]).succeeds() {
        bail!("install the Xcode command line tools: xcode-select --install");
    }
    if needs_cross && !nightly_has_rust_src() {
        bail!(
            "install a nightly with its sources: rustup toolchain install nightly --component rust-src"
        );
    }
    Ok(())
}

/// Makes sure `task` can run here: installs what is missing or fails saying what to install.
pub fn ensure(task: Task) -> Result<()> {
    if cfg!(target_os = "macos") {
        return ensure_macos(task);
    }
    let host = this_host();
    let plan = plan(task, host, &dpkg_installed)?;
    crate::exec::exec(&plan, crate::exec::Mode::Run)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_DEBIAN: Host = Host {
        debian: true,
        root: true,
    };

    #[test]
    fn each_task_gets_only_what_it_needs() {
        assert_eq!(packages(Task::Demo), ["libclang-19-dev"]);
        assert!(!packages(Task::Cross).contains(&"lld-19"));
        // The shim's objects need clang-22 (signed arm64e static pointers).
        assert!(packages(Task::Cross).contains(&"clang-22"));
        assert!(!packages(Task::Cross).contains(&"clang-19"));
        assert!(!packages(Task::SignCheck).contains(&"rustc-web"));
        let test = packages(Task::Test);
        for p in packages(Task::Cross)
            .into_iter()
            .chain(packages(Task::SignCheck))
            .chain(packages(Task::Demo))
        {
            assert!(test.contains(&p), "{p} missing from the test set");
        }
        // The PNG heatmaps' labels, asserted by the companion's tests.
        assert!(test.contains(&"fonts-dejavu-core"));
        assert!(!packages(Task::Demo).contains(&"fonts-dejavu-core"));
        let mut dedup = test.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), test.len());
    }

    #[test]
    fn dpkg_query_tells_installed_from_missing() {
        if !this_host().debian {
            eprintln!("note: not Debian; dpkg query not exercised");
            return;
        }
        assert!(dpkg_installed("dpkg"));
        assert!(!dpkg_installed("maptrace-no-such-package"));
    }

    #[test]
    fn nothing_missing_means_an_empty_plan() {
        let plan = plan(Task::Test, ROOT_DEBIAN, &|_| true).unwrap();
        assert!(plan.steps.is_empty());
    }

    #[test]
    fn root_installs_only_the_missing_packages_after_update() {
        let plan = plan(Task::Cross, ROOT_DEBIAN, &|p| {
            p != "rust-web-src" && p != "clang-22"
        })
        .unwrap();
        let cmds: Vec<_> = plan.commands().collect();
        assert_eq!(cmds.len(), 2);
        assert!(cmds[0].has_arg("update"));
        assert!(cmds[1].has_arg("install") && cmds[1].has_arg("-y"));
        assert_eq!(cmds[1].env_value("DEBIAN_FRONTEND"), Some("noninteractive"));
        let pkgs: Vec<_> = cmds[1]
            .args
            .iter()
            .filter(|a| !a.starts_with('-') && *a != "install" && !a.contains("::"))
            .collect();
        assert_eq!(pkgs, ["clang-22", "rust-web-src"]);
        assert!(plan.render().contains("bookworm-security"));
    }

    #[test]
    fn non_root_fails_with_the_exact_command() {
        let host = Host {
            debian: true,
            root: false,
        };
        let err = plan(Task::Demo, host, &|_| false).unwrap_err().to_string();
        assert!(
            err.contains("sudo apt-get install -y --no-install-recommends libclang-19-dev"),
            "{err}"
        );
    }

    #[test]
    fn non_debian_fails_naming_the_packages() {
        let host = Host {
            debian: false,
            root: true,
        };
        let err = plan(Task::SignCheck, host, &|_| false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("clang-19 llvm-19 lld-19"), "{err}");
    }
}
