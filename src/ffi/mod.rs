//! The `mt_core_*` C exports: the shim's only way into the core.
//!
//! Each export (a) checks pointers and lengths, (b) converts to safe types,
//! (c) calls one `Engine` method, (d) maps the result to the C return value.
//! Nothing else: any decision belongs in the engine. Each export is bound to
//! its typedef from `maptrace_bridge.h`, so a signature drift fails to build.

pub mod bridge;
#[cfg(all(feature = "kernel", not(test)))]
mod panic;

use crate::config::{Config, ConfigCell, ConfigError};
use crate::engine::{DrainError, DrainState, Engine, Params, RecordResult, ShimCounters};
use crate::id_memo::{IdMemo, MemoEntry};
use crate::procs::ProcCache;
use crate::ring::Ring;
use crate::sync::{AtomicU32, AtomicU64};
use crate::vectors::{Entry, MAX_VECTORS, OPS, VectorError, VectorTable};
use crate::vnode_id::VnodeIdKey;
use bridge::{mt_core, mt_core_params, mt_event, mt_shim_counters};
use core::ffi::c_void;
use core::mem::{MaybeUninit, align_of, size_of};
use maptrace_abi::raw::mt_config;

/// Alignment of the engine inside the caller's memory.
const ENGINE_ALIGN: usize = 128;

/// Offset of the ring's memory after the engine.
const RING_OFF: usize = size_of::<Engine<'static>>().next_multiple_of(ENGINE_ALIGN);

fn ring_bytes(p: &mt_core_params) -> Option<usize> {
    Ring::mem_size(p.nshards, p.slots_per_shard).ok()
}

/// Borrows the engine behind a handle from `mt_core_init`.
///
/// # Safety
///
/// `core` is NULL or was returned by `mt_core_init`, and its memory is still
/// valid (the shim frees it only after the in-flight count drained).
unsafe fn engine<'a>(core: *const mt_core) -> Option<&'a Engine<'static>> {
    // SAFETY: per this function's contract, a non-NULL core points to an
    // initialised Engine that outlives the call.
    unsafe { core.cast::<Engine<'static>>().as_ref() }
}

/// What a bridge call that can fail returns: `MT_OK` or one `MT_E*` errno
/// (`maptrace_bridge.h`). Every core error becomes one here, through the
/// `From` impls below, and only [`Errno::rc`] turns it into the C value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Errno {
    /// `MT_EINVAL`: a bad argument (NULL pointer, invalid config or
    /// address); nothing changed.
    Inval,
    /// `MT_ENOSPC`: a bounded table is full.
    NoSpc,
    /// `MT_ENOMEM`: the caller's buffer is too small.
    NoMem,
    /// `MT_EBUSY`: another drain is under way (the shim serialises: a bug).
    Busy,
}

impl Errno {
    /// The C return value of a result.
    fn rc(r: Result<(), Errno>) -> i32 {
        let code = match r {
            Ok(()) => bridge::MT_OK,
            Err(Errno::Inval) => bridge::MT_EINVAL,
            Err(Errno::NoSpc) => bridge::MT_ENOSPC,
            Err(Errno::NoMem) => bridge::MT_ENOMEM,
            Err(Errno::Busy) => bridge::MT_EBUSY,
        };
        code as i32
    }

    /// The C return value of this error.
    fn code(self) -> i32 {
        Errno::rc(Err(self))
    }
}

impl From<VectorError> for Errno {
    fn from(e: VectorError) -> Errno {
        match e {
            VectorError::Invalid => Errno::Inval,
            VectorError::Full => Errno::NoSpc,
        }
    }
}

impl From<ConfigError> for Errno {
    /// Invalid or refused because the core is shut down: either way nothing
    /// changed.
    fn from(_: ConfigError) -> Errno {
        Errno::Inval
    }
}

impl From<DrainError> for Errno {
    /// A busy drain is not the "retry with more room" of a small buffer.
    fn from(e: DrainError) -> Errno {
        match e {
            DrainError::BufferTooSmall => Errno::NoMem,
            DrainError::Busy => Errno::Busy,
        }
    }
}

/// The C value of a record call's outcome (`MT_RECORDED`, ...).
fn record_rc(r: RecordResult) -> i32 {
    r as i32
}

