//! The batch decoder: bytes read from `kern.maptrace.events` (or a recording)
//! → segments → records, with typed errors and exact loss accounting.
//!
//! A [`Decoder`] keeps per-shard state across batches, so it can tell a
//! corrupted stream (a stamp that does not match its position) from lost
//! records (a `drops_before` delta) and from a missed batch (a position gap,
//! e.g. a second reader took it).

use crate::kind::{EventKind, Mark, ProbeMethod};
use crate::raw;
use crate::version::{AbiMismatch, AbiVersion};
use crate::wire;
use alloc::vec::Vec;
use core::fmt;
use zerocopy::FromBytes;

const SLOT: usize = wire::SLOT_SIZE;
const BATCH_HEADER: usize = core::mem::size_of::<raw::mt_batch_header>();
const SEGMENT_HEADER: usize = core::mem::size_of::<raw::mt_segment_header>();

/// Why a whole batch was refused (nothing in it was decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a batch header, or than the header's `total_bytes`.
    Truncated {
        /// Bytes needed.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// The first word is not `MT_BATCH_MAGIC`.
    BadMagic(u32),
    /// The producer speaks another major ABI version.
    AbiMismatch(AbiMismatch),
    /// The header's size or flags are not ones this version defines.
    BadHeader(&'static str),
}

/// A problem inside a batch; decoding goes on with the next segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A segment header or its slots run past the batch.
    TruncatedSegment {
        /// Index of the segment in the batch.
        segment: u32,
    },
    /// A segment header does not start with `MT_SEGMENT_MAGIC`.
    BadSegmentMagic {
        /// Index of the segment in the batch.
        segment: u32,
        /// The word found.
        found: u32,
    },
    /// A segment names a shard twice in one batch, or a shard number that is
    /// out of range.
    BadShard {
        /// The shard number.
        shard: u16,
    },
    /// Positions jumped between batches: records were consumed elsewhere (a
    /// second reader) or the kext lost them.
    PositionGap {
        /// The shard.
        shard: u16,
        /// The position that should have come next.
        expected: u64,
        /// The position that came.
        found: u64,
    },
    /// A record's stamp does not match its position: a corrupted stream
    /// (drops never consume positions, so no loss explains it).
    StampMismatch {
        /// The shard.
        shard: u16,
        /// The slot position.
        pos: u64,
        /// The stamp that position must carry.
        expected: u32,
        /// The stamp found.
        found: u32,
    },
    /// A record header is not valid (kind, slot count, continuation marker).
    BadRecord {
        /// The shard.
        shard: u16,
        /// The slot position.
        pos: u64,
        /// What is wrong.
        what: RecordError,
    },
    /// The segment's record count disagrees with the records found in it.
    CountMismatch {
        /// The shard.
        shard: u16,
        /// Records the header announced.
        announced: u32,
        /// Records decoded.
        found: u32,
    },
}

/// What is wrong with one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// `kind` is not a known `enum mt_kind`.
    UnknownKind(u8),
    /// `nslots` is 0, above `MT_RECORD_MAX_SLOTS`, runs past the segment, or
    /// is not 1 for a fixed-size kind.
    BadSlotCount(u8),
    /// A continuation slot does not carry `MT_STAMP_CONT | index`.
    BadContinuation(u32),
    /// A path length that does not fit the record's slots.
    BadPathLength(u16),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { need, have } => {
                write!(f, "truncated batch: need {need} bytes, have {have}")
            }
            BatchError::BadMagic(m) => write!(f, "not a maptrace batch (magic {m:#010x})"),
            BatchError::AbiMismatch(m) => write!(f, "ABI mismatch: made by a kext with {m}"),
            BatchError::BadHeader(what) => write!(f, "bad batch header: {what}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TruncatedSegment { segment } => {
                write!(f, "segment {segment} is truncated")
            }
            DecodeError::BadSegmentMagic { segment, found } => {
                write!(f, "segment {segment} has bad magic {found:#010x}")
            }
            DecodeError::BadShard { shard } => write!(f, "bad or repeated shard {shard}"),
            DecodeError::PositionGap {
                shard,
                expected,
                found,
            } if found < expected => write!(
                f,
                "shard {shard}: positions went back from {expected} to {found} \
                 (a batch replayed or corrupted)"
            ),
            DecodeError::PositionGap {
                shard,
                expected,
                found,
            } => write!(
                f,
                "shard {shard}: positions jumped from {expected} to {found} \
                 ({} slots read by someone else or lost)",
                found.saturating_sub(*expected)
            ),
            DecodeError::StampMismatch {
                shard,
                pos,
                expected,
                found,
            } => write!(
                f,
                "shard {shard} pos {pos}: stamp {found:#x} where {expected:#x} belongs (corrupted)"
            ),
            DecodeError::BadRecord { shard, pos, what } => {
                write!(f, "shard {shard} pos {pos}: {what}")
            }
            DecodeError::CountMismatch {
                shard,
                announced,
                found,
            } => write!(
                f,
                "shard {shard}: segment announced {announced} records, held {found}"
            ),
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            RecordError::BadSlotCount(n) => write!(f, "bad slot count {n}"),
            RecordError::BadContinuation(m) => write!(f, "bad continuation marker {m:#x}"),
            RecordError::BadPathLength(l) => write!(f, "bad path length {l}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BatchError {}
#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}
#[cfg(feature = "std")]
impl std::error::Error for RecordError {}

/// Vnode counts from a record. What the fields hold depends on `method`
/// (see `struct mt_counts` in maptrace_abi.h).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// [`ProbeMethod::Offset`]: `v_usecount` (kusecount references
    /// included). [`ProbeMethod::IsInUse`]: `v_usecount - v_kusecount`, the
    /// only thing `vnode_isinuse` can measure, not the usecount.
    pub usecount: u16,
    /// `v_kusecount` with [`ProbeMethod::Offset`]; 0 (unknown) otherwise.
    pub kusecount: u16,
    /// Raw `v_iocount` (the caller's iocount and, during a link change,
    /// the link lock's, which `vnode_iocount()` would subtract); `None` when
    /// not known.
    pub iocount: Option<u16>,
    /// How they were obtained.
    pub method: ProbeMethod,
    /// A count was clamped to 16 bits.
    pub saturated: bool,
}

