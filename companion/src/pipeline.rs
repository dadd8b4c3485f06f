//! From raw batches to an ordered stream of items: decode, merge shards by
//! time, name vnodes from PATH records, pair mmap(2) checks with the
//! `VNOP_MMAP` that follows them, and turn every loss into an item.

use maptrace_abi::merge::time_order_with;
use maptrace_abi::{Decoded, Decoder, Event, EventKind, EventMask, Notice, Record, RecordView};
use rustc_hash::FxHashMap;
use std::rc::Rc;

/// What a refused batch is, said so that the reader knows what to do: an
/// ABI mismatch names both versions and the way out.
fn batch_error_message(batch: u64, e: &maptrace_abi::decode::BatchError) -> String {
    match *e {
        maptrace_abi::decode::BatchError::AbiMismatch(m) => format!(
            "batch {batch}: ABI mismatch: made by a kext with {m}; \
             its records are skipped; use the maptrace built with that kext"
        ),
        _ => format!("batch {batch}: {e}"),
    }
}

/// The mmap(2) call (MAC check) that led to a `VNOP_MMAP` on the same thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapCall {
    /// The offset argument of mmap(2).
    pub file_pos: u64,
    /// `PROT_*` requested.
    pub prot: u32,
    /// `PROT_*` allowed.
    pub maxprot: u32,
    /// `MAP_*` flags.
    pub mmap_flags: u32,
    /// When the check ran.
    pub timestamp_ns: u64,
}

/// A file's name as learned from its PATH record, shared by every event of
/// the file.
pub type PathName = Rc<PathInfo>;

/// The contents of a [`PathName`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The path, lossily made UTF-8.
    pub text: String,
    /// The vnode id the path names.
    vnode_id: u64,
    /// What a JSON line holds from the vnode id's digits to the end of the
    /// path (`0000000000001000","path":"/a/b"`), written once here rather
    /// than for every event of the file.
    fragment: Vec<u8>,
    /// The path was cut at `MT_PATH_MAX`.
    pub truncated: bool,
}

/// Bytes of [`PathInfo`]'s fragment before the path's literal: the id's 16
/// hex digits and `","path":`.
const ID_FRAGMENT: usize = 16 + b"\",\"path\":".len();

impl PathInfo {
    /// The path `vnode_id` was named by, from its record bytes.
    pub fn new(vnode_id: u64, bytes: &[u8], truncated: bool) -> PathInfo {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let mut fragment = Vec::with_capacity(ID_FRAGMENT + text.len() + 2);
        fragment.extend_from_slice(format!("{vnode_id:016x}\",\"path\":").as_bytes());
        crate::json::push_str(&mut fragment, &text);
        PathInfo {
            text,
            vnode_id,
            fragment,
            truncated,
        }
    }

    /// The path as a JSON string literal.
    pub fn json(&self) -> &[u8] {
        &self.fragment[ID_FRAGMENT..]
    }

    /// The length of [`PathInfo::id_and_json`]'s bytes.
    #[inline(always)]
    pub fn id_and_json_len(&self) -> usize {
        self.fragment.len()
    }

    /// The JSON bytes from the vnode id's hex digits through the path's
    /// literal, when this path names `vnode_id`.
    #[inline(always)]
    pub fn id_and_json(&self, vnode_id: u64) -> Option<&[u8]> {
        (self.vnode_id == vnode_id).then_some(&self.fragment[..])
    }
}

/// A process's name as learned from its PROC record, shared by every event
/// of the process until the next one (an exec renames it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comm {
    /// The name, lossily made UTF-8.
    pub text: String,
    /// The name as a JSON string literal, escaped once here rather than for
    /// every event.
    json: Vec<u8>,
}

impl Comm {
    /// A name from its text.
    pub fn new(text: String) -> Comm {
        let mut json = Vec::with_capacity(text.len() + 2);
        crate::json::push_str(&mut json, &text);
        Comm { text, json }
    }