const _: bridge::mt_core_mem_size_fn = Some(mt_core_mem_size);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `params` is NULL or points to a readable `mt_core_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_mem_size(params: *const mt_core_params) -> usize {
    // SAFETY: the caller passes NULL or a valid params pointer.
    let Some(p) = (unsafe { params.as_ref() }) else {
        return 0;
    };
    ring_bytes(p).map_or(0, |r| ENGINE_ALIGN - 1 + RING_OFF + r)
}

const _: bridge::mt_core_init_fn = Some(mt_core_init);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `mem` points to `len` writable bytes that nothing else uses until the
/// core is discarded; `params` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_init(
    mem: *mut c_void,
    len: usize,
    params: *const mt_core_params,
) -> *mut mt_core {
    // SAFETY: the caller passes NULL or a valid params pointer.
    let Some(p) = (unsafe { params.as_ref() }) else {
        return core::ptr::null_mut();
    };
    if mem.is_null() || len == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: the caller hands us `len` writable bytes for the core's life.
    let mem = unsafe { core::slice::from_raw_parts_mut(mem.cast::<MaybeUninit<u8>>(), len) };
    let skip = mem.as_ptr().align_offset(ENGINE_ALIGN);
    let Some(mem) = mem.get_mut(skip..) else {
        return core::ptr::null_mut();
    };
    if mem.len() < RING_OFF {
        return core::ptr::null_mut();
    }
    let (engine_mem, ring_mem) = mem.split_at_mut(RING_OFF);
    let Ok(ring) = Ring::init(ring_mem, p.nshards, p.slots_per_shard) else {
        return core::ptr::null_mut();
    };
    let params = Params {
        hash_key: p.hash_key,
        generation: p.generation,
        probe_method: p.probe_method,
        start_ns: p.start_ns,
    };
    let slot = engine_mem.as_mut_ptr().cast::<Engine<'static>>();
    debug_assert_eq!(slot.align_offset(align_of::<Engine<'static>>()), 0);
    // SAFETY: engine_mem is RING_OFF >= size_of::<Engine> writable bytes,
    // aligned to ENGINE_ALIGN (>= Engine's alignment), exclusively ours, and
    // the ring borrows memory after it, which the caller keeps valid.
    let e = unsafe { init_engine(slot, ring, params) };
    e.start();
    core::ptr::from_ref(e).cast_mut().cast::<mt_core>()
}

/// Writes `value` into one field of the engine at `slot`, in place.
macro_rules! put {
    ($slot:ident . $($field:ident).+ = $value:expr) => {{
        // SAFETY: `slot` is valid for writes of an Engine (init_engine's
        // contract); the projection stays inside it and reads nothing.
        let field = unsafe { &raw mut (*$slot).$($field).+ };
        // SAFETY: as above; the bytes are uninitialised: nothing is dropped.
        unsafe { field.write($value) };
    }};
}

/// Builds an engine in the memory at `slot`, field by field: the kernel
/// stack holds one small field at a time, never the whole engine (its
/// vector table alone is 2 KiB, and XNU's kernel stacks are 16 KiB:
/// KERNEL_STACK_SIZE, osfmk/mach/i386/vm_param.h, xnu-11417.121.6).
///
/// # Safety
///
/// `slot` is aligned for and valid for writes of an `Engine`, and nothing
/// else accesses that memory while the returned borrow lives.
unsafe fn init_engine<'e>(
    slot: *mut Engine<'static>,
    ring: Ring<'static>,
    params: Params,
) -> &'e Engine<'static> {
    put!(slot.ring = ring);
    put!(slot.config = ConfigCell::new(Config::DEFAULT));
    put!(slot.key = VnodeIdKey::new(params.hash_key));
    put!(slot.params = params);
    // SAFETY: as in put!: a projection inside the slot.
    let memo = unsafe { &raw mut (*slot).ids.entries }.cast::<MemoEntry>();
    for i in 0..crate::id_memo::SLOTS {
        // SAFETY: element i of the entries array lies inside the slot and is
        // aligned (array layout); its bytes are uninitialised.
        unsafe { memo.wrapping_add(i).write(MemoEntry::new()) };
    }
    // SAFETY: as in put!: a projection inside the slot.
    let entries = unsafe { &raw mut (*slot).vectors.entries }.cast::<Entry>();
    for i in 0..MAX_VECTORS {
        // SAFETY: element i of the entries array lies inside the slot and is
        // aligned (array layout); its bytes are uninitialised.
        unsafe { entries.wrapping_add(i).write(Entry::new()) };
    }
    put!(slot.vectors.len = AtomicU32::new(0));
    put!(slot.procs.epoch = AtomicU32::new(1));
    // SAFETY: as in put!: a projection inside the slot.
    let proc_slots = unsafe { &raw mut (*slot).procs.slots }.cast::<AtomicU64>();
    for i in 0..crate::procs::SLOTS {
        // SAFETY: element i of the slots array lies inside the slot and is
        // aligned (array layout); its bytes are uninitialised.
        unsafe { proc_slots.wrapping_add(i).write(AtomicU64::new(0)) };
    }
    put!(slot.vectors.insert_lock = spin::Mutex::new(()));
    put!(slot.drain = spin::Mutex::new(DrainState::new()));
    put!(slot.filtered = AtomicU64::new(0));
    put!(slot.errors = AtomicU64::new(0));
    // SAFETY: every field was written above (the exhaustive patterns below
    // stop compiling when a field is added); the caller keeps the memory
    // valid and otherwise unused.
    unsafe { &*slot }
}

// Every field of Engine and VectorTable is written by init_engine: adding a
// field breaks these patterns until a put! writes it.
const _: fn(&Engine<'static>) = |e| {
    let Engine {
        ring: _,
        config: _,
        key: _,
        ids: IdMemo { entries: _ },
        params: _,
        vectors:
            VectorTable {
                entries: _,
                len: _,
                insert_lock: _,
            },
        procs: ProcCache { epoch: _, slots: _ },
        drain: _,
        filtered: _,
        errors: _,
    } = e;
};

const _: bridge::mt_core_shutdown_fn = Some(mt_core_shutdown);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle from `mt_core_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_shutdown(core: *mut mt_core) {
    // SAFETY: the caller passes NULL or a live handle.
    if let Some(e) = unsafe { engine(core) } {
        e.shutdown();
    }
}

