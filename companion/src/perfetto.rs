//! Export to the Chrome trace-event JSON format that the Perfetto UI opens:
//! one track per process and thread, page-ins as slices with their duration,
//! maps, last unmaps and mmap(2) checks as instants, a usecount counter
//! track per file, each mapped epoch of a file (first `VNOP_MMAP` to its
//! `VNOP_MNOMAP`) as an async slice beside it, losses as global instants
//! where they happened.
//!
//! The document is written as the items come: each trace event goes out at
//! once, and only what names tracks (processes, threads, files) and the
//! epochs still open are kept, so memory does not grow with the recording.

use crate::json::push_str as json_str;
use crate::pipeline::{Item, Loss};
use crate::text::{mark_name, prot_str, shown};
use maptrace_abi::{Event, ProbeMethod, Record};
use rustc_hash::{FxHashMap, FxHashSet};
use std::io::{self, Write};

/// The pseudo-process that holds the per-file counter tracks: above XNU's
/// `PID_MAX` (99999, bsd/sys/proc_internal.h, xnu-11417.121.6), so it never
/// meets a real process.
pub const COUNTERS_PID: u32 = 1_000_000;

/// Mapped epochs followed at once, far more files than a system keeps
/// mapped. Past it a new epoch gets no slice (its unmap ends nothing; a
/// later map of its file, once there is room, begins a slice noted as
/// maybe begun earlier) and the end of the document says how many went
/// unshown: input mapping a new file in every record costs no memory.
pub const MAX_OPEN_EPOCHS: usize = 1 << 16;

/// What an epoch slice's end says about how it ended.
const END_UNMAPPED: &str = "last unmap (VNOP_MNOMAP)";
const END_TRACE: &str = "not unmapped by the end of the trace";
const END_RELOAD: &str = "not unmapped before the kext was reloaded";

/// Drop and gap notices waiting for the time of the record they precede;
/// past this many they go out at the last time seen.
const MAX_PENDING_LOSSES: usize = 256;

/// The name of a process track: `name (pid N)`, or `pid N` until a PROC
/// record named the process.
pub fn process_track_name(pid: u32, name: Option<&str>) -> String {
    match name {
        // Escaped like every human output: names come from the traced
        // processes.
        Some(n) => format!("{} (pid {pid})", shown(n)),
        None => format!("pid {pid}"),
    }
}

/// A file's short name: the path's last part, or its vnode id.
fn short(path: Option<&str>, vnode: u64) -> String {
    match path {
        // Names are shown in the UI as they are: escaped like every human
        // output (the path argument keeps the exact bytes, as JSON).
        Some(p) => shown(p.rsplit('/').next().unwrap_or(p)).into_owned(),
        None => format!("vnode:{vnode:016x}"),
    }
}

/// One JSON object being written into a buffer, fields in call order.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    comma: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, comma: false }
    }

    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if self.comma {
            self.out.push(b',');
        }
        self.comma = true;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        json_str(self.key(k), v);
        self
    }

    /// A value that is already JSON (a number, a pre-escaped string).
    fn raw(&mut self, k: &str, v: &[u8]) -> &mut Self {
        self.key(k).extend_from_slice(v);
        self
    }

    fn num(&mut self, k: &str, v: impl itoa::Integer) -> &mut Self {
        let mut b = itoa::Buffer::new();
        let s = b.format(v);
        self.key(k).extend_from_slice(s.as_bytes());
        self
    }

    /// Nanoseconds as exact decimal microseconds, the format's time unit.
    fn us(&mut self, k: &str, ns: u64) -> &mut Self {
        push_us(self.key(k), ns);
        self
    }

    /// Starts a nested object under `k`; [`Obj::close`] ends it.
    fn nest(&mut self, k: &str) -> &mut Self {
        self.key(k).push(b'{');
        self.comma = false;
        self
    }

    fn close(&mut self) -> &mut Self {
        self.out.push(b'}');
        self.comma = true;
        self
    }
}

/// `ns` as microseconds with up to three decimals, no float rounding.
fn push_us(out: &mut Vec<u8>, ns: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(ns / 1000).as_bytes());
    let frac = ns % 1000;
    if frac != 0 {
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let keep = 3 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push(b'.');
        out.extend_from_slice(digits.get(..keep).unwrap_or(&digits));
    }
}

/// The usecount a record measured, and the name of what it is: the
/// `isinuse` fallback measures `usecount - kusecount`, never usecount.
fn usecount_of(r: &Record) -> Option<(&'static str, Option<i32>)> {
    let counts = match &r.event {
        Event::Pagein { counts, .. }
        | Event::Mmap { counts, .. }
        | Event::Mnomap { counts, .. }
        | Event::Open { counts, .. }
        | Event::Close { counts, .. } => counts,
        _ => return None,
    };
    let key = if counts.method == ProbeMethod::IsInUse {
        "usecount_minus_kusecount"
    } else {
        "usecount"
    };
    Some((
        key,
        (counts.method != ProbeMethod::None).then_some(i32::from(counts.usecount)),
    ))
}