/// What a record says, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `VNOP_MMAP`. Counts are from before `ubc_map` took its reference.
    Mmap {
        /// `PROT_*` bits of the mapping.
        fflags: u32,
        /// `vnode_vid`.
        vid: u32,
        /// Time in the original operation.
        duration_ns: u32,
        /// Counts before the operation.
        counts: Counts,
    },
    /// `VNOP_PAGEIN` of one cluster.
    Pagein {
        /// File offset of the cluster.
        offset: i64,
        /// Bytes.
        size: u32,
        /// Time in the original operation.
        duration_ns: u32,
        /// Counts before the operation.
        counts: Counts,
        /// Low 16 bits of the UPL flags.
        upl_flags: u16,
    },
    /// `VNOP_MNOMAP`: the last mapping went away. Counts still include the
    /// mapping reference.
    Mnomap {
        /// `vnode_vid`.
        vid: u32,
        /// Time in the original operation.
        duration_ns: u32,
        /// Counts before the operation.
        counts: Counts,
    },
    /// mmap(2) seen by the MAC check.
    FileMmap {
        /// The offset argument.
        file_pos: u64,
        /// `PROT_*` requested.
        prot: u32,
        /// `PROT_*` allowed.
        maxprot: u32,
        /// `MAP_*` flags.
        mmap_flags: u32,
    },
    /// The path of the record's vnode id.
    Path {
        /// `vnode_vid`.
        vid: u32,
        /// The path bytes (not NUL-terminated).
        path: Vec<u8>,
        /// Cut at `MT_PATH_MAX`.
        truncated: bool,
    },
    /// The name of the record's pid (ABI 1.2).
    Proc {
        /// The name bytes, NUL padding removed.
        name: Vec<u8>,
        /// The kernel's name was longer than `MT_PROC_NAME_BYTES`.
        truncated: bool,
    },
    /// An open took its usecount (MAC `vnode_notify_open`; ABI 1.2).
    /// Counts include that reference.
    Open {
        /// `vnode_vid`.
        vid: u32,
        /// `FREAD|FWRITE|O_EVTONLY|...` of the open.
        fmode: u32,
        /// Counts after the open's `vnode_ref_ext`.
        counts: Counts,
    },
    /// The last close of an open file (`VNOP_CLOSE` from `vn_close`; ABI
    /// 1.2). Counts still include the open's reference, dropped next.
    Close {
        /// `vnode_vid`.
        vid: u32,
        /// The open's `FREAD|FWRITE|O_EVTONLY|...`.
        fflag: u32,
        /// Time in the original operation.
        duration_ns: u32,
        /// Counts before the operation.
        counts: Counts,
    },
    /// A kext marker.
    Mark {
        /// Which.
        mark: Mark,
        /// Mark-specific.
        arg0: u32,
        /// Mark-specific.
        arg1: u64,
        /// Mark-specific.
        arg2: u64,
    },
}

/// One decoded record with its place in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The shard (CPU) it was recorded on.
    pub shard: u16,
    /// Its 64-bit position in the shard.
    pub pos: u64,
    /// Records this shard dropped between the previous record and this one.
    pub lost_before: u64,
    /// `enum mt_kind`.
    pub kind: EventKind,
    /// Raw `MT_RF_*` flags.
    pub flags: u8,
    /// errno of the original operation.
    pub error: u8,
    /// Process id.
    pub pid: u32,
    /// Nanoseconds since boot.
    pub timestamp_ns: u64,
    /// Thread id.
    pub tid: u64,
    /// Keyed hash of the vnode and its vid: a recycled vnode is a new id.
    pub vnode_id: u64,
    /// Kind-specific fields.
    pub event: Event,
}

