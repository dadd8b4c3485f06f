//! Colour: only in the outputs people read (the stream's table, the
//! report's text), only when `--color always` asks or, by default, when
//! stdout is a terminal and `NO_COLOR` is not set; never in JSON or CSV.
//! The tests run the binary with stdout piped, as a pipeline would.

mod common;

use common::*;
use std::path::Path;
use tempfile::TempDir;

/// The start of every ANSI escape the palette writes (CSI).
const CSI: &str = "\u{1b}[";

/// Red and bold, the style of a loss.
const LOSS: &str = "\u{1b}[1m\u{1b}[31m";

/// Yellow and bold, the style of a held reference and of suspects.
const SUSPECT: &str = "\u{1b}[1m\u{1b}[33m";

/// stdout of `maptrace ARGS FILE` with `env` set, and the exit status.
fn run(args: &[&str], file: &Path, env: &[(&str, &str)]) -> (String, i32) {
    let mut cmd = maptrace();
    cmd.args(args).arg(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.code().unwrap(),
    )
}

/// `s` with its styles taken out, as a terminal without colour shows it.
fn strip(s: &str) -> String {
    anstream::adapter::strip_str(s).to_string()
}

#[test]
fn a_piped_table_has_no_colour_unless_asked() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "lossy.mtr", &lossy_batches(100));
    let (plain, status) = run(&["stream"], &f, &[]);
    assert_eq!(status, 3, "{plain}");
    assert!(plain.contains("!! LOST "), "{plain}");
    assert!(!plain.contains(CSI), "{plain:?}");

    // Asked for: the loss in red, the same text once the styles are out
    // (columns still line up), and the same status. `--color` is global.
    for args in [
        &["--color", "always", "stream"][..],
        &["stream", "--color=always"],
    ] {
        let (coloured, status) = run(args, &f, &[]);
        assert_eq!(status, 3);
        assert!(
            coloured.contains(&format!("{LOSS}!! LOST ")),
            "{coloured:?}"
        );
        assert_eq!(strip(&coloured), plain);
    }

    // CLICOLOR_FORCE colours a pipe by default (`| less -R`), and a
    // non-empty NO_COLOR wins over it; an empty NO_COLOR is no request.
    let forced = run(&["stream"], &f, &[("CLICOLOR_FORCE", "1")]).0;
    assert!(forced.contains(LOSS), "{forced:?}");
    let empty_no_colour = [("CLICOLOR_FORCE", "1"), ("NO_COLOR", "")];
    assert!(run(&["stream"], &f, &empty_no_colour).0.contains(LOSS));
    for env in [
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")][..],
        &[("NO_COLOR", "1")],
    ] {
        let (out, _) = run(&["stream"], &f, env);
        assert_eq!(out, plain, "{env:?}");
    }
    // `never` overrides the environment; `always` overrides NO_COLOR (an
    // explicit flag beats a default, as no-color.org asks).
    let never = run(
        &["--color", "never", "stream"],
        &f,
        &[("CLICOLOR_FORCE", "1")],
    );
    assert_eq!(never.0, plain);
    let always = run(&["--color", "always", "stream"], &f, &[("NO_COLOR", "1")]);
    assert!(always.0.contains(LOSS));
}

#[test]
fn the_table_colours_kinds_and_its_header_but_keeps_its_columns() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let plain = run(&["stream"], &f, &[]).0;
    let coloured = run(&["--color", "always", "stream"], &f, &[]).0;
    assert_eq!(strip(&coloured), plain);
    let header = coloured.lines().next().unwrap();
    assert!(header.starts_with("\u{1b}[1m") && header.contains("TIME(s)"));
    // Each lifecycle kind in its own colour, padding outside the style.
    for kind in ["mmap", "pagein", "mnomap"] {
        let styled = coloured
            .lines()
            .find_map(|l| {
                let at = l.find(&format!("{kind}\u{1b}[0m "))?;
                l[..at].rfind(CSI).map(|s| &l[s..at])
            })
            .unwrap_or_else(|| panic!("{kind} not styled: {coloured:?}"));
        assert!(styled.ends_with('m'), "{styled:?}");
    }
}

