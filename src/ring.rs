//! The per-CPU event ring: one small lock-free multi-producer ring per shard,
//! over memory the caller provides (docs/ring.md §3).
//!
//! # Protocol
//!
//! Each shard has `cap` 64-byte slots (a power of two) and two words:
//!
//! * `enq` (written by producers): `drops << 32 | pos`, both mod 2^32. A
//!   producer reserves `k` contiguous slots with one CAS moving `pos` to
//!   `pos + k`, or — when `pos + k - deq > cap` — counts a drop with one CAS
//!   moving `drops` to `drops + 1`. The new event is the one dropped.
//! * `deq` (written by the single reader): the 64-bit position of the first
//!   slot not yet drained.
//!
//! A producer that reserved `[pos, pos + k)` owns those slots exclusively: it
//! writes their bodies, writes continuation markers into the stamp words of
//! slots 1..k, and finally stores the head stamp `(pos + 1) & MT_STAMP_MASK`
//! with `Release` — the commit. The reader loads a head stamp with `Acquire`;
//! if it is the stamp of the position it expects, the whole record is visible.
//! The reader stops at the first slot whose stamp is not the expected one
//! (reserved but not yet committed): records are delayed, never torn.
//!
//! Slots are reused only after the reader has stored a `deq` past them with
//! `Release`, and producers load `deq` with `Acquire` before reusing, so a
//! producer's writes never overlap the reader's copy.
//!
//! # Invariants
//!
//! * `pos - deq <= cap` (mod 2^32 arithmetic; `cap <= 2^24`).
//! * A committed head stamp names its own position; stale stamps from the
//!   previous lap differ by `cap` (mod 2^31) and continuation markers have bit
//!   31 set, so neither is ever mistaken for a commit.
//! * `produced slots == deq + backlog`; every record handed to `record` is
//!   either in the ring, drained, or counted in `drops` — exactly once.

use crate::ffi::bridge;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use core::mem::{MaybeUninit, align_of, size_of};
use maptrace_abi::raw;
use maptrace_abi::wire::{self, record_header};

/// Bytes of a slot.
pub const SLOT_SIZE: usize = wire::SLOT_SIZE;
/// Bytes of a slot after its stamp word.
pub const BODY_SIZE: usize = SLOT_SIZE - record_header::STAMP_LEN;
/// Where a head slot's `nslots` and `timestamp_ns` are in its body.
const NSLOTS_IN_BODY: usize = record_header::NSLOTS - record_header::STAMP_LEN;
const TIMESTAMP_IN_BODY: usize = record_header::TIMESTAMP_NS - record_header::STAMP_LEN;
/// Slots of the largest record.
pub const MAX_RECORD_SLOTS: u32 = raw::MT_RECORD_MAX_SLOTS;

/// A full shard: the event was dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped;

/// A record body: everything of a 64-byte slot after the stamp word.
#[cfg(not(loom))]
struct Body(core::cell::UnsafeCell<[u8; BODY_SIZE]>);
#[cfg(loom)]
struct Body(loom::cell::UnsafeCell<[u8; BODY_SIZE]>);

impl Body {
    fn new() -> Body {
        #[cfg(not(loom))]
        return Body(core::cell::UnsafeCell::new([0; BODY_SIZE]));
        #[cfg(loom)]
        return Body(loom::cell::UnsafeCell::new([0; BODY_SIZE]));
    }

    /// Lends the body for writing.
    ///
    /// # Safety
    ///
    /// The caller owns the slot: it reserved it and has not committed it.
    #[inline(always)]
    unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut [u8; BODY_SIZE]) -> R) -> R {
        #[cfg(not(loom))]
        // SAFETY: the caller's reservation makes this the only access to the
        // body until the commit (module protocol), so the &mut is unique.
        return f(unsafe { &mut *self.0.get() });
        #[cfg(loom)]
        // SAFETY: as above; loom checks the claim.
        return self.0.with_mut(|p| f(unsafe { &mut *p }));
    }

    /// Lends the body for reading.
    ///
    /// # Safety
    ///
    /// The slot is committed and not yet released to producers (the reader
    /// saw its head stamp with Acquire and has not advanced `deq` past it).
    #[inline(always)]
    unsafe fn with<R>(&self, f: impl FnOnce(&[u8; BODY_SIZE]) -> R) -> R {
        #[cfg(not(loom))]
        // SAFETY: committed slots are not written until deq passes them
        // (module protocol), so no &mut exists while this & lives.
        return f(unsafe { &*self.0.get() });
        #[cfg(loom)]
        // SAFETY: as above; loom checks the claim.
        return self.0.with(|p| f(unsafe { &*p }));
    }
}

