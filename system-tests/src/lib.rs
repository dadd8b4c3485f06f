//! The system tests' one harness: boots the simulator, loads the real shim
//! (its `kmod_info`) with the real core linked in, reads `kern.maptrace.*`
//! through the simulated sysctl exactly like the companion, and decodes with
//! the abi decoder. Every test in `tests/`, the e2e bench and the fuzz
//! targets' simulator harness boot through here.

use maptrace_abi::decode::{Decoder, Record};
use maptrace_abi::{StatsView, raw};
use maptrace_sim::arena::{LeakForm, find_addresses_by_field};
use maptrace_sim::{Config, Cred, Proc, Sim, SysctlError, ViolationPolicy, map_flags, prot, xnu};

unsafe extern "C" {
    /// The shim's kmod_info (KMOD_EXPLICIT_DECL in kext-shim/src/mt_main.c).
    static mut kmod_info: xnu::kmod_info;
    static mut mt_tunable_nshards: u32;
    static mut mt_tunable_slots_per_shard: u32;
    #[cfg(feature = "kauth")]
    static mut mt_tunable_kauth: u32;
    static mut mt_tunable_unload_wait_ms: u32;
    static mut mt_tunable_staging_max: u32;
}

/// The shim's tunables for one load.
#[derive(Clone, Copy, Debug)]
pub struct Tunables {
    /// Ring shards.
    pub nshards: u32,
    /// Slots per shard.
    pub slots: u32,
    /// kauth listener on (only the kauth variant has one).
    pub kauth: bool,
    /// Bound of the unload wait.
    pub unload_wait_ms: u32,
    /// Bound of the staging buffer.
    pub staging_max: u32,
}

impl Default for Tunables {
    fn default() -> Tunables {
        Tunables {
            nshards: 4,
            slots: 4096,
            kauth: maptrace_sim::SHIM_WITH_KAUTH,
            unload_wait_ms: 300,
            staging_max: 1 << 20,
        }
    }
}

/// Writes the tunables. Only while this thread holds a booted `Sim` (the
/// simulator's boot lock serialises every kext load in the process).
pub fn set_tunables(_sim: &Sim, t: Tunables) {
    // SAFETY: the shim reads these globals only in its start routine; the
    // caller holds the simulator (one per process), so no start runs now.
    unsafe {
        mt_tunable_nshards = t.nshards;
    }
    // SAFETY: as above.
    unsafe {
        mt_tunable_slots_per_shard = t.slots;
    }
    #[cfg(feature = "kauth")]
    // SAFETY: as above.
    unsafe {
        mt_tunable_kauth = u32::from(t.kauth);
    }
    #[cfg(not(feature = "kauth"))]
    assert!(
        !t.kauth,
        "a kauth listener needs the shim's kauth variant (--features kauth)"
    );
    // SAFETY: as above.
    unsafe {
        mt_tunable_unload_wait_ms = t.unload_wait_ms;
    }
    // SAFETY: as above.
    unsafe {
        mt_tunable_staging_max = t.staging_max;
    }
}

/// Loads the shim with `t`.
pub fn load(sim: &Sim, t: Tunables) -> Result<(), maptrace_sim::KextError> {
    set_tunables(sim, t);
    let ki = &raw mut kmod_info;
    // SAFETY: the shim's kmod_info is a static that lives for the process;
    // its start/stop follow the kmod contract.
    unsafe { sim.load_kext(ki) }
}

/// A booted simulator with `/` (apfs) and `/Volumes/hfs` mounted, some
/// files, and the shim loaded.
pub fn boot_loaded(config: Config, t: Tunables) -> Sim {
    let sim = boot_fs(config);
    load(&sim, t).expect("the shim loads");
    sim
}

