//! `cargo xtask vm-test --host USER@VM`: load the kext in a test VM, trace a workload, compare, unload.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::exec::{Cmd, Mode, Plan, Step, exec};
use crate::kernel::MACOS_MIN;

/// Working directory on the VM, as the kext names it: `vn_getpath` resolves the `/tmp` symlink,
/// so the companion's `--path` filter must use `/private/tmp`.
pub const REMOTE_DIR: &str = "/private/tmp/maptrace-vm";
/// The workload's directory name: DTrace matches on it alone (`fi_dirname` is the leaf name).
pub const FILES_LEAF: &str = "mt-vmtest-files";
/// Files the workload maps.
pub const NFILES: u32 = 16;
/// Pages per file.
pub const NPAGES: u32 = 64;

/// How the kext is loaded on the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// `kmutil` (macOS 11 and later).
    Kmutil,
    /// `kextutil` / `kextunload` (older, or when kmutil's staging gets in the way).
    Kextutil,
}

/// Inputs of the VM test.
#[derive(Debug, Clone)]
pub struct VmTest {
    /// `user@host` for ssh/scp.
    pub host: String,
    /// The signed bundle to load.
    pub bundle: PathBuf,
    /// The bundle identifier (for load checks and unload).
    pub bundle_id: String,
    /// Repository root (workload sources, outputs).
    pub root: PathBuf,
    /// Loader to use.
    pub loader: Loader,
    /// Compare with DTrace's fsinfo probes (needs DTrace allowed on the VM).
    pub dtrace: bool,
}

/// The three phases: teardown runs even when an earlier phase fails.
#[derive(Debug, Clone)]
pub struct VmPlan {
    /// Build the helpers, copy, fix ownership, load, confirm.
    pub setup: Plan,
    /// Record while the workload runs.
    pub run: Plan,
    /// Unload, collect the logs and results.
    pub teardown: Plan,
}

impl VmTest {
    fn ssh(&self, remote: &str) -> Cmd {
        Cmd::new("ssh").args(["-o", "BatchMode=yes", &self.host, remote])
    }

    fn remote(&self, name: &str) -> String {
        format!("{REMOTE_DIR}/{name}")
    }

    /// Local directory the results are copied to.
    pub fn out_dir(&self) -> PathBuf {
        self.root.join("target/vm-test")
    }

