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

/// The answer a freed core gives a record call: filtered, nothing recorded.
const FILTERED: i32 = bridge::MT_FILTERED as i32;
/// The answer a freed core gives a vector change: refused.
const EINVAL: i32 = bridge::MT_EINVAL as i32;
/// The event and byte-string pointers the shim passes, unchanged.
type Event = *const bridge::mt_event;
type Bytes = *const u8;

/// Wrappers that check the core is live, then forward unchanged:
/// `wrapper => core call(arguments after the core) -> result, else what the
/// wrapper answers for a freed core`; a call without a result just returns.
/// That answer is the one the core itself gives a NULL core
/// (src/ffi/mod.rs), so the hook carries on untraced.
macro_rules! checked_calls {
    ($(
        $(#[$doc:meta])*
        $name:ident => $call:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty, else $fallback:expr)?;
    )*) => {$(
        $(#[$doc])*
        #[unsafe(no_mangle)]
        unsafe extern "C" fn $name(c: *const bridge::mt_core, $($arg: $ty),*) $(-> $ret)? {
            if !live(c, stringify!($call)) {
                return $($fallback)?;
            }
            // SAFETY: forwarded unchanged; the core is live.
            unsafe { core::$call(c, $($arg),*) }
        }
    )*};
}

checked_calls! {
    /// Not wanted, so no event is built.
    mt_sim_core_wants => mt_core_wants(kind: u32, pid: u32) -> i32, else 0;
    mt_sim_core_record => mt_core_record(shard: u32, ev: Event) -> i32, else FILTERED;
    mt_sim_core_record_path =>
        mt_core_record_path(shard: u32, ev: Event, path: Bytes, len: usize) -> i32, else FILTERED;
    mt_sim_core_record_proc =>
        mt_core_record_proc(shard: u32, ev: Event, name: Bytes, len: usize) -> i32, else FILTERED;
    /// No original known.
    mt_sim_core_vector_original => mt_core_vector_original(vector: u64, op: u32) -> u64, else 0;
    mt_sim_core_vector_insert =>
        mt_core_vector_insert(vector: u64, originals: *const u64, now_ns: u64) -> i32, else EINVAL;
    mt_sim_core_vector_remove => mt_core_vector_remove(vector: u64) -> i32, else EINVAL;
    /// Not claimed, so the process is not noted.
    mt_sim_core_proc_claim => mt_core_proc_claim(pid: u32) -> i32, else 0;
    /// Nothing to forget.
    mt_sim_core_proc_forget => mt_core_proc_forget(pid: u32);
}

impl Sim {
    /// Runs `f` once, on the unloading thread, when the kext's stop calls
    /// `mt_core_shutdown` (before the core runs it): the moment between the
    /// hooks' drain and the free, for a test to enter a hook in.
    pub fn on_core_shutdown(&self, f: impl FnOnce() + Send + 'static) {
        *lock(&ON_SHUTDOWN) = Some(Box::new(f));
    }
}