/// A validated batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The header as read.
    pub header: raw::mt_batch_header,
}

/// A validated segment header with its slot bytes.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// The header as read.
    pub header: raw::mt_segment_header,
    /// `nslots * 64` bytes of raw slots.
    pub slots: &'a [u8],
}

/// Per-shard state carried from batch to batch.
#[derive(Clone, Copy, Debug, Default)]
struct ShardState {
    /// Position the next segment of this shard must start at.
    next_pos: Option<u64>,
    /// `drops_before` of the last record (mod 2^32).
    last_drops: Option<u32>,
    /// Drops attributed to records so far.
    attributed: u64,
    /// Cumulative drops per the last segment header.
    reported: u64,
    /// Drops reported as [`Loss::Dropped`] after the shard's last record
    /// (they belong to no record).
    settled_tail: u64,
}

impl ShardState {
    /// Drops counted so far (`kext`: the kext's own counter, when known).
    fn counted(&self, kext: u64) -> u64 {
        self.reported.max(self.attributed).max(kext)
    }

    /// Drops counted but not yet placed before a record or as a tail loss.
    fn unplaced(&self, kext: u64) -> u64 {
        self.counted(kext)
            .saturating_sub(self.attributed.saturating_add(self.settled_tail))
    }
}

/// How records went missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// The kext dropped records because a shard was full.
    Dropped {
        /// The shard.
        shard: u16,
        /// Records dropped.
        count: u64,
        /// Drops happened before this position (`None`: after the shard's
        /// last record read, reported at a reload or the end of the stream).
        before_pos: Option<u64>,
    },
    /// Positions jumped: another reader took batches, or they were lost.
    Gap {
        /// The shard.
        shard: u16,
        /// Slots skipped.
        slots: u64,
    },
}

/// One element of a decoded stream ([`Decoder::feed`]), in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A record. Drops before it are in its `lost_before`.
    Record(Record),
    /// Records lost without a record to carry them: a position gap, or a
    /// shard's drops after its last record (at a reload or the end).
    Lost(Loss),
    /// The kext was reloaded: vnode ids start over. The old load's tail
    /// losses come just before.
    Reload {
        /// The new load's generation.
        generation: u64,
    },
    /// Part of the batch could not be decoded.
    Corrupt(DecodeError),
}

/// What a batch says besides its records ([`Decoder::feed_views`]): the
/// non-record items of [`Decoded`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// As [`Decoded::Lost`].
    Lost(Loss),
    /// As [`Decoded::Reload`].
    Reload {
        /// The new load's generation.
        generation: u64,
    },
    /// As [`Decoded::Corrupt`].
    Corrupt(DecodeError),
}

impl From<Notice> for Decoded {
    fn from(n: Notice) -> Decoded {
        match n {
            Notice::Lost(l) => Decoded::Lost(l),
            Notice::Reload { generation } => Decoded::Reload { generation },
            Notice::Corrupt(e) => Decoded::Corrupt(e),
        }
    }
}

impl Notice {
    /// An in-batch problem as the stream reports it: positions that moved
    /// forward lost slots; positions that went back lost nothing, which is
    /// corruption (or a replayed batch).
    fn of_error(e: DecodeError) -> Notice {
        match e {
            DecodeError::PositionGap {
                shard,
                expected,
                found,
            } if found > expected => Notice::Lost(Loss::Gap {
                shard,
                slots: found - expected,
            }),
            e => Notice::Corrupt(e),
        }
    }
}

/// A validated record read in place from the batch bytes: what merging
/// needs is at hand, the rest is read from the slots on demand. Converting
/// with [`RecordView::to_record`] gives exactly what [`Decoder::feed`]
/// delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's slots: its head slot, then its continuation slots.
    slots: &'a [u8],
    /// Nanoseconds since boot.
    pub timestamp_ns: u64,
    /// Its 64-bit position in the shard.
    pub pos: u64,
    /// Records this shard dropped between the previous record and this one.
    pub lost_before: u64,
    /// The shard (CPU) it was recorded on.
    pub shard: u16,
    /// `enum mt_kind`.
    pub kind: EventKind,
}