    fn kext_name(&self) -> String {
        self.bundle.file_name().map_or_else(
            || "maptrace.kext".into(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Builds the plan.
    pub fn plan(&self) -> VmPlan {
        let out = self.out_dir();
        let kext = self.remote(&self.kext_name());
        let files = self.remote(FILES_LEAF);
        let maptrace = format!("{} --source sysctl", self.remote("maptrace"));
        let id = &self.bundle_id;

        let mut setup = Plan::new();
        setup.push(Step::MkDir(out.clone()));
        setup.run(
            Cmd::new("xcrun")
                .args(["clang", "-arch", "x86_64"])
                // Without it the binary needs the build host's macOS (minos = SDK version).
                .arg(format!("-mmacosx-version-min={MACOS_MIN}"))
                .args(["-O2", "-Wall", "-Wextra", "-o"])
                .path_arg(&out.join("workload"))
                .path_arg(&self.root.join("xtask/vm/workload.c")),
        );
        // Third-party kexts load only in Intel VMs, so the companion is built for x86_64.
        setup.run(
            Cmd::new("cargo")
                .args(["build", "--release", "--locked", "-p", "maptrace"])
                .args(["--target", "x86_64-apple-darwin"])
                .cwd(&self.root),
        );
        setup.run(self.ssh(&format!("sudo rm -rf {REMOTE_DIR} && mkdir -p {files}")));
        setup.run(
            Cmd::new("scp")
                .args(["-q", "-r", "-o", "BatchMode=yes"])
                .path_arg(&self.bundle)
                .path_arg(
                    &self
                        .root
                        .join("target/x86_64-apple-darwin/release/maptrace"),
                )
                .path_arg(&out.join("workload"))
                .path_arg(&self.root.join("xtask/vm/fsinfo.d"))
                .arg(format!("{}:{REMOTE_DIR}/", self.host)),
        );
        // kextd/kmutil refuse bundles not owned by root:wheel or writable by others.
        setup.run(self.ssh(&format!(
            "sudo chown -R root:wheel {kext} && sudo chmod -R go-w {kext}"
        )));
        match self.loader {
            Loader::Kmutil => {
                setup.run(self.ssh(&format!("sudo kmutil load -p {kext}")));
                setup.run(self.ssh(&format!(
                    "kmutil showloaded --list-only --bundle-identifier {id} | grep -F {id}"
                )));
            }
            Loader::Kextutil => {
                setup.run(self.ssh(&format!("sudo kextutil -v 1 {kext}")));
                setup.run(self.ssh(&format!("kextstat -l -b {id} | grep -F {id}")));
            }
        }

        let mut run = Plan::new();
        run.run(self.ssh(&format!(
            "{} create {files} {NFILES} {NPAGES}",
            self.remote("workload")
        )));
        // Drop the page cache so mapping the files pages them in.
        run.run(self.ssh("sudo purge"));
        run.run(self.ssh(&format!(
            "sudo {maptrace} config set --enable --events mmap,pagein,mnomap,path --all-pids"
        )));
        run.run(self.ssh(&background(
            &format!("{maptrace} record -q -o {}", self.remote("events.bin")),
            &self.remote("record"),
        )));
        if self.dtrace {
            // $$1 in the script takes the directory's name as a string; no quoting needed.
            run.run(self.ssh(&background(
                &format!(
                    "dtrace -q -s {} {FILES_LEAF} -o {}",
                    self.remote("fsinfo.d"),
                    self.remote("dtrace.txt")
                ),
                &self.remote("dtrace"),
            )));
        }
        run.run(self.ssh(&format!(
            "sleep 2 && {} touch {files} {NFILES}",
            self.remote("workload")
        )));

        let mut teardown = Plan::new();
        // Stop the recorders by the pids they wrote, never by name. TERM, not INT: a background
        // job starts with SIGINT ignored and dtrace then never installs its INT handler.
        teardown.run(self.ssh(&format!(
            "sleep 2; for p in {0}/record.pid {0}/dtrace.pid; do test -f $p && sudo kill -TERM $(cat $p); done; sleep 2",
            REMOTE_DIR
        )));
        teardown.run(self.ssh(&format!(
            "{} stream --json --no-summary --path {files} {} > {} || true",
            self.remote("maptrace"),
            self.remote("events.bin"),
            self.remote("events.jsonl")
        )));
        match self.loader {
            Loader::Kmutil => teardown.run(self.ssh(&format!("sudo kmutil unload -b {id}"))),
            Loader::Kextutil => teardown.run(self.ssh(&format!("sudo kextunload -b {id}"))),
        }
        teardown.run(self.ssh(&format!(
            "log show --last 15m --style compact --predicate 'senderImagePath CONTAINS \"maptrace\"' > {}",
            self.remote("kernel.log")
        )));
        let mut fetch = Cmd::new("scp").args(["-q", "-o", "BatchMode=yes"]);
        for f in ["events.jsonl", "kernel.log", "record.log", "dtrace.txt"] {
            if f != "dtrace.txt" || self.dtrace {
                fetch = fetch.arg(format!("{}:{}", self.host, self.remote(f)));
            }
        }
        teardown.run(fetch.path_arg(&out));
        VmPlan {
            setup,
            run,
            teardown,
        }
    }
}

/// A remote shell line that starts `cmd` as root in the background and records its pid.
fn background(cmd: &str, stem: &str) -> String {
    format!("sudo sh -c 'nohup {cmd} > {stem}.log 2>&1 & echo $! > {stem}.pid'")
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

/// Runs the plan: setup and run, then teardown whatever happened, then the report.
pub fn run(test: &VmTest, mode: Mode) -> Result<()> {
    let plan = test.plan();
    if mode == Mode::DryRun {
        println!("# setup");
        exec(&plan.setup, mode)?;
        println!("# run");
        exec(&plan.run, mode)?;
        println!("# teardown (always runs)");
        exec(&plan.teardown, mode)?;
        println!("# then: report from target/vm-test/{{events.jsonl,dtrace.txt,kernel.log}}");
        return Ok(());
    }
    let main = exec(&plan.setup, mode).and_then(|()| exec(&plan.run, mode));
    let down = exec(&plan.teardown, mode);
    let read = |name: &str| std::fs::read_to_string(test.out_dir().join(name)).unwrap_or_default();
    let dtrace = test.dtrace.then(|| read("dtrace.txt"));
    let (text, ok) = report(
        &read("events.jsonl"),
        dtrace.as_deref(),
        &read("kernel.log"),
    );
    print!("{text}");
    main?;
    down?;
    if !ok {
        bail!("vm-test failed (results in {})", test.out_dir().display());
    }
    Ok(())
}

/// Fails unless the helpers can be built here (they are macOS x86_64 binaries).
pub fn require_macos() -> Result<()> {
    if !cfg!(target_os = "macos") {
        bail!(
            "vm-test builds macOS helpers and needs a signed bundle: run it on a Mac (or use --dry-run)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(loader: Loader, dtrace: bool) -> VmTest {
        VmTest {
            host: "admin@vm".into(),
            bundle: "/repo/target/kext/maptrace.kext".into(),
            bundle_id: "org.example.kext".into(),
            root: "/repo".into(),
            loader,
            dtrace,
        }
    }

    fn text(p: &Plan) -> String {
        p.render()
    }

    #[test]
    fn plan_copies_fixes_ownership_loads_and_confirms_before_the_workload() {
        let p = test(Loader::Kmutil, true).plan();
        let setup = text(&p.setup);
        let order = [
            "xcrun clang -arch x86_64",
            "--target x86_64-apple-darwin",
            "scp -q -r",
            "sudo chown -R root:wheel /private/tmp/maptrace-vm/maptrace.kext",
            "sudo kmutil load -p /private/tmp/maptrace-vm/maptrace.kext",
            "kmutil showloaded --list-only --bundle-identifier org.example.kext",
        ];
        let mut last = 0;
        for needle in order {
            let at = setup
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing:\n{setup}"));
            assert!(at >= last, "{needle} out of order");
            last = at;
        }
        assert!(
            p.setup
                .commands()
                .filter(|c| c.program == "ssh")
                .all(|c| c.has_arg("BatchMode=yes"))
        );
        let run = text(&p.run);
        assert!(run.contains("sudo purge"));
        assert!(run.contains("record -q -o /private/tmp/maptrace-vm/events.bin"));
        assert!(run.contains("dtrace -q -s /private/tmp/maptrace-vm/fsinfo.d mt-vmtest-files -o"));
        // Nested quoting would end the `sh -c '...'` string early.
        for c in p.run.commands() {
            let remote = c.args.last().unwrap();
            if let Some(inner) = remote.strip_prefix("sudo sh -c '") {
                assert!(
                    inner.ends_with('\'') && !inner[..inner.len() - 1].contains('\''),
                    "{remote}"
                );
            }
        }
        assert!(run.contains("touch /private/tmp/maptrace-vm/mt-vmtest-files 16"));
        let down = text(&p.teardown);
        assert!(down.contains("sudo kmutil unload -b org.example.kext"));
        assert!(down.contains("log show"));
        assert!(down.contains("admin@vm:/private/tmp/maptrace-vm/dtrace.txt"));
        assert!(!down.contains("pkill") && !down.contains("killall"));
    }

    #[test]
    fn the_path_filter_is_the_path_the_kext_reports() {
        // vn_getpath walks the vnode's parents, so /tmp (a symlink) comes back as /private/tmp.
        let down = text(&test(Loader::Kmutil, true).plan().teardown);
        assert!(
            down.contains(&format!("--path /private/tmp/maptrace-vm/{FILES_LEAF} ")),
            "{down}"
        );
        assert!(!down.contains(" /tmp/"), "{down}");
    }

    #[test]
    fn dtrace_is_stopped_with_term_and_matches_on_the_leaf_directory() {
        // A background job inherits SIGINT ignored; dtrace then never installs its INT handler.
        let down = text(&test(Loader::Kmutil, true).plan().teardown);
        assert!(
            down.contains("kill -TERM") && !down.contains("kill -INT"),
            "{down}"
        );
        // fi_pathname is "??/<parent>/<name>" on macOS (bsd/dev/dtrace/scripts/io.d).
        let script = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/fsinfo.d"),
        )
        .unwrap();
        let code: String = script
            .lines()
            .filter(|l| !l.trim_start().starts_with('*') && !l.starts_with("/*"))
            .collect();
        assert!(code.contains("args[0]->fi_dirname == $$1"), "{script}");
        assert!(!code.contains("fi_pathname"), "{script}");
        let run = text(&test(Loader::Kmutil, true).plan().run);
        assert!(run.contains(&format!("fsinfo.d {FILES_LEAF} -o")), "{run}");
    }

    #[test]
    fn the_workload_runs_on_the_oldest_supported_macos() {
        let setup = text(&test(Loader::Kmutil, true).plan().setup);
        assert!(
            setup.contains(&format!(
                "-mmacosx-version-min={}",
                crate::kernel::MACOS_MIN
            )),
            "{setup}"
        );
    }

    #[test]
    fn kextutil_and_no_dtrace_variants() {
        let p = test(Loader::Kextutil, false).plan();
        assert!(
            text(&p.setup).contains("sudo kextutil -v 1 /private/tmp/maptrace-vm/maptrace.kext")
        );
        assert!(text(&p.teardown).contains("sudo kextunload -b org.example.kext"));
        assert!(!text(&p.run).contains("dtrace"));
        assert!(!text(&p.teardown).contains("dtrace.txt"));
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
