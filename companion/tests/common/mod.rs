//! Test fixtures made of real ABI bytes: the real core (`maptrace-core`)
//! records events and drains batches, which are written as recordings; plus
//! the scenarios the CLI tests read (balanced, leaking, still mapped, lossy).
#![allow(dead_code, reason = "each test file uses a different subset")]

use maptrace::pagesize::PageSize;
use maptrace::pipeline::{Item, Pipeline, Totals};
use maptrace::recording::{Header, Writer};
use maptrace_abi::raw;
use maptrace_core::{Engine, HookEvent, Params, Ring};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The `maptrace` binary, deaf to a `MAPTRACE_SOURCE` of the caller's and
/// to their colour settings (`CLICOLOR_FORCE` would colour a piped table).
pub fn maptrace() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("maptrace").unwrap();
    for var in ["MAPTRACE_SOURCE", "NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE"] {
        c.env_remove(var);
    }
    c
}

/// Memory for an engine's ring.
pub struct Mem(Vec<MaybeUninit<u8>>, u32, u32);

impl Mem {
    /// Room for `nshards` shards of `cap` slots.
    pub fn new(nshards: u32, cap: u32) -> Mem {
        Mem(
            vec![MaybeUninit::uninit(); Ring::mem_size(nshards, cap).unwrap()],
            nshards,
            cap,
        )
    }

    /// An engine over this memory.
    pub fn engine(&mut self) -> Engine<'_> {
        self.engine_of(0x6e6e)
    }

    /// An engine of a given generation (a kext load).
    pub fn engine_of(&mut self, generation: u64) -> Engine<'_> {
        let ring = Ring::init(&mut self.0, self.1, self.2).unwrap();
        Engine::new(
            ring,
            Params {
                hash_key: [7, 11],
                generation,
                probe_method: raw::MT_PROBE_OFFSET,
                start_ns: 0,
            },
        )
    }
}

/// A zeroed event of `kind`.
pub fn ev(kind: u32, pid: u32, tid: u64, ts: u64) -> HookEvent {
    HookEvent {
        kind,
        pid,
        tid,
        timestamp_ns: ts,
        duration_ns: 0,
        vnode_ptr: 0,
        vid: 1,
        error: 0,
        offset: 0,
        size: 0,
        usecount: -1,
        kusecount: -1,
        iocount: -1,
        count_method: raw::MT_PROBE_NONE,
        prot: 0,
        maxprot: 0,
        flags: 0,
        reserved0: 0,
    }
}

/// Records events into an engine and collects drained batches.
pub struct Trace<'e> {
    pub e: &'e Engine<'e>,
    pub batches: Vec<Vec<u8>>,
    pub ts: u64,
}

impl<'e> Trace<'e> {
    pub fn new(e: &'e Engine<'e>) -> Trace<'e> {
        Trace {
            e,
            batches: Vec::new(),
            ts: 1_000_000_000,
        }
    }

    pub fn tick(&mut self) -> u64 {
        self.ts += 10_000;
        self.ts
    }

    fn counted(mut x: HookEvent, use_: i32) -> HookEvent {
        x.usecount = use_;
        x.kusecount = 0;
        x.iocount = 1;
        x.count_method = raw::MT_PROBE_OFFSET;
        x
    }

    pub fn path(&mut self, cpu: u32, vnode: u64, path: &str) {
        let mut x = ev(raw::MT_KIND_PATH, 0, 0, self.tick());
        x.vnode_ptr = vnode;
        self.e.record_path(cpu, &x, path.as_bytes());
    }

    /// An mmap(2): the MAC check, then `VNOP_MMAP` on the same thread.
    pub fn mmap_call(&mut self, cpu: u32, pid: u32, tid: u64, vnode: u64, use_: i32, prot: u32) {
        let mut c = ev(raw::MT_KIND_FILE_MMAP, pid, tid, self.tick());
        c.prot = prot;
        c.maxprot = 7;
        c.flags = 1;
        c.offset = 0;
        self.e.record(cpu, &c);
        self.exec_map(cpu, pid, tid, vnode, use_, prot);
    }

    /// A `VNOP_MMAP` with no MAC check (exec, loader).
    pub fn exec_map(&mut self, cpu: u32, pid: u32, tid: u64, vnode: u64, use_: i32, prot: u32) {
        let mut m = Self::counted(ev(raw::MT_KIND_MMAP, pid, tid, self.tick()), use_);
        m.vnode_ptr = vnode;
        m.prot = prot;
        m.duration_ns = 3_000;
        self.e.record(cpu, &m);
    }

    pub fn pagein(
        &mut self,
        cpu: u32,
        pid: u32,
        tid: u64,
        vnode: u64,
        (offset, size): (i64, u64),
        use_: i32,
    ) {
        let mut p = Self::counted(ev(raw::MT_KIND_PAGEIN, pid, tid, self.tick()), use_);
        p.vnode_ptr = vnode;
        p.offset = offset;
        p.size = size;
        p.duration_ns = 25_000;
        self.e.record(cpu, &p);
    }

    pub fn mnomap(&mut self, cpu: u32, pid: u32, tid: u64, vnode: u64, use_: i32) {
        let mut m = Self::counted(ev(raw::MT_KIND_MNOMAP, pid, tid, self.tick()), use_);
        m.vnode_ptr = vnode;
        m.duration_ns = 2_000;
        self.e.record(cpu, &m);
    }

    /// Pid 200 names `/data/app.db` and mmap(2)s it on CPU 0, drained: how
    /// most fixtures start.
    pub fn map_db(&mut self) {
        self.path(0, DB, "/data/app.db");
        self.mmap_call(0, 200, 2001, DB, 1, 1);
        self.drain();
    }

    /// Drains everything committed into batches (kept, in order).
    pub fn drain(&mut self) {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = self.e.drain_prepare(&mut buf, self.ts).unwrap();
            if n == 0 {
                return;
            }
            self.e.drain_commit();
            self.batches.push(buf[..n].to_vec());
        }
    }

    /// Drains one batch and throws it away, as a second reader would.
    pub fn steal_batch(&mut self) {
        let mut buf = vec![0u8; 1 << 20];
        let n = self.e.drain_prepare(&mut buf, self.ts).unwrap();
        assert!(n > 0, "nothing to steal");
        self.e.drain_commit();
    }
}