/// One 64-byte slot: a stamp word, then 60 bytes of record.
#[repr(C, align(64))]
pub struct Slot {
    stamp: AtomicU32,
    body: Body,
}

// SAFETY: a Slot is shared between producers and the reader, and the body is
// accessed under the ring protocol: (1) only the producer holding the
// reservation writes it, (2) the reader reads it only after the Acquire load
// of a matching head stamp and before releasing it with a Release store of
// deq, (3) producers reuse it only after an Acquire load of that deq.
unsafe impl Sync for Slot {}

impl Slot {
    /// A slot carrying `stamp` (a stale one: never the commit it will be
    /// checked for next).
    fn new(stamp: u32) -> Slot {
        Slot {
            stamp: AtomicU32::new(stamp),
            body: Body::new(),
        }
    }
}

/// The stamp slot `j` of a `cap`-slot shard starting at `start` carries: the
/// commit of the position it held one lap before `start`, as if the ring had
/// run up to there. The reader expects `start + 1` (mod 2^31) there next, and
/// a lap-old stamp differs from that by `cap`.
fn stale_stamp(start: u64, cap: u32, j: u32) -> u32 {
    let lap_before = (start as u32).wrapping_sub(cap);
    let q = lap_before.wrapping_add(j.wrapping_sub(lap_before) & (cap - 1));
    q.wrapping_add(1) & raw::MT_STAMP_MASK
}

/// Producer-written words of a shard, on their own cache line.
#[repr(C, align(128))]
struct ProducerSide {
    /// `drops << 32 | pos`.
    enq: AtomicU64,
    /// Times `drops` wrapped from `u32::MAX` to 0.
    drop_wraps: AtomicU32,
}

/// Reader-written words of a shard, on their own cache line.
#[repr(C, align(128))]
struct ReaderSide {
    /// 64-bit position of the first undrained slot.
    deq: AtomicU64,
    /// Records handed to the reader (stats only).
    drained_records: AtomicU64,
    /// Largest 64-bit drop count observed (for the wrap fix-up).
    drops_seen: AtomicU64,
    /// What the last uncommitted drain copied (see [`Ring::stage`]): kept
    /// here, in the ring's memory, so a drain never builds a per-shard array
    /// on the kernel stack. Reader-only words, under the drain lock.
    staged_first: AtomicU64,
    /// Slots of the staged copy (0: nothing staged).
    staged_nslots: AtomicU64,
    /// Records of the staged copy.
    staged_records: AtomicU64,
}

/// One shard's control words.
#[repr(C)]
pub struct Shard {
    prod: ProducerSide,
    read: ReaderSide,
}

impl Shard {
    fn new(start: RingStart) -> Shard {
        Shard {
            prod: ProducerSide {
                enq: AtomicU64::new((start.drops << 32) | (start.pos & 0xffff_ffff)),
                drop_wraps: AtomicU32::new((start.drops >> 32) as u32),
            },
            read: ReaderSide {
                deq: AtomicU64::new(start.pos),
                drained_records: AtomicU64::new(0),
                drops_seen: AtomicU64::new(start.drops),
                staged_first: AtomicU64::new(start.pos),
                staged_nslots: AtomicU64::new(0),
                staged_records: AtomicU64::new(0),
            },
        }
    }
}

/// Where a fresh ring's counters start. Always zero in the kext; tests start
/// near a wrap (position 2^32, stamp 2^31, drops 2^32) to reach those paths
/// without producing billions of events.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStart {
    /// 64-bit position of every shard (drained and reserved up to here).
    pub pos: u64,
    /// 64-bit drop count of every shard.
    pub drops: u64,
}