const _: bridge::mt_core_wants_fn = Some(mt_core_wants);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle from `mt_core_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_wants(core: *const mt_core, kind: u32, pid: u32) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    unsafe { engine(core) }
        .is_some_and(|e| e.wants(kind, pid))
        .into()
}

const _: bridge::mt_core_record_fn = Some(mt_core_record);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `ev` is NULL or a readable `mt_event`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_record(
    core: *const mt_core,
    shard_hint: u32,
    ev: *const mt_event,
) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let Some(e) = (unsafe { engine(core) }) else {
        return record_rc(RecordResult::Filtered);
    };
    // SAFETY: the caller passes NULL or a readable event.
    let Some(ev) = (unsafe { ev.as_ref() }) else {
        return record_rc(RecordResult::Rejected);
    };
    record_rc(e.record(shard_hint, ev))
}

const _: bridge::mt_core_record_path_fn = Some(mt_core_record_path);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `ev` is NULL or readable; `path` points
/// to `len` readable bytes (or is NULL with `len == 0`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_record_path(
    core: *const mt_core,
    shard_hint: u32,
    ev: *const mt_event,
    path: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let Some(e) = (unsafe { engine(core) }) else {
        return record_rc(RecordResult::Filtered);
    };
    // SAFETY: the caller passes NULL or a readable event.
    let Some(ev) = (unsafe { ev.as_ref() }) else {
        return record_rc(RecordResult::Rejected);
    };
    let path = if path.is_null() || len == 0 {
        &[][..]
    } else {
        // SAFETY: the caller guarantees `len` readable bytes at `path`.
        unsafe { core::slice::from_raw_parts(path, len) }
    };
    record_rc(e.record_path(shard_hint, ev, path))
}

const _: bridge::mt_core_proc_claim_fn = Some(mt_core_proc_claim);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle from `mt_core_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_proc_claim(core: *const mt_core, pid: u32) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    unsafe { engine(core) }
        .is_some_and(|e| e.proc_claim(pid))
        .into()
}

