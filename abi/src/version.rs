//! The ABI version: the one place that says which versions this build can
//! read and how a version is written.
//!
//! A version is `(major << 8) | minor` (`MT_ABI_VERSION`). A reader reads
//! every minor version of its own major (minors only add kinds and flag
//! bits); another major changed a layout or a meaning and is refused.

use crate::raw;
use core::fmt;

/// An `MT_ABI_VERSION` value as found in a sysctl word or a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AbiVersion(u32);

impl AbiVersion {
    /// The version this build speaks.
    pub const CURRENT: AbiVersion = AbiVersion(raw::MT_ABI_VERSION);

    /// The version in a 32-bit word (`kern.maptrace.abi`).
    pub const fn from_word(word: u32) -> AbiVersion {
        AbiVersion(word)
    }

    /// The version in a 16-bit header field (batch, stats, recording).
    pub const fn from_field(field: u16) -> AbiVersion {
        AbiVersion(field as u32)
    }

    /// The 32-bit word.
    pub const fn word(self) -> u32 {
        self.0
    }

    /// The 16-bit header field (the current version always fits).
    pub const fn field(self) -> u16 {
        self.0 as u16
    }

    /// The major version (a layout or meaning changed).
    pub const fn major(self) -> u32 {
        self.0 >> 8
    }

    /// The minor version (kinds or flag bits added).
    pub const fn minor(self) -> u32 {
        self.0 & 0xff
    }

    /// Whether this build can read data of this version: same major.
    pub const fn is_readable(self) -> bool {
        self.major() == AbiVersion::CURRENT.major()
    }

    /// This version, or why this build cannot read it.
    pub const fn check(self) -> Result<AbiVersion, AbiMismatch> {
        if self.is_readable() {
            Ok(self)
        } else {
            Err(AbiMismatch { found: self })
        }
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major(), self.minor())
    }
}

/// Data of a major version this build does not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiMismatch {
    /// The version found.
    pub found: AbiVersion,
}

impl fmt::Display for AbiMismatch {
    /// "ABI 2.3; this maptrace reads 1.x": callers say whose version it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ABI {}; this maptrace reads {}.x",
            self.found,
            AbiVersion::CURRENT.major()
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AbiMismatch {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn same_major_is_readable_any_minor() {
        let cur = AbiVersion::CURRENT;
        assert_eq!(cur.check(), Ok(cur));
        let newer_minor = AbiVersion::from_word(cur.word() + 5);
        assert_eq!(newer_minor.major(), cur.major());
        assert!(newer_minor.is_readable());
    }

    #[test]
    fn another_major_is_refused_with_its_version() {
        let cur = AbiVersion::CURRENT;
        for word in [
            cur.word() + 0x100,
            cur.word().wrapping_sub(0x100),
            (cur.word() & 0xff) | 0x1_0000 | (cur.major() << 8),
        ] {
            let v = AbiVersion::from_word(word);
            assert_eq!(v.check(), Err(AbiMismatch { found: v }), "{word:#x}");
        }
        // A 16-bit field of major 2.
        let e = AbiVersion::from_field(0x0203).check().unwrap_err();
        assert_eq!(
            e.to_string(),
            std::format!("ABI 2.3; this maptrace reads {}.x", cur.major())
        );
    }

    #[test]
    fn display_is_major_dot_minor() {
        assert_eq!(AbiVersion::from_field(0x0107).to_string(), "1.7");
        assert_eq!(
            AbiVersion::CURRENT.to_string(),
            std::format!(
                "{}.{}",
                raw::MT_ABI_VERSION_MAJOR,
                raw::MT_ABI_VERSION_MINOR
            )
        );
    }
}
