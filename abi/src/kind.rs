//! Typed views of the ABI's numbers: event kinds, masks and flag words.
//! Numbers received over the wire are converted with `TryFrom`, never
//! transmuted.

use crate::raw;
use bitflags::bitflags;

/// What a record describes (`enum mt_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    /// `VNOP_MMAP`: a map of the file (mmap(2), exec, the loader).
    Mmap = raw::MT_KIND_MMAP as u8,
    /// `VNOP_PAGEIN`: one cluster read caused by a fault.
    Pagein = raw::MT_KIND_PAGEIN as u8,
    /// `VNOP_MNOMAP`: the last mapping of the file went away.
    Mnomap = raw::MT_KIND_MNOMAP as u8,
    /// MAC `mpo_file_check_mmap`: mmap(2) intent.
    FileMmap = raw::MT_KIND_FILE_MMAP as u8,
    /// The path of a vnode id.
    Path = raw::MT_KIND_PATH as u8,
    /// Something the kext itself did.
    Mark = raw::MT_KIND_MARK as u8,
    /// The name of the record's pid (ABI 1.2).
    Proc = raw::MT_KIND_PROC as u8,
    /// MAC `mpo_vnode_notify_open`: an open took its usecount (ABI 1.2).
    Open = raw::MT_KIND_OPEN as u8,
    /// `VNOP_CLOSE` from `vn_close`: an open's usecount goes next (ABI 1.2).
    Close = raw::MT_KIND_CLOSE as u8,
}

impl EventKind {
    /// Every kind, in ABI order.
    pub const ALL: [EventKind; 9] = [
        EventKind::Mmap,
        EventKind::Pagein,
        EventKind::Mnomap,
        EventKind::FileMmap,
        EventKind::Path,
        EventKind::Mark,
        EventKind::Proc,
        EventKind::Open,
        EventKind::Close,
    ];

    /// The stable lower-case name used in text and JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Mmap => "mmap",
            EventKind::Pagein => "pagein",
            EventKind::Mnomap => "mnomap",
            EventKind::FileMmap => "file_mmap",
            EventKind::Path => "path",
            EventKind::Mark => "mark",
            EventKind::Proc => "proc",
            EventKind::Open => "open",
            EventKind::Close => "close",
        }
    }

    /// The kind named `name` (as printed by [`EventKind::name`]).
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// This kind's bit in an [`EventMask`].
    pub const fn mask(self) -> EventMask {
        EventMask::from_bits_retain(1 << self as u32)
    }
}

impl TryFrom<u8> for EventKind {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        EventKind::ALL.into_iter().find(|k| *k as u8 == v).ok_or(v)
    }
}

impl TryFrom<u32> for EventKind {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        u8::try_from(v)
            .ok()
            .and_then(|b| EventKind::try_from(b).ok())
            .ok_or(v)
    }
}

bitflags! {
    /// Which kinds the kext records (`mt_config.event_mask`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EventMask: u32 {
        /// `VNOP_MMAP`.
        const MMAP = raw::MT_EVMASK_MMAP;
        /// `VNOP_PAGEIN`.
        const PAGEIN = raw::MT_EVMASK_PAGEIN;
        /// `VNOP_MNOMAP`.
        const MNOMAP = raw::MT_EVMASK_MNOMAP;
        /// MAC mmap check.
        const FILE_MMAP = raw::MT_EVMASK_FILE_MMAP;
        /// Path records.
        const PATH = raw::MT_EVMASK_PATH;
        /// Markers.
        const MARK = raw::MT_EVMASK_MARK;
        /// Process names.
        const PROC = raw::MT_EVMASK_PROC;
        /// Opens (MAC `vnode_notify_open`).
        const OPEN = raw::MT_EVMASK_OPEN;
        /// Last closes of open files (`VNOP_CLOSE`).
        const CLOSE = raw::MT_EVMASK_CLOSE;
    }

    /// `mt_rec_header.flags` (`MT_RF_*`), without the count-method bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RecordFlags: u8 {
        /// Counts were read at validated offsets.
        const COUNTS_OFFSET = raw::MT_RF_COUNTS_OFFSET as u8;
        /// Usecount came from a `vnode_isinuse` search.
        const COUNTS_ISINUSE = raw::MT_RF_COUNTS_ISINUSE as u8;
        /// The iocount is not known.
        const IOCOUNT_UNKNOWN = raw::MT_RF_IOCOUNT_UNKNOWN as u8;
        /// A count was clamped to 16 bits.
        const COUNTS_SATURATED = raw::MT_RF_COUNTS_SATURATED as u8;
        /// A path was cut or a duration clamped.
        const TRUNCATED = raw::MT_RF_TRUNCATED as u8;
    }

    /// `mt_config.flags` (`MT_CF_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ConfigFlags: u32 {
        /// Record events at all.
        const ENABLE = raw::MT_CF_ENABLE;
        /// Only events of `mt_config.pid`.
        const PID_FILTER = raw::MT_CF_PID_FILTER;
        /// All events except those of `mt_config.pid`.
        const PID_EXCLUDE = raw::MT_CF_PID_EXCLUDE;
    }
}