    /// The name as a JSON string literal.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// One decoded event with what the pipeline learned about it.
#[derive(Clone, Debug)]
pub struct Ev {
    /// The record as decoded.
    pub rec: Record,
    /// The file's path, when a PATH record named its vnode.
    pub path: Option<PathName>,
    /// For `VNOP_MMAP`: the mmap(2) call it belongs to; `None` for exec and
    /// loader maps, which have no MAC check. Boxed: few events have one,
    /// and an item of at most 128 bytes is moved with a few vector stores
    /// where a bigger one costs a `memcpy` call per item.
    pub call: Option<Box<MapCall>>,
    /// Which `VNOP_MMAP` of its call this is: 1, or 2 for the second of a
    /// `MAP_SHARED` call (XNU maps the named object twice); 0 without a call.
    pub call_map: u8,
    /// The process's name, when a PROC record named the pid (the latest:
    /// an exec renames it).
    pub comm: Option<Rc<Comm>>,
}

/// `MAP_SHARED` in mmap(2)'s flags.
const MAP_SHARED: u32 = 0x1;

pub use maptrace_abi::decode::{KextDrops, Loss};

/// One element of the processed stream.
#[derive(Clone, Debug)]
pub enum Item {
    /// An event.
    Event(Ev),
    /// Records were lost here.
    Loss(Loss),
    /// Part of the stream could not be decoded.
    Corrupt(String),
    /// The kext was reloaded: vnode ids and paths start over.
    Reload {
        /// The new generation.
        generation: u64,
    },
}

// Items are moved once each (into the output vector): at most 128 bytes,
// the move is a few vector stores rather than a `memcpy` call.
const _: () = assert!(size_of::<Item>() <= 128);

/// Running totals of everything the pipeline saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Batches fed.
    pub batches: u64,
    /// Records decoded, by `EventKind as usize`.
    pub by_kind: [u64; 8],
    /// Records decoded.
    pub events: u64,
    /// Records the kext dropped (reported through items so far).
    pub dropped: u64,
    /// Slots skipped by position gaps.
    pub gap_slots: u64,
    /// Corruption reports (bad batches, bad segments, bad records).
    pub corrupt: u64,
    /// mmap(2) checks that no `VNOP_MMAP` followed on their thread.
    pub unpaired_calls: u64,
    /// Bytes of a recording's last, incomplete frame (the file was cut off
    /// there, as a killed recorder leaves it): read up to it, not past.
    pub cut_bytes: u64,
    /// Events a command's filters (`--pid`, `--kind`, `--path`) let
    /// through, when it filters: set by the command, never by the pipeline.
    pub shown: Option<u64>,
}

impl Totals {
    /// Whether any record went missing or any part was unreadable.
    pub fn lossy(&self) -> bool {
        self.dropped > 0 || self.gap_slots > 0 || self.cut_bytes > 0
    }

    /// The exit status these totals call for.
    pub fn exit_status(&self) -> u8 {
        if self.corrupt > 0 {
            crate::exit::CORRUPT
        } else if self.lossy() {
            crate::exit::LOSS
        } else {
            crate::exit::OK
        }
    }
}

/// Processes a pipeline keeps names of: one more than XNU's `PID_MAX`
/// (99999, bsd/sys/proc_internal.h, xnu-11417.121.6), so only a crafted
/// stream (pids are 32 bits in a record) reaches it; past it a new pid's
/// name is not kept and its events carry none.
pub const MAX_NAMED_PIDS: usize = 100_000;

/// Decodes batches into [`Item`]s; one per stream (one kext load or several).
///
/// What it keeps across batches is bounded by its [`Limits`] (see
/// [`Recent`]) and [`MAX_NAMED_PIDS`], so a stream of any length runs in
/// constant memory.
#[derive(Debug)]
pub struct Pipeline {
    decoder: Decoder,
    paths: Recent<PathName>,
    /// pid -> name from PROC records; kept across reloads (the kext names
    /// every pid again after one anyway). At most [`MAX_NAMED_PIDS`].
    names: FxHashMap<u32, Rc<Comm>>,
    pending: Recent<MapCall>,
    /// Time of the last `VNOP_MMAP` per thread: a check older than it came
    /// late (another shard's batch) and must not pair with a later map.
    last_map: Recent<u64>,
    /// Per thread, a `MAP_SHARED` call whose first `VNOP_MMAP` was the
    /// thread's last record, with that vnode: XNU's `vm_map_enter` maps the
    /// same named object again right after (osfmk/vm/vm_map.c,
    /// xnu-11417.101.15), so the next `VNOP_MMAP` of that vnode on that
    /// thread belongs to the same call.
    second_map: Recent<(u64, MapCall)>,
    totals: Totals,
    /// The order of the current batch's records (buffers reused).
    order: Vec<u32>,
    merge_runs: Vec<(u32, u32)>,
    /// The decoder's notices of the current batch (buffer reused).
    notices: Vec<(usize, Notice)>,
    /// A PATH record's bytes, joined (buffer reused).
    path_buf: Vec<u8>,
}