/// The key of a usecount measured at an epoch's edge (`usecount_before`,
/// `usecount_minus_kusecount_at_unmap`, ...), after [`usecount_of`]'s.
fn edge_key(key: &str, edge: &'static str) -> String {
    format!("{key}_{edge}")
}

/// One file's mapped epoch whose slice is open: begun at its first
/// `VNOP_MMAP`, ended at its `VNOP_MNOMAP`. XNU calls `VNOP_MNOMAP` once,
/// when the last mapping goes (bsd/kern/ubc_subr.c `ubc_unmap`,
/// xnu-11417.121.6), so the first MMAP after it begins another epoch.
#[derive(Debug)]
struct OpenEpoch {
    /// The slice's id, unique in the document.
    id: u64,
    /// The slice's name as a JSON string literal: its end repeats it.
    name: Box<[u8]>,
    start_ns: u64,
    maps: u64,
    pageins: u64,
    /// [`Exporter::losses`] at the first map: more at the end means records
    /// were lost while the file was mapped, its real MNOMAP maybe among
    /// them.
    losses_at_start: u64,
}

/// Starts one trace event in `buf` (the field borrows of an [`Exporter`],
/// so a file's counter name can be read while writing).
fn start<'a>(buf: &'a mut Vec<u8>, started: &mut bool) -> Obj<'a> {
    buf.clear();
    if *started {
        buf.push(b',');
    }
    *started = true;
    buf.push(b'\n');
    Obj::open(buf)
}

/// Processes, threads or files the exporter remembers having named (each
/// set apart). Past it the set starts over: a track seen again is named
/// again (the UI keeps the latest name), so hostile input naming a new
/// thread or vnode in every record costs output, not memory.
pub const MAX_NAMED: usize = 1 << 20;

/// Writes the trace as items come in.
///
/// Invariant: `processes`, `threads` and `counters` each hold at most
/// `cap` entries; `epochs` holds at most `epoch_cap`, and each of its
/// entries is a slice whose begin was written and whose end is written
/// exactly once (at its MNOMAP, a reload or the finish), so every `"b"`
/// has its `"e"`.
#[derive(Debug)]
pub struct Exporter<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Whether a trace event was written (the next needs a comma).
    started: bool,
    /// Per pid, the name its track was last given (an exec renames it).
    processes: FxHashMap<u32, Option<std::rc::Rc<crate::pipeline::Comm>>>,
    threads: FxHashSet<(u32, u64)>,
    /// Per vnode id, its counter track's name as a JSON string literal.
    counters: FxHashMap<u64, Box<[u8]>>,
    /// Drop and gap notices waiting for the time of the next record.
    pending: Vec<Loss>,
    last_ts: u64,
    cap: usize,
    /// Whether the files' pseudo-process was named.
    files_named: bool,
    /// Per vnode id, its mapped epoch whose slice is open.
    epochs: FxHashMap<u64, OpenEpoch>,
    epoch_cap: usize,
    /// The next epoch slice's id.
    next_epoch: u64,
    /// Epochs that got no slice because `epochs` was full.
    epochs_unshown: u64,
    /// Loss notices (drops, gaps, corruption) written so far.
    losses: u64,
}

impl<W: Write> Exporter<W> {
    /// Starts the document on `out`.
    pub fn new(mut out: W) -> io::Result<Exporter<W>> {
        out.write_all(
            br#"{"displayTimeUnit":"ns","otherData":{"producer":"maptrace","clock":"nanoseconds since boot, shown in microseconds"},"traceEvents":["#,
        )?;
        Ok(Exporter {
            out,
            buf: Vec::with_capacity(1024),
            started: false,
            processes: FxHashMap::default(),
            threads: FxHashSet::default(),
            counters: FxHashMap::default(),
            pending: Vec::new(),
            last_ts: 0,
            cap: MAX_NAMED,
            files_named: false,
            epochs: FxHashMap::default(),
            epoch_cap: MAX_OPEN_EPOCHS,
            next_epoch: 1,
            epochs_unshown: 0,
            losses: 0,
        })
    }

    /// What the exporter keeps between items: one entry per process, thread
    /// and file, and per file still mapped, however many events went
    /// through.
    pub fn retained(&self) -> usize {
        self.processes.len() + self.threads.len() + self.counters.len() + self.epochs.len()
    }

    /// Sends the buffered trace event.
    fn emit(&mut self) -> io::Result<()> {
        self.buf.push(b'}');
        self.out.write_all(&self.buf)
    }