const _: bridge::mt_core_proc_forget_fn = Some(mt_core_proc_forget);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle from `mt_core_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_proc_forget(core: *const mt_core, pid: u32) {
    // SAFETY: the caller passes NULL or a live handle.
    if let Some(e) = unsafe { engine(core) } {
        e.proc_forget(pid);
    }
}

const _: bridge::mt_core_record_proc_fn = Some(mt_core_record_proc);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `ev` is NULL or readable; `name` points
/// to `len` readable bytes (or is NULL with `len == 0`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_record_proc(
    core: *const mt_core,
    shard_hint: u32,
    ev: *const mt_event,
    name: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let Some(e) = (unsafe { engine(core) }) else {
        return RecordResult::Filtered as i32;
    };
    // SAFETY: the caller passes NULL or a readable event.
    let Some(ev) = (unsafe { ev.as_ref() }) else {
        return RecordResult::Rejected as i32;
    };
    let name = if name.is_null() || len == 0 {
        &[][..]
    } else {
        // SAFETY: the caller guarantees `len` readable bytes at `name`.
        unsafe { core::slice::from_raw_parts(name, len) }
    };
    e.record_proc(shard_hint, ev, name) as i32
}

const _: bridge::mt_core_vector_original_fn = Some(mt_core_vector_original);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_vector_original(
    core: *const mt_core,
    vector_addr: u64,
    op: u32,
) -> u64 {
    // SAFETY: the caller passes NULL or a live handle.
    unsafe { engine(core) }
        .and_then(|e| e.vector_original(vector_addr, op))
        .unwrap_or(0)
}

const _: bridge::mt_core_vector_insert_fn = Some(mt_core_vector_insert);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `originals` is NULL or points to
/// `MT_VOP__COUNT` readable `u64`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_vector_insert(
    core: *const mt_core,
    vector_addr: u64,
    originals: *const u64,
    now_ns: u64,
) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let Some(e) = (unsafe { engine(core) }) else {
        return Errno::Inval.code();
    };
    // SAFETY: the caller passes NULL or MT_VOP__COUNT readable u64s.
    let Some(o) = (unsafe { originals.cast::<[u64; OPS]>().as_ref() }) else {
        return Errno::Inval.code();
    };
    Errno::rc(
        e.vector_insert(vector_addr, *o, now_ns)
            .map(drop)
            .map_err(Errno::from),
    )
}

const _: bridge::mt_core_vector_get_fn = Some(mt_core_vector_get);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `vector_addr` and `originals` are NULL or
/// writable (`originals`: `MT_VOP__COUNT` entries).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_vector_get(
    core: *const mt_core,
    index: u32,
    vector_addr: *mut u64,
    originals: *mut u64,
) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let Some((v, o)) = (unsafe { engine(core) }).and_then(|e| e.vector_get(index)) else {
        return Errno::Inval.code();
    };
    // SAFETY: the caller passes NULL or a writable u64.
    if let Some(out) = unsafe { vector_addr.as_mut() } {
        *out = v;
    }
    // SAFETY: the caller passes NULL or MT_VOP__COUNT writable u64s.
    if let Some(out) = unsafe { originals.cast::<[u64; OPS]>().as_mut() } {
        *out = o;
    }
    Errno::rc(Ok(()))
}

const _: bridge::mt_core_vector_remove_fn = Some(mt_core_vector_remove);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_vector_remove(core: *const mt_core, vector_addr: u64) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let removed = unsafe { engine(core) }.is_some_and(|e| e.vector_remove(vector_addr));
    if removed {
        Errno::rc(Ok(()))
    } else {
        Errno::Inval.code()
    }
}

const _: bridge::mt_core_vector_count_fn = Some(mt_core_vector_count);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_vector_count(core: *const mt_core) -> u32 {
    // SAFETY: the caller passes NULL or a live handle.
    unsafe { engine(core) }.map_or(0, Engine::vector_count)
}

const _: bridge::mt_core_config_set_fn = Some(mt_core_config_set);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `buf` is NULL or points to `len`
/// readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_config_set(
    core: *const mt_core,
    buf: *const c_void,
    len: usize,
    now_ns: u64,
) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let Some(e) = (unsafe { engine(core) }) else {
        return Errno::Inval.code();
    };
    if buf.is_null() {
        return Errno::Inval.code();
    }
    // SAFETY: the caller guarantees `len` readable bytes at `buf`.
    let bytes = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) };
    Errno::rc(e.config_set(bytes, now_ns).map_err(Errno::from))
}

const _: bridge::mt_core_config_get_fn = Some(mt_core_config_get);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_config_get(core: *const mt_core, out: *mut mt_config) {
    // SAFETY: the caller passes NULL or a live handle.
    let Some(e) = (unsafe { engine(core) }) else {
        return;
    };
    // SAFETY: the caller passes NULL or a writable mt_config.
    if let Some(out) = unsafe { out.as_mut() } {
        *out = e.config_get();
    }
}

const _: bridge::mt_core_drain_capacity_fn = Some(mt_core_drain_capacity);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_drain_capacity(core: *const mt_core) -> usize {
    // SAFETY: the caller passes NULL or a live handle.
    unsafe { engine(core) }.map_or(0, Engine::drain_capacity)
}

const _: bridge::mt_core_drain_prepare_fn = Some(mt_core_drain_prepare);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `buf` points to `len` writable bytes;
/// `out_len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_drain_prepare(
    core: *const mt_core,
    buf: *mut c_void,
    len: usize,
    now_ns: u64,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let Some(e) = (unsafe { engine(core) }) else {
        return Errno::Inval.code();
    };
    if buf.is_null() {
        return Errno::Inval.code();
    }
    // SAFETY: the caller guarantees `len` writable bytes at `buf`.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    let (rc, n) = match e.drain_prepare(buf, now_ns) {
        Ok(n) => (Ok(()), n),
        Err(err) => (Err(Errno::from(err)), 0),
    };
    // SAFETY: the caller passes NULL or a writable usize.
    if let Some(out) = unsafe { out_len.as_mut() } {
        *out = n;
    }
    Errno::rc(rc)
}

