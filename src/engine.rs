//! The engine: filters → record encoding → per-CPU ring → batch drain, plus
//! the vector table, config and counters. Every method takes `&self`: hooks
//! call it on many CPUs at once.
//!
//! # Invariants
//!
//! * Hot-path methods (`wants`, `record`, `record_path`, `vector_original`)
//!   never block, allocate or sleep: a config load, a hash, one ring CAS.
//! * Every event handed to `record*` is counted exactly once: recorded,
//!   filtered (`filtered`), dropped (ring drops) or rejected (`errors`).
//! * One drain at a time: `drain` is a lock the shim's reader mutex makes
//!   uncontended; `drain_prepare` copies without consuming, and only
//!   `drain_commit` — called after the copy to userspace succeeded — advances
//!   the shards, so a failed copyout loses nothing.

use crate::config::{Config, ConfigCell, ConfigError};
use crate::ffi::bridge;
use crate::ffi::bridge::mt_event;
use crate::id_memo::{self, IdMemo};
use crate::procs::ProcCache;
use crate::record::{self, Head, PATH_MAX};
use crate::ring::{Dropped, Peek, Ring, SLOT_SIZE};
use crate::sync::{AtomicU64, Ordering};
use crate::vectors::{OPS, VectorError, VectorTable};
use crate::vnode_id::VnodeIdKey;
use maptrace_abi::{EventKind, raw};
use zerocopy::IntoBytes;

/// What happened to an event (`enum mt_record_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum RecordResult {
    /// In the ring.
    Recorded = bridge::MT_RECORDED as i32,
    /// Excluded by the config, or the core is shut down.
    Filtered = bridge::MT_FILTERED as i32,
    /// The shard was full; counted.
    Dropped = bridge::MT_DROPPED as i32,
    /// Malformed event; counted as an error.
    Rejected = bridge::MT_REJECTED as i32,
}

impl From<Result<(), Dropped>> for RecordResult {
    fn from(pushed: Result<(), Dropped>) -> RecordResult {
        match pushed {
            Ok(()) => RecordResult::Recorded,
            Err(Dropped) => RecordResult::Dropped,
        }
    }
}

/// Why a drain could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainError {
    /// The buffer cannot hold a header, a segment and the largest record.
    BufferTooSmall,
    /// Another drain holds the reader lock (the shim serialises; a bug).
    Busy,
}

/// Parameters fixed for the life of an engine.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Secret key of the vnode-id hash.
    pub hash_key: [u64; 2],
    /// Random per load, copied into batches and stats.
    pub generation: u64,
    /// `enum mt_probe_method` reported in stats.
    pub probe_method: u32,
    /// Clock at start: the START marker's timestamp.
    pub start_ns: u64,
}

/// Counters only the shim knows, merged into stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShimCounters {
    /// Hook invocations.
    pub hook_calls: u64,
    /// Hooks running now.
    pub hooks_in_flight: u64,
    /// Fail-open paths the shim took.
    pub errors: u64,
    /// PATH records the shim skipped for want of a buffer.
    pub paths_skipped: u64,
}

const BATCH_HEADER: usize = core::mem::size_of::<raw::mt_batch_header>();
const SEGMENT_HEADER: usize = core::mem::size_of::<raw::mt_segment_header>();
/// Smallest buffer a drain accepts: a header, a segment and the largest record.
pub const MIN_DRAIN_BUFFER: usize =
    BATCH_HEADER + SEGMENT_HEADER + raw::MT_RECORD_MAX_SLOTS as usize * SLOT_SIZE;

/// Reader-side state, under the drain lock. What a prepare copied per shard
/// is staged in the ring's own reader words ([`Ring::stage`]), so no drain
/// ever builds a per-shard array on the (16 KiB) kernel stack.
pub(crate) struct DrainState {
    /// Shard the next drain starts with (round-robin fairness).
    next_shard: u32,
    /// Batches committed in this generation.
    batch_no: u64,
    /// Whether the shards hold an uncommitted prepare.
    prepared: bool,
}

