//! The VM page size of the traced machine: what "distinct pages" counts.
//!
//! XNU's page is 16 KiB on arm64 (`ARM_PGSHIFT` 14, osfmk/arm64/proc_reg.h)
//! and 4 KiB on x86_64 (`I386_PGSHIFT` 12, osfmk/mach/i386/vm_param.h,
//! xnu-11417.121.6), so a trace's page count means nothing without it.

use std::fmt;
use std::str::FromStr;

/// A VM page size in bytes: a power of two from 4 KiB to 64 KiB.
///
/// Invariant: `MIN <= bytes <= MAX` and `bytes` is a power of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize(u32);

/// Why a page size was refused. The messages say what is accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageSizeError {
    /// Not a number of bytes.
    #[error("page size `{0}` is not a number of bytes (examples: 4096, 16384, 4k, 16k)")]
    NotANumber(String),
    /// Not a power of two, or outside 4 KiB..=64 KiB.
    #[error(
        "page size {0} bytes is not a page size: give a power of two from 4096 (4k) to 65536 (64k)"
    )]
    OutOfRange(u64),
}

impl PageSize {
    /// The smallest page size accepted (Intel Macs').
    pub const MIN: u32 = 4096;
    /// The largest page size accepted.
    pub const MAX: u32 = 64 << 10;
    /// 4 KiB: x86_64 Macs, and what a trace of unknown page size is
    /// counted in (the only size maptrace knew before recording format 5).
    pub const FOUR_K: PageSize = PageSize(4096);
    /// 16 KiB: Apple silicon Macs.
    pub const SIXTEEN_K: PageSize = PageSize(16384);

    /// `bytes` as a page size, if it is one.
    pub fn new(bytes: u64) -> Result<PageSize, PageSizeError> {
        u32::try_from(bytes)
            .ok()
            .filter(|b| (Self::MIN..=Self::MAX).contains(b) && b.is_power_of_two())
            .map(PageSize)
            .ok_or(PageSizeError::OutOfRange(bytes))
    }

    /// Bytes in a page.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// Bytes in a page, as a recording header keeps them.
    pub fn bytes_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PageSize {
    /// "4 KiB", "16 KiB": always a whole number of KiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} KiB", self.0 >> 10)
    }
}

impl FromStr for PageSize {
    type Err = PageSizeError;

    /// Bytes (`16384`) or KiB with a `k` (`16k`, `16K`).
    fn from_str(s: &str) -> Result<PageSize, PageSizeError> {
        let t = s.trim();
        let (digits, unit) = match t.strip_suffix(['k', 'K']) {
            Some(d) => (d, 1024),
            None => (t, 1),
        };
        let n = Some(digits)
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| PageSizeError::NotANumber(s.to_string()))?;
        PageSize::new(n.saturating_mul(unit))
    }
}

/// Where the page size a report counts in comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PageSizeFrom {
    /// The traced machine's: the live source's own, or a recording's header.
    Trace,
    /// `--page-size`, over the trace's.
    Option,
    /// Not known (a recording before format 5): 4 KiB.
    #[default]
    Unknown,
}

/// The page size a report counts distinct pages in, where it comes from,
/// and a note for people when it is a guess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageBasis {
    /// The size counted in.
    pub size: PageSize,
    /// Where it comes from.
    pub from: PageSizeFrom,
    /// Said to the reader: the page size was not known.
    pub note: Option<String>,
}

impl PageBasis {
    /// `--page-size` when given, else the trace's, else 4 KiB with a note
    /// that says why (`trace` is `Err(why it is not known)`).
    pub fn resolve(option: Option<PageSize>, trace: Result<PageSize, String>) -> PageBasis {
        match (option, trace) {
            (Some(size), _) => PageBasis {
                size,
                from: PageSizeFrom::Option,
                note: None,
            },
            (None, Ok(size)) => PageBasis {
                size,
                from: PageSizeFrom::Trace,
                note: None,
            },
            (None, Err(why)) => PageBasis {
                size: PageSize::FOUR_K,
                from: PageSizeFrom::Unknown,
                note: Some(format!(
                    "page size unknown ({why}), counted in {} pages",
                    PageSize::FOUR_K
                )),
            },
        }
    }
}

impl Default for PageBasis {
    /// 4 KiB, unknown: what a report built without a source counts in.
    fn default() -> PageBasis {
        PageBasis::resolve(None, Err("no source said".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_kib_parse() {
        for (text, bytes) in [
            ("4096", 4096),
            ("16384", 16384),
            ("4k", 4096),
            ("16k", 16384),
            ("16K", 16384),
            ("64k", 65536),
            ("8192", 8192),
            (" 32k ", 32768),
        ] {
            assert_eq!(text.parse::<PageSize>().map(PageSize::bytes), Ok(bytes));
        }
    }

    #[test]
    fn what_is_not_a_page_size_is_refused_with_the_reason() {
        for text in [
            "", "k", "16kb", "-4096", "4096.0", "0x1000", "16 k", "sixteen",
        ] {
            let e = text.parse::<PageSize>().unwrap_err();
            assert_eq!(e, PageSizeError::NotANumber(text.into()), "{text:?}");
            assert!(e.to_string().contains("16k"), "{e}");
        }
        for (text, bytes) in [
            ("0", 0),
            ("2048", 2048),
            ("2k", 2048),
            ("12288", 12288),
            ("128k", 131072),
            ("4097", 4097),
            ("18014398509481984k", u64::MAX),
        ] {
            let e = text.parse::<PageSize>().unwrap_err();
            assert_eq!(e, PageSizeError::OutOfRange(bytes), "{text:?}");
            assert!(e.to_string().contains("power of two"), "{e}");
        }
    }

    #[test]
    fn page_sizes_show_in_kib() {
        assert_eq!(PageSize::FOUR_K.to_string(), "4 KiB");
        assert_eq!(PageSize::SIXTEEN_K.to_string(), "16 KiB");
    }

    #[test]
    fn the_option_wins_then_the_trace_then_4k_with_a_note() {
        let trace = Ok(PageSize::SIXTEEN_K);
        let b = PageBasis::resolve(Some(PageSize::FOUR_K), trace.clone());
        assert_eq!(
            (b.size, b.from, b.note),
            (PageSize::FOUR_K, PageSizeFrom::Option, None)
        );
        let b = PageBasis::resolve(None, trace);
        assert_eq!(
            (b.size, b.from, b.note),
            (PageSize::SIXTEEN_K, PageSizeFrom::Trace, None)
        );
        let b = PageBasis::resolve(None, Err("recording format 4".into()));
        assert_eq!((b.size, b.from), (PageSize::FOUR_K, PageSizeFrom::Unknown));
        assert_eq!(
            b.note.as_deref(),
            Some("page size unknown (recording format 4), counted in 4 KiB pages")
        );
    }
}
