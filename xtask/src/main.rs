//! `cargo xtask`: cross-build, check, bundle, sign and test the maptrace kext. This file only
//! finds the command and hands it its words; each command parses its own options.

mod ci;
mod cli;
mod deps;
mod exec;
mod kext;
mod package;

use anyhow::{Context, Result, bail};

use crate::cli::{Entry, see_help};

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

/// Every command, in the order of [`HELP`].
const COMMANDS: &[Entry] = &[
    Entry::of::<ci::TestOptions>(),
    Entry::of::<ci::DemoOptions>(),
    Entry::of::<kext::CrossOptions>(),
    Entry::of::<kext::CheckOptions>(),
    Entry::of::<kext::KextlibsOptions>(),
    Entry::of::<package::BundleOptions>(),
    Entry::of::<package::BuildOptions>(),
    Entry::of::<package::SignOptions>(),
    Entry::of::<package::SignCheckOptions>(),
    Entry::of::<ci::FuzzOptions>(),
    Entry::of::<package::VmTestOptions>(),
];

/// What the command line asks for.
#[derive(Default)]
struct Invocation {
    /// The command; none for the global help.
    command: Option<&'static Entry>,
    /// `--help`, `-h` or `help`: the help of the command, or the global one.
    help: bool,
    /// The words after the command's name, help flags taken out.
    words: Vec<String>,
}

/// Finds the command and the help flags; the command's words are left to the command.
fn invocation(raw: &[String]) -> Result<Invocation> {
    let mut inv = Invocation::default();
    for a in raw {
        if a == "-h" || a == "--help" {
            inv.help = true;
        } else if inv.command.is_some() {
            inv.words.push(a.clone());
        } else if a.starts_with('-') {
            bail!("option {a} comes after a command; {}", see_help(""));
        } else if a == "help" && !inv.help {
            inv.help = true;
        } else {
            let entry = COMMANDS.iter().find(|c| c.spec.name == a);
            inv.command = Some(entry.with_context(|| format!("unknown command `{a}`\n\n{HELP}"))?);
        }
    }
    Ok(inv)
}

/// What `help` prints: the global help, or one command's.
fn help_text(command: Option<&Entry>) -> String {
    command.map_or_else(|| HELP.to_string(), |c| c.spec.help())
}

fn run(raw: &[String]) -> Result<()> {
    let inv = invocation(raw)?;
    let Some(entry) = inv.command else {
        print!("{HELP}");
        return Ok(());
    };
    // Parsed even for its help, so a mistake is reported as it would be without `--help`.
    let command = (entry.parse)(&inv.words)?;
    if inv.help {
        print!("{}", help_text(Some(entry)));
        return Ok(());
    }
    command(&exec::repo_root())
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

    fn invoked(list: &[&str]) -> Result<Invocation> {
        invocation(&list.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
    }

    /// The command's options struct as parsed from its words: `Ok` when they are fine.
    fn parsed(inv: &Invocation) -> Result<()> {
        inv.command
            .map_or(Ok(()), |c| (c.parse)(&inv.words).map(drop))
    }

    #[test]
    fn every_command_has_its_own_help() {
        for c in COMMANDS {
            for form in [
                vec![c.spec.name, "--help"],
                vec![c.spec.name, "-h"],
                vec!["help", c.spec.name],
                vec!["--help", c.spec.name],
            ] {
                let inv = invoked(&form).unwrap();
                assert!(inv.help, "{form:?}");
                assert_eq!(inv.command.map(|c| c.spec.name), Some(c.spec.name));
                parsed(&inv).unwrap();
                let text = help_text(inv.command);
                assert!(
                    text.starts_with(&format!("cargo xtask {}", c.spec.name)),
                    "{form:?}: {text}"
                );
                assert_ne!(text, HELP);
                for o in c.spec.options {
                    assert!(text.contains(o.name), "{} lacks {}", c.spec.name, o.name);
                }
                assert!(
                    HELP.contains(&format!("\n  {} ", c.spec.name)),
                    "{} missing from the global help",
                    c.spec.name
                );
            }
        }
        let help = |name: &str| help_text(invoked(&[name]).unwrap().command);
        // Only its own options: cross has no --host, vm-test has no --arch.
        assert!(!help("cross").contains("--host"));
        assert!(help("cross").contains("--arch"));
        assert!(!help("vm-test").contains("--arch"));
        // Help comes first even with options the command would refuse later.
        let inv = invoked(&["sign", "--help", "--bundle", "x"]).unwrap();
        assert!(inv.help);
        parsed(&inv).unwrap();
        let bare = invoked(&[]).unwrap();
        assert!(bare.command.is_none() && !bare.help);
        assert_eq!(help_text(bare.command), HELP);
        assert!(invoked(&["help"]).unwrap().help);
        let err = invoked(&["help", "nonsense"]).err().unwrap().to_string();
        assert!(err.contains("unknown command `nonsense`"), "{err}");
    }

    #[test]
    fn unknown_or_foreign_options_point_at_the_commands_help() {
        assert!(invoked(&["bogus"]).is_err());
        let err = parsed(&invoked(&["cross", "--bogus"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option --bogus for `cargo xtask cross`"),
            "{err}"
        );
        assert!(err.contains("see `cargo xtask cross --help`"), "{err}");
        // An option of another command is refused, not silently ignored.
        let err = parsed(&invoked(&["cross", "--host", "me@vm"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("see `cargo xtask cross --help`"), "{err}");
        // Help does not hide a mistake.
        assert!(parsed(&invoked(&["cross", "--help", "--bogus"]).unwrap()).is_err());
        let err = invoked(&["--dry-run"]).err().unwrap().to_string();
        assert!(err.contains("cargo xtask --help"), "{err}");
        let err = parsed(&invoked(&["vm-test", "run", "again"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected argument `again`"), "{err}");
    }

    #[test]
    fn every_listed_option_is_handled() {
        for c in COMMANDS {
            for o in c.spec.options {
                let mut words = vec![o.name.to_string()];
                if let Some(v) = o.value {
                    words.push(
                        match o.name {
                            "--arch" => "x86_64",
                            "--runs" | "--seconds" => "1",
                            _ => v,
                        }
                        .to_string(),
                    );
                }
                if let Err(e) = (c.parse)(&words) {
                    assert!(
                        !e.to_string().contains("not handled"),
                        "{} {}: {e}",
                        c.spec.name,
                        o.name
                    );
                }
            }
        }
    }
}