    /// Takes in one item, writing what it shows.
    pub fn observe(&mut self, item: &Item) -> io::Result<()> {
        match item {
            Item::Event(ev) => {
                let ts = ev.rec.timestamp_ns;
                self.last_ts = self.last_ts.max(ts);
                self.flush_pending(ts)?;
                self.record(ev)
            }
            // Tail drops (no record after them) and corruption have no
            // later record to take the time of.
            Item::Loss(
                l @ Loss::Dropped {
                    before_pos: None, ..
                },
            ) => self.loss(l, self.last_ts),
            Item::Loss(l) => {
                self.pending.push(*l);
                if self.pending.len() >= MAX_PENDING_LOSSES {
                    self.flush_pending(self.last_ts)?;
                }
                Ok(())
            }
            Item::Corrupt(msg) => {
                self.flush_pending(self.last_ts)?;
                self.loss_instant("CORRUPT", self.last_ts, |args| {
                    args.str("message", msg);
                })
            }
            Item::Reload { .. } => {
                self.flush_pending(self.last_ts)?;
                // The new load's vnode ids start over: no MNOMAP will come
                // for the old ones.
                self.close_open_epochs(END_RELOAD)
            }
        }
    }

    fn flush_pending(&mut self, ts: u64) -> io::Result<()> {
        for l in std::mem::take(&mut self.pending) {
            self.loss(&l, ts)?;
        }
        Ok(())
    }

    fn loss(&mut self, l: &Loss, ts: u64) -> io::Result<()> {
        match *l {
            Loss::Dropped {
                shard,
                count,
                before_pos,
            } => self.loss_instant(
                &format!("LOST {count} records on shard {shard}"),
                ts,
                |args| {
                    args.num("shard", shard)
                        .num("count", count)
                        .str("reason", "dropped");
                    if let Some(p) = before_pos {
                        args.num("before_pos", p);
                    }
                },
            ),
            Loss::Gap { shard, slots } => {
                self.loss_instant(&format!("GAP {slots} slots on shard {shard}"), ts, |args| {
                    args.num("shard", shard)
                        .num("slots", slots)
                        .str("reason", "gap");
                })
            }
        }
    }