#[test]
fn json_and_csv_never_take_colour() {
    let dir = TempDir::new().unwrap();
    let lossy = fixture(&dir, "lossy.mtr", &lossy_batches(100));
    let life = fixture(&dir, "life.mtr", &lifecycle_batches());
    let force = [("CLICOLOR_FORCE", "1")];
    for (args, f) in [
        (&["stream", "--json"][..], &lossy),
        (&["stream", "--format", "json"], &lossy),
        (&["stream", "--format", "csv"], &lossy),
        (&["report", "--json"], &life),
        (&["report", "--format", "csv"], &life),
        (&["export"], &life),
        (&["info", "--json"], &lossy),
    ] {
        for color in ["--color=always", "--color=auto"] {
            let mut all = vec![color];
            all.extend_from_slice(args);
            let (out, _) = run(&all, f, &force);
            assert!(!out.is_empty(), "{all:?}");
            assert!(!out.contains('\u{1b}'), "{all:?}: {out:?}");
        }
    }
}

#[test]
fn the_report_marks_held_references_and_suspects() {
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let (plain, status) = run(&["report"], &f, &[]);
    assert!(!plain.contains(CSI), "{plain:?}");
    let (coloured, status_coloured) = run(&["--color", "always", "report"], &f, &[]);
    assert_eq!((status, status_coloured), (0, 0));
    assert_eq!(strip(&coloured), plain);
    assert!(coloured.contains(&format!("{SUSPECT}HELD")), "{coloured:?}");
    assert!(
        coloured.contains(&format!("{SUSPECT}LEAK SUSPECTS: 2")),
        "{coloured:?}"
    );
    // Headings in bold.
    assert!(coloured.contains("\u{1b}[1mPROCESSES"), "{coloured:?}");

    // A lossy report says INCOMPLETE in the colour of a loss.
    let lossy = fixture(&dir, "lossy.mtr", &lossy_batches(100));
    let (plain, _) = run(&["report"], &lossy, &[]);
    let (coloured, _) = run(&["report", "--color", "always"], &lossy, &[]);
    assert_eq!(strip(&coloured), plain);
    assert!(
        coloured.contains(&format!("{LOSS}!! INCOMPLETE")),
        "{coloured:?}"
    );
}

#[test]
fn a_colour_choice_is_one_of_three() {
    let out = maptrace()
        .args(["--color", "sometimes", "stream"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("possible values: auto, always, never"),
        "{err}"
    );
}

/// Output and status of `maptrace ARGS` with `env` set.
fn run_clap(args: &[&str], env: &[(&str, &str)]) -> (String, String, i32) {
    let mut cmd = maptrace();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap(),
    )
}

/// `CLICOLOR_FORCE` stands for a terminal: `auto` colours under it.
const TERMINAL: [(&str, &str); 1] = [("CLICOLOR_FORCE", "1")];

#[test]
fn help_follows_the_colour_choice_wherever_it_is_given() {
    let plain = run_clap(&["stream", "--help"], &[]).0;
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    // Auto on a terminal: clap's bold headings.
    let auto = run_clap(&["stream", "--help"], &TERMINAL).0;
    assert!(auto.contains("\u{1b}[1m"), "{auto:?}");
    assert_eq!(strip(&auto), plain);

    // `--help` acts where clap meets it, so a `--color` after it must
    // count too: clap is told before it parses.
    for args in [
        &["--color", "never", "stream", "--help"][..],
        &["stream", "--color=never", "--help"],
        &["stream", "--help", "--color", "never"],
        &["--color", "always", "stream", "--help", "--color=never"],
    ] {
        let (out, _, status) = run_clap(args, &TERMINAL);
        assert_eq!((status, out.as_str()), (0, plain.as_str()), "{args:?}");
    }
    for args in [
        &["--color", "always", "stream", "--help"][..],
        &["stream", "--help", "--color=always"],
        &["--color", "never", "stream", "--color", "always", "--help"],
    ] {
        let (out, _, status) = run_clap(args, &[("NO_COLOR", "1")]);
        assert_eq!(status, 0, "{args:?}");
        assert!(out.contains("\u{1b}[1m"), "{args:?}: {out:?}");
        assert_eq!(strip(&out), plain);
    }
    // NO_COLOR beats a terminal, as it does for the table; `help` too.
    let no_colour = [("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")];
    assert_eq!(run_clap(&["stream", "--help"], &no_colour).0, plain);
    assert_eq!(run_clap(&["help", "stream"], &no_colour).0, plain);
    let always = run_clap(&["--color=always", "help", "stream"], &[]).0;
    assert_eq!(strip(&always), plain);
    assert_ne!(always, plain);
}

