//! Encoding of events into ABI records: `struct mt_event` (what the shim saw)
//! → the 64-byte `mt_rec_*` layouts of `maptrace_abi.h`.
//!
//! Everything here is plain value conversion: counts are clamped to 16 bits
//! with a flag, durations to 32 bits, errno to a byte. No kernel address is
//! ever copied: the vnode pointer only enters the keyed hash.

use crate::ffi::bridge::mt_event;
use maptrace_abi::{EventKind, raw};
use zerocopy::{FromZeros, IntoBytes};

/// Bytes of a slot.
const SLOT: usize = raw::MT_SLOT_SIZE as usize;
/// Path bytes carried by the head slot of a PATH record.
pub const PATH_HEAD: usize = raw::MT_PATH_HEAD_BYTES as usize;
/// Path bytes carried by each continuation slot.
pub const PATH_CONT: usize = raw::MT_PATH_CONT_BYTES as usize;
/// Longest path carried.
pub const PATH_MAX: usize = raw::MT_PATH_MAX as usize;

/// Slots a PATH record of `len` bytes (already cut to `PATH_MAX`) takes.
pub const fn path_slots(len: usize) -> u32 {
    1 + len.saturating_sub(PATH_HEAD).div_ceil(PATH_CONT) as u32
}

/// Fields every record head shares, before the ring assigns its place.
#[derive(Clone, Copy, Debug)]
pub struct Head {
    /// The kind.
    pub kind: EventKind,
    /// `MT_RF_*` bits.
    pub flags: u8,
    /// errno, clamped.
    pub error: u8,
    /// Process.
    pub pid: u32,
    /// Nanoseconds since boot.
    pub timestamp_ns: u64,
    /// Thread.
    pub tid: u64,
    /// Keyed vnode hash.
    pub vnode_id: u64,
}

impl Head {
    fn raw(self, nslots: u8, drops_before: u32) -> raw::mt_rec_header {
        raw::mt_rec_header {
            stamp: 0, // written by the ring at commit
            drops_before,
            kind: self.kind as u8,
            nslots,
            flags: self.flags,
            error: self.error,
            pid: self.pid,
            timestamp_ns: self.timestamp_ns,
            tid: self.tid,
            vnode_id: self.vnode_id,
        }
    }
}

/// Clamps a count; `None` when unknown (negative).
fn count16(v: i32, saturated: &mut bool) -> Option<u16> {
    let v = u32::try_from(v).ok()?;
    Some(u16::try_from(v).unwrap_or_else(|_| {
        *saturated = true;
        u16::MAX
    }))
}

/// The counts of `ev` and the `MT_RF_*` bits that describe them.
fn counts(ev: &mt_event) -> (raw::mt_counts, u8) {
    let mut saturated = false;
    let (method, usecount, kusecount, iocount) = match ev.count_method {
        raw::MT_PROBE_OFFSET => (
            raw::MT_RF_COUNTS_OFFSET,
            count16(ev.usecount, &mut saturated),
            count16(ev.kusecount, &mut saturated),
            count16(ev.iocount, &mut saturated),
        ),
        raw::MT_PROBE_ISINUSE => (
            raw::MT_RF_COUNTS_ISINUSE,
            count16(ev.usecount, &mut saturated),
            Some(0),
            None,
        ),
        _ => (raw::MT_RF_COUNTS_NONE, Some(0), Some(0), None),
    };
    let mut flags = method;
    if iocount.is_none() && method != raw::MT_RF_COUNTS_NONE {
        flags |= raw::MT_RF_IOCOUNT_UNKNOWN;
    }
    if saturated {
        flags |= raw::MT_RF_COUNTS_SATURATED;
    }
    let c = raw::mt_counts {
        usecount: usecount.unwrap_or(0),
        kusecount: kusecount.unwrap_or(0),
        iocount: iocount.unwrap_or(0),
    };
    (c, flags as u8)
}

/// A duration clamped to 32 bits, setting `MT_RF_TRUNCATED` when clamped.
fn duration32(ns: u64, flags: &mut u8) -> u32 {
    u32::try_from(ns).unwrap_or_else(|_| {
        *flags |= raw::MT_RF_TRUNCATED as u8;
        u32::MAX
    })
}

/// errno as the byte records carry (out-of-range values become 255).
fn errno8(e: i32) -> u8 {
    u8::try_from(e).unwrap_or(u8::MAX)
}

/// The head fields of a fixed event, given its keyed vnode id.
pub fn head_of(kind: EventKind, ev: &mt_event, vnode_id: u64) -> Head {
    Head {
        kind,
        flags: 0,
        error: errno8(ev.error),
        pid: ev.pid,
        timestamp_ns: ev.timestamp_ns,
        tid: ev.tid,
        vnode_id,
    }
}

