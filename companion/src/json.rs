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

/// The escape of a byte [`needs_escape`] says needs, written into `buf`:
/// `\"`, `\\`, `\n`, `\t`, `\r`, `\b`, `\f` by name, the rest as `\u00XX`
/// (serde_json's choices).
#[inline]
fn escape(b: u8, buf: &mut [u8; 6]) -> &[u8] {
    let named = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\t' => b't',
        b'\r' => b'r',
        0x08 => b'b',
        0x0c => b'f',
        _ => {
            *buf = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ];
            return buf;
        }
    };
    buf[..2].copy_from_slice(&[b'\\', named]);
    &buf[..2]
}

/// Appends `s` as a JSON string literal, quotes included.
///
/// `"` and `\` are escaped, as are the control characters below U+0020:
/// `\b \t \n \f \r` by name, the others as `\u00XX`. Everything else is
/// copied (DEL and non-ASCII text included), which is what `serde_json`
/// writes. A `&str` is valid UTF-8, so the result is always valid JSON.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_runs(s, |part| out.extend_from_slice(part));
    out.push(b'"');
}

/// Hands `put` the parts of `s` escaped for a JSON string, in order: each
/// run of bytes copied as is and each escape between them (no quotes).
/// The one loop behind [`push_str`] and [`Cursor::escaped`]; inlined, so
/// each keeps its own way of storing a part (a `Vec` pushes its quotes:
/// through `put` they cost it a register).
#[inline(always)]
fn escape_runs(s: &str, mut put: impl FnMut(&[u8])) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        put(&bytes[start..i]);
        put(escape(b, &mut [0; 6]));
        start = i + 1;
    }
    put(&bytes[start..]);
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

/// The most bytes [`Cursor::escaped`] writes for `len` input bytes: a
/// control character becomes `\u00XX` (6 bytes), an invalid UTF-8 byte made
/// lossy becomes U+FFFD (3 bytes), plus the two quotes.
pub const fn escaped_max(len: usize) -> usize {
    6 * len + 2
}

/// Writes a line in place: room of the output already sized for the line's
/// worst case, filled front to back with no capacity checks and no calls
/// into the formatting machinery, then cut to what was written.
///
/// Variable-length parts (a path, a name) are written by the cursor, one
/// bounds-checked copy each; the runs of constants and numbers between
/// them by a [`Window`] the cursor opens over the next [`WINDOW`] bytes,
/// checked once (a check a write was about a fifth of a line's
/// instructions). A wrong bound is a panic, never a bad byte.
///
/// ```
/// # use maptrace::json::{Cursor, WINDOW};
/// let mut out = b"[".to_vec();
/// let start = out.len();
/// let mut c = Cursor::open(&mut out, 24 + WINDOW);
/// c.fixed(|w| w.u64(4098));
/// let n = c.written();
/// out.truncate(start + n);
/// assert_eq!(out, b"[4098");
/// ```
pub struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

/// The most bytes a [`Window`] holds.
pub const SPAN: usize = 512;
/// The most bytes one write of a window stores (a word of digits may run
/// past the digits it keeps).
const MAX_WRITE: usize = 128;
/// The room a window takes: its span and one write from its last byte. A
/// cursor needs this much room from where each window opens.
pub const WINDOW: usize = SPAN + MAX_WRITE;