/// The default tunables with the kauth listener `kauth` and a short unload
/// wait, for tests that hold a hook or a reader across an unload: a
/// refused unload comes back soon.
pub fn short_unload_wait(kauth: bool) -> Tunables {
    Tunables {
        kauth,
        unload_wait_ms: 100,
        ..Tunables::default()
    }
}

/// A booted simulator that collects violations (the test takes and checks
/// them) with filesystems and files, and the shim loaded with the kauth
/// listener `kauth` and a short unload wait.
pub fn boot_collecting(kauth: bool) -> Sim {
    boot_loaded(
        Config {
            policy: ViolationPolicy::Collect,
            ..Config::default()
        },
        short_unload_wait(kauth),
    )
}

/// A booted simulator with filesystems and files, nothing loaded.
pub fn boot_fs(config: Config) -> Sim {
    let sim = Sim::boot(config);
    sim.mount("apfs", "/").expect("mount /");
    sim.mount("hfs", "/Volumes/hfs").expect("mount hfs");
    for (p, size) in FILES {
        sim.add_file(p, *size).expect("add file");
    }
    sim
}

/// Files every harness boot creates.
pub const FILES: &[(&str, u64)] = &[
    ("/data/a.bin", 64 * 4096),
    ("/data/b.bin", 16 * 4096),
    ("/bin/tool", 32 * 4096),
    ("/Volumes/hfs/c.bin", 24 * 4096),
];

/// `p` opens `path`, maps 8 pages, touches them all, unmaps, closes.
pub fn workload(p: &Proc, path: &str) {
    const LEN: u64 = 8 * 4096;
    let fd = p.open(path).expect("open");
    let a = p
        .mmap(fd, LEN, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    p.touch(a, LEN).expect("touch");
    p.munmap(a).expect("unmap");
    p.close(fd).expect("close");
}

/// Everything one read of `kern.maptrace.events` can hold.
pub fn events_buffer(sim: &Sim) -> Vec<u8> {
    let n = sim
        .sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), None, Cred::Root)
        .expect("size query");
    assert!(n > 0, "size query reports the staging size");
    vec![0u8; n]
}

/// A sysctl name constant from the ABI header as &str.
pub fn raw_name(name: &'static [u8]) -> &'static str {
    std::str::from_utf8(name)
        .expect("ascii")
        .trim_end_matches('\0')
}

/// Reads batches until an empty read; returns them raw.
pub fn drain_batches(sim: &Sim) -> Vec<Vec<u8>> {
    let mut buf = events_buffer(sim);
    let mut out = Vec::new();
    loop {
        let n = sim
            .sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), Some(&mut buf), Cred::Root)
            .expect("events read");
        if n == 0 {
            return out;
        }
        out.push(buf[..n].to_vec());
    }
}

/// Reads batches until an empty read; decodes every record.
pub fn drain(sim: &Sim, dec: &mut Decoder) -> Vec<Record> {
    let mut out = Vec::new();
    for batch in drain_batches(sim) {
        let (_, recs) = dec.decode(&batch).expect("a valid batch");
        for r in recs {
            out.push(r.expect("a valid record"));
        }
    }
    out
}

/// The parsed `kern.maptrace.stats`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Header fields.
    pub nshards: u32,
    /// `probe_method`.
    pub probe_method: u32,
    /// Vectors hooked.
    pub vectors_patched: u32,
    /// Current config flags.
    pub config_flags: u32,
    /// Current event mask.
    pub event_mask: u32,
    /// Hook invocations.
    pub hook_calls: u64,
    /// Hooks running.
    pub in_flight: u64,
    /// Filtered events.
    pub filtered: u64,
    /// Fail-open paths.
    pub errors: u64,
    /// PATH records skipped (no free path buffer).
    pub paths_skipped: u64,
    /// Per shard: (produced_slots, dropped, drained_slots, drained_records, backlog).
    pub shards: Vec<[u64; 5]>,
}

impl Stats {
    /// Records dropped over all shards.
    pub fn dropped(&self) -> u64 {
        self.shards.iter().map(|s| s[1]).sum()
    }
}