const _: bridge::mt_core_drain_commit_fn = Some(mt_core_drain_commit);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_drain_commit(core: *const mt_core) {
    // SAFETY: the caller passes NULL or a live handle.
    if let Some(e) = unsafe { engine(core) } {
        e.drain_commit();
    }
}

const _: bridge::mt_core_drain_abort_fn = Some(mt_core_drain_abort);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_drain_abort(core: *const mt_core) {
    // SAFETY: the caller passes NULL or a live handle.
    if let Some(e) = unsafe { engine(core) } {
        e.drain_abort();
    }
}

const _: bridge::mt_core_stats_size_fn = Some(mt_core_stats_size);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_stats_size(core: *const mt_core) -> usize {
    // SAFETY: the caller passes NULL or a live handle.
    unsafe { engine(core) }.map_or(0, Engine::stats_size)
}

const _: bridge::mt_core_stats_fn = Some(mt_core_stats);
/// See `maptrace_bridge.h`.
///
/// # Safety
///
/// `core` is NULL or a live handle; `shim` is NULL or readable; `buf` points
/// to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mt_core_stats(
    core: *const mt_core,
    shim: *const mt_shim_counters,
    buf: *mut c_void,
    len: usize,
) -> i32 {
    // SAFETY: the caller passes NULL or a live handle.
    let Some(e) = (unsafe { engine(core) }) else {
        return Errno::Inval.code();
    };
    if buf.is_null() {
        return Errno::Inval.code();
    }
    // SAFETY: the caller passes NULL or a readable counters struct.
    let shim = unsafe { shim.as_ref() }.map_or(ShimCounters::default(), |s| ShimCounters {
        hook_calls: s.hook_calls,
        hooks_in_flight: s.hooks_in_flight,
        errors: s.errors,
        paths_skipped: s.paths_skipped,
    });
    // SAFETY: the caller guarantees `len` writable bytes at `buf`.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    Errno::rc(e.stats(shim, buf).map(drop).ok_or(Errno::NoMem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_drain_is_ebusy_not_the_retry_with_more_room_errno() {
        let rc = |e: DrainError| Errno::rc(Err(e.into()));
        assert_eq!(rc(DrainError::BufferTooSmall), bridge::MT_ENOMEM as i32);
        assert_eq!(rc(DrainError::Busy), bridge::MT_EBUSY as i32);
        assert_ne!(bridge::MT_EBUSY, bridge::MT_ENOMEM);
    }

    #[test]
    fn every_core_error_has_its_bridge_errno() {
        let rc = |e: Errno| Errno::rc(Err(e));
        assert_eq!(Errno::rc(Ok(())), bridge::MT_OK as i32);
        assert_eq!(rc(VectorError::Invalid.into()), bridge::MT_EINVAL as i32);
        assert_eq!(rc(VectorError::Full.into()), bridge::MT_ENOSPC as i32);
        assert_eq!(rc(ConfigError::ShutDown.into()), bridge::MT_EINVAL as i32);
        let invalid = ConfigError::Invalid(maptrace_abi::ConfigError::Version);
        assert_eq!(rc(invalid.into()), bridge::MT_EINVAL as i32);
        // Distinct errnos, none of them MT_OK.
        let all = [Errno::Inval, Errno::NoSpc, Errno::NoMem, Errno::Busy].map(rc);
        for (i, a) in all.iter().enumerate() {
            assert_ne!(*a, bridge::MT_OK as i32);
            assert!(all[i + 1..].iter().all(|b| b != a), "{all:?}");
        }
    }
}