impl<'a> Cursor<'a> {
    /// A cursor over `room` bytes appended to `out`: one growth check and
    /// one fill a line instead of one per field. The caller cuts `out` to
    /// its old length plus [`Cursor::written`]. Kept a local value (not
    /// behind a closure's reference), the position stays in a register.
    #[inline(always)]
    pub fn open(out: &'a mut Vec<u8>, room: usize) -> Cursor<'a> {
        let start = out.len();
        out.resize(start + room, 0);
        Cursor::new(&mut out[start..])
    }

    /// A cursor writing `buf` from its start.
    #[inline(always)]
    pub fn new(buf: &'a mut [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    /// The bytes written.
    #[inline(always)]
    pub fn written(self) -> usize {
        self.pos
    }

    /// Writes a run of constants and numbers through a [`Window`] at the
    /// position: at most [`SPAN`] bytes, in [`WINDOW`] bytes of room.
    #[inline(always)]
    pub fn fixed(&mut self, write: impl FnOnce(&mut Window<'_>)) {
        let buf = self.buf[self.pos..].first_chunk_mut().unwrap();
        let mut w = Window { buf, pos: 0 };
        write(&mut w);
        assert!(w.pos <= SPAN, "a window holds at most {SPAN} bytes");
        self.pos += w.pos;
    }

    /// Appends bytes of any length (an already escaped fragment).
    #[inline(always)]
    pub fn bytes(&mut self, s: &[u8]) {
        self.buf[self.pos..self.pos + s.len()].copy_from_slice(s);
        self.pos += s.len();
    }

    /// Appends `s` as a JSON string literal, escaped as [`push_str`]
    /// escapes it; at most [`escaped_max`]`(s.len())` bytes.
    pub fn escaped(&mut self, s: &str) {
        self.bytes(b"\"");
        escape_runs(s, |part| self.bytes(part));
        self.bytes(b"\"");
    }
}

/// A run of constants and numbers written by [`Cursor::fixed`]. Its room
/// has a length known at compile time and each write starts at the
/// position modulo [`SPAN`], so the compiler proves every write in bounds
/// and checks none; the cursor checks once, at the end, that the position
/// never passed [`SPAN`] (so it never wrapped).
pub struct Window<'a> {
    buf: &'a mut [u8; WINDOW],
    pos: usize,
}

impl Window<'_> {
    /// Stores `bytes` at the position and moves it on by `len` (at most
    /// `N`: the bytes after are overwritten by what follows or cut).
    #[inline(always)]
    fn put<const N: usize>(&mut self, bytes: &[u8; N], len: usize) {
        const { assert!(N <= MAX_WRITE) };
        let at = self.pos % SPAN;
        self.buf[at..at + N].copy_from_slice(bytes);
        self.pos += len;
    }

    /// Appends a constant; its length is known at compile time, so the copy
    /// is a few stores.
    #[inline(always)]
    pub fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        self.put(s, N);
    }

    /// Appends a constant with the bytes at the offsets `at` names replaced
    /// (single digits): one copy for a run of keys and small values. The
    /// offsets are constants too, so the replacements are plain stores.
    #[inline(always)]
    pub fn lit_with<const N: usize, const K: usize>(&mut self, s: &[u8; N], at: [(usize, u8); K]) {
        let mut line = *s;
        for (i, b) in at {
            line[i] = b;
        }
        self.put(&line, N);
    }

    /// Appends one byte.
    #[inline(always)]
    pub fn byte(&mut self, b: u8) {
        self.put(&[b], 1);
    }

    /// Appends `true` or `false`.
    #[inline(always)]
    pub fn bool(&mut self, v: bool) {
        if v {
            self.lit(b"true");
        } else {
            self.lit(b"false");
        }
    }

    /// Appends the decimal digits of `v`: up to eight digits at a time,
    /// each group converted with a few multiplies on one word (no digit
    /// loop); the small numbers most fields hold take shorter paths.
    #[inline(always)]
    pub fn u64(&mut self, v: u64) {
        if v < E8 {
            self.leading(v as u32);
        } else if v < E16 {
            self.leading((v / E8) as u32);
            self.full8((v % E8) as u32);
        } else {
            self.leading((v / E16) as u32);
            self.full8((v / E8 % E8) as u32);
            self.full8((v % E8) as u32);
        }
    }

    /// Appends the decimal digits of `v` as [`Window::u64`] does, through
    /// `memo`, the digits of the field's last value: a repeated value is
    /// copied, and a value with the same digits above the lowest eight (a
    /// clock or an offset that rises slowly) converts only those eight.
    #[inline(always)]
    pub fn u64_memo(&mut self, v: u64, memo: &mut DigitsMemo) {
        let len = usize::from(memo.len);
        if v == memo.value {
            self.put(&memo.ascii, len);
            return;
        }
        let high = v / E8;
        if high == memo.high && high != 0 {
            // The same digits above the lowest eight, and as many of them.
            // The old digits are copied before the new ones are stored: a
            // load that spans a store just made would wait for it.
            // Those digits are at most 12 (u64::MAX / 10^8 has 12).
            let low = (digits8((v % E8) as u32) + ASCII_ZEROS).to_le_bytes();
            self.put(memo.ascii.first_chunk::<16>().unwrap(), len - 8);
            self.put(&low, 8);
            memo.ascii[len - 8..len].copy_from_slice(&low);
            memo.value = v;
            return;
        }
        let at = self.pos % SPAN;
        self.u64(v);
        let written = self.buf[at..].first_chunk().unwrap();
        *memo = DigitsMemo {
            value: v,
            high,
            ascii: *written,
            len: (self.pos % SPAN - at) as u8,
        };
    }

