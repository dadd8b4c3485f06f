//! Lexing: tokens with their columns, and the value syntaxes (sizes,
//! durations, protections, open modes, flags) in both directions.

use std::time::Duration;

use super::ParseError;
use crate::vm::{OpenMode, map_flags, prot};

#[derive(Clone, Debug)]
pub(super) struct Tok<'a> {
    pub(super) text: &'a str,
    pub(super) col: usize,
}

pub(super) fn tokens(line: &str) -> Vec<Tok<'_>> {
    let code = line.split('#').next().unwrap_or("");
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push(Tok {
                    text: &code[s..i],
                    col: s + 1,
                });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Tok {
            text: &code[s..],
            col: s + 1,
        });
    }
    out
}

pub(super) struct Cursor<'a> {
    pub(super) line: usize,
    pub(super) toks: Vec<Tok<'a>>,
    pub(super) i: usize,
    pub(super) end_col: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn err<T>(&self, col: usize, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            col,
            msg: msg.into(),
        })
    }

    pub(super) fn next(&mut self, what: &str) -> Result<Tok<'a>, ParseError> {
        match self.toks.get(self.i) {
            Some(t) => {
                self.i += 1;
                Ok(t.clone())
            }
            None => self.err(self.end_col, format!("expected {what}")),
        }
    }

    pub(super) fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.i)
    }

    pub(super) fn done(&self) -> Result<(), ParseError> {
        match self.peek() {
            Some(t) => self.err(t.col, format!("unexpected `{}`", t.text)),
            None => Ok(()),
        }
    }

    pub(super) fn path(&mut self) -> Result<String, ParseError> {
        let t = self.next("a path")?;
        if !t.text.starts_with('/') {
            return self.err(t.col, format!("`{}` is not an absolute path", t.text));
        }
        Ok(t.text.to_string())
    }

    pub(super) fn label(&mut self, what: &str) -> Result<String, ParseError> {
        let t = self.next(what)?;
        if !is_label(t.text) {
            return self.err(t.col, format!("`{}` is not a valid {what}", t.text));
        }
        Ok(t.text.to_string())
    }

    pub(super) fn size(&mut self, what: &str) -> Result<u64, ParseError> {
        let t = self.next(what)?;
        parse_size(t.text).ok_or_else(|| ParseError {
            line: self.line,
            col: t.col,
            msg: format!("bad {what} `{}`", t.text),
        })
    }

    /// An optional `force`.
    pub(super) fn force_flag(&mut self) -> bool {
        match self.peek() {
            Some(t) if t.text == "force" => {
                self.i += 1;
                true
            }
            _ => false,
        }
    }

    /// `as LABEL` at the end of the line.
    pub(super) fn as_label(&mut self, what: &str) -> Result<String, ParseError> {
        let t = self.next("`as`")?;
        if t.text != "as" {
            return self.err(t.col, format!("expected `as`, found `{}`", t.text));
        }
        self.label(what)
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// `4096`, `16K`, `1M`, `2G` (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = if let Some(hex) = num.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()?
    } else {
        num.parse().ok()?
    };
    n.checked_mul(mul)
}

pub(super) fn fmt_size(n: u64) -> String {
    if n != 0 && n % (1 << 20) == 0 {
        format!("{}M", n >> 20)
    } else if n != 0 && n % (1 << 10) == 0 {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    if let Some(n) = s.strip_suffix("ms") {
        return n.parse().ok().map(Duration::from_millis);
    }
    if let Some(n) = s.strip_suffix("us") {
        return n.parse().ok().map(Duration::from_micros);
    }
    s.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .map(Duration::from_secs)
}

/// A duration in the largest unit that holds it exactly, so it parses back
/// (a long sleep in microseconds would overflow the parser's u64).
pub(super) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

pub(super) fn parse_prot(s: &str) -> Option<i32> {
    if s == "none" || s == "-" {
        return Some(0);
    }
    let mut p = 0;
    for c in s.chars() {
        let bit = match c {
            'r' => prot::READ,
            'w' => prot::WRITE,
            'x' => prot::EXEC,
            _ => return None,
        };
        if p & bit != 0 {
            return None;
        }
        p |= bit;
    }
    Some(p)
}

pub(super) fn fmt_prot(p: i32) -> String {
    if p == 0 {
        return "none".into();
    }
    [(prot::READ, 'r'), (prot::WRITE, 'w'), (prot::EXEC, 'x')]
        .iter()
        .filter(|(b, _)| p & b != 0)
        .map(|(_, c)| *c)
        .collect()
}

pub(super) fn parse_open_mode(s: &str) -> Option<OpenMode> {
    match s {
        "ro" => Some(OpenMode::ReadOnly),
        "rw" => Some(OpenMode::ReadWrite),
        "evtonly" => Some(OpenMode::EvtOnly),
        _ => None,
    }
}

pub(super) fn fmt_open_mode(m: OpenMode) -> &'static str {
    match m {
        OpenMode::ReadOnly => "",
        OpenMode::ReadWrite => " rw",
        OpenMode::EvtOnly => " evtonly",
    }
}

pub(super) fn parse_flags(s: &str) -> Option<i32> {
    let mut f = 0;
    for part in s.split(',') {
        f |= match part {
            "shared" => map_flags::SHARED,
            "private" => map_flags::PRIVATE,
            "fixed" => map_flags::FIXED,
            _ => return None,
        };
    }
    let kinds = f & (map_flags::SHARED | map_flags::PRIVATE);
    (kinds == map_flags::SHARED || kinds == map_flags::PRIVATE).then_some(f)
}

pub(super) fn fmt_flags(f: i32) -> String {
    let mut v = Vec::new();
    if f & map_flags::SHARED != 0 {
        v.push("shared");
    }
    if f & map_flags::PRIVATE != 0 {
        v.push("private");
    }
    if f & map_flags::FIXED != 0 {
        v.push("fixed");
    }
    v.join(",")
}