impl<'a> RecordView<'a> {
    /// The record's raw slots (head first), as the kext wrote them.
    pub fn slots(&self) -> &'a [u8] {
        self.slots
    }

    /// The record header as read.
    #[inline]
    pub fn header(&self) -> raw::mt_rec_header {
        read(self.slots)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.header().pid
    }

    /// Thread id.
    pub fn tid(&self) -> u64 {
        self.header().tid
    }

    /// Keyed hash of the vnode and its vid.
    pub fn vnode_id(&self) -> u64 {
        self.header().vnode_id
    }

    /// The pieces of a PATH record's path, in order (nothing for other
    /// kinds); the decoder checked that they add up to `path_len`.
    pub fn path_chunks(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let slots = self.slots;
        let len = if self.kind == EventKind::Path {
            usize::from(read::<raw::mt_rec_path>(slots).path_len)
        } else {
            0
        };
        let head_at = core::mem::offset_of!(raw::mt_rec_path, path);
        let cont_at = core::mem::offset_of!(raw::mt_rec_cont, data);
        let head = len.min(wire::PATH_HEAD_BYTES);
        let first = slots.get(head_at..head_at + head).unwrap_or(&[]);
        let rest = (1..slots.len() / SLOT).scan(len - head, move |left, k| {
            let take = (*left).min(wire::PATH_CONT_BYTES);
            *left -= take;
            let at = k * SLOT + cont_at;
            Some(slots.get(at..at + take).unwrap_or(&[]))
        });
        core::iter::once(first)
            .chain(rest)
            .filter(|c| !c.is_empty())
    }

    /// What the record says, by kind (allocates only for a PATH's bytes).
    #[inline]
    pub fn event(&self) -> Event {
        self.event_with(self.header().flags)
    }

    #[inline]
    fn event_with(&self, flags: u8) -> Event {
        let head = self.slots;
        // A new kind's fields are read here; `check_record` says how many
        // slots it may take.
        match self.kind {
            EventKind::Mmap => {
                let r = read::<raw::mt_rec_mmap>(head);
                Event::Mmap {
                    fflags: r.fflags,
                    vid: r.vid,
                    duration_ns: r.duration_ns,
                    counts: counts(r.counts, flags),
                }
            }
            EventKind::Pagein => {
                let r = read::<raw::mt_rec_pagein>(head);
                Event::Pagein {
                    offset: r.f_offset,
                    size: r.size,
                    duration_ns: r.duration_ns,
                    counts: counts(r.counts, flags),
                    upl_flags: r.upl_flags,
                }
            }
            EventKind::Mnomap => {
                let r = read::<raw::mt_rec_mnomap>(head);
                Event::Mnomap {
                    vid: r.vid,
                    duration_ns: r.duration_ns,
                    counts: counts(r.counts, flags),
                }
            }
            EventKind::FileMmap => {
                let r = read::<raw::mt_rec_file_mmap>(head);
                Event::FileMmap {
                    file_pos: r.file_pos,
                    prot: r.prot,
                    maxprot: r.maxprot,
                    mmap_flags: r.mmap_flags,
                }
            }
            EventKind::Mark => {
                let r = read::<raw::mt_rec_mark>(head);
                Event::Mark {
                    mark: Mark::from(r.mark),
                    arg0: r.arg0,
                    arg1: r.arg1,
                    arg2: r.arg2,
                }
            }
            EventKind::Proc => {
                let r = read::<raw::mt_rec_proc>(head);
                let len = r.name.iter().position(|&b| b == 0).unwrap_or(r.name.len());
                Event::Proc {
                    name: r.name.get(..len).unwrap_or(&[]).to_vec(),
                    truncated: flags as u32 & raw::MT_RF_TRUNCATED != 0,
                }
            }
            EventKind::Open => {
                let r = read::<raw::mt_rec_open>(head);
                Event::Open {
                    vid: r.vid,
                    fmode: r.fmode,
                    counts: counts(r.counts, flags),
                }
            }
            EventKind::Close => {
                let r = read::<raw::mt_rec_close>(head);
                Event::Close {
                    vid: r.vid,
                    fflag: r.fflag,
                    duration_ns: r.duration_ns,
                    counts: counts(r.counts, flags),
                }
            }
            EventKind::Path => {
                let r = read::<raw::mt_rec_path>(head);
                let mut path = Vec::with_capacity(usize::from(r.path_len));
                self.path_chunks().for_each(|c| path.extend_from_slice(c));
                Event::Path {
                    vid: r.vid,
                    path,
                    truncated: flags as u32 & raw::MT_RF_TRUNCATED != 0,
                }
            }
        }
    }

    /// The owned record.
    #[inline]
    pub fn to_record(&self) -> Record {
        let h = self.header();
        Record {
            shard: self.shard,
            pos: self.pos,
            lost_before: self.lost_before,
            kind: self.kind,
            flags: h.flags,
            error: h.error,
            pid: h.pid,
            timestamp_ns: self.timestamp_ns,
            tid: h.tid,
            vnode_id: h.vnode_id,
            event: self.event_with(h.flags),
        }
    }
}

/// Where the decoder puts what it finds; one decoding loop serves the owned
/// and the borrowed outputs.
trait Sink<'a> {
    /// Room for `n` more records.
    fn reserve(&mut self, n: usize);
    fn record(&mut self, r: RecordView<'a>);
    fn error(&mut self, e: DecodeError);
}

