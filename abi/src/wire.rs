//! Numbers derived from the generated structs for code that handles raw
//! slots as bytes (the kext's ring copies them without a typed view): record
//! header offsets and the slot arithmetic of PATH records.

use crate::raw;
use core::mem::{offset_of, size_of};

/// Bytes of a ring slot.
pub const SLOT_SIZE: usize = raw::MT_SLOT_SIZE as usize;

/// Byte offsets of `struct mt_rec_header` fields in a record's head slot,
/// taken from the generated struct, so they follow the header.
pub mod record_header {
    use super::*;

    /// `stamp`: the commit word.
    pub const STAMP: usize = offset_of!(raw::mt_rec_header, stamp);
    /// Bytes of `stamp`; the rest of the slot is the record body.
    pub const STAMP_LEN: usize = size_of::<u32>();
    /// `drops_before`.
    pub const DROPS_BEFORE: usize = offset_of!(raw::mt_rec_header, drops_before);
    /// `kind`.
    pub const KIND: usize = offset_of!(raw::mt_rec_header, kind);
    /// `nslots`: slots the record occupies (u8).
    pub const NSLOTS: usize = offset_of!(raw::mt_rec_header, nslots);
    /// `timestamp_ns` (u64, little-endian).
    pub const TIMESTAMP_NS: usize = offset_of!(raw::mt_rec_header, timestamp_ns);
    /// Bytes of `timestamp_ns`.
    pub const TIMESTAMP_NS_LEN: usize = size_of::<u64>();
}

/// Path bytes in the head slot of a PATH record.
pub const PATH_HEAD_BYTES: usize = raw::MT_PATH_HEAD_BYTES as usize;
/// Path bytes in each continuation slot.
pub const PATH_CONT_BYTES: usize = raw::MT_PATH_CONT_BYTES as usize;
/// Longest path a PATH record carries.
pub const PATH_MAX: usize = raw::MT_PATH_MAX as usize;

/// Slots a PATH record of `len` path bytes takes: the head slot and as many
/// continuation slots as the rest needs. `len` must be at most [`PATH_MAX`]
/// for the result to be a valid `nslots`.
pub const fn path_slots(len: usize) -> usize {
    1 + len
        .saturating_sub(PATH_HEAD_BYTES)
        .div_ceil(PATH_CONT_BYTES)
}

// The stamp is the first word; the body the ring copies follows it.
static_assertions::const_assert_eq!(record_header::STAMP, 0);
static_assertions::const_assert_eq!(record_header::DROPS_BEFORE, record_header::STAMP_LEN);
static_assertions::const_assert_eq!(path_slots(PATH_MAX), raw::MT_RECORD_MAX_SLOTS as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_offsets_match_the_c_layout() {
        use record_header::*;
        assert_eq!(
            (STAMP, DROPS_BEFORE, KIND, NSLOTS, TIMESTAMP_NS),
            (0, 4, 8, 9, 16)
        );
    }

    #[test]
    fn path_slots_cover_head_and_continuations_exactly() {
        assert_eq!(path_slots(0), 1);
        assert_eq!(path_slots(PATH_HEAD_BYTES), 1);
        assert_eq!(path_slots(PATH_HEAD_BYTES + 1), 2);
        assert_eq!(path_slots(PATH_HEAD_BYTES + PATH_CONT_BYTES), 2);
        assert_eq!(path_slots(PATH_HEAD_BYTES + PATH_CONT_BYTES + 1), 3);
        assert_eq!(path_slots(PATH_MAX), raw::MT_RECORD_MAX_SLOTS as usize);
        // Every byte has room, and no slot is empty.
        for len in 0..=PATH_MAX {
            let n = path_slots(len);
            let room = PATH_HEAD_BYTES + (n - 1) * PATH_CONT_BYTES;
            assert!(
                len <= room && (n == 1 || len > room - PATH_CONT_BYTES),
                "{len}"
            );
        }
    }
}