impl Default for Pipeline {
    fn default() -> Pipeline {
        Pipeline::with_limits(Limits::DEFAULT)
    }
}

/// A map by vnode or thread id that forgets what was not used lately, so
/// that ids which come and go (threads, recycled vnodes) cannot grow it:
/// entries live in a young and an old generation; when the young one holds
/// `cap` entries it becomes the old one and the old one is dropped. It holds
/// at most `2 × cap` entries, and an entry used since the last turn
/// survives the next one.
#[derive(Debug)]
struct Recent<V> {
    young: FxHashMap<u64, V>,
    old: FxHashMap<u64, V>,
    cap: usize,
    /// Entries dropped by turns, not yet collected by `take_forgotten`.
    forgotten: u64,
}

impl<V> Recent<V> {
    fn new(cap: usize) -> Recent<V> {
        Recent {
            young: FxHashMap::default(),
            old: FxHashMap::default(),
            cap: cap.max(1),
            forgotten: 0,
        }
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    fn get(&self, k: &u64) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }

    /// As `get`, marking the entry used.
    fn touch(&mut self, k: &u64) -> Option<&V> {
        if !self.young.contains_key(k) {
            let v = self.old.remove(k)?;
            self.insert(*k, v);
        }
        self.young.get(k)
    }

    /// As `touch`, returning a clone: one lookup when the entry is young
    /// (the common case), where `touch` makes two.
    #[inline]
    fn touch_cloned(&mut self, k: &u64) -> Option<V>
    where
        V: Clone,
    {
        if let Some(v) = self.young.get(k) {
            return Some(v.clone());
        }
        let v = self.old.remove(k)?;
        self.insert(*k, v.clone());
        Some(v)
    }

    fn insert(&mut self, k: u64, v: V) -> Option<V> {
        let prev = self.remove(&k);
        if self.young.len() >= self.cap {
            let dropped = std::mem::replace(&mut self.old, std::mem::take(&mut self.young));
            self.forgotten += dropped.len() as u64;
        }
        self.young.insert(k, v);
        prev
    }

    #[inline]
    fn remove(&mut self, k: &u64) -> Option<V> {
        // Most records meet empty maps (no shared call awaits a second
        // map): no hashing then.
        if self.young.is_empty() && self.old.is_empty() {
            return None;
        }
        self.young.remove(k).or_else(|| self.old.remove(k))
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    /// Entries forgotten since the last call.
    fn take_forgotten(&mut self) -> u64 {
        std::mem::take(&mut self.forgotten)
    }
}

/// How much the pipeline remembers across batches. Names and pairing
/// state of ids not seen for that long are forgotten: a name comes back with
/// the file's next mmap (the kext names the vnode at every `VNOP_MMAP`); a
/// forgotten mmap(2) check counts as unpaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Names (PATH records) kept by vnode id.
    pub names: usize,
    /// Threads whose mmap(2) pairing state is kept.
    pub threads: usize,
}

impl Limits {
    /// What [`Pipeline::new`] keeps: 8192 names per generation (at most
    /// 16384, about 4 MB of 100-byte paths, 36 MB if all were 1024 bytes)
    /// and 65536 threads per generation (about 14 MB at most).
    pub const DEFAULT: Limits = Limits {
        names: 8192,
        threads: 65536,
    };

    /// The most entries [`Pipeline::state_entries`] can reach.
    pub const fn max_entries(&self) -> usize {
        2 * self.names + 3 * 2 * self.threads
    }
}

impl Pipeline {
    /// A pipeline with no history.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// A pipeline keeping at most `limits` across batches.
    pub fn with_limits(limits: Limits) -> Pipeline {
        Pipeline {
            decoder: Decoder::new(),
            paths: Recent::new(limits.names),
            names: FxHashMap::default(),
            pending: Recent::new(limits.threads),
            last_map: Recent::new(limits.threads),
            second_map: Recent::new(limits.threads),
            totals: Totals::default(),
            order: Vec::new(),
            merge_runs: Vec::new(),
            notices: Vec::new(),
            path_buf: Vec::new(),
        }
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The path of a vnode id, if one was seen.
    pub fn path_of(&self, vnode_id: u64) -> Option<&PathName> {
        self.paths.get(&vnode_id)
    }

    /// Entries held across batches: names and per-thread pairing state;
    /// never more than the limits' [`Limits::max_entries`].
    pub fn state_entries(&self) -> usize {
        self.paths.len() + self.pending.len() + self.last_map.len() + self.second_map.len()
    }

    /// Decodes one batch and appends its items to `out`, in time order.
    /// Returns whether the kext said it left records behind (read again now).
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Item>) -> bool {
        self.feed_into(bytes, out)
    }