    /// Appends the decimal digits of `v`, a count that mostly rises by one
    /// (a shard's positions), through `memo` as [`Window::u64_memo`]: when
    /// only the last digit differs from the memo's value, only that digit
    /// is written anew (nine counts in ten), and the last two on a carry
    /// into the tens.
    #[inline(always)]
    pub fn count_memo(&mut self, v: u64, memo: &mut DigitsMemo) {
        let len = usize::from(memo.len);
        let last = memo.ascii[(len - 1) % DigitsMemo::ROOM];
        // Never across u64::MAX to 0: that wraps to a step of one.
        let step = v.wrapping_sub(memo.value);
        if v >= memo.value && step <= u64::from(b'9' - last) {
            // Copied before the new digit is stored (see `u64_memo`).
            let digit = last + step as u8;
            self.put(&memo.ascii, len - 1);
            self.byte(digit);
            memo.ascii[(len - 1) % DigitsMemo::ROOM] = digit;
            memo.value = v;
            return;
        }
        // A carry into the tens (nine in ten of the other counts): the
        // slower paths read back what they wrote to fill the memo, which
        // waits for those stores.
        let tens = memo.ascii[len.wrapping_sub(2) % DigitsMemo::ROOM];
        if v >= memo.value && step <= 9 && len >= 2 && tens < b'9' {
            let digits = [tens + 1, last + step as u8 - 10];
            self.put(&memo.ascii, len - 2);
            self.lit(&digits);
            memo.ascii[len.wrapping_sub(2) % DigitsMemo::ROOM] = digits[0];
            memo.ascii[(len - 1) % DigitsMemo::ROOM] = digits[1];
            memo.value = v;
            return;
        }
        self.u64_memo(v, memo);
    }

