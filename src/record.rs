//! Encoding of events into ABI records: `struct mt_event` (what the shim saw)
//! → the 64-byte `mt_rec_*` layouts of `maptrace_abi.h`.
//!
//! Everything here is plain value conversion: counts are clamped to 16 bits
//! with a flag, durations to 32 bits, errno to a byte. No kernel address is
//! ever copied: the vnode pointer only enters the keyed hash.

use crate::ffi::bridge::mt_event;
use core::mem::offset_of;
use maptrace_abi::{EventKind, raw, wire};
use zerocopy::{Immutable, IntoBytes};

/// Bytes of a slot.
const SLOT: usize = wire::SLOT_SIZE;
/// Path bytes carried by the head slot of a PATH record.
pub const PATH_HEAD: usize = wire::PATH_HEAD_BYTES;
/// Path bytes carried by each continuation slot.
pub const PATH_CONT: usize = wire::PATH_CONT_BYTES;
/// Longest path carried.
pub const PATH_MAX: usize = wire::PATH_MAX;

/// Slots a PATH record of `len` bytes (already cut to `PATH_MAX`) takes.
pub const fn path_slots(len: usize) -> u32 {
    wire::path_slots(len) as u32
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

/// A slot's bytes after its stamp word: what the ring lends an encoder.
pub type Body = [u8; SLOT - 4];

/// Writes record fields at their ABI offsets (`offset_of!` on the
/// `mt_rec_*` structs, so offsets count the stamp word) into a slot body,
/// straight into the ring. Building a record on the stack and copying it in
/// stalls on store-to-load forwarding: the copy's wide loads meet the
/// fields' narrow stores still in the store buffer.
struct Fields<'b>(&'b mut Body);