    /// As [`Pipeline::feed`], handing each item to `each` as it is made
    /// instead of collecting the batch's items: a writer that renders items
    /// at once saves storing them and reading them back.
    pub fn feed_each(&mut self, bytes: &[u8], each: impl FnMut(Item)) -> bool {
        self.feed_into(bytes, &mut Each(each))
    }

    fn feed_into(&mut self, bytes: &[u8], out: &mut impl Sink) -> bool {
        self.totals.batches += 1;
        // Records stay in `bytes` (views) until they are put in time order;
        // each becomes an owned record once, as its item.
        let mut views = Vec::new();
        let mut notices = std::mem::take(&mut self.notices);
        notices.clear();
        let batch = match self.decoder.feed_views(bytes, &mut views, &mut notices) {
            Ok(batch) => batch,
            Err(e) => {
                self.totals.corrupt += 1;
                out.push(Item::Corrupt(batch_error_message(self.totals.batches, &e)));
                self.notices = notices;
                return false;
            }
        };
        for (_, n) in notices.drain(..) {
            match n {
                Notice::Lost(loss) => self.push_loss(loss, out),
                Notice::Reload { generation } => {
                    self.paths.clear();
                    self.pending.clear();
                    self.last_map.clear();
                    self.second_map.clear();
                    out.push(Item::Reload { generation });
                }
                Notice::Corrupt(e) => {
                    self.totals.corrupt += 1;
                    out.push(Item::Corrupt(e.to_string()));
                }
            }
        }
        self.notices = notices;
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        time_order_with(&views, &mut self.merge_runs, &mut order);
        out.room_for(order.len());
        // The kext names a vnode right after the event that first saw it, so
        // learn the batch's paths first: that event then carries its path.
        for v in views.iter().filter(|v| v.kind == EventKind::Path) {
            let id = v.vnode_id();
            if self.paths.touch(&id).is_none() {
                let name = self.path_info(v);
                self.paths.insert(id, name);
            }
        }
        for &i in &order {
            if let Some(v) = views.get(i as usize) {
                self.push_record(v.to_record(), out);
            }
        }
        self.order = order;
        batch.header.flags & maptrace_abi::raw::MT_BF_TRUNCATED != 0
    }

    /// The name a PATH record gives.
    fn path_info(&mut self, v: &RecordView<'_>) -> PathName {
        self.path_buf.clear();
        v.path_chunks()
            .for_each(|c| self.path_buf.extend_from_slice(c));
        let truncated = v.header().flags as u32 & maptrace_abi::raw::MT_RF_TRUNCATED != 0;
        Rc::new(PathInfo::new(v.vnode_id(), &self.path_buf, truncated))
    }

    /// Reports, per shard, the drops the batches' headers counted after the
    /// shard's last record read; call once at the end of a stream.
    pub fn finish(&mut self, out: &mut Vec<Item>) {
        self.finish_with(None, out);
    }

    /// As [`Pipeline::finish`], also reporting drops only the kext's
    /// counters know (after the last batch read) when they are of the load
    /// being decoded.
    pub fn finish_with(&mut self, kext: Option<&KextDrops>, out: &mut Vec<Item>) {
        let mut decoded = Vec::new();
        self.decoder.finish(kext, &mut decoded);
        for d in decoded {
            if let Decoded::Lost(loss) = d {
                self.push_loss(loss, out);
            }
        }
        self.totals.unpaired_calls += self.pending.len() as u64;
        self.pending.clear();
    }

    /// Counts a loss and passes it on.
    fn push_loss(&mut self, loss: Loss, out: &mut impl Sink) {
        // Counts come from untrusted headers: saturate, never overflow.
        match loss {
            Loss::Dropped { count, .. } => {
                self.totals.dropped = self.totals.dropped.saturating_add(count);
            }
            Loss::Gap { slots, .. } => {
                self.totals.gap_slots = self.totals.gap_slots.saturating_add(slots);
            }
        }
        out.push(Item::Loss(loss));
    }

