//! `cargo xtask vm-test <install|run|collect|uninstall> --host USER@VM`: the kext on a test VM.
//!
//! macOS 11+ loads a third-party kext only from the auxiliary kext collection, which
//! kernelmanagerd rebuilds after the user approves the kext and the machine restarts (kmutil(8),
//! kernelmanagerd(8); XNU accepts the AuxKC once per boot on x86_64: `OSKext.cpp`,
//! xnu-11417.101.15). So a new build is installed once (`install`: copy to a root-owned place,
//! `kmutil load`, then approve and restart), and `run` first proves that the loaded kext is the
//! one just built (its UUID) before tracing the workload. Remote work is done by shell scripts
//! generated here (unit-tested, kept in `target/vm-test/scripts`), copied to the VM and run
//! there; everything they gather comes back to `target/vm-test/` for a bug report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::exec::{Cmd, Mode, Plan, Step, exec};
use crate::kext::kernel::{Arch, MACOS_MIN};
use crate::package::kextcheck;

/// Working directory on the VM, as the kext names it: `vn_getpath` resolves the `/tmp` symlink,
/// so the companion's `--path` filter must use `/private/tmp`.
pub const REMOTE_DIR: &str = "/private/tmp/maptrace-vm";
/// Where the VM's results are gathered before they are copied back.
pub const REMOTE_RESULTS: &str = "/private/tmp/maptrace-vm/results";
/// The root-owned directory the kext is installed in (kmutil refuses bundles in, or under,
/// directories other users can write).
pub const INSTALL_DIR: &str = "/Library/Extensions";
/// The workload's directory name: DTrace matches on it alone (`fi_dirname` is the leaf name).
pub const FILES_LEAF: &str = "mt-vmtest-files";
/// Files the workload maps.
pub const NFILES: u32 = 16;
/// Pages per file.
pub const NPAGES: u32 = 64;

/// The phase of the VM test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Copy the bundle to the VM, install it, try to load it; say what approval is needed.
    Install,
    /// Check the loaded build, trace the workload, compare, unload, gather.
    Run,
    /// Only gather logs and panic reports (after a panic and reboot).
    Collect,
    /// Unload and remove the kext.
    Uninstall,
}

impl Phase {
    /// The phase named on the command line.
    pub fn parse(word: Option<&str>) -> Result<Self> {
        Ok(match word {
            Some("install") => Self::Install,
            Some("run") => Self::Run,
            Some("collect") => Self::Collect,
            Some("uninstall") => Self::Uninstall,
            Some(other) => bail!(
                "vm-test {other}: expected install, run, collect or uninstall; see `cargo xtask vm-test --help`"
            ),
            None => bail!(
                "vm-test needs a step: install (once per build), then run; see `cargo xtask vm-test --help`"
            ),
        })
    }
}

/// Inputs of the VM test.
#[derive(Debug, Clone)]
pub struct VmTest {
    /// `user@host` for ssh/scp.
    pub host: String,
    /// The signed bundle.
    pub bundle: PathBuf,
    /// The bundle identifier (load checks and unload).
    pub bundle_id: String,
    /// Repository root (workload sources, outputs).
    pub root: PathBuf,
    /// Compare with DTrace's fsinfo probes (needs DTrace allowed on the VM).
    pub dtrace: bool,
}

/// The VM's CPU, from `uname -m`: what the helpers are built for and which slice is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmArch {
    /// Intel.
    X86_64,
    /// Apple silicon.
    Arm64,
}

impl VmArch {
    /// The kext slice this machine loads.
    pub fn kext_arch(self) -> Arch {
        match self {
            Self::X86_64 => Arch::X86_64,
            Self::Arm64 => Arch::Arm64e,
        }
    }

    /// `clang -arch` for the workload.
    pub fn clang_arch(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }

    /// The Rust target of the companion.
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-apple-darwin",
            Self::Arm64 => "aarch64-apple-darwin",
        }
    }
}

/// What the preflight script found on the VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// `sw_vers -productVersion`.
    pub os: String,
    /// `uname -m`.
    pub arch: String,
    /// `csrutil status`, lines joined.
    pub sip: String,
    /// `kern.hv_vmm_present`: running in a virtual machine.
    pub vmm: bool,
    /// `sudo -n true` works.
    pub sudo: bool,
    /// `kmutil` is installed.
    pub kmutil: bool,
    /// `dtrace` is installed.
    pub dtrace: bool,
}

/// The preflight's verdict: problems stop the test, hints are printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// What must be fixed first, each with how.
    pub problems: Vec<String>,
    /// What to know.
    pub hints: Vec<String>,
    /// The VM's CPU when known.
    pub arch: Option<VmArch>,
}