impl<'b> Fields<'b> {
    /// Zeroes the body (a reused slot keeps its previous record's bytes).
    #[inline(always)]
    fn zeroed(body: &'b mut Body) -> Fields<'b> {
        *body = [0; SLOT - 4];
        Fields(body)
    }

    /// Writes `bytes` at record offset `off` (>= 4); out of range writes nothing.
    #[inline(always)]
    fn bytes(&mut self, off: usize, bytes: &[u8]) {
        let dst = off
            .checked_sub(4)
            .and_then(|at| self.0.get_mut(at..at.checked_add(bytes.len())?));
        if let Some(dst) = dst {
            dst.copy_from_slice(bytes);
        }
    }

    #[inline(always)]
    fn put<T: IntoBytes + Immutable>(&mut self, off: usize, v: T) {
        self.bytes(off, v.as_bytes());
    }

    /// The header fields after the stamp word.
    #[inline(always)]
    fn head(&mut self, h: Head, nslots: u8, drops_before: u32) {
        use raw::mt_rec_header as H;
        self.put(offset_of!(H, drops_before), drops_before);
        self.put(offset_of!(H, kind), h.kind as u8);
        self.put(offset_of!(H, nslots), nslots);
        self.put(offset_of!(H, flags), h.flags);
        self.put(offset_of!(H, error), h.error);
        self.put(offset_of!(H, pid), h.pid);
        self.put(offset_of!(H, timestamp_ns), h.timestamp_ns);
        self.put(offset_of!(H, tid), h.tid);
        self.put(offset_of!(H, vnode_id), h.vnode_id);
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

/// The counts of `ev` and the `MT_RF_*` bits that describe them. Inlined:
/// as a call (five kinds use it) it cost a spill of the live registers.
#[inline(always)]
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

/// Writes a one-slot record of kind MMAP, PAGEIN, MNOMAP, FILE_MMAP, OPEN or
/// CLOSE into `body` (OPEN's fmode and CLOSE's fflag travel in `ev.flags`). The multi-slot and marker kinds get their header only (callers
/// never pass them).
#[inline(always)]
pub fn write_fixed(body: &mut Body, mut head: Head, ev: &mt_event, drops_before: u32) {
    let mut f = Fields::zeroed(body);
    match head.kind {
        EventKind::Mmap => {
            use raw::mt_rec_mmap as R;
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            f.put(offset_of!(R, fflags), ev.prot);
            f.put(offset_of!(R, vid), ev.vid);
            f.put(offset_of!(R, duration_ns), duration_ns);
            f.put(offset_of!(R, counts), c);
        }
        EventKind::Pagein => {
            use raw::mt_rec_pagein as R;
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            f.put(offset_of!(R, f_offset), ev.offset);
            f.put(
                offset_of!(R, size),
                u32::try_from(ev.size).unwrap_or(u32::MAX),
            );
            f.put(offset_of!(R, duration_ns), duration_ns);
            f.put(offset_of!(R, counts), c);
            f.put(offset_of!(R, upl_flags), ev.flags as u16);
        }
        EventKind::Mnomap => {
            use raw::mt_rec_mnomap as R;
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            f.put(offset_of!(R, vid), ev.vid);
            f.put(offset_of!(R, duration_ns), duration_ns);
            f.put(offset_of!(R, counts), c);
        }
        EventKind::FileMmap => {
            use raw::mt_rec_file_mmap as R;
            f.put(offset_of!(R, file_pos), ev.offset as u64);
            f.put(offset_of!(R, prot), ev.prot);
            f.put(offset_of!(R, maxprot), ev.maxprot);
            f.put(offset_of!(R, mmap_flags), ev.flags);
        }
        EventKind::Open => {
            use raw::mt_rec_open as R;
            let (c, cf) = counts(ev);
            head.flags |= cf;
            f.put(offset_of!(R, vid), ev.vid);
            f.put(offset_of!(R, fmode), ev.flags);
            f.put(offset_of!(R, counts), c);
        }
        EventKind::Close => {
            use raw::mt_rec_close as R;
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            f.put(offset_of!(R, vid), ev.vid);
            f.put(offset_of!(R, fflag), ev.flags);
            f.put(offset_of!(R, duration_ns), duration_ns);
            f.put(offset_of!(R, counts), c);
        }
        EventKind::Path | EventKind::Mark | EventKind::Proc => {}
    }
    // Last: the kind-specific fields above may have set flags.
    f.head(head, 1, drops_before);
}

/// Encodes a one-slot record of kind MMAP, PAGEIN, MNOMAP or FILE_MMAP as a
/// whole slot (stamp 0). Returns `None` for the multi-slot and marker kinds.
pub fn encode_fixed(head: Head, ev: &mt_event, drops_before: u32) -> Option<[u8; SLOT]> {
    if matches!(
        head.kind,
        EventKind::Path | EventKind::Mark | EventKind::Proc
    ) {
        return None;
    }
    Some(whole_slot(|body| write_fixed(body, head, ev, drops_before)))
}

/// A whole slot (stamp 0) whose body `write` fills.
fn whole_slot(write: impl FnOnce(&mut Body)) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    if let Some(body) = out.last_chunk_mut::<{ SLOT - 4 }>() {
        write(body);
    }
    out
}

/// Writes a MARK record into `body`.
pub fn write_mark(
    body: &mut Body,
    head: Head,
    drops_before: u32,
    mark: u32,
    arg0: u32,
    arg1: u64,
    arg2: u64,
) {
    use raw::mt_rec_mark as R;
    let mut f = Fields::zeroed(body);
    f.head(head, 1, drops_before);
    f.put(offset_of!(R, mark), mark);
    f.put(offset_of!(R, arg0), arg0);
    f.put(offset_of!(R, arg1), arg1);
    f.put(offset_of!(R, arg2), arg2);
}

/// Encodes a MARK record as a whole slot (stamp 0).
pub fn encode_mark(
    head: Head,
    drops_before: u32,
    mark: u32,
    arg0: u32,
    arg1: u64,
    arg2: u64,
) -> [u8; SLOT] {
    whole_slot(|body| write_mark(body, head, drops_before, mark, arg0, arg1, arg2))
}

/// Writes a PROC record naming `head.pid` into `body`: at most
/// `MT_PROC_NAME_BYTES` of `name`, up to its first NUL; `MT_RF_TRUNCATED`
/// when cut.
pub fn write_proc(body: &mut Body, mut head: Head, drops_before: u32, name: &[u8]) {
    use raw::mt_rec_proc as R;
    let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
    let cap = raw::MT_PROC_NAME_BYTES as usize;
    if name.len() > cap {
        head.flags |= raw::MT_RF_TRUNCATED as u8;
    }
    let mut f = Fields::zeroed(body);
    f.head(head, 1, drops_before);
    f.bytes(offset_of!(R, name), name.get(..cap).unwrap_or(name));
}

/// Encodes a PROC record as a whole slot (stamp 0).
pub fn encode_proc(head: Head, drops_before: u32, name: &[u8]) -> [u8; SLOT] {
    whole_slot(|body| write_proc(body, head, drops_before, name))
}

/// Writes the head slot of a PATH record for `path` (already cut to
/// `PATH_MAX`; `head.flags` carries `MT_RF_TRUNCATED` if it was cut).
pub fn write_path_head(body: &mut Body, head: Head, drops_before: u32, vid: u32, path: &[u8]) {
    use raw::mt_rec_path as R;
    let mut f = Fields::zeroed(body);
    f.head(head, path_slots(path.len()) as u8, drops_before);
    f.put(offset_of!(R, vid), vid);
    f.put(offset_of!(R, path_len), path.len() as u16);
    f.bytes(offset_of!(R, path), path.get(..PATH_HEAD).unwrap_or(path));
}

/// Encodes the head slot of a PATH record as a whole slot (stamp 0).
pub fn encode_path_head(head: Head, drops_before: u32, vid: u32, path: &[u8]) -> [u8; SLOT] {
    whole_slot(|body| write_path_head(body, head, drops_before, vid, path))
}

/// Writes the 60 data bytes of continuation slot `i` (1-based) of a PATH
/// record into `body`.
pub fn write_path_continuation(body: &mut Body, path: &[u8], i: u32) {
    *body = [0; SLOT - 4];
    let start = PATH_HEAD + (i as usize).saturating_sub(1) * PATH_CONT;
    if let Some(chunk) = path.get(start..(start + PATH_CONT).min(path.len())) {
        if let Some(dst) = body.get_mut(..chunk.len()) {
            dst.copy_from_slice(chunk);
        }
    }
}

/// The 60 data bytes of continuation slot `i` (1-based) of a PATH record.
pub fn path_continuation(path: &[u8], i: u32) -> Body {
    let mut data = [0u8; SLOT - 4];
    write_path_continuation(&mut data, path, i);
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
    fn writers_leave_nothing_of_a_reused_slot() {
        // The ring lends the slot's previous bytes; every writer must cover
        // all 60 of them (reserved fields included).
        let e = ev();
        let path: Vec<u8> = (1..=90u8).collect();
        let head = |k| head_of(k, &e, 7);
        for kind in [
            EventKind::Mmap,
            EventKind::Pagein,
            EventKind::Mnomap,
            EventKind::FileMmap,
        ] {
            let mut body = [0xa5u8; SLOT - 4];
            write_fixed(&mut body, head(kind), &e, 3);
            assert_eq!(body[..], encode_fixed(head(kind), &e, 3).unwrap()[4..]);
        }
        let mut body = [0xa5u8; SLOT - 4];
        write_mark(&mut body, head(EventKind::Mark), 3, 1, 2, 3, 4);
        assert_eq!(
            body[..],
            encode_mark(head(EventKind::Mark), 3, 1, 2, 3, 4)[4..]
        );
        let mut body = [0xa5u8; SLOT - 4];
        write_path_head(&mut body, head(EventKind::Path), 3, 9, &path);
        assert_eq!(
            body[..],
            encode_path_head(head(EventKind::Path), 3, 9, &path)[4..]
        );
        let mut body = [0xa5u8; SLOT - 4];
        write_path_continuation(&mut body, &path, 2);
        assert_eq!(&body[..14], &path[76..]);
        assert!(body[14..].iter().all(|&b| b == 0));
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