    #[inline(always)]
    fn push_record(&mut self, rec: Record, out: &mut impl Sink) {
        if rec.lost_before > 0 {
            let loss = Loss::Dropped {
                shard: rec.shard,
                count: rec.lost_before,
                before_pos: Some(rec.pos),
            };
            self.push_loss(loss, out);
        }
        self.totals.events += 1;
        if let Some(n) = self.totals.by_kind.get_mut(rec.kind as usize) {
            *n += 1;
        }
        let mut call: Option<MapCall> = None;
        let mut call_map = 0;
        // Anything else the thread does (names aside) ends a shared call's maps.
        let awaited = match rec.event {
            Event::Path { .. } | Event::Mark { .. } | Event::Proc { .. } => None,
            _ => self.second_map.remove(&rec.tid),
        };
        if let Event::Proc { name, .. } = &rec.event {
            if self.names.len() < MAX_NAMED_PIDS || self.names.contains_key(&rec.pid) {
                let text = String::from_utf8_lossy(name).into_owned();
                self.names.insert(rec.pid, Rc::new(Comm::new(text)));
            }
        }
        match &rec.event {
            Event::Path {
                path, truncated, ..
            } => {
                self.paths.insert(
                    rec.vnode_id,
                    Rc::new(PathInfo::new(rec.vnode_id, path, *truncated)),
                );
            }
            Event::FileMmap {
                file_pos,
                prot,
                maxprot,
                mmap_flags,
            } => {
                let c = MapCall {
                    file_pos: *file_pos,
                    prot: *prot,
                    maxprot: *maxprot,
                    mmap_flags: *mmap_flags,
                    timestamp_ns: rec.timestamp_ns,
                };
                let late = self
                    .last_map
                    .get(&rec.tid)
                    .is_some_and(|&t| t > rec.timestamp_ns);
                if late || self.pending.insert(rec.tid, c).is_some() {
                    self.totals.unpaired_calls += 1;
                }
            }
            Event::Mmap { .. } => {
                call = self.pending.remove(&rec.tid);
                if let Some(c) = call {
                    call_map = 1;
                    if c.mmap_flags & MAP_SHARED != 0 {
                        self.second_map.insert(rec.tid, (rec.vnode_id, c));
                    }
                } else if let Some((_, c)) = awaited.filter(|(v, _)| *v == rec.vnode_id) {
                    call = Some(c);
                    call_map = 2;
                }
                self.last_map.insert(rec.tid, rec.timestamp_ns);
            }
            _ => {}
        }
        // A forgotten check never met its map.
        self.totals.unpaired_calls += self.pending.take_forgotten();
        let path = self.paths.touch_cloned(&rec.vnode_id);
        let comm = if self.names.is_empty() {
            None
        } else {
            self.names.get(&rec.pid).cloned()
        };
        out.push(Item::Event(Ev {
            rec,
            path,
            call: call.map(Box::new),
            call_map,
            comm,
        }));
    }
}

/// Where the pipeline puts its items.
trait Sink {
    fn push(&mut self, item: Item);
    /// `n` more items are coming.
    fn room_for(&mut self, _n: usize) {}
}

impl Sink for Vec<Item> {
    #[inline(always)]
    fn push(&mut self, item: Item) {
        Vec::push(self, item);
    }
    fn room_for(&mut self, n: usize) {
        self.reserve(n);
    }
}

/// Items handed on one by one.
struct Each<F>(F);

impl<F: FnMut(Item)> Sink for Each<F> {
    #[inline(always)]
    fn push(&mut self, item: Item) {
        (self.0)(item);
    }
}

/// Which events a command shows. Losses and corruption are always shown.
#[derive(Clone, Debug)]
pub struct Filter {
    /// Only these processes (empty: all).
    pub pids: Vec<u32>,
    /// Only files at or under this path ([`path_under`]).
    pub path_prefix: Option<String>,
    /// Only these kinds.
    pub kinds: EventMask,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            pids: Vec::new(),
            path_prefix: None,
            kinds: EventMask::all(),
        }
    }
}

impl Filter {
    /// Whether `ev` passes. With a path prefix, events without a known path
    /// (mmap(2) checks, files whose PATH record was lost) do not pass.
    pub fn accepts(&self, ev: &Ev) -> bool {
        if !self.kinds.contains(ev.rec.kind.mask()) {
            return false;
        }
        if !self.pids.is_empty() && !self.pids.contains(&ev.rec.pid) {
            return false;
        }
        match &self.path_prefix {
            None => true,
            Some(p) => ev.path.as_ref().is_some_and(|n| path_under(&n.text, p)),
        }
    }
}