#[test]
fn clap_errors_follow_the_colour_choice() {
    let (_, plain, status) = run_clap(&["stream", "--bogus"], &[]);
    assert_eq!(status, 2);
    assert!(plain.contains("unexpected argument '--bogus'"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    for args in [
        &["--color", "always", "stream", "--bogus"][..],
        &["stream", "--bogus", "--color=always"],
    ] {
        let (_, err, status) = run_clap(args, &[]);
        assert_eq!(status, 2);
        assert!(err.contains(CSI), "{args:?}: {err:?}");
        assert_eq!(strip(&err), plain);
    }
    for args in [
        &["--color", "never", "stream", "--bogus"][..],
        &["stream", "--bogus", "--color", "never"],
        // After `--` a `--color` is a file name, not a choice.
        &["--color=never", "stream", "--bogus", "--", "--color=always"],
    ] {
        let (_, err, status) = run_clap(args, &TERMINAL);
        assert_eq!(status, 2, "{args:?}");
        assert!(!err.contains('\u{1b}'), "{args:?}: {err:?}");
    }
    let (_, err, _) = run_clap(
        &["--color=always", "stream", "--bogus", "--", "--color=never"],
        &[],
    );
    assert!(err.contains(CSI), "{err:?}");

    // A check of the command's own (`report --since 5 --until 2`) ends as
    // clap's errors do, in the same colour.
    let dir = TempDir::new().unwrap();
    let f = fixture(&dir, "life.mtr", &lifecycle_batches());
    let f = f.to_str().unwrap();
    let window = ["report", f, "--since", "5", "--until", "2"];
    let (_, plain, status) = run_clap(&window, &[]);
    assert_eq!(status, 2, "{plain}");
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    let never = [&["--color", "never"][..], &window].concat();
    assert_eq!(run_clap(&never, &TERMINAL).1, plain);
    let always = [&window[..], &["--color", "always"]].concat();
    let coloured = run_clap(&always, &[]).1;
    assert!(coloured.contains(CSI), "{coloured:?}");
    assert_eq!(strip(&coloured), plain);
}

#[test]
fn a_failed_command_says_error_in_clap_s_colour() {
    // A recording that is not there: the command's own failure (status 1),
    // on standard error beside clap's, in the same bold red `error:`.
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("missing.mtr");
    let missing = missing.to_str().unwrap();
    let (_, plain, status) = run_clap(&["info", missing], &[]);
    assert_eq!(status, 1, "{plain}");
    assert!(plain.starts_with("maptrace: error: "), "{plain:?}");
    assert!(plain.contains("missing.mtr"), "{plain}");
    for (args, env) in [
        (&["--color", "always", "info", missing][..], &[][..]),
        (&["info", missing], &TERMINAL),
    ] {
        let (_, err, status) = run_clap(args, env);
        assert_eq!(status, 1);
        assert!(
            err.starts_with(&format!("maptrace: {LOSS}error:\u{1b}[0m ")),
            "{args:?} {env:?}: {err:?}"
        );
        assert_eq!(strip(&err), plain);
    }
    for (args, env) in [
        (&["info", missing, "--color=never"][..], &TERMINAL[..]),
        (
            &["info", missing],
            &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
        ),
    ] {
        assert_eq!(run_clap(args, env).1, plain, "{args:?} {env:?}");
    }
}

#[test]
fn a_bad_colour_choice_is_still_refused_by_clap() {
    for args in [
        &["--color", "sometimes", "--help"][..],
        &["stream", "--color=sometimes"],
        &["--color=Never", "stream"],
        &["stream", "--color"],
        &["stream", "--color="],
        &["--color", "--help"],
    ] {
        for env in [
            &[][..],
            &TERMINAL,
            &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
        ] {
            let (out, err, status) = run_clap(args, env);
            assert_eq!(status, 2, "{args:?} {env:?}: {out}{err}");
            assert!(out.is_empty(), "{args:?}: {out}");
            let shown = strip(&err);
            assert!(shown.starts_with("error: "), "{args:?}: {err}");
            // No choice was made: the environment's, as for any help.
            assert_eq!(
                err.contains('\u{1b}'),
                env == TERMINAL,
                "{args:?} {env:?}: {err:?}"
            );
        }
    }
    let err = run_clap(&["--color", "sometimes", "stream"], &[]).1;
    assert!(
        err.contains("invalid value 'sometimes' for '--color <WHEN>'"),
        "{err}"
    );
}

/// Bold, the style of headings and of the labels of `info` and `stats`.
const HEADING: &str = "\u{1b}[1m";

/// Green, the style of "nothing lost".
const OK: &str = "\u{1b}[32m";

#[test]
fn info_colours_its_labels_and_losses_like_the_report() {
    let dir = TempDir::new().unwrap();
    let lossy = fixture(&dir, "lossy.mtr", &lossy_batches(100));
    let (plain, status) = run(&["info"], &lossy, &[]);
    assert_eq!(status, 3, "{plain}");
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    let (coloured, status) = run(&["--color", "always", "info"], &lossy, &[]);
    assert_eq!(status, 3);
    assert_eq!(strip(&coloured), plain);
    assert!(
        coloured.starts_with(&format!("{HEADING}recording")),
        "{coloured:?}"
    );
    let losses = coloured.lines().find(|l| l.contains("dropped")).unwrap();
    assert!(
        losses.starts_with(&format!("{HEADING}losses")),
        "{losses:?}"
    );
    assert!(losses.contains(LOSS), "{losses:?}");

    // Nothing lost: in the colour of "nothing lost".
    let life = fixture(&dir, "life.mtr", &lifecycle_batches());
    let coloured = run(&["info", "--color=always"], &life, &[]).0;
    let losses = coloured.lines().find(|l| l.contains("dropped")).unwrap();
    assert!(losses.contains(OK) && !losses.contains(LOSS), "{losses:?}");

    // Cut off: the end line says so in the colour of a loss.
    let bytes = std::fs::read(&life).unwrap();
    let cut = dir.path().join("cut.mtr");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let (plain, _) = run(&["info"], &cut, &[]);
    let (coloured, status) = run(&["--color", "always", "info"], &cut, &[]);
    assert_eq!(status, 3);
    assert_eq!(strip(&coloured), plain);
    assert!(coloured.contains(&format!("{LOSS}CUT OFF")), "{coloured:?}");

    // Plain whenever colour is not asked for or is refused.
    for (args, env) in [
        (&["info"][..], &[][..]),
        (&["--color", "never", "info"], &TERMINAL),
        (&["info"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]),
    ] {
        assert_eq!(run(args, &cut, env).0, plain, "{args:?} {env:?}");
    }
    assert!(run(&["info"], &cut, &TERMINAL).0.contains(LOSS));
}

#[test]
fn stats_colours_its_headings_and_drops_like_the_report() {
    let dir = TempDir::new().unwrap();
    let f = dir.path().join("stats.mtr");
    let (batches, stats) = lossy_unread_tail(10, 100);
    write_recording_with_stats(&f, &batches, Some(&stats));
    let (plain, status) = run(&["stats"], &f, &[]);
    assert_eq!(status, 0, "{plain}");
    assert!(plain.contains("records dropped so far"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    let (coloured, status) = run(&["--color", "always", "stats"], &f, &[]);
    assert_eq!(status, 0);
    assert_eq!(strip(&coloured), plain);
    assert!(
        coloured.starts_with(&format!("{HEADING}kext")),
        "{coloured:?}"
    );
    let titles = coloured.lines().find(|l| l.contains("backlog")).unwrap();
    assert!(titles.starts_with(HEADING), "{titles:?}");
    assert!(
        coloured
            .lines()
            .any(|l| l.starts_with(&format!("{LOSS}!! ")) && l.contains("records dropped")),
        "{coloured:?}"
    );
    // The shard that dropped shows its count as a loss, padding outside.
    let shard = coloured
        .lines()
        .find(|l| l.trim_start().starts_with("0 "))
        .unwrap();
    assert!(shard.contains(&format!(" {LOSS}")), "{shard:?}");
    for (args, env) in [
        (&["--color", "never", "stats"][..], &TERMINAL[..]),
        (&["stats"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]),
    ] {
        assert_eq!(run(args, &f, env).0, plain, "{args:?} {env:?}");
    }
    assert!(run(&["stats"], &f, &TERMINAL).0.contains(LOSS));
    // JSON never.
    let json = run(&["--color", "always", "stats", "--json"], &f, &TERMINAL).0;
    assert!(
        json.starts_with('{') && !json.contains('\u{1b}'),
        "{json:?}"
    );
}
