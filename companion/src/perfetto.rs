//! Export to the Chrome trace-event JSON format that the Perfetto UI opens:
//! one track per process and thread, page-ins as slices with their duration,
//! maps, last unmaps and mmap(2) checks as instants, losses as global instants.

use crate::pipeline::{Item, Loss};
use crate::text::{mark_name, prot_str, shown};
use maptrace_abi::{Event, EventKind, ProbeMethod};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{self, Write};

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn short(path: Option<&str>, vnode: u64) -> String {
    match path {
        // Names are shown in the UI as they are: escaped like every human
        // output (the path argument keeps the exact bytes, as JSON).
        Some(p) => shown(p.rsplit('/').next().unwrap_or(p)).into_owned(),
        None => format!("vnode:{vnode:016x}"),
    }
}

/// Collects trace events from the item stream.
#[derive(Debug, Default)]
pub struct Builder {
    events: Vec<Value>,
    threads: BTreeSet<(u32, u64)>,
    last_ts: u64,
    /// pid -> the latest name its events carried.
    names: std::collections::HashMap<u32, String>,
}

impl Builder {
    /// An empty trace.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Takes in one item.
    pub fn observe(&mut self, item: &Item) {
        let ev = match item {
            Item::Event(ev) => ev,
            Item::Loss(l) => {
                let (name, args) = match l {
                    Loss::Dropped { shard, count, .. } => (
                        format!("LOST {count} records"),
                        json!({ "shard": shard, "count": count, "reason": "dropped" }),
                    ),
                    Loss::Gap { shard, slots } => (
                        format!("GAP {slots} slots"),
                        json!({ "shard": shard, "slots": slots, "reason": "gap" }),
                    ),
                };
                self.events.push(json!({
                    "name": name, "cat": "loss", "ph": "i", "s": "g", "ts": us(self.last_ts),
                    "pid": 0, "tid": 0, "args": args,
                }));
                return;
            }
            Item::Corrupt(msg) => {
                self.events.push(json!({
                    "name": "CORRUPT", "cat": "loss", "ph": "i", "s": "g", "ts": us(self.last_ts),
                    "pid": 0, "tid": 0, "args": { "message": msg },
                }));
                return;
            }
            Item::Reload { .. } => return,
        };
        let r = &ev.rec;
        self.last_ts = self.last_ts.max(r.timestamp_ns);
        if let Some(c) = &ev.comm {
            self.names.insert(r.pid, c.to_string());
        }
        let path = ev.path.as_ref().map(|p| p.text.as_str());
        let file = short(path, r.vnode_id);
        let base = json!({ "pid": r.pid, "tid": r.tid, "ts": us(r.timestamp_ns) });
        let mut e = match &r.event {
            Event::Pagein {
                offset,
                size,
                duration_ns,
                counts,
                ..
            } => json!({
                "name": format!("pagein {file}"), "cat": "pagein", "ph": "X",
                "dur": us(u64::from(*duration_ns)),
                "args": {
                    "path": path, "offset": offset, "size": size,
                    "usecount": (counts.method != ProbeMethod::None).then_some(counts.usecount),
                },
            }),
            Event::Mmap { fflags, counts, .. } => json!({
                "name": format!("mmap {file}"), "cat": "map", "ph": "i", "s": "t",
                "args": {
                    "path": path, "prot": String::from_utf8_lossy(&prot_str(*fflags)),
                    "via": if ev.call.is_some() { "mmap" } else { "exec" },
                    "usecount": (counts.method != ProbeMethod::None).then_some(counts.usecount),
                },
            }),
            Event::Mnomap { counts, .. } => json!({
                "name": format!("last unmap {file}"), "cat": "map", "ph": "i", "s": "t",
                "args": {
                    "path": path,
                    "usecount": (counts.method != ProbeMethod::None).then_some(counts.usecount),
                },
            }),
            Event::FileMmap {
                file_pos,
                prot,
                mmap_flags,
                ..
            } => json!({
                "name": "mmap(2) check", "cat": "map", "ph": "i", "s": "t",
                "args": { "file_pos": file_pos, "prot": String::from_utf8_lossy(&prot_str(*prot)), "flags": mmap_flags },
            }),
            Event::Mark { mark, .. } => json!({
                "name": format!("kext {}", mark_name(*mark)), "cat": "kext", "ph": "i", "s": "g",
            }),
            Event::Open { counts, .. } => json!({
                "name": format!("open {file}"), "cat": "open", "ph": "i", "s": "t",
                "args": { "path": path, "usecount": (counts.method != ProbeMethod::None).then_some(counts.usecount) },
            }),
            Event::Close { counts, .. } => json!({
                "name": format!("last close {file}"), "cat": "open", "ph": "i", "s": "t",
                "args": { "path": path, "usecount": (counts.method != ProbeMethod::None).then_some(counts.usecount) },
            }),
            Event::Path { .. } | Event::Proc { .. } => return,
        };
        // The isinuse fallback measures usecount - kusecount, never usecount.
        let isinuse = matches!(&r.event,
            Event::Pagein { counts, .. } | Event::Mmap { counts, .. } | Event::Mnomap { counts, .. }
                if counts.method == ProbeMethod::IsInUse);
        if isinuse
            && let Some(args) = e.get_mut("args").and_then(Value::as_object_mut)
            && let Some(v) = args.remove("usecount")
        {
            args.insert("usecount_minus_kusecount".into(), v);
        }
        if let (Some(obj), Value::Object(b)) = (e.as_object_mut(), base) {
            obj.extend(b);
        }
        if r.kind != EventKind::Mark {
            self.threads.insert((r.pid, r.tid));
        }
        self.events.push(e);
    }

    /// The finished trace document.
    pub fn finish(self) -> Value {
        let mut all = Vec::with_capacity(self.events.len() + 2 * self.threads.len());
        let mut last_pid = None;
        for (pid, tid) in &self.threads {
            if last_pid != Some(*pid) {
                let name = match self.names.get(pid) {
                    Some(c) => format!("{c} ({pid})"),
                    None => format!("pid {pid}"),
                };
                all.push(json!({ "name": "process_name", "ph": "M", "pid": pid, "args": { "name": name } }));
                last_pid = Some(*pid);
            }
            all.push(json!({ "name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": { "name": format!("tid {tid}") } }));
        }
        all.extend(self.events);
        json!({
            "traceEvents": all,
            "displayTimeUnit": "ns",
            "otherData": { "producer": "maptrace", "clock": "nanoseconds since boot, shown in microseconds" },
        })
    }
}

/// Writes the trace document.
pub fn write(w: &mut impl Write, doc: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *w, doc)?;
    writeln!(w)
}
