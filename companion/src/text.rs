//! Text primitives that the pipeline and every renderer share: protections,
//! mark names and times. They depend on nothing else in the crate. (JSON
//! string literals are `json`'s.)

use maptrace_abi::Mark;

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
    fn prot_letters() {
        assert_eq!(&prot_str(5), b"r-x");
        assert_eq!(&prot_str(0), b"---");
        assert_eq!(&prot_str(7), b"rwx");
    }
}