/// A shard's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCounters {
    /// Slots ever reserved.
    pub produced_slots: u64,
    /// Records dropped (full shard).
    pub dropped: u64,
    /// Slots drained.
    pub drained_slots: u64,
    /// Records drained.
    pub drained_records: u64,
}

/// Writes one reserved record; handed to the fill closure of [`Ring::record`].
pub struct RecordWriter<'r> {
    slots: &'r [Slot],
    mask: u32,
    pos: u32,
    k: u32,
    drops_before: u32,
}

impl RecordWriter<'_> {
    /// The shard's cumulative drop count at reservation (mod 2^32).
    pub fn drops_before(&self) -> u32 {
        self.drops_before
    }

    /// The stamp the head slot will carry once committed.
    pub fn stamp(&self) -> u32 {
        self.pos.wrapping_add(1) & raw::MT_STAMP_MASK
    }

    fn slot(&self, i: u32) -> Option<&Slot> {
        debug_assert!(i < self.k, "slot index inside the reservation");
        self.slots
            .get((self.pos.wrapping_add(i) & self.mask) as usize)
    }

    /// Lets `write` fill the head slot's body (record bytes 4..64; the stamp
    /// word is written at commit) in place: the slot still holds a previous
    /// lap's bytes, so `write` must set all 60.
    #[inline(always)]
    pub fn head_with(&mut self, write: impl FnOnce(&mut [u8; BODY_SIZE])) {
        if let Some(slot) = self.slot(0) {
            // SAFETY: slot 0 of this reservation is owned by this writer until
            // commit (module protocol).
            unsafe { slot.body.with_mut(write) };
        }
    }

    /// Writes the head record from a prebuilt slot (bytes 4.. of `rec`).
    #[inline(always)]
    pub fn head(&mut self, rec: &[u8; SLOT_SIZE]) {
        if let Some(src) = rec.last_chunk::<BODY_SIZE>() {
            self.head_with(|body| *body = *src);
        }
    }

    /// Lets `write` fill continuation slot `i` (1..k) in place (all 60
    /// bytes, as for [`RecordWriter::head_with`]), then marks it.
    #[inline(always)]
    pub fn continuation_with(&mut self, i: u32, write: impl FnOnce(&mut [u8; BODY_SIZE])) {
        debug_assert!(i >= 1, "continuations follow the head");
        if let Some(slot) = self.slot(i) {
            // SAFETY: slot i of this reservation is owned by this writer until
            // commit (module protocol).
            unsafe { slot.body.with_mut(write) };
            // Ordered before the reader by the head's Release commit.
            slot.stamp.store(raw::MT_STAMP_CONT | i, Ordering::Relaxed);
        }
    }

    /// Writes continuation slot `i` (1..k): its marker and 60 data bytes.
    pub fn continuation(&mut self, i: u32, data: &[u8; BODY_SIZE]) {
        self.continuation_with(i, |body| *body = *data);
    }

    fn commit(self) {
        if let Some(slot) = self.slot(0) {
            // INVARIANT: publishes every write of this record to the reader.
            slot.stamp.store(self.stamp(), Ordering::Release);
        }
    }
}

/// The rings of all shards, laid out in caller memory.
pub struct Ring<'a> {
    shards: &'a [Shard],
    slots: &'a [Slot],
    cap: u32,
}

/// Why [`Ring::layout`] refused the parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Shard count out of range.
    Shards,
    /// Slots per shard not a power of two in range.
    Slots,
    /// The memory is too small.
    TooSmall,
}

/// Smallest shard. The loom model uses 2-slot shards so that the full and
/// wrap paths are reachable in few steps.
const MIN_SLOTS: u32 = if cfg!(loom) {
    2
} else {
    bridge::MT_CORE_MIN_SLOTS
};

/// Alignment of the ring's memory (its control words are 128-byte aligned).
const ALIGN: usize = 128;

/// Byte offsets of the parts of a ring inside its memory.
#[derive(Clone, Copy, Debug)]
pub struct RingLayout {
    /// Offset of the shard array.
    pub shards_off: usize,
    /// Offset of the slot array.
    pub slots_off: usize,
    /// Total bytes from the (aligned) start.
    pub size: usize,
}

