//! Plans (commands and file operations) and the one place that runs or prints them.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// One external command, fully described so a plan can be printed and compared in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Program name or path.
    pub program: String,
    /// Arguments, one per element.
    pub args: Vec<String>,
    /// Environment variables set for this command only.
    pub env: Vec<(String, String)>,
    /// Environment variables removed for this command only.
    pub env_remove: Vec<String>,
    /// Working directory; the caller's when `None`.
    pub cwd: Option<PathBuf>,
}

impl Cmd {
    /// A command with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends a path argument.
    pub fn path_arg(self, path: &Path) -> Self {
        self.arg(path.display().to_string())
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Runs the command in `dir`.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// True when `arg` is one of the arguments.
    #[cfg(test)]
    pub fn has_arg(&self, arg: &str) -> bool {
        self.args.iter().any(|a| a == arg)
    }

    /// The value set for `key`, if any.
    #[cfg(test)]
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for key in &self.env_remove {
            c.env_remove(key);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        c
    }

    /// Runs the command with inherited stdio; fails on a non-zero exit.
    pub fn run(&self) -> Result<()> {
        let status = self
            .command()
            .status()
            .with_context(|| format!("cannot start `{self}`"))?;
        if !status.success() {
            bail!("`{self}` failed: {status}");
        }
        Ok(())
    }

    /// Runs the command and returns its stdout; the error carries the command and its stderr.
    pub fn output(&self) -> Result<Vec<u8>> {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start `{self}`"))?;
        if !out.status.success() {
            bail!(
                "`{self}` failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    }

    /// Runs the command and returns whether it succeeded and its stdout then stderr, for tools
    /// whose refusals are answers to read (kmutil); only a failure to start is an error.
    pub fn capture(&self) -> Result<(bool, String)> {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start `{self}`"))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    /// True when the command starts and exits with status 0 (output discarded).
    pub fn succeeds(&self) -> bool {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// Quotes a word for display in a POSIX shell, only when it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dir) = &self.cwd {
            write!(f, "(cd {} && ", shell_word(&dir.display().to_string()))?;
        }
        if !self.env_remove.is_empty() || !self.env.is_empty() {
            f.write_str("env ")?;
        }
        for key in &self.env_remove {
            write!(f, "-u {key} ")?;
        }
        for (k, v) in &self.env {
            write!(f, "{k}={} ", shell_word(v))?;
        }
        f.write_str(&shell_word(&self.program))?;
        for a in &self.args {
            write!(f, " {}", shell_word(a))?;
        }
        if self.cwd.is_some() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Turns a command's stdout into the contents of a generated file.
pub type Transform = fn(&[u8]) -> Result<Vec<u8>>;

/// One step of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// Run a command; stop the plan when it fails.
    Run(Cmd),
    /// Run a command, transform its stdout and write the result to `path`.
    Generate {
        /// The command whose output is the input of `transform`.
        cmd: Cmd,
        /// Pure function from the output to the file contents.
        transform: Transform,
        /// The file written.
        path: PathBuf,
    },
    /// Create a directory and its parents.
    MkDir(PathBuf),
    /// Remove a directory tree if it exists.
    RemoveDir(PathBuf),
    /// Write a file (parents created).
    Write {
        /// The file written.
        path: PathBuf,
        /// Its full contents.
        contents: Vec<u8>,
    },
    /// Copy a file (parents of `to` created).
    Copy {
        /// Source file.
        from: PathBuf,
        /// Destination file.
        to: PathBuf,
    },
    /// A line printed when the plan reaches this point.
    Note(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(cmd) => write!(f, "{cmd}"),
            Self::Generate { cmd, path, .. } => {
                write!(f, "{cmd} | (transform) > {}", path.display())
            }
            Self::MkDir(p) => write!(f, "mkdir -p {}", p.display()),
            Self::RemoveDir(p) => write!(f, "rm -rf {}", p.display()),
            Self::Write { path, contents } => {
                write!(f, "write {} ({} bytes)", path.display(), contents.len())
            }
            Self::Copy { from, to } => write!(f, "cp {} {}", from.display(), to.display()),
            Self::Note(text) => write!(f, "# {text}"),
        }
    }
}

/// An ordered list of steps, built by a pure function per task.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a step.
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// Appends a command.
    pub fn run(&mut self, cmd: Cmd) {
        self.steps.push(Step::Run(cmd));
    }

    /// Appends all steps of another plan.
    pub fn extend(&mut self, other: Plan) {
        self.steps.extend(other.steps);
    }

    /// The commands of the plan, in order (tests look for flags in them).
    #[cfg(test)]
    pub fn commands(&self) -> impl Iterator<Item = &Cmd> {
        self.steps.iter().filter_map(|s| match s {
            Step::Run(c) | Step::Generate { cmd: c, .. } => Some(c),
            _ => None,
        })
    }

    /// The files the plan writes (written, generated or copied to).
    #[cfg(test)]
    pub fn written_files(&self) -> impl Iterator<Item = &Path> {
        self.steps.iter().filter_map(|s| match s {
            Step::Write { path, .. } | Step::Generate { path, .. } => Some(path.as_path()),
            Step::Copy { to, .. } => Some(to.as_path()),
            _ => None,
        })
    }

    /// The plan as text, one step a line: what `--dry-run` prints.
    #[cfg(test)]
    pub fn render(&self) -> String {
        self.steps.iter().map(|s| format!("{s}\n")).collect()
    }
}

/// Whether plans run or are only printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Run every step.
    #[default]
    Run,
    /// Print every step and run nothing.
    DryRun,
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

/// Runs one step.
fn run_step(step: &Step) -> Result<()> {
    match step {
        Step::Run(cmd) => cmd.run(),
        Step::Generate {
            cmd,
            transform,
            path,
        } => {
            let out = cmd.output()?;
            let contents =
                transform(&out).with_context(|| format!("generating {}", path.display()))?;
            write_file(path, &contents)
        }
        Step::MkDir(p) => fs::create_dir_all(p).with_context(|| format!("mkdir {}", p.display())),
        Step::RemoveDir(p) => match fs::remove_dir_all(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("rm -rf {}", p.display()))
            }
            _ => Ok(()),
        },
        Step::Write { path, contents } => write_file(path, contents),
        Step::Copy { from, to } => {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("mkdir {}", parent.display()))?;
            }
            fs::copy(from, to)
                .map(drop)
                .with_context(|| format!("cp {} {}", from.display(), to.display()))
        }
        Step::Note(text) => {
            eprintln!("note: {text}");
            Ok(())
        }
    }
}