impl DrainState {
    pub(crate) const fn new() -> DrainState {
        DrainState {
            next_shard: 0,
            batch_no: 0,
            prepared: false,
        }
    }
}

/// The core's state. Lives in shim-provided memory in the kext, where
/// `mt_core_init` writes it field by field in place (see `ffi`): the whole
/// engine never passes through the kernel stack. Anywhere in tests.
pub struct Engine<'a> {
    pub(crate) ring: Ring<'a>,
    pub(crate) config: ConfigCell,
    pub(crate) key: VnodeIdKey,
    pub(crate) ids: IdMemo,
    pub(crate) params: Params,
    pub(crate) vectors: VectorTable,
    pub(crate) procs: ProcCache,
    pub(crate) drain: spin::Mutex<DrainState>,
    pub(crate) filtered: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl<'a> Engine<'a> {
    /// An engine over `ring`, recording everything, with a START marker as
    /// the first record of the generation. Built by value: host use only
    /// (the kext's `mt_core_init` builds the same fields in place).
    pub fn new(ring: Ring<'a>, params: Params) -> Engine<'a> {
        let e = Engine {
            ring,
            config: ConfigCell::new(Config::DEFAULT),
            key: VnodeIdKey::new(params.hash_key),
            ids: IdMemo::new(),
            params,
            vectors: VectorTable::new(),
            procs: ProcCache::new(),
            drain: spin::Mutex::new(DrainState::new()),
            filtered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        };
        e.start();
        e
    }

    /// Records the START marker: the first record of the generation. Called
    /// once, by whoever built the engine, before anyone else sees it.
    pub(crate) fn start(&self) {
        let (slots, shards) = (u64::from(self.ring.cap()), u64::from(self.ring.nshards()));
        self.mark(self.params.start_ns, raw::MT_MARK_START, 0, slots, shards);
    }

    /// The ring (for stats and tests).
    pub fn ring(&self) -> &Ring<'a> {
        &self.ring
    }

    /// Stops recording for good; later events are filtered.
    pub fn shutdown(&self) {
        self.config.shut_down();
    }

    /// Whether an event of `kind` from `pid` would be recorded. A `false`
    /// counts the event as filtered: the hook records nothing after it.
    #[inline]
    pub fn wants(&self, kind: u32, pid: u32) -> bool {
        match EventKind::try_from(kind) {
            Ok(k) => self.admit(k, pid),
            Err(_) => {
                // An unknown kind is never recorded: filtered like the rest.
                self.filtered.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Whether the config records `kind` from `pid`; counts a refusal as
    /// filtered. The one place the hot path consults the config.
    #[inline]
    fn admit(&self, kind: EventKind, pid: u32) -> bool {
        let wanted = self.config.get().wants(kind, pid);
        if !wanted {
            self.filtered.fetch_add(1, Ordering::Relaxed);
        }
        wanted
    }

    /// Records one fixed-size event (MMAP, PAGEIN, MNOMAP, FILE_MMAP).
    #[inline]
    pub fn record(&self, hint: u32, ev: &mt_event) -> RecordResult {
        let kind = match EventKind::try_from(ev.kind) {
            Ok(
                k @ (EventKind::Mmap
                | EventKind::Pagein
                | EventKind::Mnomap
                | EventKind::FileMmap
                | EventKind::Open
                | EventKind::Close),
            ) => k,
            _ => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                return RecordResult::Rejected;
            }
        };
        if !self.admit(kind, ev.pid) {
            return RecordResult::Filtered;
        }
        let head = record::head_of(kind, ev, self.vnode_id(ev));
        let pushed = self.ring.record(hint, 1, |w| {
            let drops_before = w.drops_before();
            w.head_with(|body| record::write_fixed(body, head, ev, drops_before));
        });
        pushed.into()
    }

    /// The keyed id of `ev`'s vnode, remembered under this load's key.
    #[inline(always)]
    fn vnode_id(&self, ev: &mt_event) -> u64 {
        let epoch = id_memo::epoch_of(self.params.generation);
        self.ids.id(&self.key, epoch, ev.vnode_ptr, ev.vid)
    }

    /// Whether the shim should record `pid`'s name now (PROC wanted for
    /// it, and not recorded since it last exec'd, the last config write
    /// or the last drop of its PROC record). A `true` marks it named.
    /// Never counts as filtered: most events of a pid are not asked about
    /// its name.
    #[inline]
    pub fn proc_claim(&self, pid: u32) -> bool {
        self.config.get().wants(EventKind::Proc, pid) && self.procs.claim(pid)
    }

    /// `pid` exec'd: its next event names it again.
    pub fn proc_forget(&self, pid: u32) {
        self.procs.forget(pid);
    }

    /// Records a PROC record naming `ev.pid` (`name` up to its first NUL,
    /// cut at `MT_PROC_NAME_BYTES`). A dropped one forgets the pid, which
    /// [`Engine::proc_claim`] marked named: its next event names it again.
    /// The ring drops the newest record, so no other drop loses a name.
    pub fn record_proc(&self, hint: u32, ev: &mt_event, name: &[u8]) -> RecordResult {
        if !self.admit(EventKind::Proc, ev.pid) {
            return RecordResult::Filtered;
        }
        let head = record::head_of(EventKind::Proc, ev, 0);
        let pushed = self.ring.record(hint, 1, |w| {
            let drops_before = w.drops_before();
            w.head_with(|body| record::write_proc(body, head, drops_before, name));
        });
        if pushed.is_err() {
            self.procs.forget(ev.pid);
        }
        pushed.into()
    }

    /// Records the path of `ev.vnode_ptr` (cut at `MT_PATH_MAX`).
    pub fn record_path(&self, hint: u32, ev: &mt_event, path: &[u8]) -> RecordResult {
        if !self.admit(EventKind::Path, ev.pid) {
            return RecordResult::Filtered;
        }
        let mut head = record::head_of(EventKind::Path, ev, self.vnode_id(ev));
        let path = match path.get(..PATH_MAX) {
            Some(cut) if path.len() > PATH_MAX => {
                head.flags |= raw::MT_RF_TRUNCATED as u8;
                cut
            }
            _ => path,
        };
        let k = record::path_slots(path.len());
        let pushed = self.ring.record(hint, k, |w| {
            let drops_before = w.drops_before();
            w.head_with(|body| record::write_path_head(body, head, drops_before, ev.vid, path));
            for i in 1..k {
                w.continuation_with(i, |body| record::write_path_continuation(body, path, i));
            }
        });
        pushed.into()
    }

    /// Records a marker on shard 0 (if markers are wanted, whatever the
    /// pid filter), stamped `ts`.
    fn mark(&self, ts: u64, mark: u32, arg0: u32, arg1: u64, arg2: u64) {
        if !self.config.get().wants_marks() {
            return;
        }
        let head = Head {
            kind: EventKind::Mark,
            flags: 0,
            error: 0,
            pid: 0,
            timestamp_ns: ts,
            tid: 0,
            vnode_id: 0,
        };
        // A full shard drops the marker and counts it like any record.
        let _ = self.ring.record(0, 1, |w| {
            let drops_before = w.drops_before();
            w.head_with(|body| {
                record::write_mark(body, head, drops_before, mark, arg0, arg1, arg2)
            });
        });
    }

    // ------------------------------------------------------------- vectors

    /// The original entry `op` of hooked vector `vector`.
    #[inline]
    pub fn vector_original(&self, vector: u64, op: u32) -> Option<u64> {
        self.vectors.original(vector, op)
    }

    /// Remembers a vector's original entries before the shim patches it;
    /// `now_ns` stamps the VECTOR_PATCHED marker.
    pub fn vector_insert(
        &self,
        vector: u64,
        originals: [u64; OPS],
        now_ns: u64,
    ) -> Result<u32, VectorError> {
        let index = self.vectors.insert(vector, originals)?;
        self.mark(now_ns, raw::MT_MARK_VECTOR_PATCHED, index, 0, 0);
        Ok(index)
    }

    /// Forgets a hooked vector (the shim restored it: its filesystem is
    /// going away). Returns whether it was in the table.
    pub fn vector_remove(&self, vector: u64) -> bool {
        self.vectors.remove(vector)
    }

    /// Entry `i` of the vector table.
    pub fn vector_get(&self, i: u32) -> Option<(u64, [u64; OPS])> {
        self.vectors.get(i)
    }

    /// Vectors in the table.
    pub fn vector_count(&self) -> u32 {
        self.vectors.len()
    }

    // -------------------------------------------------------------- config

    /// Validates and applies a `struct mt_config` write; a CONFIG marker
    /// stamped `now_ns` records the change.
    pub fn config_set(&self, bytes: &[u8], now_ns: u64) -> Result<(), ConfigError> {
        let c = Config::parse(bytes)?;
        self.config.set(c)?;
        // A reader that just configured the kext learns every name afresh.
        self.procs.invalidate();
        let arg1 = (u64::from(c.flags.bits()) << 32) | u64::from(c.pid);
        self.mark(now_ns, raw::MT_MARK_CONFIG, c.mask.bits(), arg1, 0);
        Ok(())
    }

    /// The current config.
    pub fn config_get(&self) -> raw::mt_config {
        self.config.get().to_raw()
    }

    // --------------------------------------------------------------- drain

    /// Bytes a batch holding the whole ring could take.
    pub fn drain_capacity(&self) -> usize {
        let n = self.ring.nshards() as usize;
        BATCH_HEADER + n * SEGMENT_HEADER + n * self.ring.cap() as usize * SLOT_SIZE
    }

    /// Copies one batch into `buf` without consuming anything; returns its
    /// length (0: nothing to read).
    pub fn drain_prepare(&self, buf: &mut [u8], now_ns: u64) -> Result<usize, DrainError> {
        if buf.len() < MIN_DRAIN_BUFFER {
            return Err(DrainError::BufferTooSmall);
        }
        let mut st = self.drain.try_lock().ok_or(DrainError::Busy)?;
        let n = self.ring.nshards();
        // checked_rem: no path to a panic even for a zero shard count.
        let start = st.next_shard.checked_rem(n).unwrap_or(0);
        st.next_shard = st.next_shard.wrapping_add(1);
        for shard in 0..n as usize {
            self.ring.stage(shard, &Peek::default());
        }
        st.prepared = true;

        let mut used = BATCH_HEADER;
        let (mut nsegments, mut records, mut truncated) = (0u32, 0u64, false);
        for step in 0..n {
            let shard = (start + step).checked_rem(n).unwrap_or(0);
            let region = buf.get_mut(used..).unwrap_or(&mut []);
            let Some((seg_header, slots)) = region.split_at_mut_checked(SEGMENT_HEADER) else {
                truncated = true;
                break;
            };
            let peek = self.ring.peek(shard as usize, slots);
            truncated |= peek.truncated;
            if peek.records == 0 {
                continue;
            }
            let seg = raw::mt_segment_header {
                magic: raw::MT_SEGMENT_MAGIC,
                shard: shard as u16,
                reserved0: 0,
                nslots: peek.nslots as u32,
                nrecords: peek.records as u32,
                first_pos: peek.first_pos,
                dropped_cumulative: peek.dropped,
                backlog_after: peek.backlog_after,
                ts_min: peek.ts_min,
                ts_max: peek.ts_max,
                reserved1: 0,
            };
            seg_header.copy_from_slice(seg.as_bytes());
            used += SEGMENT_HEADER + peek.nslots as usize * SLOT_SIZE;
            nsegments += 1;
            records += peek.records;
            self.ring.stage(shard as usize, &peek);
        }
        if nsegments == 0 {
            st.prepared = false;
            return Ok(0);
        }
        let total_dropped = (0..n as usize).map(|i| self.ring.counters(i).dropped).sum();
        let h = raw::mt_batch_header {
            magic: raw::MT_BATCH_MAGIC,
            abi_version: raw::MT_ABI_VERSION as u16,
            header_size: BATCH_HEADER as u16,
            flags: if truncated { raw::MT_BF_TRUNCATED } else { 0 },
            nsegments,
            batch_no: st.batch_no + 1,
            generation: self.params.generation,
            total_bytes: used as u64,
            total_records: records,
            total_dropped,
            drain_ns: now_ns,
        };
        if let Some(header) = buf.get_mut(..BATCH_HEADER) {
            header.copy_from_slice(h.as_bytes());
        }
        Ok(used)
    }

    /// Consumes what the last prepare copied.
    pub fn drain_commit(&self) {
        let Some(mut st) = self.drain.try_lock() else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !st.prepared {
            return;
        }
        for shard in 0..self.ring.nshards() as usize {
            self.ring.release_staged(shard);
        }
        st.batch_no += 1;
        st.prepared = false;
    }

    /// Forgets the last prepare: its records stay in the ring.
    pub fn drain_abort(&self) {
        if let Some(mut st) = self.drain.try_lock() {
            st.prepared = false;
        }
    }

    // --------------------------------------------------------------- stats

    /// Bytes of the stats output.
    pub fn stats_size(&self) -> usize {
        core::mem::size_of::<raw::mt_stats_header>()
            + self.ring.nshards() as usize * core::mem::size_of::<raw::mt_shard_stats>()
    }

    /// Writes the stats output (header + one entry per shard) into `buf`;
    /// returns its length, or `None` when `buf` is too small.
    pub fn stats(&self, shim: ShimCounters, buf: &mut [u8]) -> Option<usize> {
        let size = self.stats_size();
        let out = buf.get_mut(..size)?;
        let c = self.config.get();
        let h = raw::mt_stats_header {
            magic: raw::MT_STATS_MAGIC,
            abi_version: raw::MT_ABI_VERSION as u16,
            header_size: core::mem::size_of::<raw::mt_stats_header>() as u16,
            nshards: self.ring.nshards(),
            slots_per_shard: self.ring.cap(),
            probe_method: self.params.probe_method,
            vectors_patched: self.vectors.len(),
            config_flags: c.flags.bits(),
            event_mask: c.mask.bits(),
            generation: self.params.generation,
            hook_calls: shim.hook_calls,
            hooks_in_flight: shim.hooks_in_flight,
            filtered: self.filtered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed) + shim.errors,
            paths_skipped: shim.paths_skipped,
        };
        let (head, mut rest) =
            out.split_at_mut_checked(core::mem::size_of::<raw::mt_stats_header>())?;
        head.copy_from_slice(h.as_bytes());
        for i in 0..self.ring.nshards() as usize {
            let c = self.ring.counters(i);
            let s = raw::mt_shard_stats {
                produced_slots: c.produced_slots,
                dropped: c.dropped,
                drained_slots: c.drained_slots,
                drained_records: c.drained_records,
                backlog_slots: c.produced_slots.saturating_sub(c.drained_slots),
                reserved0: [0; 3],
            };
            let (entry, tail) =
                rest.split_at_mut_checked(core::mem::size_of::<raw::mt_shard_stats>())?;
            entry.copy_from_slice(s.as_bytes());
            rest = tail;
        }
        Some(size)
    }

    /// Events filtered so far.
    pub fn filtered(&self) -> u64 {
        self.filtered.load(Ordering::Relaxed)
    }

    /// Unexpected states seen so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}