pub const LIB: u64 = 0xffff_ff80_0001_0000;
pub const DB: u64 = 0xffff_ff80_0002_0000;
pub const LEAKY: u64 = 0xffff_ff80_0003_0000;
pub const OPEN: u64 = 0xffff_ff80_0004_0000;

pub const APP: u64 = 0xffff_ff80_0005_0000;

/// The lifecycle scenario: a balanced file mapped twice, a file whose
/// usecount never returns, one still mapped at the end, and an exec'd
/// binary whose text reference outlives its last unmap.
///
/// * `/data/app.db`: pid 200 opens it (usecount 1), mmap(2)s it twice
///   (first map sees 1; the second sees 2 with the mapping ref), pages in
///   three clusters (two overlapping), munmaps: MNOMAP sees 2 (fd + mapping
///   ref) → balance 0.
/// * `/usr/lib/libleak.dylib`: mmap(2)ed by pid 300 at usecount 1, MNOMAP
///   sees 3 → one reference held.
/// * `/var/log/open.log`: mapped by pid 400 and never unmapped.
/// * `/Applications/App`: exec-mapped by pid 300 at usecount 0; MNOMAP sees
///   2 (mapping + text reference) → explained by the text reference.
pub fn lifecycle(t: &mut Trace<'_>) {
    t.path(0, DB, "/data/app.db");
    t.path(1, LEAKY, "/usr/lib/libleak.dylib");
    t.path(0, OPEN, "/var/log/open.log");
    t.path(1, APP, "/Applications/App");
    t.mmap_call(0, 200, 2001, DB, 1, 1);
    t.pagein(0, 200, 2001, DB, (0, 16384), 2);
    t.drain();
    t.mmap_call(1, 200, 2002, DB, 2, 3);
    t.exec_map(1, 300, 3001, APP, 0, 5);
    t.mmap_call(1, 300, 3001, LEAKY, 1, 5);
    t.pagein(1, 300, 3001, LEAKY, (0, 4096), 2);
    t.pagein(0, 200, 2001, DB, (8192, 16384), 2);
    t.pagein(1, 200, 2002, DB, (65536, 4096), 2);
    t.drain();
    t.mnomap(0, 200, 2001, DB, 2);
    t.mnomap(1, 300, 3001, LEAKY, 3);
    t.mnomap(1, 300, 3001, APP, 2);
    t.mmap_call(0, 400, 4001, OPEN, 1, 1);
    t.pagein(0, 400, 4001, OPEN, (4096, 4096), 2);
    t.drain();
}

