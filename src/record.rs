//! Encoding of events into ABI records: `struct mt_event` (what the shim saw)
//! → the 64-byte `mt_rec_*` layouts of `maptrace_abi.h`.
//!
//! Everything here is plain value conversion: counts are clamped to 16 bits
//! with a flag, durations to 32 bits, errno to a byte. No kernel address is
//! ever copied: the vnode pointer only enters the keyed hash.

use crate::ffi::bridge::mt_event;
use core::mem::offset_of;
use maptrace_abi::{EventKind, raw, wire};

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

/// A record's fixed fields built as eight little-endian words (registers,
/// once inlined: every offset is a constant), then stored into the slot body
/// with eight stores ([`Fields::store`]). Zeroing the body and then storing
/// ~20 narrow fields wrote the slot's line twice and kept the store buffer
/// full ahead of the next record's reserve CAS. Offsets come from
/// `offset_of!` on the `mt_rec_*` structs, so they count the stamp word,
/// which the ring writes at commit.
struct Fields([u64; SLOT / 8]);

/// A field value no wider than a word.
trait Scalar: Copy {
    const SIZE: usize;
    fn bits(self) -> u64;
}

macro_rules! scalar {
    ($($t:ty => $u:ty),*) => {$(
        impl Scalar for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            #[inline(always)]
            fn bits(self) -> u64 {
                // Two's complement bits, zero-extended: the field's bytes.
                u64::from(self as $u)
            }
        }
    )*};
}
scalar!(u8 => u8, u16 => u16, u32 => u32, u64 => u64, i64 => u64);

impl Fields {
    /// All zero: fields not put (reserved bytes) stay zero.
    #[inline(always)]
    fn new() -> Fields {
        Fields([0; SLOT / 8])
    }

    /// Puts `v` at record offset `off`. Every `mt_rec_*` field is naturally
    /// aligned (C layout, checked by the ABI's asserts), so none straddles
    /// a word; an offset that would is a bug caught in debug builds and by
    /// the field tests below, and writes nothing in release.
    #[inline(always)]
    fn put<T: Scalar>(&mut self, off: usize, v: T) {
        debug_assert!(
            off >= 4 && off % T::SIZE == 0,
            "aligned field after the stamp"
        );
        if off % 8 + T::SIZE > 8 {
            return;
        }
        if let Some(w) = self.0.get_mut(off / 8) {
            *w |= v.bits() << (off % 8 * 8);
        }
    }