impl<'a> Sink<'a> for Vec<Result<Record, DecodeError>> {
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n);
    }
    #[inline]
    fn record(&mut self, r: RecordView<'a>) {
        self.push(Ok(r.to_record()));
    }
    fn error(&mut self, e: DecodeError) {
        self.push(Err(e));
    }
}

impl<'a> Sink<'a> for Vec<Decoded> {
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n);
    }
    #[inline]
    fn record(&mut self, r: RecordView<'a>) {
        self.push(Decoded::Record(r.to_record()));
    }
    fn error(&mut self, e: DecodeError) {
        self.push(Notice::of_error(e).into());
    }
}

/// The borrowed output: records, and notices with the number of records
/// that came before them.
struct Views<'a, 'o> {
    records: &'o mut Vec<RecordView<'a>>,
    notices: &'o mut Vec<(usize, Notice)>,
}

impl<'a> Sink<'a> for Views<'a, '_> {
    fn reserve(&mut self, n: usize) {
        self.records.reserve(n);
    }
    #[inline]
    fn record(&mut self, r: RecordView<'a>) {
        self.records.push(r);
    }
    fn error(&mut self, e: DecodeError) {
        self.notices.push((self.records.len(), Notice::of_error(e)));
    }
}

/// The kext's own drop counters (`kern.maptrace.stats`), read after the
/// last batch: drops after a shard's last record read reach no batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KextDrops {
    /// The load they belong to.
    pub generation: u64,
    /// Cumulative drops, by shard.
    pub per_shard: Vec<u64>,
}

/// Loss figures of a stream so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Records the kext dropped (per the headers, cumulative).
    pub dropped: u64,
    /// Of those, drops not yet placed before a delivered record.
    pub unattributed: u64,
    /// Slots skipped by position gaps.
    pub gap_slots: u64,
    /// Segments abandoned because of corruption.
    pub corrupt_segments: u64,
}

/// Decodes a stream of batches from one kext load (a change of generation
/// resets the per-shard state).
#[derive(Debug, Default)]
pub struct Decoder {
    generation: Option<u64>,
    shards: Vec<ShardState>,
    gap_slots: u64,
    corrupt_segments: u64,
    batches: u64,
}

impl Decoder {
    /// A decoder with no history.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Batches accepted so far.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// The generation of the kext load being decoded.
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// Records `shard` dropped so far, per its segment headers and records
    /// (cumulative, history included).
    pub fn shard_dropped(&self, shard: u16) -> u64 {
        self.shards
            .get(usize::from(shard))
            .map_or(0, |s| s.reported.max(s.attributed))
    }

