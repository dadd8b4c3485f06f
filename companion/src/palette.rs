//! Colour for the outputs people read (the stream's table, the report's
//! text, the demo), only on a terminal: `--color` and the environment
//! (`NO_COLOR`, `CLICOLOR`, `CLICOLOR_FORCE`) decide once, through
//! `anstream`, and the writers get a [`Palette`]. JSON, CSV, recordings and
//! pictures never take one.
//!
//! The choice is made before anything is written rather than by stripping
//! styles from the output (`anstream::AutoStream`): with colour off the
//! table's hot path writes the same bytes as ever, with one test per line.

use anstyle::{AnsiColor, Effects, Style};
use maptrace_abi::EventKind;
use std::io::Write;

/// The styles of each kind of text; every one plain when colour is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Palette {
    /// Records lost, skipped or corrupt: `!! LOST` lines, INCOMPLETE.
    pub loss: Style,
    /// The `error:` of a command that failed, as clap styles its own.
    pub error: Style,
    /// What the reader must notice but is not a loss: a kext reload.
    pub notice: Style,
    /// A reference held after the last unmap (HELD) and leak suspects.
    pub suspect: Style,
    /// A stream or report that lost nothing.
    pub ok: Style,
    /// Column titles and section headings.
    pub heading: Style,
    /// The KIND column of a map (the lifecycle's kinds each have one).
    pub mmap: Style,
    /// The KIND column of a page-in.
    pub pagein: Style,
    /// The KIND column of a last unmap.
    pub mnomap: Style,
    /// The kext's own bookkeeping rows (path, proc, mark), shown dimmed.
    pub bookkeeping: Style,
}

const PLAIN: Style = Style::new();

impl Palette {
    /// No colour: every style writes nothing.
    pub const PLAIN: Palette = Palette {
        loss: PLAIN,
        error: PLAIN,
        notice: PLAIN,
        suspect: PLAIN,
        ok: PLAIN,
        heading: PLAIN,
        mmap: PLAIN,
        pagein: PLAIN,
        mnomap: PLAIN,
        bookkeeping: PLAIN,
    };

    /// ANSI colours: the 8 basic ones, which every terminal theme adapts.
    pub const ANSI: Palette = Palette {
        loss: fg(AnsiColor::Red).effects(Effects::BOLD),
        error: fg(AnsiColor::Red).effects(Effects::BOLD),
        notice: fg(AnsiColor::Yellow),
        suspect: fg(AnsiColor::Yellow).effects(Effects::BOLD),
        ok: fg(AnsiColor::Green),
        heading: PLAIN.effects(Effects::BOLD),
        mmap: fg(AnsiColor::Green),
        pagein: fg(AnsiColor::Cyan),
        mnomap: fg(AnsiColor::Magenta),
        bookkeeping: PLAIN.effects(Effects::DIMMED),
    };

    /// [`Palette::ANSI`] when `colour`, else [`Palette::PLAIN`].
    pub fn new(colour: bool) -> Palette {
        if colour {
            Palette::ANSI
        } else {
            Palette::PLAIN
        }
    }

    /// The palette for standard output under `choice` (`--color`): colour
    /// when forced, or in `auto` when stdout is a terminal and the
    /// environment allows it (a non-empty `NO_COLOR` forbids it,
    /// `CLICOLOR_FORCE` asks for it, as `anstream` reads them).
    pub fn for_stdout(choice: anstream::ColorChoice) -> Palette {
        Palette::for_stream(choice, &std::io::stdout())
    }

    /// The palette for standard error under `choice`, decided as
    /// [`Palette::for_stdout`] decides for standard output: the command's
    /// own error lines, beside clap's.
    pub fn for_stderr(choice: anstream::ColorChoice) -> Palette {
        Palette::for_stream(choice, &std::io::stderr())
    }

    fn for_stream<S: anstream::stream::RawStream>(
        choice: anstream::ColorChoice,
        stream: &S,
    ) -> Palette {
        let choice = match choice {
            anstream::ColorChoice::Auto => anstream::AutoStream::<S>::choice(stream),
            forced => forced,
        };
        Palette::new(choice != anstream::ColorChoice::Never)
    }

    /// Whether every style is plain (nothing to write around text).
    pub fn is_plain(&self) -> bool {
        *self == Palette::PLAIN
    }

    /// The style of the KIND column for `kind`.
    #[inline(always)]
    pub fn kind(&self, kind: EventKind) -> Style {
        match kind {
            EventKind::Mmap => self.mmap,
            EventKind::Pagein => self.pagein,
            EventKind::Mnomap => self.mnomap,
            EventKind::Path | EventKind::Proc | EventKind::Mark => self.bookkeeping,
            EventKind::FileMmap | EventKind::Open | EventKind::Close => PLAIN,
        }
    }
}

const fn fg(c: AnsiColor) -> Style {
    Style::new().fg_color(Some(anstyle::Color::Ansi(c)))
}

/// Appends `text` in `style`: the text alone when the style is plain.
#[inline(always)]
pub fn push_styled(out: &mut Vec<u8>, style: Style, text: &[u8]) {
    if style.is_plain() {
        out.extend_from_slice(text);
    } else {
        push_styled_slow(out, style, text);
    }
}

#[cold]
fn push_styled_slow(out: &mut Vec<u8>, style: Style, text: &[u8]) {
    let _ = write!(out, "{}", style.render());
    out.extend_from_slice(text);
    let _ = write!(out, "{}", style.render_reset());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_palette_writes_no_escape() {
        let mut out = Vec::new();
        for style in [Palette::PLAIN.loss, Palette::PLAIN.kind(EventKind::Pagein)] {
            push_styled(&mut out, style, b"LOST");
            assert_eq!(format!("{style}x{style:#}"), "x");
        }
        assert_eq!(out, b"LOSTLOST");
        assert!(Palette::new(false).is_plain());
    }

    #[test]
    fn the_ansi_palette_wraps_text_and_resets() {
        let mut out = Vec::new();
        push_styled(&mut out, Palette::ANSI.loss, b"LOST");
        assert_eq!(out, b"\x1b[1m\x1b[31mLOST\x1b[0m");
        assert!(!Palette::new(true).is_plain());
        // The lifecycle kinds each have a colour of their own.
        let p = Palette::ANSI;
        let kinds = [EventKind::Mmap, EventKind::Pagein, EventKind::Mnomap];
        for (i, a) in kinds.iter().enumerate() {
            assert!(!p.kind(*a).is_plain());
            for b in &kinds[i + 1..] {
                assert_ne!(p.kind(*a), p.kind(*b));
            }
        }
    }

    #[test]
    fn a_forced_choice_ignores_the_terminal() {
        // The test's stdout is a pipe or a file: auto says no by itself
        // unless the environment forces it, which the forced choices ignore.
        assert!(!Palette::for_stdout(anstream::ColorChoice::Always).is_plain());
        assert!(Palette::for_stdout(anstream::ColorChoice::Never).is_plain());
    }
}