impl Preflight {
    /// Parses the `key=value` lines of `preflight.sh`.
    pub fn parse(text: &str) -> Self {
        let mut p = Self::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim() {
                "os" => p.os = v,
                "arch" => p.arch = v,
                "sip" => p.sip = v,
                "vmm" => p.vmm = v == "1",
                "sudo" => p.sudo = v == "yes",
                "kmutil" => p.kmutil = v == "yes",
                "dtrace" => p.dtrace = v == "yes",
                _ => {}
            }
        }
        p
    }

    /// SIP state from `csrutil status`: disabled outright, or a custom configuration with kext
    /// signing off (what `csrutil disable --without ...` and Reduced Security setups show).
    fn sip_allows_unsigned_kexts(&self) -> bool {
        let s = self.sip.to_ascii_lowercase();
        s.contains("status: disabled") || s.contains("kext signing: disabled")
    }

    /// Checks the VM against what loading an ad hoc signed kext and DTrace need.
    pub fn verdict(&self, want_dtrace: bool) -> Verdict {
        let mut v = Verdict::default();
        let major = self
            .os
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        match major {
            None => v.problems.push(format!(
                "could not read the macOS version (`sw_vers -productVersion` said `{}`)",
                self.os
            )),
            Some(m) if m < 11 => v.problems.push(format!(
                "macOS {} is older than {MACOS_MIN}, the oldest the kext supports",
                self.os
            )),
            Some(_) => {}
        }
        v.arch = match self.arch.as_str() {
            "x86_64" => Some(VmArch::X86_64),
            "arm64" => Some(VmArch::Arm64),
            other => {
                v.problems.push(format!("unknown CPU `{other}` (uname -m)"));
                None
            }
        };
        if v.arch == Some(VmArch::Arm64) && self.vmm {
            v.problems.push(
                "this is an Apple-silicon virtual machine, which cannot load third-party kexts: \
                 use an Intel macOS VM, or a real Apple-silicon Mac (README: Use it on your Mac)"
                    .into(),
            );
        }
        if !self.sip_allows_unsigned_kexts() {
            v.problems.push(format!(
                "System Integrity Protection allows only kexts signed with a kext-enabled \
                 Developer ID (`csrutil status`: {}). For the ad hoc signed test build: boot the \
                 Recovery OS, run `csrutil disable` in its Terminal, restart",
                if self.sip.is_empty() { "?" } else { &self.sip }
            ));
        }
        if v.arch == Some(VmArch::Arm64) && !self.vmm {
            v.hints.push(
                "Apple silicon: third-party kexts also need Reduced Security with \"Allow user \
                 management of kernel extensions from identified developers\" (Startup Security \
                 Utility in the Recovery OS); the arm64e slice is untested on real hardware"
                    .into(),
            );
        }
        if !self.sudo {
            v.problems.push(
                "sudo asks for a password over ssh: add `USER ALL=(ALL) NOPASSWD: ALL` with \
                 `sudo visudo -f /etc/sudoers.d/maptrace` (test VMs only)"
                    .into(),
            );
        }
        if !self.kmutil {
            v.problems
                .push("kmutil is missing: the VM must run macOS 11 or later".into());
        }
        if want_dtrace && !self.dtrace {
            v.problems
                .push("dtrace is missing on the VM: pass --no-dtrace".into());
        }
        v
    }
}

/// The preflight script: one `key=value` line per fact, never failing.
pub fn preflight_script() -> String {
    "\
#!/bin/sh
# Generated by `cargo xtask vm-test`: what the VM is, for the preflight checks.
echo \"os=$(sw_vers -productVersion 2>/dev/null)\"
echo \"arch=$(uname -m)\"
echo \"sip=$(csrutil status 2>&1 | tr '\\n' ' ')\"
echo \"vmm=$(sysctl -n kern.hv_vmm_present 2>/dev/null || echo 0)\"
if sudo -n true 2>/dev/null; then echo sudo=yes; else echo sudo=no; fi
if command -v kmutil >/dev/null 2>&1; then echo kmutil=yes; else echo kmutil=no; fi
if command -v dtrace >/dev/null 2>&1; then echo dtrace=yes; else echo dtrace=no; fi
"
    .to_string()
}

/// What `kmutil load` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Loaded (or already loaded).
    Loaded,
    /// The user must allow the kext in System Settings, then restart.
    NeedsApproval,
    /// Approved or staged: loadable after a restart.
    NeedsRestart,
    /// Another refusal.
    Failed,
}

/// Classifies `kmutil load`'s exit status and output. kmutil answers a new kext with
/// "... not approved to load. Please approve using System Settings." and a staged one with
/// messages about the next boot/restart (kmutil(8): "available on the next boot").
pub fn classify_load(ok: bool, text: &str) -> LoadOutcome {
    let t = text.to_ascii_lowercase();
    if t.contains("not approved") || t.contains("please approve") || t.contains("approve using") {
        LoadOutcome::NeedsApproval
    } else if t.contains("reboot") || t.contains("restart") || t.contains("next boot") {
        LoadOutcome::NeedsRestart
    } else if ok || t.contains("already loaded") {
        LoadOutcome::Loaded
    } else {
        LoadOutcome::Failed
    }
}

/// What the user does on the VM after `install`, exactly.
pub fn approval_steps(host: &str) -> String {
    format!(
        "\
macOS loads a new or changed kext only after you allow it and restart:
  1. On the VM, open System Settings > Privacy & Security (macOS 13 and later; on 11 and 12:
     System Preferences > Security & Privacy > General). Near the bottom: \"System software
     from developer ... was blocked from loading\" (or \"System Extension Updated\"). Click
     Allow (or Details..., tick maptrace) and enter your password.
  2. Restart the VM when macOS asks (or: ssh {host} sudo shutdown -r now).
  3. When it is back: cargo xtask vm-test run --host {host}
Every build is a new kext to macOS: after each `cargo xtask build && cargo xtask sign`, run
install again, allow, restart. With `spctl kext-consent disable` (xtask/README.md) step 1 is
skipped but the restart is still needed.
"
    )
}

impl VmTest {
    fn ssh(&self, remote: &str) -> Cmd {
        // Time-outs: a kernel panic must end the session, not hang it.
        Cmd::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"])
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6"])
            .args([&self.host, remote])
    }

    fn remote(&self, name: &str) -> String {
        format!("{REMOTE_DIR}/{name}")
    }

    /// Local directory everything is gathered in (one directory to attach to a bug report).
    pub fn out_dir(&self) -> PathBuf {
        self.root.join("target/vm-test")
    }

    /// The generated scripts, kept with the results.
    pub fn scripts_dir(&self) -> PathBuf {
        self.out_dir().join("scripts")
    }