/// How the vnode counts of a record were obtained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProbeMethod {
    /// No counts.
    #[default]
    None,
    /// Read at validated `struct vnode` offsets.
    Offset,
    /// `vnode_isinuse` binary search (usecount only).
    IsInUse,
}

impl ProbeMethod {
    /// The method encoded in a record's flags byte.
    pub const fn from_record_flags(flags: u8) -> ProbeMethod {
        match flags as u32 & raw::MT_RF_COUNTS_MASK {
            raw::MT_RF_COUNTS_OFFSET => ProbeMethod::Offset,
            raw::MT_RF_COUNTS_ISINUSE => ProbeMethod::IsInUse,
            _ => ProbeMethod::None,
        }
    }

    /// The method named by `enum mt_probe_method` in the stats header.
    pub const fn from_stats(v: u32) -> ProbeMethod {
        match v {
            raw::MT_PROBE_OFFSET => ProbeMethod::Offset,
            raw::MT_PROBE_ISINUSE => ProbeMethod::IsInUse,
            _ => ProbeMethod::None,
        }
    }

    /// The stable name used in output.
    pub const fn name(self) -> &'static str {
        match self {
            ProbeMethod::None => "none",
            ProbeMethod::Offset => "offset",
            ProbeMethod::IsInUse => "isinuse",
        }
    }
}

/// A `MT_KIND_MARK` record's meaning (`enum mt_mark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mark {
    /// The core started a generation.
    Start,
    /// A config write was applied.
    Config,
    /// A vnode-op vector was hooked.
    VectorPatched,
    /// A mark this reader does not know (newer minor ABI).
    Unknown(u32),
}

impl From<u32> for Mark {
    fn from(v: u32) -> Mark {
        match v {
            raw::MT_MARK_START => Mark::Start,
            raw::MT_MARK_CONFIG => Mark::Config,
            raw::MT_MARK_VECTOR_PATCHED => Mark::VectorPatched,
            other => Mark::Unknown(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_reject_unknown_numbers() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::try_from(k as u8), Ok(k));
            assert_eq!(EventKind::from_name(k.name()), Some(k));
            assert_eq!(k.mask().bits(), 1 << (k as u32));
        }
        assert_eq!(EventKind::try_from(0u8), Err(0));
        assert_eq!(EventKind::try_from(raw::MT_KIND__COUNT as u8), Err(10));
        assert_eq!(EventKind::try_from(300u32), Err(300));
        assert_eq!(EventKind::ALL.len(), raw::MT_KIND__COUNT as usize - 1);
        assert_eq!(EventMask::all().bits(), raw::MT_EVMASK_ALL);
        assert_eq!(ConfigFlags::all().bits(), raw::MT_CF_ALL);
    }

    #[test]
    fn probe_method_reads_the_low_bits_only() {
        let f = (raw::MT_RF_COUNTS_ISINUSE | raw::MT_RF_IOCOUNT_UNKNOWN) as u8;
        assert_eq!(ProbeMethod::from_record_flags(f), ProbeMethod::IsInUse);
        assert_eq!(
            ProbeMethod::from_record_flags(raw::MT_RF_TRUNCATED as u8),
            ProbeMethod::None
        );
        assert_eq!(
            ProbeMethod::from_stats(raw::MT_PROBE_OFFSET),
            ProbeMethod::Offset
        );
    }
}