/// Encodes a one-slot record of kind MMAP, PAGEIN, MNOMAP, FILE_MMAP, OPEN
/// or CLOSE (OPEN's fmode and CLOSE's fflag travel in `ev.flags`).
/// Returns `None` for the multi-slot and marker kinds.
pub fn encode_fixed(mut head: Head, ev: &mt_event, drops_before: u32) -> Option<[u8; SLOT]> {
    let mut out = [0u8; SLOT];
    match head.kind {
        EventKind::Mmap => {
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            let r = raw::mt_rec_mmap {
                h: head.raw(1, drops_before),
                fflags: ev.prot,
                vid: ev.vid,
                duration_ns,
                counts: c,
                reserved0: [0; 6],
            };
            out.copy_from_slice(r.as_bytes());
        }
        EventKind::Pagein => {
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            let r = raw::mt_rec_pagein {
                h: head.raw(1, drops_before),
                f_offset: ev.offset,
                size: u32::try_from(ev.size).unwrap_or(u32::MAX),
                duration_ns,
                counts: c,
                upl_flags: ev.flags as u16,
            };
            out.copy_from_slice(r.as_bytes());
        }
        EventKind::Mnomap => {
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            let r = raw::mt_rec_mnomap {
                h: head.raw(1, drops_before),
                vid: ev.vid,
                duration_ns,
                counts: c,
                reserved0: [0; 10],
            };
            out.copy_from_slice(r.as_bytes());
        }
        EventKind::FileMmap => {
            let r = raw::mt_rec_file_mmap {
                h: head.raw(1, drops_before),
                file_pos: ev.offset as u64,
                prot: ev.prot,
                maxprot: ev.maxprot,
                mmap_flags: ev.flags,
                reserved0: 0,
            };
            out.copy_from_slice(r.as_bytes());
        }
        EventKind::Open => {
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let r = raw::mt_rec_open {
                h: head.raw(1, drops_before),
                vid: ev.vid,
                fmode: ev.flags,
                counts: c,
                reserved0: [0; 10],
            };
            out.copy_from_slice(r.as_bytes());
        }
        EventKind::Close => {
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            let r = raw::mt_rec_close {
                h: head.raw(1, drops_before),
                vid: ev.vid,
                fflag: ev.flags,
                duration_ns,
                counts: c,
                reserved0: [0; 6],
            };
            out.copy_from_slice(r.as_bytes());
        }
        EventKind::Path | EventKind::Mark | EventKind::Proc => return None,
    }
    Some(out)
}

/// Encodes a MARK record.
pub fn encode_mark(
    head: Head,
    drops_before: u32,
    mark: u32,
    arg0: u32,
    arg1: u64,
    arg2: u64,
) -> [u8; SLOT] {
    let r = raw::mt_rec_mark {
        h: head.raw(1, drops_before),
        mark,
        arg0,
        arg1,
        arg2,
    };
    let mut out = [0u8; SLOT];
    out.copy_from_slice(r.as_bytes());
    out
}

/// Encodes a PROC record naming `head.pid`: at most `MT_PROC_NAME_BYTES`
/// of `name`, up to its first NUL; `MT_RF_TRUNCATED` when cut.
pub fn encode_proc(mut head: Head, drops_before: u32, name: &[u8]) -> [u8; SLOT] {
    let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
    let mut r = raw::mt_rec_proc::new_zeroed();
    let n = name.len().min(r.name.len());
    if name.len() > n {
        head.flags |= raw::MT_RF_TRUNCATED as u8;
    }
    r.h = head.raw(1, drops_before);
    if let (Some(dst), Some(src)) = (r.name.get_mut(..n), name.get(..n)) {
        dst.copy_from_slice(src);
    }
    let mut out = [0u8; SLOT];
    out.copy_from_slice(r.as_bytes());
    out
}

/// Encodes the head slot of a PATH record for `path` (already cut to
/// `PATH_MAX`; `head.flags` carries `MT_RF_TRUNCATED` if it was cut).
pub fn encode_path_head(head: Head, drops_before: u32, vid: u32, path: &[u8]) -> [u8; SLOT] {
    let mut r = raw::mt_rec_path::new_zeroed();
    r.h = head.raw(path_slots(path.len()) as u8, drops_before);
    r.vid = vid;
    r.path_len = path.len() as u16;
    let n = path.len().min(PATH_HEAD);
    if let (Some(dst), Some(src)) = (r.path.get_mut(..n), path.get(..n)) {
        dst.copy_from_slice(src);
    }
    let mut out = [0u8; SLOT];
    out.copy_from_slice(r.as_bytes());
    out
}

