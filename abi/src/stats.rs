//! `kern.maptrace.stats`: the one parser of its bytes (header checks, the
//! shard table), for the companion, the tests and anything else that reads
//! them. No allocation: shards are read from the bytes on demand.

use crate::raw;
use crate::version::{AbiMismatch, AbiVersion};
use core::fmt;
use core::mem::size_of;
use zerocopy::{FromBytes, FromZeros};

const HEADER: usize = size_of::<raw::mt_stats_header>();
const SHARD: usize = size_of::<raw::mt_shard_stats>();

/// Why stats bytes could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsError {
    /// Fewer bytes than the header, or than the header's shard table.
    Short {
        /// Needed.
        need: usize,
        /// Present.
        have: usize,
    },
    /// Wrong magic, header size or shard count.
    Format(&'static str),
    /// Another major ABI.
    Abi(AbiMismatch),
}

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatsError::Short { need, have } => {
                write!(f, "kern.maptrace.stats returned {have} bytes, need {need}")
            }
            StatsError::Format(what) => write!(
                f,
                "kern.maptrace.stats is not in the expected format: {what}"
            ),
            StatsError::Abi(m) => write!(f, "kern.maptrace.stats comes from a kext with {m}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StatsError {}

/// Validated stats bytes: the header and its shard table.
#[derive(Clone, Copy, Debug)]
pub struct StatsView<'a> {
    /// The header as read.
    pub header: raw::mt_stats_header,
    /// `nshards` entries of `struct mt_shard_stats`.
    shards: &'a [u8],
}

impl<'a> StatsView<'a> {
    /// Checks magic, major version, header size and shard count, and that
    /// the bytes hold every shard the header announces (extra bytes after
    /// them are ignored).
    pub fn parse(bytes: &'a [u8]) -> Result<StatsView<'a>, StatsError> {
        let (h, rest) =
            raw::mt_stats_header::read_from_prefix(bytes).map_err(|_| StatsError::Short {
                need: HEADER,
                have: bytes.len(),
            })?;
        if h.magic != raw::MT_STATS_MAGIC {
            return Err(StatsError::Format("bad magic"));
        }
        AbiVersion::from_field(h.abi_version)
            .check()
            .map_err(StatsError::Abi)?;
        if usize::from(h.header_size) != HEADER {
            return Err(StatsError::Format("header_size"));
        }
        if h.nshards > raw::MT_MAX_SHARDS {
            return Err(StatsError::Format("nshards"));
        }
        let len = h.nshards as usize * SHARD;
        let Some(shards) = rest.get(..len) else {
            return Err(StatsError::Short {
                need: HEADER + len,
                have: bytes.len(),
            });
        };
        Ok(StatsView { header: h, shards })
    }

    /// The kext's ABI version.
    pub fn abi_version(&self) -> AbiVersion {
        AbiVersion::from_field(self.header.abi_version)
    }

    /// The per-shard counters, in shard order.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = raw::mt_shard_stats> + 'a {
        self.shards.chunks_exact(SHARD).map(|c| {
            raw::mt_shard_stats::read_from_bytes(c).unwrap_or_else(|_| FromZeros::new_zeroed())
        })
    }

    /// Records dropped, all shards. The bytes are untrusted (a recording's
    /// closing frame): the sum saturates.
    pub fn dropped(&self) -> u64 {
        self.shards().fold(0u64, |n, s| n.saturating_add(s.dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;
    use zerocopy::IntoBytes;

    fn stats(nshards: u32, dropped: u64) -> Vec<u8> {
        let mut h = raw::mt_stats_header::new_zeroed();
        h.magic = raw::MT_STATS_MAGIC;
        h.abi_version = AbiVersion::CURRENT.field();
        h.header_size = HEADER as u16;
        h.nshards = nshards;
        let mut v = h.as_bytes().to_vec();
        for i in 0..nshards {
            let mut s = raw::mt_shard_stats::new_zeroed();
            s.dropped = dropped;
            s.produced_slots = u64::from(i);
            v.extend_from_slice(s.as_bytes());
        }
        v
    }

    #[test]
    fn reads_every_shard_and_sums_drops() {
        let b = stats(3, 4);
        let s = StatsView::parse(&b).unwrap();
        assert_eq!(s.shards().len(), 3);
        assert_eq!(
            s.shards().map(|s| s.produced_slots).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(s.dropped(), 12);
        assert_eq!(s.abi_version(), AbiVersion::CURRENT);
        assert_eq!(
            StatsView::parse(&stats(2, u64::MAX - 1)).unwrap().dropped(),
            u64::MAX
        );
    }

    #[test]
    fn short_buffers_say_what_they_need() {
        let b = stats(2, 0);
        assert_eq!(
            StatsView::parse(&b[..HEADER - 1]).unwrap_err(),
            StatsError::Short {
                need: HEADER,
                have: HEADER - 1
            }
        );
        // The header fits, the last shard does not.
        assert_eq!(
            StatsView::parse(&b[..b.len() - 1]).unwrap_err(),
            StatsError::Short {
                need: HEADER + 2 * SHARD,
                have: b.len() - 1
            }
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = stats(1, 0);
        let mut b = good.clone();
        b[0] ^= 1;
        assert_eq!(
            StatsView::parse(&b).unwrap_err(),
            StatsError::Format("bad magic")
        );
        let mut b = good.clone();
        let at = core::mem::offset_of!(raw::mt_stats_header, abi_version);
        b[at + 1] = (AbiVersion::CURRENT.major() + 1) as u8;
        let e = StatsView::parse(&b).unwrap_err();
        assert!(
            matches!(e, StatsError::Abi(m) if m.found.major() == AbiVersion::CURRENT.major() + 1)
        );
        assert!(e.to_string().contains("this maptrace reads"), "{e}");
        let mut b = good.clone();
        b[core::mem::offset_of!(raw::mt_stats_header, header_size)] = 81;
        assert_eq!(
            StatsView::parse(&b).unwrap_err(),
            StatsError::Format("header_size")
        );
        let b = stats(raw::MT_MAX_SHARDS + 1, 0);
        assert_eq!(
            StatsView::parse(&b).unwrap_err(),
            StatsError::Format("nshards")
        );
    }
}
