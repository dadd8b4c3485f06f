//! Export to the Chrome trace-event JSON format that the Perfetto UI opens:
//! one track per process and thread, page-ins as slices with their duration,
//! maps, last unmaps and mmap(2) checks as instants, a usecount counter
//! track per file, losses as global instants where they happened.
//!
//! The document is written as the items come: each trace event goes out at
//! once, and only what names tracks (processes, threads, files) is kept, so
//! memory does not grow with the recording.

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
/// `cap` entries.
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
        })
    }

    /// What the exporter keeps between items: one entry per process, thread
    /// and file, however many events went through.
    pub fn retained(&self) -> usize {
        self.processes.len() + self.threads.len() + self.counters.len()
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
            Item::Reload { .. } => self.flush_pending(self.last_ts),
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
        if self.counters.is_empty() {
            let mut o = start(&mut self.buf, &mut self.started);
            o.str("name", "process_name")
                .str("ph", "M")
                .num("pid", COUNTERS_PID);
            o.nest("args").str("name", "file usecounts").close();
            self.emit()?;
        }
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
        self.counter(ev)
    }

    /// Ends the document (pending loss notices go out at the last time
    /// seen) and returns the sink, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_pending(self.last_ts)?;
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
}