/// Reads and parses `kern.maptrace.stats` as `cred`.
pub fn stats(sim: &Sim, cred: Cred) -> Stats {
    let name = raw_name(raw::MT_SYSCTL_STATS);
    let n = sim.sysctl_read(name, None, cred).expect("stats size");
    let mut buf = vec![0u8; n];
    let got = sim
        .sysctl_read(name, Some(&mut buf), cred)
        .expect("stats read");
    assert_eq!(got, n);
    let view = StatsView::parse(&buf).expect("stats parse");
    let h = view.header;
    assert_eq!(
        n,
        size_of::<raw::mt_stats_header>() + view.shards().len() * size_of::<raw::mt_shard_stats>(),
        "the kext returns exactly the header and its shards"
    );
    let shards = view
        .shards()
        .map(|s| {
            [
                s.produced_slots,
                s.dropped,
                s.drained_slots,
                s.drained_records,
                s.backlog_slots,
            ]
        })
        .collect();
    Stats {
        nshards: h.nshards,
        probe_method: h.probe_method,
        vectors_patched: h.vectors_patched,
        config_flags: h.config_flags,
        event_mask: h.event_mask,
        hook_calls: h.hook_calls,
        in_flight: h.hooks_in_flight,
        filtered: h.filtered,
        errors: h.errors,
        paths_skipped: h.paths_skipped,
        shards,
    }
}

/// A `struct mt_config` as bytes.
pub fn config_bytes(flags: u32, mask: u32, pid: u32) -> Vec<u8> {
    let c = raw::mt_config {
        version: raw::MT_CONFIG_VERSION as u16,
        size: size_of::<raw::mt_config>() as u16,
        flags,
        event_mask: mask,
        pid,
        reserved: [0; 4],
    };
    let mut v = Vec::with_capacity(size_of::<raw::mt_config>());
    v.extend_from_slice(&c.version.to_le_bytes());
    v.extend_from_slice(&c.size.to_le_bytes());
    v.extend_from_slice(&c.flags.to_le_bytes());
    v.extend_from_slice(&c.event_mask.to_le_bytes());
    v.extend_from_slice(&c.pid.to_le_bytes());
    for r in c.reserved {
        v.extend_from_slice(&r.to_le_bytes());
    }
    assert_eq!(v.len(), size_of::<raw::mt_config>());
    v
}

/// Writes `kern.maptrace.config`.
pub fn write_config(sim: &Sim, bytes: &[u8], cred: Cred) -> Result<usize, SysctlError> {
    sim.sysctl_write(raw_name(raw::MT_SYSCTL_CONFIG), bytes, None, cred)
}

/// Reads `kern.maptrace.config` raw bytes.
pub fn read_config(sim: &Sim, cred: Cred) -> Result<Vec<u8>, SysctlError> {
    let mut buf = vec![0u8; size_of::<raw::mt_config>()];
    let n = sim.sysctl_read(raw_name(raw::MT_SYSCTL_CONFIG), Some(&mut buf), cred)?;
    buf.truncate(n);
    Ok(buf)
}

/// The default tunables with the kauth listener `on`.
pub fn tunables_kauth(on: bool) -> Tunables {
    Tunables {
        kauth: on,
        ..Tunables::default()
    }
}

/// VNOP/MAC events the kernel produced (the simulator's ground truth).
pub fn traced(sim: &Sim) -> usize {
    sim.trace()
        .iter()
        .filter(|t| {
            matches!(
                t.op,
                maptrace_sim::TraceOp::Mmap
                    | maptrace_sim::TraceOp::Pagein
                    | maptrace_sim::TraceOp::Mnomap
                    | maptrace_sim::TraceOp::FileCheckMmap
            )
        })
        .count()
}