/// The batches `run` records and drains on a fresh engine of `nshards`
/// shards of `cap` slots.
pub fn recorded(nshards: u32, cap: u32, run: impl FnOnce(&mut Trace<'_>)) -> Vec<Vec<u8>> {
    let mut mem = Mem::new(nshards, cap);
    let e = mem.engine();
    let mut t = Trace::new(&e);
    run(&mut t);
    t.batches
}

/// Every item the pipeline makes of `batches`, closing items included,
/// and its totals.
pub fn decode(batches: &[Vec<u8>]) -> (Vec<Item>, Totals) {
    let mut p = Pipeline::new();
    let mut items = Vec::new();
    for b in batches {
        p.feed(b, &mut items);
    }
    p.finish(&mut items);
    (items, p.totals())
}

/// Writes `batches` as a recording `name` in `dir` and returns its path.
pub fn fixture(dir: &TempDir, name: &str, batches: &[Vec<u8>]) -> PathBuf {
    let p = dir.path().join(name);
    write_recording(&p, batches);
    p
}

/// The kext's clock when a fixture recording started (its anchor pairs it
/// with `FIXTURE_START_UNIX_NS`).
pub const FIXTURE_CLOCK_NS: u64 = 1_000_000_000;
/// The Unix time a fixture recording started: 2025-11-24T16:00:00Z.
pub const FIXTURE_START_UNIX_NS: u64 = 1_764_000_000_000_000_000;

/// Writes `batches` as a recording at `path`.
pub fn write_recording(path: &Path, batches: &[Vec<u8>]) {
    write_recording_with_stats(path, batches, None);
}

/// A recording of `batches` closed by the kext's `stats` when given.
pub fn write_recording_with_stats(path: &Path, batches: &[Vec<u8>], stats: Option<&[u8]>) {
    let f = std::fs::File::create(path).unwrap();
    let h = Header {
        abi_version: raw::MT_ABI_VERSION as u16,
        start_unix_ns: FIXTURE_START_UNIX_NS,
        start_clock_ns: Some(FIXTURE_CLOCK_NS),
        // The fixtures page in 4 KiB at a time, as an Intel Mac does.
        page_size: Some(PageSize::FOUR_K),
        host: "fixture".into(),
    };
    let mut w = Writer::new(f, &h).unwrap();
    for b in batches {
        w.write_batch(b).unwrap();
    }
    if let Some(s) = stats {
        w.write_stats(s).unwrap();
    }
    w.finish().unwrap();
}

/// The batches of [`lifecycle`] on a 2-CPU engine.
pub fn lifecycle_batches() -> Vec<Vec<u8>> {
    recorded(2, 256, lifecycle)
}

/// A run that overflows a 64-slot shard: `n` page-ins between drains, so
/// the core drops some and says so in `drops_before`.
pub fn lossy_batches(n: u64) -> Vec<Vec<u8>> {
    recorded(1, 64, |t| {
        t.map_db();
        for i in 0..n {
            t.pagein(0, 200, 2001, DB, ((i * 4096) as i64, 4096), 2);
        }
        t.drain();
        t.mnomap(0, 200, 2001, DB, 2);
        t.drain();
    })
}

/// A stream in which a second reader took one batch: a position gap.
pub fn gap_batches() -> Vec<Vec<u8>> {
    recorded(1, 256, |t| {
        t.map_db();
        t.pagein(0, 200, 2001, DB, (0, 4096), 2);
        t.steal_batch();
        t.pagein(0, 200, 2001, DB, (4096, 4096), 2);
        t.mnomap(0, 200, 2001, DB, 2);
        t.drain();
    })
}

/// Drops with no record after them: only the segment headers tell.
pub fn lossy_tail_batches(n: u64) -> Vec<Vec<u8>> {
    lossy_unread_tail(n, 0).0
}

/// [`lossy_tail_batches`] then `unread` more page-ins that nobody drains
/// (the 64-slot shard keeps 64, drops the rest), and the kext's stats read
/// after the last batch: only they know those drops.
pub fn lossy_unread_tail(n: u64, unread: u64) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine();
    let mut t = Trace::new(&e);
    t.map_db();
    for i in 0..n + unread {
        if i == n {
            t.drain();
        }
        t.pagein(0, 200, 2001, DB, ((i * 4096) as i64, 4096), 2);
    }
    if unread == 0 {
        t.drain();
    }
    let mut stats = vec![0u8; e.stats_size()];
    let len = e
        .stats(maptrace_core::ShimCounters::default(), &mut stats)
        .unwrap();
    stats.truncate(len);
    (t.batches, stats)
}

/// Two kext loads one after the other: the same vnode address gets another
/// id in the second load, and the stream says the kext was reloaded.
pub fn reload_batches() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for generation in [1, 2] {
        let mut mem = Mem::new(1, 256);
        let e = mem.engine_of(generation);
        let mut t = Trace::new(&e);
        t.path(0, DB, "/data/app.db");
        t.mmap_call(0, 200, 2001, DB, 1, 1);
        t.mnomap(0, 200, 2001, DB, 2);
        t.drain();
        out.extend(t.batches);
    }
    out
}

/// Asserts that a `maptrace` run exited 0 (showing its stderr if not) and
/// parses its stdout as one JSON document.
pub fn ok_json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

/// The entry for `path` in a `report --json` document.
pub fn report_file(report: &serde_json::Value, path: &str) -> serde_json::Value {
    report["files"]
        .as_array()
        .expect("report has files")
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in the report"))
        .clone()
}

/// `maptrace report --json FILE ARGS`, which must exit 0, as its document.
pub fn report_json(f: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = maptrace()
        .args(["report", "--json"])
        .arg(f)
        .args(args)
        .output()
        .unwrap();
    ok_json(&out)
}