    /// Loss figures so far.
    pub fn losses(&self) -> Losses {
        // Header fields are untrusted: a corrupt stream may claim any count,
        // so the sums saturate instead of overflowing.
        let dropped = self
            .shards
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.reported.max(s.attributed)));
        let attributed = self
            .shards
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.attributed));
        Losses {
            dropped,
            unattributed: dropped - attributed.min(dropped),
            gap_slots: self.gap_slots,
            corrupt_segments: self.corrupt_segments,
        }
    }

    /// Validates the batch header and decodes every record, returning the
    /// records and the in-batch problems in stream order (records of one
    /// segment keep their shard order).
    pub fn decode(
        &mut self,
        bytes: &[u8],
    ) -> Result<(Batch, Vec<Result<Record, DecodeError>>), BatchError> {
        let mut out = Vec::new();
        let batch = self.decode_into(bytes, &mut out)?;
        Ok((batch, out))
    }

    /// As [`Decoder::decode`], appending to `out` so a reader can reuse one
    /// buffer for every batch (no allocation once it has grown).
    pub fn decode_into(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<Result<Record, DecodeError>>,
    ) -> Result<Batch, BatchError> {
        let batch = parse_batch_header(bytes)?;
        self.start_batch(batch.header.generation);
        self.decode_body(bytes, batch, out);
        Ok(batch)
    }

    /// Decodes one batch into a stream of [`Decoded`] items: records, the
    /// losses no record carries (position gaps; at a reload, the old load's
    /// drops after each shard's last record, then the reload itself) and
    /// corruption. The header is checked once; a refused batch changes
    /// nothing.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<Batch, BatchError> {
        let batch = parse_batch_header(bytes)?;
        self.start_load(batch.header.generation, &mut |n| out.push(n.into()));
        self.decode_body(bytes, batch, out);
        Ok(batch)
    }

    /// As [`Decoder::feed`] without copying records: appends the batch's
    /// records, validated and in stream order, as views of `bytes` to
    /// `records`, and everything else to `notices`, each with the length
    /// `records` had when it came (so the two interleave back into exactly
    /// the [`Decoded`] stream `feed` gives).
    pub fn feed_views<'a>(
        &mut self,
        bytes: &'a [u8],
        records: &mut Vec<RecordView<'a>>,
        notices: &mut Vec<(usize, Notice)>,
    ) -> Result<Batch, BatchError> {
        let batch = parse_batch_header(bytes)?;
        let at = records.len();
        self.start_load(batch.header.generation, &mut |n| notices.push((at, n)));
        self.decode_body(bytes, batch, &mut Views { records, notices });
        Ok(batch)
    }

    /// Starts a batch of `generation`: at a reload, the old load's tail
    /// losses, then the reload itself.
    fn start_load(&mut self, generation: u64, out: &mut dyn FnMut(Notice)) {
        let reload = self.generation.is_some_and(|g| g != generation);
        if reload {
            self.settle_tails(None, &mut |l| out(Notice::Lost(l)));
        }
        self.start_batch(generation);
        if reload {
            out(Notice::Reload { generation });
        }
    }

    /// Reports, per shard, the drops counted after its last record (by the
    /// segment headers, or by `kext`'s counters when they are of the load
    /// being decoded); call at the end of a stream.
    pub fn finish(&mut self, kext: Option<&KextDrops>, out: &mut Vec<Decoded>) {
        self.settle_tails(kext, &mut |l| out.push(Decoded::Lost(l)));
    }

    fn settle_tails(&mut self, kext: Option<&KextDrops>, out: &mut dyn FnMut(Loss)) {
        let kext = kext.filter(|k| self.generation == Some(k.generation));
        let kext_at = |i: usize| kext.and_then(|k| k.per_shard.get(i).copied()).unwrap_or(0);
        // Shards the kext counted drops on that no segment named yet.
        let known = kext
            .map_or(0, |k| k.per_shard.len())
            .min(raw::MT_MAX_SHARDS as usize);
        if self.shards.len() < known {
            self.shards.resize(known, ShardState::default());
        }
        for (i, st) in self.shards.iter_mut().enumerate() {
            let count = st.unplaced(kext_at(i));
            if count > 0 {
                st.settled_tail = st.settled_tail.saturating_add(count);
                out(Loss::Dropped {
                    shard: i as u16,
                    count,
                    before_pos: None,
                });
            }
        }
    }

    /// Counts a batch of `generation`; a new generation starts over.
    fn start_batch(&mut self, generation: u64) {
        if self.generation != Some(generation) {
            self.generation = Some(generation);
            self.shards.clear();
        }
        self.batches += 1;
    }

    /// Decodes the segments of a batch whose header was checked.
    fn decode_body<'a>(&mut self, bytes: &'a [u8], batch: Batch, out: &mut impl Sink<'a>) {
        let h = batch.header;
        out.reserve(usize::try_from(h.total_records).unwrap_or(0).min(1 << 20));
        let mut rest = bytes
            .get(BATCH_HEADER..h.total_bytes as usize)
            .unwrap_or(&[]);
        let mut seen = [0u64; 4]; // shard bitmap, 256 shards
        for index in 0..h.nsegments {
            let seg = match parse_segment(rest, index) {
                Ok((seg, tail)) => {
                    rest = tail;
                    seg
                }
                Err(e) => {
                    // The rest of the batch cannot be located: stop here.
                    self.corrupt_segments += 1;
                    out.error(e);
                    break;
                }
            };
            let shard = seg.header.shard;
            let (word, bit) = (usize::from(shard / 64), 1u64 << (shard % 64));
            if u32::from(shard) >= raw::MT_MAX_SHARDS || seen.get(word).is_none_or(|w| w & bit != 0)
            {
                self.corrupt_segments += 1;
                out.error(DecodeError::BadShard { shard });
                continue;
            }
            if let Some(w) = seen.get_mut(word) {
                *w |= bit;
            }
            self.decode_segment(&seg, out);
        }
    }

    fn shard_state(&mut self, shard: u16) -> &mut ShardState {
        let i = usize::from(shard);
        if self.shards.len() <= i {
            self.shards.resize(i + 1, ShardState::default());
        }
        // The resize above makes index i exist.
        &mut self.shards[i]
    }

    fn decode_segment<'a>(&mut self, seg: &Segment<'a>, out: &mut impl Sink<'a>) {
        let h = seg.header;
        let shard = h.shard;
        let mut gap = None;
        {
            let st = self.shard_state(shard);
            if let Some(expected) = st.next_pos {
                if expected != h.first_pos {
                    gap = Some(DecodeError::PositionGap {
                        shard,
                        expected,
                        found: h.first_pos,
                    });
                    // A gap makes the drop delta of the next record meaningless.
                    st.last_drops = None;
                }
            }
            // Positions are 64-bit counters taken from the (untrusted) header.
            st.next_pos = Some(h.first_pos.wrapping_add(u64::from(h.nslots)));
            st.reported = st.reported.max(h.dropped_cumulative);
        }
        if let Some(DecodeError::PositionGap {
            expected, found, ..
        }) = gap
        {
            // Going back skips nothing (a replayed or corrupt batch).
            self.gap_slots = self
                .gap_slots
                .saturating_add(found.saturating_sub(expected));
        }
        if let Some(e) = gap {
            out.error(e);
        }

        let nslots = seg.slots.len() / SLOT;
        let mut i = 0usize;
        let mut found = 0u32;
        // The shard's drop history, in locals for the loop and stored back
        // after it, whatever ends it.
        let st = *self.shard_state(shard);
        let (mut last_drops, mut attributed) = (st.last_drops, st.attributed);
        let mut failed = None;
        while i < nslots {
            let pos = h.first_pos.wrapping_add(i as u64);
            match check_record(seg.slots, i, pos, shard) {
                Ok((mut rec, used)) => {
                    let drops = rec.lost_before as u32; // check_record left drops_before here
                    rec.lost_before = match last_drops {
                        Some(prev) => u64::from(drops.wrapping_sub(prev)),
                        // First record seen of this shard: everything before
                        // it is the shard's history, attributed as such.
                        None => u64::from(drops).saturating_sub(attributed),
                    };
                    last_drops = Some(drops);
                    attributed = attributed.saturating_add(rec.lost_before);
                    out.record(rec);
                    found += 1;
                    i += used;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let st = self.shard_state(shard);
        (st.last_drops, st.attributed) = (last_drops, attributed);
        if let Some(e) = failed {
            self.corrupt_segments += 1;
            out.error(e);
            return;
        }
        if found != h.nrecords {
            out.error(DecodeError::CountMismatch {
                shard,
                announced: h.nrecords,
                found,
            });
        }
    }
}

/// Records and drops of a stream counted from batch headers alone, for a
/// reader that stores batches without decoding them (`maptrace record`).
/// A reload restarts the kext's cumulative counters, so loads add up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderTally {
    events: u64,
    /// Drops of earlier loads.
    dropped_before: u64,
    /// Cumulative drops of the current load.
    dropped: u64,
    generation: Option<u64>,
    refused: u64,
}