/// The 60 data bytes of continuation slot `i` (1-based) of a PATH record.
pub fn path_continuation(path: &[u8], i: u32) -> [u8; SLOT - 4] {
    let mut data = [0u8; SLOT - 4];
    let start = PATH_HEAD + (i as usize - 1) * PATH_CONT;
    if let Some(chunk) = path.get(start..(start + PATH_CONT).min(path.len())) {
        if let Some(dst) = data.get_mut(..chunk.len()) {
            dst.copy_from_slice(chunk);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    fn ev() -> mt_event {
        mt_event {
            kind: raw::MT_KIND_PAGEIN,
            pid: 77,
            tid: 0x1234,
            timestamp_ns: 1_000,
            duration_ns: 5_000,
            vnode_ptr: 0xffff_ff80_dead_beef,
            vid: 9,
            error: 0,
            offset: 8192,
            size: 16384,
            usecount: 2,
            kusecount: 1,
            iocount: 3,
            count_method: raw::MT_PROBE_OFFSET,
            prot: 1,
            maxprot: 7,
            flags: 0x20,
            reserved0: 0,
        }
    }

    #[test]
    fn pagein_fields_land_where_the_header_says() {
        let e = ev();
        let bytes = encode_fixed(head_of(EventKind::Pagein, &e, 0xabc), &e, 5).unwrap();
        let r = raw::mt_rec_pagein::read_from_bytes(&bytes).unwrap();
        assert_eq!(
            (r.h.kind, r.h.nslots, r.h.drops_before),
            (raw::MT_KIND_PAGEIN as u8, 1, 5)
        );
        assert_eq!(
            (r.h.pid, r.h.tid, r.h.timestamp_ns, r.h.vnode_id),
            (77, 0x1234, 1_000, 0xabc)
        );
        assert_eq!(
            (r.f_offset, r.size, r.duration_ns, r.upl_flags),
            (8192, 16384, 5_000, 0x20)
        );
        assert_eq!(
            (r.counts.usecount, r.counts.kusecount, r.counts.iocount),
            (2, 1, 3)
        );
        assert_eq!(u32::from(r.h.flags), raw::MT_RF_COUNTS_OFFSET);
        assert!(
            !bytes.windows(8).any(|w| w == e.vnode_ptr.to_le_bytes()),
            "no kernel address in a record"
        );
    }

    #[test]
    fn counts_durations_and_errors_are_clamped_with_flags() {
        let mut e = ev();
        e.usecount = 70_000;
        e.iocount = -1;
        e.duration_ns = u64::MAX;
        e.error = 300;
        let bytes = encode_fixed(head_of(EventKind::Mmap, &e, 1), &e, 0).unwrap();
        let r = raw::mt_rec_mmap::read_from_bytes(&bytes).unwrap();
        let f = u32::from(r.h.flags);
        assert_eq!(r.counts.usecount, u16::MAX);
        assert_ne!(f & raw::MT_RF_COUNTS_SATURATED, 0);
        assert_ne!(f & raw::MT_RF_IOCOUNT_UNKNOWN, 0);
        assert_ne!(f & raw::MT_RF_TRUNCATED, 0);
        assert_eq!(r.duration_ns, u32::MAX);
        assert_eq!(r.h.error, 255);
    }

    #[test]
    fn isinuse_method_has_no_iocount() {
        let mut e = ev();
        e.count_method = raw::MT_PROBE_ISINUSE;
        let bytes = encode_fixed(head_of(EventKind::Mnomap, &e, 1), &e, 0).unwrap();
        let r = raw::mt_rec_mnomap::read_from_bytes(&bytes).unwrap();
        assert_eq!(
            u32::from(r.h.flags),
            raw::MT_RF_COUNTS_ISINUSE | raw::MT_RF_IOCOUNT_UNKNOWN
        );
        assert_eq!(
            (r.counts.usecount, r.counts.kusecount, r.counts.iocount),
            (2, 0, 0)
        );
    }

    #[test]
    fn path_slots_and_pieces_cover_the_path_exactly() {
        assert_eq!(path_slots(0), 1);
        assert_eq!(path_slots(16), 1);
        assert_eq!(path_slots(17), 2);
        assert_eq!(path_slots(76), 2);
        assert_eq!(path_slots(77), 3);
        assert_eq!(path_slots(PATH_MAX), raw::MT_RECORD_MAX_SLOTS);
        let path: Vec<u8> = (0..200u8).collect();
        let mut rebuilt =
            encode_path_head(head_of(EventKind::Path, &ev(), 1), 0, 9, &path)[48..].to_vec();
        for i in 1..path_slots(path.len()) {
            rebuilt.extend_from_slice(&path_continuation(&path, i));
        }
        assert_eq!(&rebuilt[..200], &path[..]);
        assert!(rebuilt[200..].iter().all(|&b| b == 0));
    }
}