/// Runs a plan, or prints it with `Mode::DryRun`. Stops at the first failing step.
pub fn exec(plan: &Plan, mode: Mode) -> Result<()> {
    for step in &plan.steps {
        match mode {
            Mode::DryRun => println!("{step}"),
            Mode::Run => {
                if !matches!(step, Step::Note(_)) {
                    eprintln!("+ {step}");
                }
                let started = Instant::now();
                run_step(step)?;
                if matches!(step, Step::Run(_) | Step::Generate { .. }) {
                    let secs = started.elapsed().as_secs_f64();
                    if secs >= 1.0 {
                        eprintln!("  ({secs:.1} s)");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The repository root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where xtask installs the tools it needs when they are not on PATH (rcodesign, cargo-fuzz).
pub fn tools_root(root: &Path) -> PathBuf {
    root.join("target/tools")
}

/// What every step of `cargo xtask test` gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Repository root.
    pub root: PathBuf,
    /// Run or print.
    pub mode: Mode,
}

/// cargo as the user invoked it (`$CARGO` under `cargo xtask`), never the Debian one.
pub fn cargo() -> Cmd {
    Cmd::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cargo test` on the nightly toolchain, with the toolchain override cleared so a
/// `RUSTUP_TOOLCHAIN` from the outer `cargo xtask` does not win.
pub fn nightly_cargo(ctx: &Ctx, target_dir: &str) -> Cmd {
    Cmd::new("rustup")
        .args(["run", "nightly", "cargo"])
        .env(
            "CARGO_TARGET_DIR",
            ctx.root.join(target_dir).display().to_string(),
        )
        .env_remove("RUSTUP_TOOLCHAIN")
        .cwd(&ctx.root)
}

/// Installs nightly components (idempotent); CI machines start without them.
pub fn ensure_components(components: &[&str], mode: Mode) -> Result<()> {
    let mut plan = Plan::new();
    plan.run(
        Cmd::new("rustup")
            .args(["component", "add", "--toolchain", "nightly"])
            .args(components.iter().copied()),
    );
    exec(&plan, mode).with_context(|| {
        format!(
            "cannot install the rustup nightly components {} (needs network access to \
             static.rust-lang.org, or install them by hand: `rustup toolchain install nightly \
             --component {}`)",
            components.join(" "),
            components.join(" --component ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(out: &[u8]) -> Result<Vec<u8>> {
        Ok(out.to_ascii_uppercase())
    }

    #[test]
    fn display_quotes_only_what_needs_it() {
        let cmd = Cmd::new("cargo")
            .args(["build", "a b", "it's"])
            .env("RUSTFLAGS", "-Zx=1 -Cy")
            .env_remove("CARGO_TARGET_DIR");
        assert_eq!(
            cmd.to_string(),
            r"env -u CARGO_TARGET_DIR RUSTFLAGS='-Zx=1 -Cy' cargo build 'a b' 'it'\''s'"
        );
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn dry_run_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x/y.txt");
        let mut plan = Plan::new();
        plan.push(Step::Write {
            path: target.clone(),
            contents: b"hi".to_vec(),
        });
        plan.run(Cmd::new("false"));
        exec(&plan, Mode::DryRun).unwrap();
        assert!(!target.exists());
        assert_eq!(
            plan.written_files().collect::<Vec<_>>(),
            vec![target.as_path()]
        );
    }

    #[test]
    fn run_stops_at_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let after = dir.path().join("after");
        let mut plan = Plan::new();
        plan.run(Cmd::new("false"));
        plan.push(Step::Write {
            path: after.clone(),
            contents: Vec::new(),
        });
        let err = exec(&plan, Mode::Run).unwrap_err();
        assert!(err.to_string().contains("`false` failed"), "{err}");
        assert!(!after.exists());
    }

    #[test]
    fn missing_program_is_an_error_naming_it() {
        let err = Cmd::new("maptrace-no-such-program").output().unwrap_err();
        assert!(err.to_string().contains("maptrace-no-such-program"));
    }

    #[test]
    fn generate_copy_and_remove_run_for_real() {
        let dir = tempfile::tempdir().unwrap();
        let gen_path = dir.path().join("g/out.txt");
        let copy = dir.path().join("c/copy.txt");
        let mut plan = Plan::new();
        plan.push(Step::Generate {
            cmd: Cmd::new("printf").arg("abc"),
            transform: upper,
            path: gen_path.clone(),
        });
        plan.push(Step::Copy {
            from: gen_path.clone(),
            to: copy.clone(),
        });
        plan.push(Step::RemoveDir(dir.path().join("g")));
        plan.push(Step::RemoveDir(dir.path().join("never-existed")));
        exec(&plan, Mode::Run).unwrap();
        assert_eq!(fs::read(&copy).unwrap(), b"ABC");
        assert!(!gen_path.exists());
    }

    #[test]
    fn capture_keeps_both_streams_and_the_status() {
        let (ok, text) = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 1"])
            .capture()
            .unwrap();
        assert!(!ok);
        assert_eq!(text, "out\nerr\n");
        assert!(Cmd::new("maptrace-no-such-program").capture().is_err());
    }

    #[test]
    fn failing_output_carries_stderr() {
        let err = Cmd::new("sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .output()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("boom") && text.contains("exit status: 3"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_component_fails_with_what_to_do() {
        let err = ensure_components(&["no-such-component-xyz"], Mode::Run)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot install the rustup nightly components")
                && err.contains("--component no-such-component-xyz"),
            "{err}"
        );
    }
}