impl HeaderTally {
    /// Counts one batch by its header; a refused header is counted as such.
    pub fn batch(&mut self, bytes: &[u8]) -> Result<Batch, BatchError> {
        let b = parse_batch_header(bytes).inspect_err(|_| self.refused += 1)?;
        let h = b.header;
        self.events = self.events.saturating_add(h.total_records);
        self.load(h.generation);
        self.dropped = self.dropped.max(h.total_dropped);
        Ok(b)
    }

    /// Adds the kext's own count of `generation`'s drops, read after the last
    /// batch; counters of another load say nothing about this one.
    pub fn kext_dropped(&mut self, generation: u64, dropped: u64) {
        if self.generation.is_none_or(|g| g == generation) {
            self.load(generation);
            self.dropped = self.dropped.max(dropped);
        }
    }

    fn load(&mut self, generation: u64) {
        if self.generation != Some(generation) {
            self.dropped_before = self.dropped_before.saturating_add(self.dropped);
            self.dropped = 0;
            self.generation = Some(generation);
        }
    }

    /// Records the headers announced.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Records dropped, all loads.
    pub fn dropped(&self) -> u64 {
        self.dropped_before.saturating_add(self.dropped)
    }

    /// Batches whose header was refused.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// Checks the batch header: magic, major version, sizes and flags.
pub fn parse_batch_header(bytes: &[u8]) -> Result<Batch, BatchError> {
    let (h, _) =
        raw::mt_batch_header::read_from_prefix(bytes).map_err(|_| BatchError::Truncated {
            need: BATCH_HEADER as u64,
            have: bytes.len() as u64,
        })?;
    if h.magic != raw::MT_BATCH_MAGIC {
        return Err(BatchError::BadMagic(h.magic));
    }
    AbiVersion::from_field(h.abi_version)
        .check()
        .map_err(BatchError::AbiMismatch)?;
    if usize::from(h.header_size) != BATCH_HEADER {
        return Err(BatchError::BadHeader("header_size"));
    }
    if h.flags & !raw::MT_BF_ALL != 0 {
        return Err(BatchError::BadHeader("unknown flags"));
    }
    if h.total_bytes < BATCH_HEADER as u64 || h.total_bytes % SLOT as u64 != 0 {
        return Err(BatchError::BadHeader("total_bytes"));
    }
    if h.total_bytes > bytes.len() as u64 {
        return Err(BatchError::Truncated {
            need: h.total_bytes,
            have: bytes.len() as u64,
        });
    }
    Ok(Batch { header: h })
}

fn parse_segment(bytes: &[u8], index: u32) -> Result<(Segment<'_>, &[u8]), DecodeError> {
    let (h, rest) = raw::mt_segment_header::read_from_prefix(bytes)
        .map_err(|_| DecodeError::TruncatedSegment { segment: index })?;
    if h.magic != raw::MT_SEGMENT_MAGIC {
        return Err(DecodeError::BadSegmentMagic {
            segment: index,
            found: h.magic,
        });
    }
    let len = (h.nslots as usize)
        .checked_mul(SLOT)
        .filter(|&l| l <= rest.len());
    let Some(len) = len else {
        return Err(DecodeError::TruncatedSegment { segment: index });
    };
    let (slots, tail) = rest.split_at(len);
    debug_assert_eq!(SEGMENT_HEADER, 64);
    Ok((Segment { header: h, slots }, tail))
}

fn slot(slots: &[u8], i: usize) -> Option<&[u8]> {
    slots.get(i * SLOT..(i + 1) * SLOT)
}

fn counts(c: raw::mt_counts, flags: u8) -> Counts {
    Counts {
        usecount: c.usecount,
        kusecount: c.kusecount,
        iocount: (flags as u32 & raw::MT_RF_IOCOUNT_UNKNOWN == 0
            && flags as u32 & raw::MT_RF_COUNTS_MASK != raw::MT_RF_COUNTS_NONE)
            .then_some(c.iocount),
        method: ProbeMethod::from_record_flags(flags),
        saturated: flags as u32 & raw::MT_RF_COUNTS_SATURATED != 0,
    }
}

/// Validates the record whose head is slot `i` at shard position `pos`.
/// Returns its view (with `lost_before` temporarily holding the raw
/// `drops_before`) and the number of slots it uses. Everything a view's
/// accessors rely on is checked here; a new kind states its slot rule here
/// and its fields in [`RecordView::event`].
#[inline]
fn check_record(
    slots: &[u8],
    i: usize,
    pos: u64,
    shard: u16,
) -> Result<(RecordView<'_>, usize), DecodeError> {
    let bad = |what| DecodeError::BadRecord { shard, pos, what };
    let head = slot(slots, i).ok_or(bad(RecordError::BadSlotCount(0)))?;
    // Only the fields checked and merged on are read here; a view reads the
    // rest when asked.
    let h = Head::of(head);
    let expected = (pos.wrapping_add(1) as u32) & raw::MT_STAMP_MASK;
    if h.stamp != expected {
        return Err(DecodeError::StampMismatch {
            shard,
            pos,
            expected,
            found: h.stamp,
        });
    }
    let kind = EventKind::try_from(h.kind).map_err(|k| bad(RecordError::UnknownKind(k)))?;
    let n = usize::from(h.nslots);
    let available = slots.len() / SLOT - i;
    let multi_ok = kind == EventKind::Path && n <= raw::MT_RECORD_MAX_SLOTS as usize;
    if n == 0 || n > available || (n > 1 && !multi_ok) {
        return Err(bad(RecordError::BadSlotCount(h.nslots)));
    }
    let own = slots.get(i * SLOT..(i + n) * SLOT).unwrap_or(&[]);
    if kind == EventKind::Path {
        let r = read::<raw::mt_rec_path>(head);
        let len = usize::from(r.path_len);
        if len > wire::PATH_MAX || wire::path_slots(len) != n {
            return Err(bad(RecordError::BadPathLength(r.path_len)));
        }
        for k in 1..n {
            let c = read::<raw::mt_rec_cont>(slot(own, k).unwrap_or(&[0; SLOT]));
            if c.marker != raw::MT_STAMP_CONT | k as u32 {
                return Err(bad(RecordError::BadContinuation(c.marker)));
            }
        }
    }
    let view = RecordView {
        slots: own,
        timestamp_ns: h.timestamp_ns,
        pos,
        lost_before: u64::from(h.drops_before),
        shard,
        kind,
    };
    Ok((view, n))
}

/// The record header fields the decoder checks and merges on, read at the
/// generated struct's offsets (`wire::record_header`).
struct Head {
    stamp: u32,
    drops_before: u32,
    kind: u8,
    nslots: u8,
    timestamp_ns: u64,
}

impl Head {
    fn of(slot: &[u8]) -> Head {
        use wire::record_header as at;
        let word = |o: usize| -> [u8; 4] {
            slot.get(o..o + 4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default()
        };
        let byte = |o: usize| slot.get(o).copied().unwrap_or(0);
        let ts: [u8; 8] = slot
            .get(at::TIMESTAMP_NS..at::TIMESTAMP_NS + at::TIMESTAMP_NS_LEN)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default();
        Head {
            stamp: u32::from_ne_bytes(word(at::STAMP)),
            drops_before: u32::from_ne_bytes(word(at::DROPS_BEFORE)),
            kind: byte(at::KIND),
            nslots: byte(at::NSLOTS),
            timestamp_ns: u64::from_ne_bytes(ts),
        }
    }
}

/// Reads a 64-byte record struct from a slot (always exactly 64 bytes here).
fn read<T: FromBytes>(slot: &[u8]) -> T {
    T::read_from_prefix(slot)
        .map(|(t, _)| t)
        .unwrap_or_else(|_| T::new_zeroed())
}