/// Whether `path` is `prefix` or lies under it, by whole components:
/// `/data/a` takes `/data/a` and `/data/a/b` but not `/data/ab`; a prefix
/// ending in `/` takes everything below it.
pub fn path_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
}

/// Parses a comma-separated list of kind names (`mmap,pagein`); `all` names
/// every kind.
pub fn parse_kinds(list: &str) -> Result<EventMask, String> {
    let mut mask = EventMask::empty();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name == "all" {
            mask |= EventMask::all();
            continue;
        }
        match EventKind::from_name(name) {
            Some(k) => mask |= k.mask(),
            None => {
                let known: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
                return Err(format!(
                    "unknown event kind `{name}` (known: {}, or all)",
                    known.join(", ")
                ));
            }
        }
    }
    if mask.is_empty() {
        return Err("no event kind given (example: mmap,pagein)".into());
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_prefix_is_whole_components() {
        assert!(path_under("/data/a", "/data/a"));
        assert!(path_under("/data/a/b", "/data/a"));
        assert!(!path_under("/data/ab", "/data/a"));
        assert!(path_under("/data/ab", "/data/"));
        assert!(path_under("/data/a", "/"));
        assert!(!path_under("/dat", "/data"));
        assert!(path_under("/x", ""), "an empty prefix is the root's");
    }

    #[test]
    fn kind_lists_parse_and_refuse_unknown_names() {
        assert_eq!(
            parse_kinds("mmap, pagein"),
            Ok(EventMask::MMAP | EventMask::PAGEIN)
        );
        let e = parse_kinds("mmap,paging").unwrap_err();
        assert!(e.contains("paging") && e.contains("file_mmap"), "{e}");
        assert!(parse_kinds(" , ").is_err());
    }

    /// What a pipeline keeps escaped per name stays within what escaping
    /// can make of the name (6 bytes a control character) plus the id:
    /// bounded as the names are, by the names' limits and `PID_MAX`.
    #[test]
    fn escaped_names_are_bounded_and_tied_to_their_vnode() {
        let worst = vec![0x01u8; maptrace_abi::wire::PATH_MAX];
        let p = PathInfo::new(0x12ab, &worst, true);
        let fragment = p.id_and_json(0x12ab).unwrap();
        assert_eq!(fragment.len(), p.id_and_json_len());
        assert_eq!(
            fragment.len(),
            ID_FRAGMENT + crate::json::escaped_max(worst.len())
        );
        assert!(fragment.starts_with(b"00000000000012ab\",\"path\":\"\\u0001"));
        assert_eq!(&fragment[ID_FRAGMENT..], p.json());
        assert!(p.id_and_json(0x12ac).is_none(), "another id's digits");
        let c = Comm::new("a\u{1}\"".into());
        assert_eq!(c.json(), b"\"a\\u0001\\\"\"");
    }

    /// A crafted stream naming more pids than XNU has: the names kept stay
    /// at `MAX_NAMED_PIDS`, a kept pid is still renamed.
    #[test]
    fn names_kept_stay_within_the_pid_space() {
        let proc_rec = |pid: u32, name: &[u8]| Record {
            shard: 0,
            pos: u64::from(pid),
            lost_before: 0,
            kind: EventKind::Proc,
            flags: 0,
            error: 0,
            pid,
            timestamp_ns: 1,
            tid: 1,
            vnode_id: 0,
            event: Event::Proc {
                name: name.to_vec(),
                truncated: false,
            },
        };
        let mut p = Pipeline::new();
        let mut out: Vec<Item> = Vec::new();
        for pid in 0..MAX_NAMED_PIDS as u32 + 10 {
            p.push_record(proc_rec(pid, b"p"), &mut out);
            out.clear();
        }
        assert_eq!(p.names.len(), MAX_NAMED_PIDS);
        p.push_record(proc_rec(3, b"renamed"), &mut out);
        assert_eq!(p.names.get(&3).map(|c| c.text.as_str()), Some("renamed"));
    }

    #[test]
    fn garbage_is_reported_as_corruption_not_dropped() {
        let mut p = Pipeline::new();
        let mut out = Vec::new();
        assert!(!p.feed(&[0u8; 100], &mut out));
        assert!(matches!(out.as_slice(), [Item::Corrupt(m)] if m.contains("magic")));
        assert_eq!(p.totals().corrupt, 1);
        assert_eq!(p.totals().exit_status(), crate::exit::CORRUPT);
    }
}