    /// Puts the three counts of `mt_counts` at record offset `off`.
    #[inline(always)]
    fn counts(&mut self, off: usize, c: raw::mt_counts) {
        use raw::mt_counts as C;
        self.put(off + offset_of!(C, usecount), c.usecount);
        self.put(off + offset_of!(C, kusecount), c.kusecount);
        self.put(off + offset_of!(C, iocount), c.iocount);
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

    /// Stores the record into `body`: all 60 bytes after the stamp word (a
    /// reused slot keeps its previous record's bytes), the first word's
    /// upper half and then seven whole words.
    #[inline(always)]
    fn store(self, body: &mut Body) {
        let [first, rest @ ..] = self.0;
        let (head, tail) = body.split_at_mut(4);
        head.copy_from_slice(&((first >> 32) as u32).to_le_bytes());
        for (dst, w) in tail.chunks_exact_mut(8).zip(rest) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// Copies `bytes` to record offset `off` (>= 4) of a stored body; out of
/// range writes nothing.
fn bytes_at(body: &mut Body, off: usize, bytes: &[u8]) {
    let dst = off
        .checked_sub(4)
        .and_then(|at| body.get_mut(at..at.checked_add(bytes.len())?));
    if let Some(dst) = dst {
        dst.copy_from_slice(bytes);
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
    let mut f = Fields::new();
    match head.kind {
        EventKind::Mmap => {
            use raw::mt_rec_mmap as R;
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            f.put(offset_of!(R, fflags), ev.prot);
            f.put(offset_of!(R, vid), ev.vid);
            f.put(offset_of!(R, duration_ns), duration_ns);
            f.counts(offset_of!(R, counts), c);
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
            f.counts(offset_of!(R, counts), c);
            f.put(offset_of!(R, upl_flags), ev.flags as u16);
        }
        EventKind::Mnomap => {
            use raw::mt_rec_mnomap as R;
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            f.put(offset_of!(R, vid), ev.vid);
            f.put(offset_of!(R, duration_ns), duration_ns);
            f.counts(offset_of!(R, counts), c);
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
            f.counts(offset_of!(R, counts), c);
        }
        EventKind::Close => {
            use raw::mt_rec_close as R;
            let (c, cf) = counts(ev);
            head.flags |= cf;
            let duration_ns = duration32(ev.duration_ns, &mut head.flags);
            f.put(offset_of!(R, vid), ev.vid);
            f.put(offset_of!(R, fflag), ev.flags);
            f.put(offset_of!(R, duration_ns), duration_ns);
            f.counts(offset_of!(R, counts), c);
        }
        EventKind::Path | EventKind::Mark | EventKind::Proc => {}
    }
    // Last: the kind-specific fields above may have set flags.
    f.head(head, 1, drops_before);
    f.store(body);
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
    let mut f = Fields::new();
    f.head(head, 1, drops_before);
    f.put(offset_of!(R, mark), mark);
    f.put(offset_of!(R, arg0), arg0);
    f.put(offset_of!(R, arg1), arg1);
    f.put(offset_of!(R, arg2), arg2);
    f.store(body);
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
    let mut f = Fields::new();
    f.head(head, 1, drops_before);
    f.store(body);
    bytes_at(body, offset_of!(R, name), name.get(..cap).unwrap_or(name));
}

/// Encodes a PROC record as a whole slot (stamp 0).
pub fn encode_proc(head: Head, drops_before: u32, name: &[u8]) -> [u8; SLOT] {
    whole_slot(|body| write_proc(body, head, drops_before, name))
}

/// Writes the head slot of a PATH record for `path` (already cut to
/// `PATH_MAX`; `head.flags` carries `MT_RF_TRUNCATED` if it was cut).
pub fn write_path_head(body: &mut Body, head: Head, drops_before: u32, vid: u32, path: &[u8]) {
    use raw::mt_rec_path as R;
    let mut f = Fields::new();
    f.head(head, path_slots(path.len()) as u8, drops_before);
    f.put(offset_of!(R, vid), vid);
    f.put(offset_of!(R, path_len), path.len() as u16);
    f.store(body);
    bytes_at(
        body,
        offset_of!(R, path),
        path.get(..PATH_HEAD).unwrap_or(path),
    );
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
    use zerocopy::{FromBytes, FromZeros};

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

    /// An event whose every field has its own bytes, none clamped.
    fn distinct_ev() -> mt_event {
        mt_event {
            kind: raw::MT_KIND_PAGEIN,
            pid: 0x2122_2324,
            tid: 0x3132_3334_3536_3738,
            timestamp_ns: 0x4142_4344_4546_4748,
            duration_ns: 0x5152_5354,
            vnode_ptr: 0xffff_ff80_dead_beef,
            vid: 0x6162_6364,
            error: 0x71,
            offset: 0x0102_0304_0506_0708,
            size: 0x1b1c_1d1e,
            usecount: 0x2b2c,
            kusecount: 0x3b3c,
            iocount: 0x4b4c,
            count_method: raw::MT_PROBE_OFFSET,
            prot: 0x5b5c_5d5e,
            maxprot: 0x6b6c_6d6e,
            flags: 0x7b7c_7d7e,
            reserved0: 0,
        }
    }

    /// The bytes of a record struct after its stamp word.
    fn body_of<T: zerocopy::IntoBytes + zerocopy::Immutable>(rec: &T) -> Vec<u8> {
        rec.as_bytes()[4..].to_vec()
    }

    #[test]
    fn every_field_of_every_kind_lands_in_its_struct_field() {
        // Built field by field through the bindgen structs, independently of
        // the offsets the encoder shifts by: a wrong word or shift shows.
        let e = distinct_ev();
        let id = 0x8182_8384_8586_8788;
        let header = |kind: u32, flags: u32| raw::mt_rec_header {
            stamp: 0,
            drops_before: 0x9192_9394,
            kind: kind as u8,
            nslots: 1,
            flags: flags as u8,
            error: 0x71,
            pid: e.pid,
            timestamp_ns: e.timestamp_ns,
            tid: e.tid,
            vnode_id: id,
        };
        let counts = raw::mt_counts {
            usecount: 0x2b2c,
            kusecount: 0x3b3c,
            iocount: 0x4b4c,
        };
        let offset_counts = raw::MT_RF_COUNTS_OFFSET;
        let encoded =
            |kind| encode_fixed(head_of(kind, &e, id), &e, 0x9192_9394).unwrap()[4..].to_vec();

        let mut mmap = raw::mt_rec_mmap::new_zeroed();
        (mmap.h, mmap.fflags, mmap.vid) = (header(raw::MT_KIND_MMAP, offset_counts), e.prot, e.vid);
        (mmap.duration_ns, mmap.counts) = (0x5152_5354, counts);
        assert_eq!(encoded(EventKind::Mmap), body_of(&mmap));

        let mut pagein = raw::mt_rec_pagein::new_zeroed();
        (pagein.h, pagein.f_offset, pagein.size) = (
            header(raw::MT_KIND_PAGEIN, offset_counts),
            e.offset,
            0x1b1c_1d1e,
        );
        (pagein.duration_ns, pagein.counts, pagein.upl_flags) = (0x5152_5354, counts, 0x7d7e);
        assert_eq!(encoded(EventKind::Pagein), body_of(&pagein));

        let mut mnomap = raw::mt_rec_mnomap::new_zeroed();
        (mnomap.h, mnomap.vid, mnomap.duration_ns) = (
            header(raw::MT_KIND_MNOMAP, offset_counts),
            e.vid,
            0x5152_5354,
        );
        mnomap.counts = counts;
        assert_eq!(encoded(EventKind::Mnomap), body_of(&mnomap));

        let mut file_mmap = raw::mt_rec_file_mmap::new_zeroed();
        (file_mmap.h, file_mmap.file_pos) = (header(raw::MT_KIND_FILE_MMAP, 0), e.offset as u64);
        (file_mmap.prot, file_mmap.maxprot, file_mmap.mmap_flags) = (e.prot, e.maxprot, e.flags);
        assert_eq!(encoded(EventKind::FileMmap), body_of(&file_mmap));

        let mut open = raw::mt_rec_open::new_zeroed();
        (open.h, open.vid, open.fmode) = (header(raw::MT_KIND_OPEN, offset_counts), e.vid, e.flags);
        open.counts = counts;
        assert_eq!(encoded(EventKind::Open), body_of(&open));

        let mut close = raw::mt_rec_close::new_zeroed();
        (close.h, close.vid, close.fflag) =
            (header(raw::MT_KIND_CLOSE, offset_counts), e.vid, e.flags);
        (close.duration_ns, close.counts) = (0x5152_5354, counts);
        assert_eq!(encoded(EventKind::Close), body_of(&close));

        let mut mark = raw::mt_rec_mark::new_zeroed();
        (mark.h, mark.mark, mark.arg0) = (header(raw::MT_KIND_MARK, 0), 0xa1a2_a3a4, 0xb1b2_b3b4);
        (mark.arg1, mark.arg2) = (0xc1c2_c3c4_c5c6_c7c8, 0xd1d2_d3d4_d5d6_d7d8);
        let m = encode_mark(
            head_of(EventKind::Mark, &e, id),
            0x9192_9394,
            0xa1a2_a3a4,
            0xb1b2_b3b4,
            mark.arg1,
            mark.arg2,
        );
        assert_eq!(m[4..], body_of(&mark)[..]);
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
