//! JSON text primitives for the hand-written writers: string literals
//! escaped byte for byte as `serde_json` escapes them (the contract test
//! compares the two), and integers without allocation.
//!
//! Self-contained on purpose: the human outputs escape paths their own way
//! (for terminals); JSON escaping only has to follow RFC 8259.

/// Lower-case hex digits, as `serde_json` writes `\u00XX`.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `b` needs an escape in a JSON string.
#[inline(always)]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Appends `s` as a JSON string literal, quotes included.
///
/// `"` and `\` are escaped, as are the control characters below U+0020:
/// `\b \t \n \f \r` by name, the others as `\u00XX`. Everything else is
/// copied (DEL and non-ASCII text included), which is what `serde_json`
/// writes. A `&str` is valid UTF-8, so the result is always valid JSON.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends the decimal digits of `v`. Most fields of a record are small
/// (counts, errno, flags), so one digit is written without `itoa`.
#[inline(always)]
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    if v < 10 {
        out.push(b'0' + v as u8);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}

/// Appends the decimal digits of `v`, with a `-` when negative.
#[inline(always)]
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Appends `v` as a JSON string of its decimal digits (`"4098"`): how the
/// stream carries 64-bit ids, which tools that read numbers as doubles
/// (jq, JavaScript) would round above 2^53.
#[inline(always)]
pub fn push_u64_str(out: &mut Vec<u8>, v: u64) {
    out.push(b'"');
    push_u64(out, v);
    out.push(b'"');
}

/// Appends `v` as 16 lower-case hex digits in quotes (`"00000000000012ab"`).
#[inline(always)]
pub fn push_hex16_str(out: &mut Vec<u8>, v: u64) {
    let mut hex = [b'"'; 18];
    for (i, h) in hex[1..17].iter_mut().enumerate() {
        *h = HEX[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
    out.extend_from_slice(&hex);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_exactly_as_serde_json_does() {
        let mut all_ascii = String::new();
        for b in 0u8..0x80 {
            all_ascii.push(char::from(b));
        }
        for s in [
            "",
            "plain/path",
            "a\"b\\c\nd\u{1}é",
            "\u{1b}[31mred\u{1b}[0m",
            "\u{8}\u{c}\u{7f}",
            "line\nbreak\r\n\ttab",
            "\u{fffd}invalid utf-8 made lossy",
            "日本語/ファイル",
            &all_ascii,
        ] {
            assert_eq!(lit(s), serde_json::to_string(s).unwrap(), "{s:?}");
            let back: String = serde_json::from_str(&lit(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn numbers_and_ids() {
        let mut out = Vec::new();
        for v in [0, 9, 10, 4098, u64::MAX] {
            out.clear();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
            out.clear();
            push_u64_str(&mut out, v);
            assert_eq!(out, format!("\"{v}\"").as_bytes());
        }
        for v in [i64::MIN, -1, 0, 7, i64::MAX] {
            out.clear();
            push_i64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        out.clear();
        push_hex16_str(&mut out, 0x12ab);
        assert_eq!(out, b"\"00000000000012ab\"");
    }
}