impl<'a> Ring<'a> {
    /// Validates the parameters and computes where everything goes, from a
    /// 128-byte-aligned start.
    pub fn layout(nshards: u32, cap: u32) -> Result<RingLayout, LayoutError> {
        if nshards == 0 || nshards > raw::MT_MAX_SHARDS {
            return Err(LayoutError::Shards);
        }
        if !cap.is_power_of_two() || !(MIN_SLOTS..=bridge::MT_CORE_MAX_SLOTS).contains(&cap) {
            return Err(LayoutError::Slots);
        }
        let shards_off = 0;
        let slots_off =
            (nshards as usize * size_of::<Shard>()).next_multiple_of(align_of::<Slot>());
        let size = slots_off + nshards as usize * cap as usize * size_of::<Slot>();
        Ok(RingLayout {
            shards_off,
            slots_off,
            size,
        })
    }

    /// Bytes of memory [`Ring::init`] needs, alignment slack included.
    pub fn mem_size(nshards: u32, cap: u32) -> Result<usize, LayoutError> {
        Ok(Ring::layout(nshards, cap)?.size + ALIGN - 1)
    }

    /// Lays the ring out in `mem` (any alignment). Positions start at 0.
    pub fn init(
        mem: &'a mut [MaybeUninit<u8>],
        nshards: u32,
        cap: u32,
    ) -> Result<Ring<'a>, LayoutError> {
        Ring::init_at(mem, nshards, cap, RingStart::default())
    }

    /// As [`Ring::init`], with every shard's position and drop count at
    /// `start` (tests of the wrap paths).
    #[doc(hidden)]
    pub fn init_at(
        mem: &'a mut [MaybeUninit<u8>],
        nshards: u32,
        cap: u32,
        start: RingStart,
    ) -> Result<Ring<'a>, LayoutError> {
        let layout = Ring::layout(nshards, cap)?;
        let skip = mem.as_ptr().align_offset(ALIGN);
        let Some(mem) = mem.get_mut(skip..).filter(|m| m.len() >= layout.size) else {
            return Err(LayoutError::TooSmall);
        };
        let nslots = nshards as usize * cap as usize;
        let base = mem.as_mut_ptr();
        // SAFETY: shards_off is inside mem (size checked above).
        let shards_ptr = unsafe { base.add(layout.shards_off) }.cast::<Shard>();
        // SAFETY: slots_off is inside mem (size checked above).
        let slots_ptr = unsafe { base.add(layout.slots_off) }.cast::<Slot>();
        debug_assert_eq!(shards_ptr.align_offset(align_of::<Shard>()), 0);
        debug_assert_eq!(slots_ptr.align_offset(align_of::<Slot>()), 0);
        for i in 0..nshards as usize {
            // SAFETY: element i of the shard array lies inside mem, is aligned
            // (layout), and is exclusively ours through `&mut mem`.
            unsafe { shards_ptr.wrapping_add(i).write(Shard::new(start)) };
        }
        for i in 0..nslots {
            let stamp = stale_stamp(start.pos, cap, i as u32 & (cap - 1));
            // SAFETY: element i of the slot array lies inside mem, is aligned
            // (layout), and is exclusively ours through `&mut mem`.
            unsafe { slots_ptr.wrapping_add(i).write(Slot::new(stamp)) };
        }
        // SAFETY: the nshards Shards were initialised above; the borrow of mem
        // for 'a keeps them alive and unaliased by anything but this ring.
        let shards = unsafe { core::slice::from_raw_parts(shards_ptr, nshards as usize) };
        // SAFETY: the nslots Slots were initialised above; as above for 'a.
        let slots = unsafe { core::slice::from_raw_parts(slots_ptr, nslots) };
        Ok(Ring { shards, slots, cap })
    }

    /// Number of shards.
    pub fn nshards(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Slots per shard.
    pub fn cap(&self) -> u32 {
        self.cap
    }

    fn shard_slots(&self, shard: usize) -> &[Slot] {
        let cap = self.cap as usize;
        self.slots
            .get(shard * cap..(shard + 1) * cap)
            .unwrap_or(&[])
    }

    /// Reserves `k` slots on shard `hint % nshards`, lets `fill` write the
    /// record, and commits it. Never blocks: a full shard drops the event and
    /// counts it. `k` must be 1..=MAX_RECORD_SLOTS.
    #[inline]
    pub fn record<F: FnOnce(&mut RecordWriter<'_>)>(
        &self,
        hint: u32,
        k: u32,
        fill: F,
    ) -> Result<(), Dropped> {
        debug_assert!((1..=MAX_RECORD_SLOTS).contains(&k), "record size in slots");
        let index = hint as usize % self.shards.len().max(1);
        let Some(shard) = self.shards.get(index) else {
            return Err(Dropped);
        };
        let enq = &shard.prod.enq;
        let mut cur = enq.load(Ordering::Relaxed);
        let (pos, drops) = loop {
            let pos = cur as u32;
            let drops = (cur >> 32) as u32;
            let deq = shard.read.deq.load(Ordering::Acquire) as u32;
            // With a fresh `cur`, used <= cap. If `cur` is stale and the reader
            // has since drained past it, `used` wraps to a huge value: the ring
            // looks full, and the CAS below fails because `enq` moved on, so
            // no event is dropped for it; the loop retries with the new `cur`.
            let used = pos.wrapping_sub(deq);
            if used.saturating_add(k) > self.cap {
                // Full: drop the new event, counted in the same word.
                match enq.compare_exchange_weak(
                    cur,
                    cur.wrapping_add(1 << 32),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        if drops == u32::MAX {
                            // INVARIANT: Release, after the CAS that wrapped
                            // `drops`: a reader whose Acquire load sees the
                            // new wrap count also sees the wrapped `enq`.
                            shard.prod.drop_wraps.fetch_add(1, Ordering::Release);
                        }
                        return Err(Dropped);
                    }
                    Err(now) => {
                        cur = now;
                        continue;
                    }
                }
            }
            let next = (u64::from(drops) << 32) | u64::from(pos.wrapping_add(k));
            match enq.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break (pos, drops),
                Err(now) => cur = now,
            }
        };
        let mut w = RecordWriter {
            slots: self.shard_slots(index),
            mask: self.cap - 1,
            pos,
            k,
            drops_before: drops,
        };
        fill(&mut w);
        w.commit();
        Ok(())
    }

    /// Counters of shard `i` (a racy but consistent-enough snapshot).
    pub fn counters(&self, i: usize) -> ShardCounters {
        let Some(s) = self.shards.get(i) else {
            return ShardCounters::default();
        };
        let deq = s.read.deq.load(Ordering::Acquire);
        let (enq, dropped) = self.enq_and_drops(s);
        let backlog = u64::from((enq as u32).wrapping_sub(deq as u32));
        ShardCounters {
            produced_slots: deq + backlog,
            dropped,
            drained_slots: deq,
            drained_records: s.read.drained_records.load(Ordering::Relaxed),
        }
    }

    /// A snapshot of a shard's `enq` and its 64-bit drop count.
    ///
    /// The wrap count is loaded BEFORE `enq`: a producer bumps it only after
    /// its CAS wrapped `drops` (Release/Acquire below), so a snapshot can pair
    /// a wrapped `enq` with the old wrap count (2^32 too little, corrected
    /// from `drops_seen`) but never an unwrapped `enq` with the new count,
    /// which would read 2^32 too much and could not be told from real drops.
    fn enq_and_drops(&self, s: &Shard) -> (u64, u64) {
        let wraps = u64::from(s.prod.drop_wraps.load(Ordering::Acquire));
        let enq = s.prod.enq.load(Ordering::Acquire);
        let mut v = (wraps << 32) | (enq >> 32);
        let seen = s.read.drops_seen.load(Ordering::Relaxed);
        // Inside the window between a producer's wrapping CAS and its wrap
        // count bump, the snapshot reads 2^32 too little.
        if v < seen {
            v += 1 << 32;
        }
        s.read.drops_seen.fetch_max(v, Ordering::Relaxed);
        (enq, v)
    }

    /// Scans shard `i` from its `deq` for committed records and copies them
    /// into `out` (whole 64-byte slots, stamps included) until `out` is full
    /// or an uncommitted slot is met. Advances
    /// nothing: [`Ring::release`] does, once the copy is known to be safe.
    ///
    /// Two passes: the scan checks head stamps and reads each head's size
    /// and time in place; then the committed run is copied whole, in one
    /// piece or two at the end of the shard (docs/ring.md §3.5).
    pub fn peek(&self, i: usize, out: &mut [u8]) -> Peek {
        let Some(s) = self.shards.get(i) else {
            return Peek::default();
        };
        let slots = self.shard_slots(i);
        let mask = u64::from(self.cap - 1);
        let first = s.read.deq.load(Ordering::Relaxed);
        let room = (out.len() / SLOT_SIZE) as u64;
        let mut p = first;
        let mut peek = Peek {
            first_pos: first,
            ts_min: u64::MAX,
            ..Peek::default()
        };
        // The size and time of the record at `p`, if it is committed.
        let committed = |p: u64| {
            let head = slots.get((p & mask) as usize)?;
            if head.stamp.load(Ordering::Acquire) != ((p + 1) as u32 & raw::MT_STAMP_MASK) {
                return None; // Not committed yet: the rest waits for the next drain.
            }
            // SAFETY: the Acquire load above saw this record's commit, and deq
            // has not passed it, so no producer writes it now.
            Some(unsafe { head.body.with(head_size_and_time) })
        };
        let note = |peek: &mut Peek, ts: u64| {
            peek.ts_min = peek.ts_min.min(ts);
            peek.ts_max = peek.ts_max.max(ts);
            peek.records += 1;
        };
        loop {
            // Runs of one-slot records, the common case: the next head is the
            // next slot whatever this one holds, so each load need not wait
            // for the size the previous one reads.
            while p - first < room {
                match committed(p) {
                    Some((1, ts)) => note(&mut peek, ts),
                    _ => break,
                }
                p += 1;
            }
            if p - first >= room {
                break;
            }
            let Some((k, ts)) = committed(p) else {
                break;
            };
            if p - first + k > room {
                peek.truncated = true;
                break;
            }
            note(&mut peek, ts);
            p += k;
        }
        if peek.records == 0 {
            peek.ts_min = 0;
        }
        peek.nslots = p - first;
        copy_run(slots, (first & mask) as usize, peek.nslots as usize, out);
        let (enq, dropped) = self.enq_and_drops(s);
        peek.dropped = dropped;
        peek.backlog_after = u64::from((enq as u32).wrapping_sub(p as u32));
        if p - first >= room && peek.backlog_after > 0 {
            peek.truncated = true;
        }
        peek
    }

    /// Hands the slots a [`Ring::peek`] copied back to producers.
    pub fn release(&self, i: usize, peek: &Peek) {
        let Some(s) = self.shards.get(i) else { return };
        debug_assert_eq!(
            s.read.deq.load(Ordering::Relaxed),
            peek.first_pos,
            "single reader"
        );
        // INVARIANT: producers may reuse these slots only after this store.
        s.read
            .deq
            .store(peek.first_pos + peek.nslots, Ordering::Release);
        s.read
            .drained_records
            .fetch_add(peek.records, Ordering::Relaxed);
    }

    /// Remembers what a [`Ring::peek`] of shard `i` copied, for
    /// [`Ring::release_staged`] (a `Peek::default()` clears it). Reader only.
    pub fn stage(&self, i: usize, peek: &Peek) {
        let Some(s) = self.shards.get(i) else { return };
        s.read.staged_first.store(peek.first_pos, Ordering::Relaxed);
        s.read.staged_nslots.store(peek.nslots, Ordering::Relaxed);
        s.read.staged_records.store(peek.records, Ordering::Relaxed);
    }

    /// Releases what was staged on shard `i` (if anything) and clears it.
    pub fn release_staged(&self, i: usize) {
        let Some(s) = self.shards.get(i) else { return };
        let nslots = s.read.staged_nslots.swap(0, Ordering::Relaxed);
        if nslots == 0 {
            return;
        }
        let peek = Peek {
            first_pos: s.read.staged_first.load(Ordering::Relaxed),
            nslots,
            records: s.read.staged_records.swap(0, Ordering::Relaxed),
            ..Peek::default()
        };
        self.release(i, &peek);
    }
}