    fn kext_name(&self) -> String {
        self.bundle.file_name().map_or_else(
            || "maptrace.kext".into(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Where `install` puts the kext on the VM.
    pub fn installed(&self) -> String {
        format!("{INSTALL_DIR}/{}", self.kext_name())
    }

    /// The `run`/`install` hint when the loaded build is the wrong one.
    fn install_hint(&self) -> String {
        format!(
            "Install this build: cargo xtask vm-test install --host {}, then allow it and restart",
            self.host
        )
    }

    /// `install.sh` (as root): replace the installed copy, fix ownership, load.
    pub fn install_script(&self) -> String {
        let (id, dest, staged) = (
            &self.bundle_id,
            self.installed(),
            self.remote(&self.kext_name()),
        );
        format!(
            "\
#!/bin/sh
# Generated by `cargo xtask vm-test install`: install the kext in {INSTALL_DIR} and load it.
set -u
kmutil unload -b {id} >/dev/null 2>&1
rm -rf {dest}
ditto {staged} {dest} || exit 1
# kmutil refuses bundles not owned by root:wheel or writable by group or others.
chown -R root:wheel {dest} && chmod -R go-w {dest} || exit 1
kmutil load -p {dest}
"
        )
    }

    /// `trace.sh` (as root): workload, recording and DTrace, stopped by pid, results converted.
    pub fn trace_script(&self) -> String {
        let files = self.remote(FILES_LEAF);
        let mut s = format!(
            "\
#!/bin/sh
# Generated by `cargo xtask vm-test run`: trace the workload with maptrace and DTrace.
set -u
cd {REMOTE_DIR} || exit 1
R={REMOTE_RESULTS}
mkdir -p \"$R\"
./workload create {files} {NFILES} {NPAGES} || exit 1
# Drop the page cache so mapping the files pages them in.
purge
./maptrace --source sysctl config set --enable --events mmap,pagein,mnomap,path --all-pids || exit 1
./maptrace --source sysctl record -q -o \"$R/events.bin\" > \"$R/record.log\" 2>&1 &
REC=$!
DT=
"
        );
        if self.dtrace {
            let _ = writeln!(
                s,
                "dtrace -q -s ./fsinfo.d {FILES_LEAF} -o \"$R/dtrace.txt\" > \"$R/dtrace.log\" 2>&1 &\nDT=$!"
            );
        }
        let _ = write!(
            s,
            "\
sleep 2
./workload touch {files} {NFILES}
WL=$?
sleep 2
# Stop by pid, never by name. record stops on INT (it installs its own handler even though a
# background job starts with INT ignored); dtrace does not (it keeps an ignored INT): TERM.
kill -INT $REC
if [ -n \"$DT\" ]; then kill -TERM $DT; fi
wait
./maptrace --source sysctl stats --json > \"$R/stats.json\" 2>&1
./maptrace stream --json --no-summary --path {files} \"$R/events.bin\" > \"$R/events.jsonl\"
./maptrace report \"$R/events.bin\" > \"$R/report.txt\" 2>&1
exit $WL
"
        );
        s
    }

    /// `collect.sh` (as root): unload, kmutil/kernelmanagerd and kernel logs, panic reports.
    pub fn collect_script(&self) -> String {
        let id = &self.bundle_id;
        format!(
            "\
#!/bin/sh
# Generated by `cargo xtask vm-test`: unload and gather everything for a bug report.
set -u
R={REMOTE_RESULTS}
mkdir -p \"$R/panics\"
kmutil showloaded --list-only --bundle-identifier {id} > \"$R/loaded-before-unload.txt\" 2>&1
kmutil unload -b {id} > \"$R/unload.txt\" 2>&1
echo \"kmutil unload exit status $?\" >> \"$R/unload.txt\"
log show --last 1h --style compact --predicate 'process == \"kernelmanagerd\" OR process == \"kmutil\" OR sender == \"kmutil\"' > \"$R/kmutil.log\" 2>&1
log show --last 1h --style compact --predicate 'process == \"kernel\" AND (eventMessage CONTAINS[c] \"maptrace\" OR senderImagePath CONTAINS[c] \"maptrace\")' > \"$R/kernel.log\" 2>&1
find /Library/Logs/DiagnosticReports -maxdepth 1 \\( -name '*.panic' -o -name 'panic-*' -o -name 'Kernel-*' \\) -mmin -180 -exec cp {{}} \"$R/panics/\" \\;
sw_vers > \"$R/sw_vers.txt\" 2>&1
csrutil status > \"$R/csrutil.txt\" 2>&1
chmod -R a+rX \"$R\"
"
        )
    }

    /// Writes `scripts` under `scripts_dir` and copies them, and `files`, to a fresh REMOTE_DIR.
    fn stage(&self, scripts: &[(&str, String)], files: &[PathBuf]) -> Plan {
        let mut plan = Plan::new();
        let mut scp = Cmd::new("scp").args(["-q", "-r", "-o", "BatchMode=yes"]);
        for (name, text) in scripts {
            let path = self.scripts_dir().join(name);
            plan.push(Step::Write {
                path: path.clone(),
                contents: text.clone().into_bytes(),
            });
            scp = scp.path_arg(&path);
        }
        for f in files {
            scp = scp.path_arg(f);
        }
        // The directory may hold root-owned results of an earlier run.
        plan.run(self.ssh(&format!(
            "sudo rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR}"
        )));
        plan.run(scp.arg(format!("{}:{REMOTE_DIR}/", self.host)));
        plan
    }

    /// The workload and the companion for `arch`, built here.
    pub fn helpers(&self, arch: VmArch) -> Plan {
        let mut plan = Plan::new();
        plan.run(
            Cmd::new("xcrun")
                .args(["clang", "-arch", arch.clang_arch()])
                // Without it the binary needs the build host's macOS (minos = SDK version).
                .arg(format!("-mmacosx-version-min={MACOS_MIN}"))
                .args(["-O2", "-Wall", "-Wextra", "-o"])
                .path_arg(&self.workload())
                .path_arg(&self.root.join("xtask/vm/workload.c")),
        );
        // No simulator on the VM: it would pull bindgen and libclang for nothing.
        plan.run(
            Cmd::new("cargo")
                .args(["build", "--release", "--locked", "-p", "maptrace"])
                .args(["--no-default-features", "--target", arch.rust_target()])
                .cwd(&self.root),
        );
        plan
    }

    fn workload(&self) -> PathBuf {
        self.out_dir().join("workload")
    }

    fn companion(&self, arch: VmArch) -> PathBuf {
        self.root
            .join("target")
            .join(arch.rust_target())
            .join("release/maptrace")
    }

    /// Copies the VM's results back (kept apart so a failed copy cannot hide the report).
    fn fetch(&self) -> Cmd {
        Cmd::new("scp")
            .args(["-q", "-r", "-o", "BatchMode=yes"])
            .arg(format!("{}:{REMOTE_RESULTS}", self.host))
            .path_arg(&self.out_dir())
    }

    /// Copies the bundle next to the scripts, for `install.sh`.
    fn copy_bundle(&self) -> Cmd {
        Cmd::new("scp")
            .args(["-q", "-r", "-o", "BatchMode=yes"])
            .path_arg(&self.bundle)
            .arg(format!("{}:{REMOTE_DIR}/", self.host))
    }

    fn loaded_query(&self) -> Cmd {
        self.ssh(&format!(
            "kmutil showloaded --list-only --bundle-identifier {}",
            self.bundle_id
        ))
    }

    fn load(&self) -> Cmd {
        self.ssh(&format!("sudo kmutil load -p {}", self.installed()))
    }

    fn run_script(&self, name: &str) -> Cmd {
        self.ssh(&format!("sudo sh {}", self.remote(name)))
    }
}

/// Counts maptrace events per kind in JSON lines (`"kind":"pagein"`).
pub fn count_events(jsonl: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in jsonl.lines() {
        if let Some(rest) = line.split("\"kind\":\"").nth(1) {
            if let Some((kind, _)) = rest.split_once('"') {
                *counts.entry(kind.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Parses the DTrace script's `probe count` lines.
pub fn count_dtrace(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// The final report, and whether the run passed: the kext saw every file mapped, and pages
/// read in. DTrace counts are shown beside maptrace's; differences are reported, not fatal
/// (DTrace counts every fsinfo event, maptrace only what its hooks see).
pub fn report(events: &str, dtrace: Option<&str>, kernel_log: &str) -> (String, bool) {
    let ours = count_events(events);
    let theirs = dtrace.map(count_dtrace);
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(s, "vm-test report ({NFILES} files x {NPAGES} pages)");
    let _ = writeln!(s, "  {:<8} {:>9} {:>9}", "kind", "maptrace", "dtrace");
    for kind in ["mmap", "pagein", "mnomap"] {
        let d = theirs
            .as_ref()
            .map_or_else(|| "-".to_string(), |t| get(t, kind).to_string());
        let _ = writeln!(s, "  {kind:<8} {:>9} {d:>9}", get(&ours, kind));
    }
    let mut ok = true;
    let mmaps = get(&ours, "mmap");
    if mmaps < u64::from(NFILES) {
        ok = false;
        let _ = writeln!(s, "  FAIL: {mmaps} mmap events for {NFILES} mapped files");
    }
    if get(&ours, "pagein") == 0 {
        ok = false;
        let _ = writeln!(
            s,
            "  FAIL: no pagein events although every page was touched"
        );
    }
    if let Some(t) = &theirs {
        for kind in ["mmap", "pagein", "mnomap"] {
            if get(t, kind) != get(&ours, kind) {
                let _ = writeln!(s, "  note: {kind} differs from DTrace's count");
            }
        }
    }
    let panics = kernel_log.lines().filter(|l| l.contains("panic")).count();
    let _ = writeln!(
        s,
        "  kernel log: {} lines, {panics} mentioning panic",
        kernel_log.lines().count()
    );
    let _ = writeln!(s, "  result: {}", if ok { "PASS" } else { "FAIL" });
    (s, ok)
}

/// Prints a dry run's scripts in full: they are what runs on the VM.
fn show_scripts(scripts: &[(&str, String)]) {
    for (name, text) in scripts {
        println!("# --- {name} ---");
        print!("{text}");
        println!("# --- end of {name} ---");
    }
}

/// Runs the preflight on the VM, saves and prints its verdict; fails on a problem.
fn preflight(test: &VmTest) -> Result<VmArch> {
    let out = test
        .ssh(&format!("sh {}", test.remote("preflight.sh")))
        .output()
        .context("preflight: cannot run a command on the VM over ssh (xtask/README.md, preparing the VM, step 4)")?;
    let text = String::from_utf8_lossy(&out).into_owned();
    write(&test.out_dir().join("preflight.txt"), &text)?;
    let p = Preflight::parse(&text);
    println!("VM: macOS {} on {}; SIP: {}", p.os, p.arch, p.sip.trim());
    let v = p.verdict(test.dtrace);
    for h in &v.hints {
        println!("note: {h}");
    }
    if !v.problems.is_empty() {
        bail!("the VM is not ready:\n  {}", v.problems.join("\n  "));
    }
    v.arch.context("VM architecture unknown")
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// The linked, signed bundle's slices; refuses before anything is copied.
fn built_slices(test: &VmTest) -> Result<Vec<kextcheck::Slice>> {
    crate::package::sign::require_linked(&test.bundle, crate::package::bundle::EXECUTABLE)?;
    // Apple's own verifier: it checks what kmutil will (the in-house one knows rcodesign's output).
    let (signed, why) = Cmd::new("codesign")
        .args(["--verify", "--strict", "--verbose=2"])
        .path_arg(&test.bundle)
        .capture()?;
    if !signed {
        bail!(
            "{} is not validly signed ({}): run `cargo xtask sign` first",
            test.bundle.display(),
            why.trim()
        );
    }
    let exe = test
        .bundle
        .join("Contents/MacOS")
        .join(crate::package::bundle::EXECUTABLE);
    kextcheck::slices(&std::fs::read(&exe)?)
}

/// Runs `phase`, or prints what it would do.
pub fn run(test: &VmTest, phase: Phase, mode: Mode) -> Result<()> {
    match (phase, mode) {
        (Phase::Install, Mode::DryRun) => dry_install(test),
        (Phase::Install, Mode::Run) => install(test),
        (Phase::Run, Mode::DryRun) => dry_run(test),
        (Phase::Run, Mode::Run) => run_test(test),
        (Phase::Collect, _) => collect(test, mode),
        (Phase::Uninstall, _) => exec(&uninstall_plan(test), mode),
    }
}

fn install_scripts(test: &VmTest) -> Vec<(&'static str, String)> {
    vec![
        ("preflight.sh", preflight_script()),
        ("install.sh", test.install_script()),
    ]
}

fn dry_install(test: &VmTest) -> Result<()> {
    println!(
        "# refuse unless {} is linked and signed",
        test.bundle.display()
    );
    let scripts = install_scripts(test);
    exec(&test.stage(&scripts, &[]), Mode::DryRun)?;
    println!(
        "{}",
        test.ssh(&format!("sh {}", test.remote("preflight.sh")))
    );
    println!("# stop on: macOS < 11, SIP on, Apple-silicon VM, no passwordless sudo, no kmutil");
    println!("{}", test.copy_bundle());
    println!("{}", test.run_script("install.sh"));
    println!("# kmutil's answer decides: loaded, or the approval and restart steps:");
    print!("{}", approval_steps(&test.host));
    show_scripts(&scripts);
    Ok(())
}

fn install(test: &VmTest) -> Result<()> {
    require_macos()?;
    built_slices(test)?;
    let scripts = install_scripts(test);
    exec(&test.stage(&scripts, &[]), Mode::Run)?;
    preflight(test)?;
    exec_one(test.copy_bundle())?;
    let (ok, text) = test.run_script("install.sh").capture()?;
    print!("{text}");
    write(&test.out_dir().join("install.txt"), &text)?;
    match classify_load(ok, &text) {
        LoadOutcome::Loaded => {
            println!(
                "installed and loaded: cargo xtask vm-test run --host {}",
                test.host
            );
            Ok(())
        }
        LoadOutcome::NeedsApproval | LoadOutcome::NeedsRestart => {
            print!(
                "installed in {}.\n{}",
                test.installed(),
                approval_steps(&test.host)
            );
            Ok(())
        }
        LoadOutcome::Failed => bail!(
            "kmutil could not install or load the kext (output above, in target/vm-test/install.txt).\n\
             If it mentions approval: {}",
            approval_steps(&test.host)
        ),
    }
}

fn run_scripts(test: &VmTest) -> Vec<(&'static str, String)> {
    vec![
        ("preflight.sh", preflight_script()),
        ("trace.sh", test.trace_script()),
        ("collect.sh", test.collect_script()),
    ]
}

fn fsinfo(test: &VmTest) -> PathBuf {
    test.root.join("xtask/vm/fsinfo.d")
}

fn dry_run(test: &VmTest) -> Result<()> {
    println!(
        "# refuse unless {} is linked and signed; read its slices' LC_UUIDs",
        test.bundle.display()
    );
    let mut plan = Plan::new();
    plan.push(Step::RemoveDir(test.out_dir()));
    let scripts = run_scripts(test);
    plan.extend(test.stage(&scripts, &[fsinfo(test)]));
    exec(&plan, Mode::DryRun)?;
    println!(
        "{}",
        test.ssh(&format!("sh {}", test.remote("preflight.sh")))
    );
    println!("# the VM's CPU picks the helpers' arch and the kext slice; x86_64 shown");
    let arch = VmArch::X86_64;
    exec(&test.helpers(arch), Mode::DryRun)?;
    println!(
        "scp -q {} {} {}:{REMOTE_DIR}/",
        test.workload().display(),
        test.companion(arch).display(),
        test.host
    );
    println!("{}", test.loaded_query());
    println!("# not listed: {}, then list again", test.load());
    println!(
        "# the listed UUID must be the built {} slice's LC_UUID, else: {}",
        arch.kext_arch().name(),
        test.install_hint()
    );
    println!("{}", test.run_script("trace.sh"));
    println!(
        "{}   # always, even when the load check or the trace failed",
        test.run_script("collect.sh")
    );
    println!("{}", test.fetch());
    println!(
        "# then: report.txt from results/{{events.jsonl,dtrace.txt,kernel.log}}; everything in {}",
        test.out_dir().display()
    );
    show_scripts(&scripts);
    Ok(())
}

fn run_test(test: &VmTest) -> Result<()> {
    require_macos()?;
    let slices = built_slices(test)?;
    let mut plan = Plan::new();
    plan.push(Step::RemoveDir(test.out_dir()));
    let scripts = run_scripts(test);
    plan.extend(test.stage(&scripts, &[fsinfo(test)]));
    exec(&plan, Mode::Run)?;
    let arch = preflight(test)?;
    require_rust_target(arch)?;
    exec(&test.helpers(arch), Mode::Run)?;
    exec_one(
        Cmd::new("scp")
            .args(["-q", "-o", "BatchMode=yes"])
            .path_arg(&test.workload())
            .path_arg(&test.companion(arch))
            .arg(format!("{}:{REMOTE_DIR}/", test.host)),
    )?;
    let built = kextcheck::uuid_of(&slices, arch.kext_arch())
        .with_context(|| {
            format!(
                "the bundle has no {} slice with a UUID",
                arch.kext_arch().name()
            )
        })?
        .to_string();
    write(
        &test.out_dir().join("built-uuid.txt"),
        &format!("{built}\n"),
    )?;
    // Logs explain a refused load too: collect runs whatever the check found.
    let checked = this_build_loaded(test, &built);
    let traced = match &checked {
        Ok(()) => exec_one(test.run_script("trace.sh")),
        Err(_) => Ok(()),
    };
    let collected = exec_one(test.run_script("collect.sh"));
    if collected.is_err() {
        println!(
            "the VM did not answer: if it panicked, wait for it to restart, then \
             cargo xtask vm-test collect --host {} (the panic report is kept)",
            test.host
        );
    }
    let fetched = exec_one(test.fetch());
    if let Err(e) = checked {
        println!(
            "logs of the load: {}",
            test.out_dir().join("results").display()
        );
        return Err(e);
    }
    let results = test.out_dir().join("results");
    let read = |name: &str| std::fs::read_to_string(results.join(name)).unwrap_or_default();
    let dtrace = test.dtrace.then(|| read("dtrace.txt"));
    let panics = std::fs::read_dir(results.join("panics")).map_or(0, Iterator::count);
    let (mut text, ok) = report(
        &read("events.jsonl"),
        dtrace.as_deref(),
        &read("kernel.log"),
    );
    if panics > 0 {
        let _ = writeln!(text, "  {panics} panic report(s) in results/panics");
    }
    write(&test.out_dir().join("report.txt"), &text)?;
    print!("{text}");
    println!("everything for a bug report: {}", test.out_dir().display());
    traced?;
    collected?;
    fetched?;
    if !ok || panics > 0 {
        bail!("vm-test failed (results in {})", test.out_dir().display());
    }
    Ok(())
}

/// Makes sure the kext the VM runs is `built` (a UUID): loads the installed copy when nothing is
/// loaded; fails with the install steps when it will not load or is another build.
fn this_build_loaded(test: &VmTest, built: &str) -> Result<()> {
    let loaded = match loaded(test)? {
        Some(l) => l,
        None => {
            let (ok, text) = test.load().capture()?;
            print!("{text}");
            if classify_load(ok, &text) != LoadOutcome::Loaded {
                bail!(
                    "the kext is not loaded and kmutil would not load it.\n{}\n{}",
                    test.install_hint(),
                    approval_steps(&test.host)
                );
            }
            loaded(test)?.context("kmutil load succeeded but showloaded does not list the kext")?
        }
    };
    kextcheck::require_same_build(&loaded, built, &test.install_hint())?;
    println!(
        "loaded kext {} UUID {} is this build",
        loaded.version, loaded.uuid
    );
    Ok(())
}

fn exec_one(cmd: Cmd) -> Result<()> {
    let mut plan = Plan::new();
    plan.run(cmd);
    exec(&plan, Mode::Run)
}

/// The kext as the VM lists it, `None` when not loaded.
fn loaded(test: &VmTest) -> Result<Option<kextcheck::Loaded>> {
    let (ok, text) = test.loaded_query().capture()?;
    write(&test.out_dir().join("loaded.txt"), &text)?;
    if !ok {
        // An ssh failure must not read as "not loaded".
        bail!("cannot list the VM's loaded kexts:\n{text}");
    }
    kextcheck::parse_loaded(&text, &test.bundle_id)
}

/// The companion is cross-built for the VM: its Rust target must be installed.
fn require_rust_target(arch: VmArch) -> Result<()> {
    let installed = Cmd::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o).into_owned())
        .unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == arch.rust_target()) {
        bail!(
            "the companion is built for the VM: rustup target add {}",
            arch.rust_target()
        );
    }
    Ok(())
}

fn collect(test: &VmTest, mode: Mode) -> Result<()> {
    let scripts = [("collect.sh", test.collect_script())];
    let mut plan = test.stage(&scripts, &[]);
    plan.run(test.run_script("collect.sh"));
    plan.run(test.fetch());
    if mode == Mode::DryRun {
        exec(&plan, mode)?;
        show_scripts(&scripts);
        return Ok(());
    }
    require_macos()?;
    exec(&plan, mode)?;
    println!("gathered in {}", test.out_dir().join("results").display());
    Ok(())
}

/// Unload, remove, and clear kernelmanagerd's staging copy.
pub fn uninstall_plan(test: &VmTest) -> Plan {
    let mut plan = Plan::new();
    plan.run(test.ssh(&format!(
        "sudo kmutil unload -b {}; sudo rm -rf {} && sudo kmutil clear-staging",
        test.bundle_id,
        test.installed()
    )));
    plan.push(Step::Note(
        "removed; restart the VM so the auxiliary kext collection is rebuilt without it".into(),
    ));
    plan
}

/// Fails unless the helpers can be built here (they are macOS binaries).
pub fn require_macos() -> Result<()> {
    if !cfg!(target_os = "macos") {
        bail!(
            "vm-test builds macOS helpers and needs the linked, signed bundle: run it on a Mac \
             (or use --dry-run)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(dtrace: bool) -> VmTest {
        VmTest {
            host: "admin@vm".into(),
            bundle: "/repo/target/kext/maptrace.kext".into(),
            bundle_id: "org.example.kext".into(),
            root: "/repo".into(),
            dtrace,
        }
    }

    fn in_order(text: &str, needles: &[&str]) {
        let mut last = 0;
        for needle in needles {
            let at = text[last..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing or out of order:\n{text}"));
            last += at + needle.len();
        }
    }

    const INTEL_VM: &str = "os=14.6.1\narch=x86_64\nsip=System Integrity Protection status: disabled. \nvmm=1\nsudo=yes\nkmutil=yes\ndtrace=yes\n";

    #[test]
    fn preflight_accepts_a_prepared_intel_vm_and_says_how_to_fix_the_rest() {
        let v = Preflight::parse(INTEL_VM).verdict(true);
        assert_eq!(
            (v.problems.len(), v.arch),
            (0, Some(VmArch::X86_64)),
            "{v:?}"
        );
        let sip_on = INTEL_VM.replace("status: disabled", "status: enabled");
        let v = Preflight::parse(&sip_on).verdict(true);
        assert!(
            v.problems.iter().any(|p| p.contains("csrutil disable")),
            "{v:?}"
        );
        // A custom configuration with kext signing off is enough.
        let custom = INTEL_VM.replace(
            "status: disabled. ",
            "status: unknown (Custom Configuration).  Configuration: Kext Signing: disabled ",
        );
        assert!(Preflight::parse(&custom).verdict(true).problems.is_empty());
        let old = INTEL_VM.replace("os=14.6.1", "os=10.15.7");
        let v = Preflight::parse(&old).verdict(true);
        assert!(
            v.problems.iter().any(|p| p.contains("older than 11.0")),
            "{v:?}"
        );
        let no_sudo = INTEL_VM
            .replace("sudo=yes", "sudo=no")
            .replace("dtrace=yes", "dtrace=no");
        let v = Preflight::parse(&no_sudo).verdict(true);
        assert!(v.problems.iter().any(|p| p.contains("NOPASSWD")), "{v:?}");
        assert!(
            v.problems.iter().any(|p| p.contains("--no-dtrace")),
            "{v:?}"
        );
        assert!(Preflight::parse(&no_sudo).verdict(false).problems.len() == 1);
        let garbage = Preflight::parse("ssh: banner\n").verdict(false);
        assert!(
            garbage.problems.len() >= 3 && garbage.arch.is_none(),
            "{garbage:?}"
        );
    }

    #[test]
    fn preflight_knows_apple_silicon_vms_cannot_load_kexts_and_macs_need_reduced_security() {
        let arm_vm = INTEL_VM.replace("arch=x86_64", "arch=arm64");
        let v = Preflight::parse(&arm_vm).verdict(true);
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("Apple-silicon virtual machine")),
            "{v:?}"
        );
        let arm_mac = arm_vm.replace("vmm=1", "vmm=0");
        let v = Preflight::parse(&arm_mac).verdict(true);
        assert!(v.problems.is_empty(), "{v:?}");
        assert_eq!(v.arch, Some(VmArch::Arm64));
        assert_eq!(VmArch::Arm64.kext_arch(), Arch::Arm64e);
        assert!(
            v.hints.iter().any(|h| h.contains("Reduced Security")),
            "{v:?}"
        );
    }

    #[test]
    fn kmutil_answers_are_classified() {
        let not_approved = "Error Domain=KMErrorDomain Code=71 \"Kernel request failed: \
            (libkern/kext) system policy prevents loading (code 0x1b)\" UserInfo={NSLocalizedDescription=\
            Extension with identifiers org.maptrace.kext not approved to load. Please approve using System Settings.}";
        assert_eq!(
            classify_load(false, not_approved),
            LoadOutcome::NeedsApproval
        );
        let staged = "The kext will be available on the next boot. Please reboot.";
        assert_eq!(classify_load(false, staged), LoadOutcome::NeedsRestart);
        assert_eq!(classify_load(true, ""), LoadOutcome::Loaded);
        let auth = "Error Domain=KMErrorDomain Code=29 \"Authenticating extension failed: Bad code signature\"";
        assert_eq!(classify_load(false, auth), LoadOutcome::Failed);
        let steps = approval_steps("admin@vm");
        in_order(
            &steps,
            &[
                "Privacy & Security",
                "Allow",
                "Restart",
                "cargo xtask vm-test run --host admin@vm",
            ],
        );
    }

    #[test]
    fn install_copies_to_a_root_owned_directory_then_loads_from_there() {
        let s = test(true).install_script();
        in_order(
            &s,
            &[
                "kmutil unload -b org.example.kext",
                "rm -rf /Library/Extensions/maptrace.kext",
                "ditto /private/tmp/maptrace-vm/maptrace.kext /Library/Extensions/maptrace.kext",
                "chown -R root:wheel /Library/Extensions/maptrace.kext",
                "chmod -R go-w /Library/Extensions/maptrace.kext",
                "kmutil load -p /Library/Extensions/maptrace.kext",
            ],
        );
    }

    #[test]
    fn the_bundle_is_copied_where_install_sh_reads_it() {
        let t = test(true);
        assert_eq!(
            t.copy_bundle().to_string(),
            "scp -q -r -o BatchMode=yes /repo/target/kext/maptrace.kext admin@vm:/private/tmp/maptrace-vm/"
        );
        assert!(
            t.install_script()
                .contains("ditto /private/tmp/maptrace-vm/maptrace.kext ")
        );
    }

    #[test]
    fn the_path_filter_is_the_path_the_kext_reports() {
        // vn_getpath walks the vnode's parents, so /tmp (a symlink) comes back as /private/tmp.
        let s = test(true).trace_script();
        assert!(
            s.contains(&format!("--path /private/tmp/maptrace-vm/{FILES_LEAF} ")),
            "{s}"
        );
        assert!(!s.contains(" /tmp/"), "{s}");
    }

    #[test]
    fn recorders_stop_by_pid_with_the_signal_each_honours() {
        let s = test(true).trace_script();
        // A background job inherits SIGINT ignored; dtrace then never installs its INT handler,
        // while the companion's handler replaces the ignored disposition.
        in_order(
            &s,
            &[
                "record -q",
                "REC=$!",
                "dtrace -q -s ./fsinfo.d",
                "DT=$!",
                "workload touch",
                "kill -INT $REC",
                "kill -TERM $DT",
                "wait",
                "stream --json",
            ],
        );
        assert!(!s.contains("pkill") && !s.contains("killall"));
        assert!(s.contains(&format!("fsinfo.d {FILES_LEAF} -o")), "{s}");
        let no_dtrace = test(false).trace_script();
        assert!(!no_dtrace.contains("dtrace -q"), "{no_dtrace}");
    }

    #[test]
    fn dtrace_matches_on_the_leaf_directory() {
        // fi_pathname is "??/<parent>/<name>" on macOS (bsd/dev/dtrace/scripts/io.d).
        let script =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/fsinfo.d"))
                .unwrap();
        let code: String = script
            .lines()
            .filter(|l| !l.trim_start().starts_with('*') && !l.starts_with("/*"))
            .collect();
        assert!(code.contains("args[0]->fi_dirname == $$1"), "{script}");
        assert!(!code.contains("fi_pathname"), "{script}");
    }

    #[test]
    fn collect_gathers_kmutil_kernel_logs_and_panic_reports() {
        let s = test(true).collect_script();
        in_order(
            &s,
            &[
                "kmutil showloaded --list-only --bundle-identifier org.example.kext",
                "kmutil unload -b org.example.kext",
                "process == \"kernelmanagerd\" OR process == \"kmutil\"",
                "process == \"kernel\" AND (eventMessage CONTAINS[c] \"maptrace\"",
                "/Library/Logs/DiagnosticReports",
                "chmod -R a+rX",
            ],
        );
    }

    #[test]
    fn generated_scripts_are_valid_shell() {
        let t = test(true);
        for (name, text) in [
            ("preflight", preflight_script()),
            ("install", t.install_script()),
            ("trace", t.trace_script()),
            ("trace without dtrace", test(false).trace_script()),
            ("collect", t.collect_script()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sh");
            std::fs::write(&path, &text).unwrap();
            let (ok, out) = Cmd::new("sh").arg("-n").path_arg(&path).capture().unwrap();
            assert!(ok, "{name}: {out}\n{text}");
            assert!(text.starts_with("#!/bin/sh\n# Generated by"), "{name}");
        }
    }

    #[test]
    fn every_ssh_has_time_outs_and_staging_starts_fresh() {
        let t = test(true);
        let plan = t.stage(&run_scripts(&t), &[fsinfo(&t)]);
        let text = plan.render();
        in_order(
            &text,
            &[
                "write /repo/target/vm-test/scripts/preflight.sh",
                "sudo rm -rf /private/tmp/maptrace-vm && mkdir -p /private/tmp/maptrace-vm",
                "scp -q -r -o BatchMode=yes /repo/target/vm-test/scripts/preflight.sh",
                "/repo/xtask/vm/fsinfo.d admin@vm:/private/tmp/maptrace-vm/",
            ],
        );
        let mut ssh = plan.commands().filter(|c| c.program == "ssh").peekable();
        assert!(ssh.peek().is_some());
        for c in ssh.chain([&t.load(), &t.loaded_query(), &t.run_script("trace.sh")]) {
            for o in [
                "BatchMode=yes",
                "ConnectTimeout=15",
                "ServerAliveInterval=5",
            ] {
                assert!(c.has_arg(o), "{o} missing: {c}");
            }
        }
        assert_eq!(
            t.fetch().to_string(),
            "scp -q -r -o BatchMode=yes admin@vm:/private/tmp/maptrace-vm/results /repo/target/vm-test"
        );
    }

    #[test]
    fn helpers_are_built_for_the_vm_and_the_oldest_supported_macos() {
        let t = test(true);
        let text = t.helpers(VmArch::X86_64).render();
        assert!(
            text.contains(&format!("-arch x86_64 -mmacosx-version-min={MACOS_MIN}")),
            "{text}"
        );
        assert!(
            text.contains("--no-default-features --target x86_64-apple-darwin"),
            "{text}"
        );
        let arm = t.helpers(VmArch::Arm64).render();
        assert!(
            arm.contains("-arch arm64 ") && arm.contains("aarch64-apple-darwin"),
            "{arm}"
        );
    }

    #[test]
    fn phases_parse_and_uninstall_clears_staging() {
        assert_eq!(Phase::parse(Some("install")).unwrap(), Phase::Install);
        assert_eq!(Phase::parse(Some("run")).unwrap(), Phase::Run);
        assert_eq!(Phase::parse(Some("collect")).unwrap(), Phase::Collect);
        assert_eq!(Phase::parse(Some("uninstall")).unwrap(), Phase::Uninstall);
        let err = Phase::parse(None).unwrap_err().to_string();
        assert!(err.contains("install") && err.contains("--help"), "{err}");
        assert!(Phase::parse(Some("load")).is_err());
        let text = uninstall_plan(&test(true)).render();
        in_order(
            &text,
            &[
                "kmutil unload -b org.example.kext",
                "rm -rf /Library/Extensions/maptrace.kext",
                "kmutil clear-staging",
                "restart",
            ],
        );
    }

    #[test]
    fn real_runs_refuse_an_unlinked_bundle_before_touching_the_vm() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = test(true);
        t.bundle = dir.path().join("maptrace.kext");
        let err = format!("{:#}", built_slices(&t).unwrap_err());
        assert!(err.contains("cargo xtask build"), "{err}");
    }

    #[test]
    fn report_passes_on_full_counts_and_fails_on_missing_events() {
        let mut jsonl = String::new();
        for _ in 0..NFILES {
            jsonl.push_str("{\"type\":\"event\",\"kind\":\"mmap\",\"pid\":1}\n");
            jsonl.push_str("{\"type\":\"event\",\"kind\":\"pagein\",\"pid\":1}\n");
        }
        jsonl.push_str("{\"type\":\"event\",\"kind\":\"mnomap\"}\nnot json\n");
        let (text, ok) = report(&jsonl, Some("mmap 16\npagein 20\n"), "a\nb panic c\n");
        assert!(ok, "{text}");
        assert!(text.contains("note: pagein differs"));
        assert!(text.contains("note: mnomap differs"));
        assert!(text.contains("1 mentioning panic"));
        let (text, ok) = report("{\"kind\":\"mmap\"}\n", None, "");
        assert!(!ok);
        assert!(text.contains("FAIL: 1 mmap events") && text.contains("FAIL: no pagein"));
    }

    #[test]
    fn counters_ignore_garbage() {
        assert!(count_events("x\n\"kind\":\"unterminated\n").is_empty());
        let d = count_dtrace("mmap 3\n\nbogus\npagein x\nmnomap 2\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d["mnomap"], 2);
    }
}