    /// Appends `v` (below 10^8) without leading zeros.
    #[inline(always)]
    fn leading(&mut self, v: u32) {
        // Most fields of a record are small (counts, errno, flags, pids).
        if v < 10 {
            self.byte(b'0' + v as u8);
        } else if v < 100 {
            self.lit(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
        } else if v < 10_000 {
            // Three or four digits; a whole 4-byte word is stored.
            let len = if v < 1000 { 3 } else { 4 };
            let ascii = (digits4(v) + 0x3030_3030) >> (8 * (4 - len));
            self.put(&ascii.to_le_bytes(), len as usize);
        } else {
            self.leading8(v);
        }
    }

    /// Appends `v` (10 000 to 99 999 999) without leading zeros. Stores a
    /// whole word (the bytes past the digits are overwritten by what
    /// follows or cut at the end).
    #[inline(always)]
    fn leading8(&mut self, v: u32) {
        // The length comes from a short computation of its own, so the next
        // write's position does not wait for the digits.
        let len = v.ilog10() + 1;
        // The most significant digit is the lowest byte: drop the leading
        // zeros from the bottom.
        let ascii = (digits8(v) + ASCII_ZEROS) >> (8 * (8 - len));
        self.put(&ascii.to_le_bytes(), len as usize);
    }

    /// Appends `v` (below 10^8) as exactly 8 digits, zeros included.
    #[inline(always)]
    fn full8(&mut self, v: u32) {
        self.lit(&(digits8(v) + ASCII_ZEROS).to_le_bytes());
    }

    /// Appends the decimal digits of `v`, with a `-` when negative.
    #[inline(always)]
    pub fn i64(&mut self, v: i64) {
        if v < 0 {
            self.byte(b'-');
        }
        self.u64(v.unsigned_abs());
    }

    /// Appends the 16 lower-case hex digits of `v` (no quotes): each nibble
    /// spread to a byte of a word, then made ASCII eight at a time.
    #[inline(always)]
    pub fn hex16(&mut self, v: u64) {
        let mut hex = [0u8; 16];
        hex[..8].copy_from_slice(&hex8((v >> 32) as u32));
        hex[8..].copy_from_slice(&hex8(v as u32));
        self.lit(&hex);
    }
}

/// The digits of the last value a field of a line held, for
/// [`Window::u64_memo`]. Invariant: `ascii[..len]` are the decimal digits
/// of `value` (the bytes after them are whatever the window had written),
/// `len` is 1 to 20, and `high` is `value / 10^8`.
#[derive(Clone, Copy, Debug)]
pub struct DigitsMemo {
    value: u64,
    high: u64,
    ascii: [u8; DigitsMemo::ROOM],
    len: u8,
}

impl DigitsMemo {
    /// The bytes a memo keeps: the 20 digits of `u64::MAX` and more (those
    /// past the digits are overwritten or cut when copied); a power of two,
    /// so an index modulo it needs no check.
    const ROOM: usize = 32;
}

impl Default for DigitsMemo {
    /// The memo of 0.
    fn default() -> DigitsMemo {
        let mut ascii = [0; DigitsMemo::ROOM];
        ascii[0] = b'0';
        DigitsMemo {
            value: 0,
            high: 0,
            ascii,
            len: 1,
        }
    }
}

const E8: u64 = 100_000_000;
const E16: u64 = E8 * E8;
/// `'0'` in every byte.
const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// The 8 decimal digits of `v` (below 10^8), one a byte (values 0 to 9),
/// the most significant in the lowest byte: the two halves of 4 digits go
/// into 32-bit lanes, each lane splits into 2-digit 16-bit lanes, those into
/// 1-digit bytes, each split a multiply by a reciprocal (exact below these
/// bounds) and a subtraction, all lanes at once.
#[inline(always)]
fn digits8(v: u32) -> u64 {
    let hi = u64::from(v / 10_000);
    let lo = u64::from(v % 10_000);
    let merged = hi | (lo << 32);
    // x / 100 for x < 10^4 is (x * 10486) >> 20.
    let hundreds = ((merged * 10_486) >> 20) & 0x0000_007f_0000_007f;
    let rest = merged - 100 * hundreds;
    let pairs = (rest << 16) | hundreds;
    // x / 10 for x < 100 is (x * 103) >> 10.
    let tens = ((pairs * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | ((pairs - 10 * tens) << 8)
}

/// The 4 decimal digits of `v` (below 10^4), one a byte, the most
/// significant in the lowest byte: as [`digits8`] with one 32-bit lane.
#[inline(always)]
fn digits4(v: u32) -> u32 {
    // x / 100 for x < 43 699 is (x * 5243) >> 19.
    let hundreds = (v * 5243) >> 19;
    let pairs = ((v - 100 * hundreds) << 16) | hundreds;
    let tens = ((pairs * 103) >> 10) & 0x000f_000f;
    tens | ((pairs - 10 * tens) << 8)
}

/// The 8 lower-case hex digits of `v`, most significant first.
#[inline(always)]
fn hex8(v: u32) -> [u8; 8] {
    // Spread the nibbles: nibble i (from the least significant) lands in
    // byte i of the word.
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // '0' + n, and 'a' - '0' - 10 = 39 more where n >= 10 (n + 6 carries
    // into bit 4 exactly then); no byte carries into the next.
    let ge10 = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + ge10 * 39).to_be_bytes()
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

    /// What a cursor writes with `write`, checked to stay in `room`.
    fn cursor(room: usize, write: impl FnOnce(&mut Cursor<'_>)) -> Vec<u8> {
        let mut out = b"kept".to_vec();
        let mut c = Cursor::open(&mut out, room);
        write(&mut c);
        let n = c.written();
        out.truncate(4 + n);
        assert_eq!(&out[..4], b"kept");
        out.split_off(4)
    }

    /// Every digit count and group boundary, both sides of each power of
    /// ten, the extremes, and a spread of others.
    fn interesting_u64() -> Vec<u64> {
        let mut vs = vec![0, 1, 9, u64::MAX, u64::MAX - 1, i64::MAX as u64];
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            p = next;
            vs.extend([p - 1, p, p + 1, p / 10 * 9 + 7]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            vs.push(x);
            vs.push(x >> (x % 64));
        }
        vs
    }

    /// What one window writes with `write`, in the least room it takes.
    fn window(write: impl FnOnce(&mut Window<'_>)) -> Vec<u8> {
        cursor(WINDOW, |c| c.fixed(write))
    }

    #[test]
    fn cursor_numbers_are_the_decimal_digits() {
        for v in interesting_u64() {
            assert_eq!(window(|w| w.u64(v)), v.to_string().as_bytes());
            let i = v as i64;
            assert_eq!(window(|w| w.i64(i)), i.to_string().as_bytes());
        }
        assert_eq!(window(|w| w.i64(i64::MIN)), b"-9223372036854775808");
    }

    /// Each value of `values` written through one memo, as the fields of
    /// consecutive lines are, as a value and as a count: the decimal
    /// digits every time.
    fn assert_memo_writes_digits(values: &[u64]) {
        let (mut memo, mut count) = (DigitsMemo::default(), DigitsMemo::default());
        let mut last = None;
        for &v in values {
            let got = window(|w| w.u64_memo(v, &mut memo));
            assert_eq!(
                String::from_utf8(got).unwrap(),
                v.to_string(),
                "after {last:?}"
            );
            let got = window(|w| w.count_memo(v, &mut count));
            assert_eq!(
                String::from_utf8(got).unwrap(),
                v.to_string(),
                "count after {last:?}"
            );
            last = Some(v);
        }
    }

    #[test]
    fn count_digits_follow_steps_within_and_across_the_last_digit() {
        // Up by one through the carries of each digit count, by steps that
        // stay within the last digit and that cross it, down by one.
        let mut values: Vec<u64> = (0..1100).collect();
        values.extend([1100, 1102, 1109, 1110, 1119, 1118, 1111, 1120]);
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            p = next;
            values.extend(p.saturating_sub(12)..p + 12);
            values.extend([p + 9, p + 10, p + 8, p]);
        }
        values.extend((u64::MAX - 12)..=u64::MAX);
        values.extend([0, 1, u64::MAX, 9, 10]);
        assert_memo_writes_digits(&values);
    }

    #[test]
    fn memo_digits_follow_repeats_carries_and_falls() {
        // Zero first (the empty memo's value), then repeats, a rise with
        // the same digits above the lowest eight, the carries into them
        // (10^8, 10^9, each new digit count), a fall, the extremes.
        let mut values = vec![0, 0, 7, 7, 5, 99_999_999, 100_000_000, 100_000_000];
        values.extend([199_999_999, 200_000_000, 123_456_789, 123_456_780]);
        values.extend([999_999_999, 1_000_000_000, 1_000_000_001, 999_999_999]);
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            p = next;
            values.extend([p - 1, p, p + 1, p + 1, p - 1, p / 10]);
        }
        values.extend([u64::MAX, u64::MAX, u64::MAX - 1, u64::MAX, 0, u64::MAX]);
        // A repeat right after a rise of the lowest eight copies the new
        // digits, not the old.
        values.extend([3_000_000_001, 3_000_000_002, 3_000_000_002, 3_000_000_001]);
        assert_memo_writes_digits(&values);
        // Random walks of small and large steps either way.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut v = 1_000_000_000u64;
        let mut walk = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let step = x >> (x % 64);
            v = if x & 1 == 0 {
                v.wrapping_add(step % 1_000_000)
            } else {
                v.wrapping_sub(step)
            };
            walk.push(v);
        }
        assert_memo_writes_digits(&walk);
        assert_memo_writes_digits(&interesting_u64());
    }

    #[test]
    fn cursor_hex_is_16_lower_case_digits() {
        for v in interesting_u64() {
            assert_eq!(window(|w| w.hex16(v)), format!("{v:016x}").as_bytes());
        }
    }

    #[test]
    fn cursor_strings_escape_as_push_str_within_their_bound() {
        let mut all_bytes: Vec<u8> = (0..=255).collect();
        all_bytes.extend(b"\"\\\n\x01\xff\xc3");
        let lossy = String::from_utf8_lossy(&all_bytes).into_owned();
        let controls: String = (0u8..0x20).map(char::from).collect();
        for s in ["", "plain", "a\"b\\c\nd\u{1}é\u{7f}", &controls, &lossy] {
            let mut want = Vec::new();
            push_str(&mut want, s);
            // The bound is by input bytes: a lossy string's input is at
            // most its length, so this room is the tightest it is given.
            let room = escaped_max(s.len());
            assert_eq!(cursor(room, |c| c.escaped(s)), want, "{s:?}");
        }
        // Every byte a control character without a short escape: exactly
        // the bound.
        let unnamed: String = controls
            .chars()
            .filter(|c| !"\u{8}\t\n\u{c}\r".contains(*c))
            .collect();
        let room = escaped_max(unnamed.len());
        assert_eq!(cursor(room, |c| c.escaped(&unnamed)).len(), room);
    }

    #[test]
    #[should_panic]
    fn a_cursor_never_writes_past_its_room() {
        cursor(3, |c| c.bytes(b"four"));
    }

    #[test]
    #[should_panic]
    fn a_window_needs_its_whole_room() {
        cursor(WINDOW - 1, |c| c.fixed(|w| w.byte(b'x')));
    }

    #[test]
    fn a_window_holds_its_span() {
        let full = window(|w| {
            for _ in 0..SPAN / 8 {
                w.lit(b"01234567");
            }
        });
        assert_eq!(full.len(), SPAN);
    }

    #[test]
    #[should_panic(expected = "a window holds at most")]
    fn a_window_never_holds_more_than_its_span() {
        // The writes past the span wrap to its start: the cursor refuses
        // the window rather than keep those bytes.
        window(|w| {
            for _ in 0..SPAN / 8 {
                w.lit(b"01234567");
            }
            w.byte(b'!');
        });
    }
}