/// A committed head's size in slots (record byte 9, `nslots`, clamped) and
/// its timestamp (record bytes 16..24), from its body.
#[inline(always)]
fn head_size_and_time(body: &[u8; BODY_SIZE]) -> (u64, u64) {
    let k = u64::from(body.get(NSLOTS_IN_BODY).copied().unwrap_or(1))
        .clamp(1, u64::from(MAX_RECORD_SLOTS));
    let ts = body
        .get(TIMESTAMP_IN_BODY..TIMESTAMP_IN_BODY + record_header::TIMESTAMP_NS_LEN)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    (k, ts)
}

/// The pieces of a run of `n` slots from index `start` of a `len`-slot
/// shard, wrapping at its end: `(first index, slots, output slot)` each.
fn run_pieces(start: usize, n: usize, len: usize) -> [(usize, usize, usize); 2] {
    let tail = n.min(len.saturating_sub(start));
    [(start, tail, 0), (0, n.saturating_sub(tail), tail)]
}

/// Copies `n` committed slots of a shard from index `start` on, wrapping at
/// the end, into `out` as whole 64-byte slots: one copy per piece.
///
/// The caller's scan saw each record's head stamp with Acquire, and `deq`
/// has not passed them: producers write none of these slots until it does.
#[cfg(not(loom))]
fn copy_run(slots: &[Slot], start: usize, n: usize, out: &mut [u8]) {
    for (from, count, at) in run_pieces(start, n, slots.len()) {
        let (Some(src), Some(dst)) = (
            slots.get(from..from + count),
            out.get_mut(at * SLOT_SIZE..(at + count) * SLOT_SIZE),
        ) else {
            return;
        };
        // SAFETY: src is `count` initialised Slots (64 bytes, no padding: a
        // stamp word and a 60-byte body) and dst is exactly as long; they do
        // not overlap (dst is a &mut). Every byte of src was written before
        // its record's Release commit, which the caller's Acquire load saw,
        // and is not written again before deq passes it; the bytes of the
        // atomic stamp and the UnsafeCell body may be read through a raw
        // pointer from a shared reference.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr().cast::<u8>(), dst.as_mut_ptr(), dst.len())
        };
    }
}