    /// Writes a global instant of the loss category named `name` at `ts`;
    /// `args` fills in its arguments.
    fn loss_instant(
        &mut self,
        name: &str,
        ts: u64,
        args: impl FnOnce(&mut Obj<'_>),
    ) -> io::Result<()> {
        self.losses += 1;
        let mut o = start(&mut self.buf, &mut self.started);
        o.str("name", name)
            .str("cat", "loss")
            .str("ph", "i")
            .str("s", "g")
            .us("ts", ts)
            .num("pid", 0)
            .num("tid", 0)
            .nest("args");
        args(&mut o);
        o.close();
        self.emit()
    }

    /// Names the process and thread tracks on first sight.
    /// Names the process track again when its name changes (a PROC record
    /// after an exec); the UI keeps the latest `process_name`.
    fn name_tracks(
        &mut self,
        pid: u32,
        tid: u64,
        comm: Option<&std::rc::Rc<crate::pipeline::Comm>>,
    ) -> io::Result<()> {
        let known = self.processes.get(&pid);
        if known.is_none() || (comm.is_some() && known.is_some_and(|k| k.as_ref() != comm)) {
            if self.processes.len() >= self.cap {
                self.processes.clear();
            }
            self.processes.insert(pid, comm.cloned());
            let name = process_track_name(pid, comm.map(|c| c.text.as_str()));
            let mut o = start(&mut self.buf, &mut self.started);
            o.str("name", "process_name").str("ph", "M").num("pid", pid);
            o.nest("args").str("name", &name).close();
            self.emit()?;
        }
        if self.threads.len() >= self.cap && !self.threads.contains(&(pid, tid)) {
            self.threads.clear();
        }
        if self.threads.insert((pid, tid)) {
            let mut o = start(&mut self.buf, &mut self.started);
            o.str("name", "thread_name")
                .str("ph", "M")
                .num("pid", pid)
                .num("tid", tid);
            o.nest("args").str("name", &format!("tid {tid}")).close();
            self.emit()?;
        }
        Ok(())
    }

    /// The usecount counter of the event's file, on the file's own track.
    fn counter(&mut self, ev: &crate::pipeline::Ev) -> io::Result<()> {
        let r = &ev.rec;
        let Some((key, Some(use_))) = usecount_of(r) else {
            return Ok(());
        };
        if r.vnode_id == 0 {
            return Ok(());
        }
        if self.counters.len() >= self.cap && !self.counters.contains_key(&r.vnode_id) {
            // Past the cap a file's track may be named anew (see MAX_NAMED).
            self.counters.clear();
        }
        self.name_files()?;
        // The name is fixed at first sight: a later PATH must not split
        // the track in two.
        let name = self.counters.entry(r.vnode_id).or_insert_with(|| {
            let label = match &ev.path {
                Some(p) => format!("{} [{:08x}]", shown(&p.text), r.vnode_id >> 32),
                None => format!("vnode:{:016x}", r.vnode_id),
            };
            let mut lit = Vec::with_capacity(label.len() + 2);
            json_str(&mut lit, &label);
            lit.into_boxed_slice()
        });
        let mut o = start(&mut self.buf, &mut self.started);
        o.raw("name", name)
            .str("ph", "C")
            .num("pid", COUNTERS_PID)
            .us("ts", r.timestamp_ns);
        o.nest("args").num(key, use_).close();
        self.emit()
    }

    /// Names the pseudo-process of the files' tracks on first use.
    fn name_files(&mut self) -> io::Result<()> {
        if self.files_named {
            return Ok(());
        }
        self.files_named = true;
        let mut o = start(&mut self.buf, &mut self.started);
        o.str("name", "process_name")
            .str("ph", "M")
            .num("pid", COUNTERS_PID);
        o.nest("args")
            .str("name", "file usecounts and mapped epochs")
            .close();
        self.emit()
    }

    /// Follows the event's file through its mapped epoch: the first MMAP
    /// begins the slice, later maps and page-ins are counted, the MNOMAP
    /// ends it.
    fn epoch(&mut self, ev: &crate::pipeline::Ev) -> io::Result<()> {
        let r = &ev.rec;
        if r.vnode_id == 0 {
            return Ok(());
        }
        match &r.event {
            Event::Mmap { .. } => {
                if let Some(e) = self.epochs.get_mut(&r.vnode_id) {
                    e.maps += 1;
                    return Ok(());
                }
                if self.epochs.len() >= self.epoch_cap {
                    self.epochs_unshown += 1;
                    return Ok(());
                }
                self.begin_epoch(ev)
            }
            Event::Pagein { .. } => {
                if let Some(e) = self.epochs.get_mut(&r.vnode_id) {
                    e.pageins += 1;
                }
                Ok(())
            }
            Event::Mnomap { .. } => match self.epochs.remove(&r.vnode_id) {
                Some(e) => self.end_epoch(&e, r.timestamp_ns, END_UNMAPPED, Some(r)),
                // Mapped before the trace began, or past the cap: there is
                // no slice to end.
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn begin_epoch(&mut self, ev: &crate::pipeline::Ev) -> io::Result<()> {
        self.name_files()?;
        let r = &ev.rec;
        let path = ev.path.as_ref();
        let mut name = Vec::new();
        json_str(&mut name, &short(path.map(|p| p.text.as_str()), r.vnode_id));
        let e = OpenEpoch {
            id: self.next_epoch,
            name: name.into_boxed_slice(),
            start_ns: r.timestamp_ns,
            maps: 1,
            pageins: 0,
            losses_at_start: self.losses,
        };
        self.next_epoch += 1;
        let mut o = start(&mut self.buf, &mut self.started);
        o.raw("name", &e.name)
            .str("cat", "epoch")
            .str("ph", "b")
            .nest("id2")
            .num("local", e.id)
            .close()
            .num("pid", COUNTERS_PID)
            .num("tid", 0)
            .us("ts", r.timestamp_ns);
        o.nest("args")
            .raw("path", path.map_or(b"null", |p| p.json()))
            .str("vnode", &format!("{:016x}", r.vnode_id))
            .num("first_pid", r.pid)
            .str("via", if ev.call.is_some() { "mmap" } else { "exec" });
        match usecount_of(r) {
            Some((key, Some(n))) => {
                o.num(&edge_key(key, "before"), n);
            }
            Some((key, None)) => {
                o.raw(&edge_key(key, "before"), b"null");
            }
            None => {}
        }
        if self.epochs_unshown > 0 {
            // One left out may have been this file's: its true first map
            // would then be earlier.
            o.str(
                "note",
                "begun after epochs went unshown (too many files mapped at once): the first map may be earlier",
            );
        }
        o.close();
        self.emit()?;
        self.epochs.insert(r.vnode_id, e);
        Ok(())
    }

    /// Writes the end of `e`'s slice at `ts` (never before its begin),
    /// saying how it ended; `unmap` is the MNOMAP record that ended it.
    fn end_epoch(
        &mut self,
        e: &OpenEpoch,
        ts: u64,
        end: &str,
        unmap: Option<&Record>,
    ) -> io::Result<()> {
        let lost = self.losses - e.losses_at_start;
        let mut o = start(&mut self.buf, &mut self.started);
        o.raw("name", &e.name)
            .str("cat", "epoch")
            .str("ph", "e")
            .nest("id2")
            .num("local", e.id)
            .close()
            .num("pid", COUNTERS_PID)
            .num("tid", 0)
            .us("ts", ts.max(e.start_ns));
        o.nest("args")
            .str("end", end)
            .num("maps", e.maps)
            .num("pageins", e.pageins);
        if let Some(r) = unmap {
            o.num("last_unmap_pid", r.pid).num("last_unmap_tid", r.tid);
            match usecount_of(r) {
                Some((key, Some(n))) => {
                    o.num(&edge_key(key, "at_unmap"), n);
                }
                Some((key, None)) => {
                    o.raw(&edge_key(key, "at_unmap"), b"null");
                }
                None => {}
            }
        }
        if lost > 0 {
            o.num("losses_during", lost).str(
                "lost",
                "records were lost while the file was mapped: its last unmap (VNOP_MNOMAP) may be among them, the epoch then ended earlier",
            );
        }
        o.close();
        self.emit()
    }

    /// Ends every open epoch's slice at the last time seen, oldest first.
    fn close_open_epochs(&mut self, end: &str) -> io::Result<()> {
        let mut open: Vec<OpenEpoch> = self.epochs.drain().map(|(_, e)| e).collect();
        open.sort_unstable_by_key(|e| e.id);
        for e in &open {
            self.end_epoch(e, self.last_ts, end, None)?;
        }
        Ok(())
    }

    fn record(&mut self, ev: &crate::pipeline::Ev) -> io::Result<()> {
        let r = &ev.rec;
        if matches!(r.event, Event::Path { .. } | Event::Proc { .. }) {
            return Ok(());
        }
        if !matches!(r.event, Event::Mark { .. }) {
            self.name_tracks(r.pid, r.tid, ev.comm.as_ref())?;
        }
        let path = ev.path.as_ref();
        let path_json: &[u8] = path.map_or(b"null", |p| p.json());
        let file = short(path.map(|p| p.text.as_str()), r.vnode_id);
        let uses = usecount_of(r);
        let mut o = start(&mut self.buf, &mut self.started);
        match &r.event {
            Event::Pagein {
                offset,
                size,
                duration_ns,
                ..
            } => {
                o.str("name", &format!("pagein {file}"))
                    .str("cat", "pagein")
                    .str("ph", "X")
                    .us("dur", u64::from(*duration_ns));
                o.nest("args")
                    .raw("path", path_json)
                    .num("offset", *offset)
                    .num("size", *size);
            }
            Event::Mmap { fflags, .. } => {
                let prot = prot_str(*fflags);
                o.str("name", &format!("mmap {file}"))
                    .str("cat", "map")
                    .str("ph", "i")
                    .str("s", "t");
                o.nest("args")
                    .raw("path", path_json)
                    .str("prot", &String::from_utf8_lossy(&prot))
                    .str("via", if ev.call.is_some() { "mmap" } else { "exec" });
            }
            Event::Mnomap { .. } => {
                o.str("name", &format!("last unmap {file}"))
                    .str("cat", "map")
                    .str("ph", "i")
                    .str("s", "t");
                o.nest("args").raw("path", path_json);
            }
            Event::FileMmap {
                file_pos,
                prot,
                mmap_flags,
                ..
            } => {
                let prot = prot_str(*prot);
                o.str("name", "mmap(2) check")
                    .str("cat", "map")
                    .str("ph", "i")
                    .str("s", "t");
                o.nest("args")
                    .num("file_pos", *file_pos)
                    .str("prot", &String::from_utf8_lossy(&prot))
                    .num("flags", *mmap_flags);
            }
            Event::Mark { mark, .. } => {
                o.str("name", &format!("kext {}", mark_name(*mark)))
                    .str("cat", "kext")
                    .str("ph", "i")
                    .str("s", "g")
                    .nest("args");
            }
            Event::Open { .. } => {
                o.str("name", &format!("open {file}"))
                    .str("cat", "open")
                    .str("ph", "i")
                    .str("s", "t");
                o.nest("args").raw("path", path_json);
            }
            Event::Close { .. } => {
                o.str("name", &format!("last close {file}"))
                    .str("cat", "open")
                    .str("ph", "i")
                    .str("s", "t");
                o.nest("args").raw("path", path_json);
            }
            // Filtered above: they name things, they are not events.
            Event::Path { .. } | Event::Proc { .. } => return Ok(()),
        }
        match uses {
            Some((key, Some(n))) => {
                o.num(key, n);
            }
            Some((key, None)) => {
                o.raw(key, b"null");
            }
            None => {}
        }
        o.close()
            .num("pid", r.pid)
            .num("tid", r.tid)
            .us("ts", r.timestamp_ns);
        self.emit()?;
        self.counter(ev)?;
        self.epoch(ev)
    }

    /// Ends the document (pending loss notices go out at the last time
    /// seen) and returns the sink, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_pending(self.last_ts)?;
        self.close_open_epochs(END_TRACE)?;
        if self.epochs_unshown > 0 {
            let (count, cap) = (self.epochs_unshown, self.epoch_cap);
            let mut o = start(&mut self.buf, &mut self.started);
            o.str("name", &format!("{count} mapped epochs not shown"))
                .str("cat", "epoch")
                .str("ph", "i")
                .str("s", "g")
                .us("ts", self.last_ts)
                .num("pid", 0)
                .num("tid", 0);
            o.nest("args")
                .num("count", count)
                .num("cap", cap)
                .str(
                    "reason",
                    "more files mapped at once than the exporter follows",
                )
                .close();
            self.emit()?;
        }
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile input: a new thread and file in every record. The exporter
    /// remembers at most its cap of each, and a track it forgot is named
    /// again when it comes back.
    #[test]
    fn named_tracks_stay_bounded() {
        use crate::pipeline::Ev;
        use maptrace_abi::{Counts, EventKind};
        let pagein = |tid: u64| {
            Item::Event(Ev {
                rec: Record {
                    shard: 0,
                    pos: tid,
                    lost_before: 0,
                    kind: EventKind::Pagein,
                    flags: 0,
                    error: 0,
                    pid: 7,
                    timestamp_ns: tid,
                    tid,
                    vnode_id: 1 + tid,
                    event: Event::Pagein {
                        offset: 0,
                        size: 4096,
                        duration_ns: 1,
                        counts: Counts {
                            usecount: 1,
                            kusecount: 0,
                            iocount: Some(1),
                            method: ProbeMethod::Offset,
                            saturated: false,
                        },
                        upl_flags: 0,
                    },
                },
                path: None,
                call: None,
                call_map: 0,
                comm: None,
            })
        };
        let mut x = Exporter::new(Vec::new()).unwrap();
        x.cap = 4;
        for tid in 0..100 {
            x.observe(&pagein(tid)).unwrap();
            assert!(x.threads.len() <= 4 && x.counters.len() <= 4);
        }
        x.observe(&pagein(0)).unwrap();
        let out = String::from_utf8(x.finish().unwrap()).unwrap();
        assert_eq!(out.matches(r#""name":"tid 0""#).count(), 2, "named again");
        assert_eq!(out.matches(r#""name":"tid 99""#).count(), 1);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(doc["traceEvents"].as_array().unwrap().len() > 200);
    }

    #[test]
    fn microseconds_are_exact_decimals() {
        let us = |ns| {
            let mut v = Vec::new();
            push_us(&mut v, ns);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(us(0), "0");
        assert_eq!(us(25_000), "25");
        assert_eq!(us(11_452_458), "11452.458");
        assert_eq!(us(1_500), "1.5");
        assert_eq!(us(1_050), "1.05");
        assert_eq!(us(u64::MAX), "18446744073709551.615");
    }

    /// Drops, gaps and corruption as global instants, byte for byte: a tail
    /// drop at once, the others at the time they are flushed.
    #[test]
    fn losses_are_global_instants() {
        let mut x = Exporter::new(Vec::new()).unwrap();
        let items = [
            Item::Loss(Loss::Dropped {
                shard: 1,
                count: 5,
                before_pos: None,
            }),
            Item::Loss(Loss::Dropped {
                shard: 2,
                count: 7,
                before_pos: Some(9),
            }),
            Item::Loss(Loss::Gap { shard: 3, slots: 4 }),
            Item::Corrupt("batch 2: \"bad\"".into()),
        ];
        for item in &items {
            x.observe(item).unwrap();
        }
        let out = String::from_utf8(x.finish().unwrap()).unwrap();
        let events = out
            .strip_prefix(
                r#"{"displayTimeUnit":"ns","otherData":{"producer":"maptrace","clock":"nanoseconds since boot, shown in microseconds"},"traceEvents":["#,
            )
            .unwrap();
        assert_eq!(
            events,
            concat!(
                "\n{\"name\":\"LOST 5 records on shard 1\",\"cat\":\"loss\",\"ph\":\"i\",\"s\":\"g\",\"ts\":0,\"pid\":0,\"tid\":0,\"args\":{\"shard\":1,\"count\":5,\"reason\":\"dropped\"}},",
                "\n{\"name\":\"LOST 7 records on shard 2\",\"cat\":\"loss\",\"ph\":\"i\",\"s\":\"g\",\"ts\":0,\"pid\":0,\"tid\":0,\"args\":{\"shard\":2,\"count\":7,\"reason\":\"dropped\",\"before_pos\":9}},",
                "\n{\"name\":\"GAP 4 slots on shard 3\",\"cat\":\"loss\",\"ph\":\"i\",\"s\":\"g\",\"ts\":0,\"pid\":0,\"tid\":0,\"args\":{\"shard\":3,\"slots\":4,\"reason\":\"gap\"}},",
                "\n{\"name\":\"CORRUPT\",\"cat\":\"loss\",\"ph\":\"i\",\"s\":\"g\",\"ts\":0,\"pid\":0,\"tid\":0,\"args\":{\"message\":\"batch 2: \\\"bad\\\"\"}}",
                "\n]}\n",
            )
        );
    }

    #[test]
    fn an_empty_trace_is_a_valid_document() {
        let out = Exporter::new(Vec::new()).unwrap().finish().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["traceEvents"].as_array().unwrap().len(), 0);
        assert_eq!(doc["displayTimeUnit"], "ns");
    }

    /// A record of `event` about `vnode`, by `pid` (its own thread) at
    /// `us` microseconds, counted at usecount 1.
    fn item(event: &str, pid: u32, us: u64, vnode: u64) -> Item {
        use crate::pipeline::Ev;
        use maptrace_abi::{Counts, EventKind};
        let counts = Counts {
            usecount: 1,
            kusecount: 0,
            iocount: Some(1),
            method: ProbeMethod::Offset,
            saturated: false,
        };
        let (kind, event) = match event {
            "mmap" => (
                EventKind::Mmap,
                Event::Mmap {
                    fflags: 1,
                    vid: 0,
                    duration_ns: 1,
                    counts,
                },
            ),
            "mnomap" => (
                EventKind::Mnomap,
                Event::Mnomap {
                    vid: 0,
                    duration_ns: 1,
                    counts: Counts {
                        usecount: 2,
                        ..counts
                    },
                },
            ),
            "pagein" => (
                EventKind::Pagein,
                Event::Pagein {
                    offset: 0,
                    size: 4096,
                    duration_ns: 1,
                    counts,
                    upl_flags: 0,
                },
            ),
            other => panic!("no {other} in these tests"),
        };
        Item::Event(Ev {
            rec: Record {
                shard: 0,
                pos: us,
                lost_before: 0,
                kind,
                flags: 0,
                error: 0,
                pid,
                timestamp_ns: us * 1000,
                tid: u64::from(pid) * 10,
                vnode_id: vnode,
                event,
            },
            path: None,
            call: None,
            call_map: 0,
            comm: None,
        })
    }

    /// An epoch slice: its begin and end events.
    type Slice = (serde_json::Value, serde_json::Value);

    /// The document `items` export to (epochs capped at `epoch_cap`, else
    /// the default cap), parsed, and its epoch slices (see `slices`).
    fn exported(items: &[Item], epoch_cap: Option<usize>) -> (serde_json::Value, Vec<Slice>) {
        let mut x = Exporter::new(Vec::new()).unwrap();
        if let Some(cap) = epoch_cap {
            x.epoch_cap = cap;
        }
        for it in items {
            x.observe(it).unwrap();
            assert!(x.epochs.len() <= x.epoch_cap);
        }
        let doc = serde_json::from_slice(&x.finish().unwrap()).expect("one JSON document");
        let epochs = slices(&doc);
        (doc, epochs)
    }

    /// The epoch slices of `doc` as (begin, end) pairs in the order they
    /// began, checking that every begin has exactly one end with the same
    /// name, category, id and track, no earlier than it.
    fn slices(doc: &serde_json::Value) -> Vec<Slice> {
        let evs = doc["traceEvents"].as_array().unwrap();
        let of = |ph: &str| -> Vec<&serde_json::Value> {
            evs.iter()
                .filter(|e| e["ph"] == ph && e["cat"] == "epoch")
                .collect()
        };
        let (begins, ends) = (of("b"), of("e"));
        assert_eq!(begins.len(), ends.len(), "b/e balance: {doc}");
        begins
            .into_iter()
            .map(|b| {
                let id = &b["id2"]["local"];
                assert!(id.is_u64(), "{b}");
                let matching: Vec<_> = ends.iter().filter(|e| e["id2"]["local"] == *id).collect();
                assert_eq!(matching.len(), 1, "one end for {b}");
                let e = matching[0];
                assert_eq!(e["name"], b["name"]);
                assert_eq!(b["pid"], COUNTERS_PID, "beside the usecount counters");
                assert_eq!(e["pid"], b["pid"]);
                assert!(e["ts"].as_f64().unwrap() >= b["ts"].as_f64().unwrap());
                (b.clone(), (*e).clone())
            })
            .collect()
    }

    #[test]
    fn an_epoch_is_one_async_slice_from_first_map_to_last_unmap() {
        let (doc, epochs) = exported(
            &[
                item("mmap", 7, 10, 0xa),
                item("pagein", 7, 15, 0xa),
                item("mmap", 8, 20, 0xa),
                item("pagein", 8, 30, 0xa),
                item("pagein", 8, 35, 0xb),
                item("mnomap", 8, 40, 0xa),
            ],
            None,
        );
        assert_eq!(epochs.len(), 1, "{doc}");
        let (b, e) = &epochs[0];
        assert_eq!(b["name"], "vnode:000000000000000a");
        assert_eq!(b["ts"], 10);
        assert_eq!(b["args"]["first_pid"], 7);
        assert_eq!(b["args"]["usecount_before"], 1);
        assert_eq!(b["args"]["vnode"], "000000000000000a");
        assert_eq!(e["ts"], 40);
        assert_eq!(e["args"]["end"], "last unmap (VNOP_MNOMAP)");
        assert_eq!(e["args"]["maps"], 2);
        assert_eq!(e["args"]["pageins"], 2, "the other file's is not its");
        assert_eq!(e["args"]["last_unmap_pid"], 8);
        assert_eq!(e["args"]["usecount_at_unmap"], 2);
        assert!(e["args"].get("losses_during").is_none(), "{e}");
        // The files' process is named once, for the counters and epochs.
        let names = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["ph"] == "M" && m["pid"] == COUNTERS_PID)
            .count();
        assert_eq!(names, 1);
    }

    #[test]
    fn two_epochs_of_a_file_are_two_slices() {
        let (doc, epochs) = exported(
            &[
                item("mmap", 7, 10, 0xa),
                item("mnomap", 7, 20, 0xa),
                item("mmap", 9, 30, 0xa),
                item("mmap", 9, 35, 0xa),
                item("mnomap", 9, 40, 0xa),
            ],
            None,
        );
        assert_eq!(epochs.len(), 2, "{doc}");
        assert_ne!(epochs[0].0["id2"], epochs[1].0["id2"]);
        let spans: Vec<_> = epochs
            .iter()
            .map(|(b, e)| (b["ts"].clone(), e["ts"].clone(), e["args"]["maps"].clone()))
            .collect();
        assert_eq!(
            spans,
            [(10, 20, 1), (30, 40, 2)].map(|(b, e, m)| (b.into(), e.into(), m.into()))
        );
        assert_eq!(epochs[1].0["args"]["first_pid"], 9);
    }

    #[test]
    fn an_epoch_still_mapped_at_the_end_is_closed_there() {
        let (doc, epochs) = exported(
            &[
                item("mmap", 7, 10, 0xa),
                item("mmap", 7, 12, 0xb),
                item("mnomap", 7, 20, 0xb),
                item("pagein", 7, 50, 0xc),
            ],
            None,
        );
        assert_eq!(epochs.len(), 2, "{doc}");
        let (b, e) = epochs
            .iter()
            .find(|(b, _)| b["args"]["vnode"] == "000000000000000a")
            .unwrap();
        assert_eq!(b["ts"], 10);
        assert_eq!(e["ts"], 50, "at the last time seen");
        assert_eq!(e["args"]["end"], "not unmapped by the end of the trace");
        assert!(e["args"].get("last_unmap_pid").is_none());
    }

    #[test]
    fn a_reload_closes_the_epochs_of_the_previous_load() {
        let (doc, epochs) = exported(
            &[
                item("mmap", 7, 10, 0xa),
                Item::Reload { generation: 2 },
                // The new load's ids start over: this is another file.
                item("mnomap", 7, 30, 0xa),
            ],
            None,
        );
        assert_eq!(epochs.len(), 1, "{doc}");
        assert_eq!(epochs[0].1["ts"], 10);
        assert_eq!(
            epochs[0].1["args"]["end"],
            "not unmapped before the kext was reloaded"
        );
    }

    #[test]
    fn a_loss_inside_an_epoch_marks_its_slice() {
        let gap = Item::Loss(Loss::Gap { shard: 0, slots: 3 });
        let (doc, epochs) = exported(
            &[
                // Before the first file's first map: not its loss.
                gap.clone(),
                item("mmap", 7, 10, 0xa),
                item("mnomap", 7, 20, 0xa),
                item("mmap", 7, 30, 0xb),
                gap.clone(),
                item("mnomap", 7, 40, 0xb),
                item("mmap", 7, 50, 0xc),
                // A tail drop: no record after it.
                Item::Loss(Loss::Dropped {
                    shard: 1,
                    count: 2,
                    before_pos: None,
                }),
            ],
            None,
        );
        assert_eq!(epochs.len(), 3, "{doc}");
        assert!(epochs[0].1["args"].get("losses_during").is_none(), "{doc}");
        for (_, e) in &epochs[1..] {
            assert_eq!(e["args"]["losses_during"], 1, "{e}");
            assert!(
                e["args"]["lost"]
                    .as_str()
                    .unwrap()
                    .contains("last unmap (VNOP_MNOMAP) may be among them"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_last_unmap_without_a_map_opens_nothing() {
        let (doc, epochs) = exported(
            &[
                item("mnomap", 7, 10, 0xa),
                item("pagein", 7, 20, 0xa),
                item("mnomap", 7, 30, 0xa),
                // Vnode id 0 names no file.
                item("mmap", 7, 40, 0),
            ],
            None,
        );
        assert!(epochs.is_empty(), "{doc}");
        // The process and thread, 4 records, the files' process and 3
        // counter points (none for vnode 0): no epoch, no note.
        assert_eq!(doc["traceEvents"].as_array().unwrap().len(), 2 + 4 + 1 + 3);
    }

    /// Hostile input: a new file mapped in every record and never unmapped.
    /// Past the cap no epoch is opened; the document says how many.
    #[test]
    fn epochs_past_the_cap_are_counted_not_kept() {
        let items: Vec<Item> = (1..=5).map(|v| item("mmap", 7, v * 10, v)).collect();
        let (doc, epochs) = exported(&items, Some(2));
        assert_eq!(epochs.len(), 2);
        let note: Vec<_> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "i" && e["cat"] == "epoch")
            .collect();
        assert_eq!(note.len(), 1, "{doc}");
        assert_eq!(note[0]["s"], "g");
        assert_eq!(note[0]["args"]["count"], 3);
        assert_eq!(note[0]["args"]["cap"], 2);
        assert_eq!(note[0]["ts"], 50);
        // Once one was left out, a later epoch may have begun earlier.
        let (doc, epochs) = exported(
            &[
                item("mmap", 7, 10, 0xa),
                item("mmap", 7, 20, 0xb),
                item("mnomap", 7, 30, 0xa),
                item("mmap", 7, 40, 0xb),
            ],
            Some(1),
        );
        assert_eq!(epochs.len(), 2, "{doc}");
        assert!(epochs[0].0["args"].get("note").is_none());
        assert!(epochs[1].0["args"]["note"].is_string(), "{doc}");
    }
}
