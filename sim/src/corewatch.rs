//! The shim's calls into the core, seen from the simulator: the shim is
//! compiled with its hook-path `mt_core_*` calls renamed to the
//! `mt_sim_core_*` wrappers below (sim/build.rs: every call a hook, a MAC or
//! kauth callback or the patch path makes), which forward to the real
//! core after two checks a kernel cannot make for us:
//!
//! * a call with a core whose memory the kext already gave back to `IOFree`
//!   is a use after free (`IOFree.no_use_after_free`): in XNU the freed
//!   element is poisoned or reused (`iokit/Kernel/IOLib.cpp` IOFree ->
//!   kfree, `osfmk/kern/zalloc.c`, xnu-11417.121.6), so the hook would read
//!   garbage and may call a garbage "original";
//! * `Sim::on_core_shutdown` lets a test run code at the exact moment stop
//!   calls `mt_core_shutdown`, to enter a hook between the drain and the
//!   free deterministically.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use maptrace_core::ffi::{self as core, bridge};

use crate::api::Sim;
use crate::kernel::with_current;
use crate::lock;
use crate::violation::Violation;

/// The core the kext's last `mt_core_init` returned.
static CORE: AtomicUsize = AtomicUsize::new(0);
/// Whether the memory holding `CORE` was freed.
static CORE_FREED: AtomicBool = AtomicBool::new(false);

type Callback = Box<dyn FnOnce() + Send>;
/// Run (once) when the kext calls `mt_core_shutdown`.
static ON_SHUTDOWN: Mutex<Option<Callback>> = Mutex::new(None);

/// IOFree of `[addr, addr + size)`: the core inside is now freed memory.
pub(crate) fn freed(addr: usize, size: usize) {
    let c = CORE.load(Ordering::Acquire);
    if c != 0 && (addr..addr.saturating_add(size)).contains(&c) {
        CORE_FREED.store(true, Ordering::Release);
    }
}

/// Whether `core` may be used; records the violation when it may not.
/// Several calls per hook: the common answer (nothing freed) takes one load.
#[inline]
fn live(c: *const bridge::mt_core, call: &str) -> bool {
    if !CORE_FREED.load(Ordering::Acquire)
        || c.is_null()
        || c as usize != CORE.load(Ordering::Acquire)
    {
        return true;
    }
    use_after_free(call)
}

/// Records a call with the freed core.
#[cold]
fn use_after_free(call: &str) -> bool {
    with_current(call, |k| {
        k.violation(Violation::Contract {
            rule: "IOFree.no_use_after_free",
            detail: format!("{call} called with the core in memory the kext already IOFree'd"),
        });
    });
    false
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_init(
    mem: *mut std::ffi::c_void,
    len: usize,
    params: *const bridge::mt_core_params,
) -> *mut bridge::mt_core {
    // SAFETY: the shim's arguments, forwarded unchanged.
    let c = unsafe { core::mt_core_init(mem, len, params) };
    CORE.store(c as usize, Ordering::Release);
    CORE_FREED.store(false, Ordering::Release);
    c
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_shutdown(c: *mut bridge::mt_core) {
    if let Some(f) = lock(&ON_SHUTDOWN).take() {
        f();
    }
    if live(c, "mt_core_shutdown") {
        // SAFETY: forwarded unchanged; the core is live.
        unsafe { core::mt_core_shutdown(c) };
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_wants(c: *const bridge::mt_core, kind: u32, pid: u32) -> i32 {
    if !live(c, "mt_core_wants") {
        return 0;
    }
    // SAFETY: forwarded unchanged; the core is live.
    unsafe { core::mt_core_wants(c, kind, pid) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_record(
    c: *const bridge::mt_core,
    shard_hint: u32,
    ev: *const bridge::mt_event,
) -> i32 {
    if !live(c, "mt_core_record") {
        return bridge::MT_FILTERED as i32;
    }
    // SAFETY: forwarded unchanged; the core is live.
    unsafe { core::mt_core_record(c, shard_hint, ev) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_record_path(
    c: *const bridge::mt_core,
    shard_hint: u32,
    ev: *const bridge::mt_event,
    path: *const u8,
    len: usize,
) -> i32 {
    if !live(c, "mt_core_record_path") {
        return bridge::MT_FILTERED as i32;
    }
    // SAFETY: forwarded unchanged; the core is live.
    unsafe { core::mt_core_record_path(c, shard_hint, ev, path, len) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_vector_original(
    c: *const bridge::mt_core,
    vector_addr: u64,
    op: u32,
) -> u64 {
    if !live(c, "mt_core_vector_original") {
        return 0;
    }
    // SAFETY: forwarded unchanged; the core is live.
    unsafe { core::mt_core_vector_original(c, vector_addr, op) }
}

impl Sim {
    /// Runs `f` once, on the unloading thread, when the kext's stop calls
    /// `mt_core_shutdown` (before the core runs it): the moment between the
    /// hooks' drain and the free, for a test to enter a hook in.
    pub fn on_core_shutdown(&self, f: impl FnOnce() + Send + 'static) {
        *lock(&ON_SHUTDOWN) = Some(Box::new(f));
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_vector_insert(
    c: *const bridge::mt_core,
    vector_addr: u64,
    originals: *const u64,
    now_ns: u64,
) -> i32 {
    if !live(c, "mt_core_vector_insert") {
        return bridge::MT_EINVAL as i32;
    }
    // SAFETY: forwarded unchanged; the core is live.
    unsafe { core::mt_core_vector_insert(c, vector_addr, originals, now_ns) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_vector_remove(c: *const bridge::mt_core, vector_addr: u64) -> i32 {
    if !live(c, "mt_core_vector_remove") {
        return bridge::MT_EINVAL as i32;
    }
    // SAFETY: forwarded unchanged; the core is live.
    unsafe { core::mt_core_vector_remove(c, vector_addr) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_proc_claim(c: *const bridge::mt_core, pid: u32) -> i32 {
    if !live(c, "mt_core_proc_claim") {
        return 0;
    }
    // SAFETY: forwarded unchanged; the core is live.
    unsafe { core::mt_core_proc_claim(c, pid) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_proc_forget(c: *const bridge::mt_core, pid: u32) {
    if live(c, "mt_core_proc_forget") {
        // SAFETY: forwarded unchanged; the core is live.
        unsafe { core::mt_core_proc_forget(c, pid) }
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn mt_sim_core_record_proc(
    c: *const bridge::mt_core,
    shard_hint: u32,
    ev: *const bridge::mt_event,
    name: *const u8,
    len: usize,
) -> i32 {
    if !live(c, "mt_core_record_proc") {
        return bridge::MT_FILTERED as i32;
    }
    // SAFETY: forwarded unchanged; the core is live.
    unsafe { core::mt_core_record_proc(c, shard_hint, ev, name, len) }
}
