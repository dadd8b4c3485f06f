//! Text primitives that the pipeline and every renderer share: escaping for
//! terminals and XML, protections, mark names and times (JSON string literals
//! are `json`'s). They depend on nothing else in the crate, so the pipeline can
//! escape a path once without reaching up into the renderers.
//!
//! Paths and names come from the traced machine: anyone who can create a
//! file chooses them. Every human output shows them through [`shown`] (and
//! SVG through [`xml_text`]), so a name cannot send terminal escapes to the
//! reader (often root) nor forge a row with a newline.

use maptrace_abi::Mark;
use std::borrow::Cow;

/// Whether `c` must not reach a terminal or a one-line listing as it is:
/// C0 controls (newline, ESC ...), DEL, C1 controls (U+009B is an 8-bit
/// CSI), bidirectional overrides and isolates (they reorder what follows
/// on screen), line and paragraph separators, and the backslash that starts
/// our escapes (so an escape in the output always means an escaped byte).
fn needs_escape(c: char) -> bool {
    matches!(c,
        '\\' | '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` as it may be shown to a person: characters of [`needs_escape`]
/// become `\\`, `\n`, `\t`, `\r` or `\u{..}`; everything else stays.
/// Borrows when there is nothing to escape (the usual case).
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A file path as it may be shown (see [`shown`]).
pub fn shown_path(p: &std::path::Path) -> String {
    shown(&p.display().to_string()).into_owned()
}

/// Appends [`shown`]`(s)`.
pub fn push_shown(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(shown(s).as_bytes());
}

/// `s` as XML character data or an attribute value: [`shown`] first (XML
/// 1.0 allows no control characters at all, not even as references), then
/// the five markup characters as entities.
pub fn xml_text(s: &str) -> String {
    let s = shown(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // The two non-characters XML 1.0 excludes (`Char`, XML 1.0 §2.2).
            '\u{fffe}' | '\u{ffff}' => {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// `PROT_READ`, `PROT_WRITE`, `PROT_EXEC` as `rwx` letters.
pub fn prot_str(p: u32) -> [u8; 3] {
    [
        if p & 1 != 0 { b'r' } else { b'-' },
        if p & 2 != 0 { b'w' } else { b'-' },
        if p & 4 != 0 { b'x' } else { b'-' },
    ]
}

/// The stable name of a mark.
pub fn mark_name(m: Mark) -> &'static str {
    match m {
        Mark::Start => "start",
        Mark::Config => "config",
        Mark::VectorPatched => "vector_patched",
        Mark::Unknown(_) => "unknown",
    }
}

/// Nanoseconds since the Unix epoch as a UTC date and time
/// (`2026-12-05 03:35:46.123 UTC`).
pub fn utc_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let millis = (unix_ns % 1_000_000_000) / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (the proleptic Gregorian calendar), after
    // Howard Hinnant's `civil_from_days`; u64::MAX ns is in year 2554.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Nanoseconds as `s.micros`.
pub fn secs(ns: u64) -> String {
    let mut v = Vec::with_capacity(24);
    push_secs(&mut v, ns);
    String::from_utf8_lossy(&v).into_owned()
}

/// Appends nanoseconds as `s.micros` (six digits after the point).
pub(crate) fn push_secs(out: &mut Vec<u8>, ns: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(ns / 1_000_000_000).as_bytes());
    out.push(b'.');
    let micros = (ns % 1_000_000_000) / 1000;
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_carries_no_control_character() {
        let hostile = "/tmp/a\u{1b}[2J\u{1b}]0;pwned\u{7}\nFAKE ROW\r\t\u{9b}31m\u{202e}gpj.exe\\x";
        let s = shown(hostile);
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        assert!(!s.contains('\u{202e}'), "{s:?}");
        assert_eq!(
            s,
            "/tmp/a\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\nFAKE ROW\\r\\t\\u{9b}31m\\u{202e}gpj.exe\\\\x"
        );
        assert!(matches!(shown("/usr/lib/dyld é"), Cow::Borrowed(_)));
    }

    #[test]
    fn xml_text_is_well_formed_character_data() {
        let t = xml_text("a<b>&\"'\u{1b}\u{0}\n\u{ffff}");
        assert_eq!(t, "a&lt;b&gt;&amp;&quot;&apos;\\u{1b}\\u{0}\\n\\u{ffff}");
        let doc = format!("<t a=\"{t}\">{t}</t>");
        roxmltree::Document::parse(&doc).unwrap();
    }

    #[test]
    fn utc_times_are_civil_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(
            utc_time(951_782_400_000_000_000),
            "2000-02-29 00:00:00.000 UTC"
        );
        assert_eq!(
            utc_time(1_764_000_000_123_456_789),
            "2025-11-24 16:00:00.123 UTC"
        );
        assert_eq!(utc_time(u64::MAX), "2554-07-21 23:34:33.709 UTC");
    }

    #[test]
    fn prot_letters() {
        assert_eq!(&prot_str(5), b"r-x");
        assert_eq!(&prot_str(0), b"---");
        assert_eq!(&prot_str(7), b"rwx");
    }
}