/// Records of the four event kinds (no paths, no markers).
pub fn event_records(recs: &[Record]) -> usize {
    recs.iter()
        .filter(|r| {
            matches!(
                r.kind,
                maptrace_abi::EventKind::Mmap
                    | maptrace_abi::EventKind::Pagein
                    | maptrace_abi::EventKind::Mnomap
                    | maptrace_abi::EventKind::FileMmap
            )
        })
        .count()
}

/// Offsets in one drained batch where an unaligned 8-byte scan must stop
/// (each struct's start: the batch header, each segment header, each
/// 64-byte slot), and the offsets of its 8-byte clock readings (the drain
/// time, each segment's first and last record time, each head slot's
/// record time), both sorted.
fn batch_layout(batch: &[u8]) -> (Vec<usize>, Vec<usize>) {
    use raw::{MT_STAMP_CONT, mt_batch_header as B, mt_rec_header as R, mt_segment_header as S};
    use std::mem::offset_of;
    let le = |at: usize, n: usize| -> usize {
        let mut v = [0u8; 8];
        let end = (at + n).min(batch.len());
        if at < end {
            v[..end - at].copy_from_slice(&batch[at..end]);
        }
        u64::from_le_bytes(v) as usize
    };
    let slot_size = raw::MT_SLOT_SIZE as usize;
    let mut structs = vec![0];
    let mut clocks = vec![offset_of!(B, drain_ns)];
    let mut seg = le(offset_of!(B, header_size), 2);
    for _ in 0..le(offset_of!(B, nsegments), 4) {
        if seg >= batch.len() {
            break;
        }
        structs.push(seg);
        clocks.extend([seg + offset_of!(S, ts_min), seg + offset_of!(S, ts_max)]);
        let slots = seg + size_of::<S>();
        let nslots = le(seg + offset_of!(S, nslots), 4);
        for slot in (0..nslots).map(|i| slots + i * slot_size) {
            structs.push(slot);
            let stamp = le(slot, 4) as u32;
            if stamp != 0 && stamp & MT_STAMP_CONT == 0 {
                clocks.push(slot + offset_of!(R, timestamp_ns));
            }
        }
        seg = slots + nslots * slot_size;
    }
    clocks.sort_unstable();
    (structs, clocks)
}

/// The offsets of kernel addresses (as 8 little-endian bytes) in one
/// drained batch, read struct by struct as the kext wrote it, each clock
/// field as its whole value (`find_addresses_by_field` says why).
pub fn batch_kernel_addresses(sim: &Sim, batch: &[u8]) -> Vec<usize> {
    let ranges = sim.kernel_address_ranges();
    let (structs, clocks) = batch_layout(batch);
    find_addresses_by_field(batch, &structs, &clocks, |v| {
        ranges.iter().any(|r| r.contains(&v))
    })
    .into_iter()
    .filter(|l| l.form == LeakForm::Binary)
    .map(|l| l.offset)
    .collect()
}

/// Whether every live vnode-op vector holds its filesystem's own entries
/// (nothing of the kext's, or another kext's, left in any slot).
pub fn vectors_original(sim: &Sim) -> bool {
    sim.kernel()
        .vfs
        .live_vectors()
        .iter()
        .all(|(addr, info)| holds_originals(*addr, &info.originals))
}

/// Whether the live vector at `addr` holds something other than its own
/// entries (the shim's trampolines, or another kext's).
pub fn vector_hooked(sim: &Sim, addr: usize) -> bool {
    sim.kernel()
        .vfs
        .live_vectors()
        .iter()
        .any(|(a, info)| *a == addr && !holds_originals(*a, &info.originals))
}

/// Whether the vector at `addr` holds exactly `originals`.
fn holds_originals(addr: usize, originals: &[usize]) -> bool {
    originals.iter().enumerate().all(|(i, o)| {
        maptrace_sim::vfs::word(addr + i * 8).load(std::sync::atomic::Ordering::Acquire) == *o
    })
}
