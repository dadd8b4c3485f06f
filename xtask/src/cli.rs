//! The command line of every command: its help, the options it accepts, and the one parser that
//! hands each option to the command's own options struct.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::exec::Mode;

/// One option: its name, whether it takes a value, and its help line.
pub struct Opt {
    /// `--name`.
    pub name: &'static str,
    /// The value's placeholder in the help (`--arch A`); `None` for a flag.
    pub value: Option<&'static str>,
    /// Its help line.
    pub help: &'static str,
}

/// `--dry-run`, for every command that changes something.
pub const DRY_RUN: Opt = Opt {
    name: "--dry-run",
    value: None,
    help: "print every command and file write instead of doing it",
};
/// `--arch`, for the commands that work on objects per architecture.
pub const ARCH: Opt = Opt {
    name: "--arch",
    value: Some("A"),
    help: "x86_64 or arm64e (repeatable; default both)",
};
/// `--kauth`, one of the build variants.
pub const KAUTH: Opt = Opt {
    name: "--kauth",
    value: None,
    help: "the kauth variant (macOS 10.15, Intel): org.maptrace.kext.kauth",
};
/// `--resident`, one of the build variants.
pub const RESIDENT: Opt = Opt {
    name: "--resident",
    value: None,
    help: "a MAC policy without UNLOADOK: no per-check lock, never unloadable",
};
/// `--bundle`, for the commands that take a built bundle.
pub const BUNDLE: Opt = Opt {
    name: "--bundle",
    value: Some("DIR"),
    help: "the .kext bundle (default target/kext/maptrace.kext)",
};

/// One command: its name, what it does, and the options it accepts.
pub struct CommandSpec {
    /// The word after `cargo xtask`.
    pub name: &'static str,
    /// Positional words after the command (`vm-test install`), shown in the usage line.
    pub steps: &'static str,
    /// What it does, for its help.
    pub about: &'static str,
    /// The options it accepts; any other is refused.
    pub options: &'static [Opt],
}

impl CommandSpec {
    /// The help of one command: usage, what it does, its options.
    pub fn help(&self) -> String {
        let mut s = format!("cargo xtask {}", self.name);
        if !self.steps.is_empty() {
            s.push_str(&format!(" <{}>", self.steps));
        }
        if !self.options.is_empty() {
            s.push_str(" [options]");
        }
        s.push_str("\n\n");
        for line in self.about.lines() {
            s.push_str(line);
            s.push('\n');
        }
        if !self.options.is_empty() {
            s.push_str("\nOptions:\n");
            for o in self.options {
                let flag = o
                    .value
                    .map_or_else(|| o.name.to_string(), |v| format!("{} {v}", o.name));
                s.push_str(&format!("  {flag:<20} {}\n", o.help));
            }
        }
        s
    }
}

/// A command's options struct: its spec, how it takes each option [`parse`] hands it, and
/// what it runs.
pub trait Command: Default + 'static {
    /// Name, help and accepted options.
    const SPEC: &'static CommandSpec;
    /// Takes one option that `SPEC` lists; `value` is empty for a flag.
    fn set(&mut self, option: &str, value: &str) -> Result<()>;
    /// Takes the positional word (only asked of commands whose `SPEC` has steps).
    fn step(&mut self, word: &str) -> Result<()> {
        bail!(
            "unexpected argument `{word}`; {}",
            see_help(Self::SPEC.name)
        )
    }
    /// Checks the options together once all are taken.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
    /// Runs the command in the repository at `root`.
    fn run(&self, root: &Path) -> Result<()>;
}

/// A parsed command, ready to run in the repository at the given root.
pub type Parsed = Box<dyn Fn(&Path) -> Result<()>>;

/// A command as the dispatcher sees it: its spec and its parser.
pub struct Entry {
    /// Name, help and accepted options.
    pub spec: &'static CommandSpec,
    /// Parses the words after the command's name (help flags taken out).
    pub parse: fn(&[String]) -> Result<Parsed>,
}

impl Entry {
    /// The entry of command `C`.
    pub const fn of<C: Command>() -> Entry {
        Entry {
            spec: C::SPEC,
            parse: parse_to_run::<C>,
        }
    }
}

fn parse_to_run<C: Command>(words: &[String]) -> Result<Parsed> {
    let command = parse::<C>(words)?;
    Ok(Box::new(move |root: &Path| command.run(root)))
}

/// Where to read about `command` (the global help when empty).
pub fn see_help(command: &str) -> String {
    if command.is_empty() {
        "see `cargo xtask --help`".into()
    } else {
        format!("see `cargo xtask {command} --help`")
    }
}

/// The words after a command's name as its options struct: refuses options its spec does not
/// list, and a second positional word or one the command takes none of.
pub fn parse<C: Command>(words: &[String]) -> Result<C> {
    let spec = C::SPEC;
    let mut command = C::default();
    let mut stepped = false;
    let mut it = words.iter();
    while let Some(a) = it.next() {
        let a = a.as_str();
        if !a.starts_with('-') {
            if spec.steps.is_empty() || stepped {
                bail!("unexpected argument `{a}`; {}", see_help(spec.name));
            }
            stepped = true;
            command.step(a)?;
            continue;
        }
        let Some(opt) = spec.options.iter().find(|o| o.name == a) else {
            bail!(
                "unknown option {a} for `cargo xtask {}`; {}",
                spec.name,
                see_help(spec.name)
            );
        };
        let value = match opt.value {
            None => "",
            Some(placeholder) => it.next().with_context(|| {
                format!("{a} needs a value ({placeholder}); {}", see_help(spec.name))
            })?,
        };
        command.set(a, value)?;
    }
    command.finish()?;
    Ok(command)
}

/// `--dry-run`, the option most commands share; any other option is one `spec` lists but its
/// options struct does not handle.
pub fn set_dry_run(spec: &CommandSpec, mode: &mut Mode, option: &str) -> Result<()> {
    match option {
        "--dry-run" => *mode = Mode::DryRun,
        other => return Err(unhandled(spec, other)),
    }
    Ok(())
}

/// An option `spec` lists that its options struct does not handle (a bug, caught by tests).
pub fn unhandled(spec: &CommandSpec, option: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "option {option} is listed for `{}` but not handled",
        spec.name
    )
}

/// A whole number given to `flag`.
pub fn number(flag: &str, v: &str) -> Result<u64> {
    v.parse()
        .with_context(|| format!("{flag} takes a whole number, not `{v}`"))
}

/// Parses `list` as the words after `C`'s name.
#[cfg(test)]
pub fn parsed<C: Command>(list: &[&str]) -> Result<C> {
    parse(&list.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
}