/// As the copy above (the same pieces), slot by slot through loom's atomics
/// and cells, so the model checks that every read of the run is ordered
/// after its commit.
#[cfg(loom)]
fn copy_run(slots: &[Slot], start: usize, n: usize, out: &mut [u8]) {
    for (from, count, at) in run_pieces(start, n, slots.len()) {
        let (Some(src), Some(dst)) = (
            slots.get(from..from + count),
            out.get_mut(at * SLOT_SIZE..(at + count) * SLOT_SIZE),
        ) else {
            return;
        };
        for (slot, chunk) in src.iter().zip(dst.chunks_exact_mut(SLOT_SIZE)) {
            let Some((word, rest)) = chunk.split_first_chunk_mut::<4>() else {
                return;
            };
            // Ordered by the head's Acquire in the scan.
            word.copy_from_slice(&slot.stamp.load(Ordering::Relaxed).to_le_bytes());
            // SAFETY: as in the caller: committed, not released.
            unsafe { slot.body.with(|b| rest.copy_from_slice(b)) };
        }
    }
}

/// What one [`Ring::peek`] found in a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peek {
    /// 64-bit position of the first slot copied.
    pub first_pos: u64,
    /// Slots copied.
    pub nslots: u64,
    /// Records copied.
    pub records: u64,
    /// Committed records were left behind for lack of room.
    pub truncated: bool,
    /// Smallest timestamp copied.
    pub ts_min: u64,
    /// Largest timestamp copied.
    pub ts_max: u64,
    /// The shard's cumulative drops at the time of the peek.
    pub dropped: u64,
    /// Slots reserved after the copied ones.
    pub backlog_after: u64,
}
