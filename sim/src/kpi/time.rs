//! Time, CPUs, threads and `read_random`.

use std::ffi::{c_int, c_uint, c_void};

use super::k;
use crate::kernel::{Clock, own_tid, with_clock, with_current, with_identity};
use crate::xnu;

#[unsafe(no_mangle)]
extern "C" fn mach_absolute_time() -> u64 {
    with_clock("mach_absolute_time", Clock::abs_time)
}

#[unsafe(no_mangle)]
extern "C" fn absolutetime_to_nanoseconds(abs: u64, result: *mut u64) {
    let ns = with_clock("absolutetime_to_nanoseconds", |c| c.abs_to_ns(abs));
    if !result.is_null() {
        // SAFETY: the caller's out-pointer.
        unsafe { *result = ns };
    }
}

#[unsafe(no_mangle)]
extern "C" fn current_thread() -> xnu::thread_t {
    with_identity("current_thread", |id| id.thread_addr) as xnu::thread_t
}

#[unsafe(no_mangle)]
extern "C" fn thread_tid(t: xnu::thread_t) -> u64 {
    // The caller's own thread_t (almost always) needs no kernel handle.
    own_tid(t as usize).unwrap_or_else(|| tid_of_any_thread(t))
}

/// `thread_tid` of another thread (or of no thread: 0), from the kernel's
/// table; out of line, so the own-thread answer saves no registers for it.
#[cold]
#[inline(never)]
fn tid_of_any_thread(t: xnu::thread_t) -> u64 {
    with_current("thread_tid", |k| k.thread_tid(t as usize).unwrap_or(0))
}

#[unsafe(no_mangle)]
extern "C" fn cpu_number() -> c_int {
    with_identity("cpu_number", |id| id.cpu) as c_int
}

#[unsafe(no_mangle)]
extern "C" fn read_random(buf: *mut c_void, n: c_uint) {
    let k = k("read_random");
    if buf.is_null() {
        return;
    }
    // SAFETY: the caller's buffer of `n` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n as usize) };
    k.random_fill(out);
}
