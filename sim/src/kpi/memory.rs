//! Memory (`IOMalloc`/`IOFree`), `IOSleep`, `IOLog` and `panic`.

use std::ffi::{c_char, c_uint, c_void};
use std::sync::atomic::Ordering;

use super::{k, may_block};
use crate::arena::Owner;
use crate::violation::Violation;
use crate::xnu;

fn iomalloc(size: xnu::vm_size_t, zero: bool, kpi: &str) -> *mut c_void {
    let k = k(kpi);
    may_block(&k, kpi);
    match k.arena.alloc(size, 16, zero, Owner::Kext, "IOMalloc") {
        Some(a) => a as *mut c_void,
        None => std::ptr::null_mut(),
    }
}

#[unsafe(no_mangle)]
extern "C" fn IOMalloc(size: xnu::vm_size_t) -> *mut c_void {
    iomalloc(size, false, "IOMalloc")
}

#[unsafe(no_mangle)]
extern "C" fn IOMallocZero(size: xnu::vm_size_t) -> *mut c_void {
    iomalloc(size, true, "IOMallocZero")
}

#[unsafe(no_mangle)]
extern "C" fn IOFree(address: *mut c_void, size: xnu::vm_size_t) {
    let k = k("IOFree");
    if address.is_null() {
        return;
    }
    let addr = address as usize;
    match k.arena.block(addr) {
        Some(b) if b.what == "IOMalloc" && b.size == size.max(1) => {
            crate::corewatch::freed(addr, b.size);
            k.arena.free(addr);
        }
        Some(b) if b.what == "IOMalloc" => {
            k.violation(Violation::BadFree(format!(
                "IOFree({addr:#x}, {size}) of a {}-byte block",
                b.size
            )));
            k.arena.free(addr);
        }
        _ => k.violation(Violation::BadFree(format!(
            "IOFree({addr:#x}) of memory not from IOMalloc (double free?)"
        ))),
    }
}

#[unsafe(no_mangle)]
extern "C" fn IOSleep(ms: c_uint) {
    let k = k("IOSleep");
    may_block(&k, "IOSleep");
    crate::hold::enter_sleep();
    std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
}

/// Runs `f(arg)` from the C glue (`IOLog`'s formatting) as kernel code:
/// its stack is not the kext's.
#[unsafe(no_mangle)]
extern "C" fn mt_sim_as_kernel(f: extern "C" fn(*mut c_void), arg: *mut c_void) {
    crate::stack::kernel_section(|| f(arg));
}

/// Called by the C `IOLog` with the formatted line.
#[unsafe(no_mangle)]
extern "C" fn mt_sim_iolog(msg: *const c_char, len: usize) {
    let k = k("IOLog");
    // SAFETY: the C side passes `len` formatted bytes.
    let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    let line = String::from_utf8_lossy(bytes)
        .trim_end_matches('\n')
        .to_string();
    k.log_line(line);
}

/// Called by the C `panic`: the machine stops.
#[unsafe(no_mangle)]
extern "C" fn mt_sim_panic(msg: *const c_char, len: usize) -> ! {
    // SAFETY: the C side passes `len` formatted bytes.
    let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    let text = String::from_utf8_lossy(bytes).into_owned();
    eprintln!("maptrace-sim: the kext called panic(): {text}");
    if let Some(k) = crate::kernel::current() {
        k.panicked.store(true, Ordering::Release);
        k.violation(Violation::KernelPanic(text));
    }
    std::process::abort();
}
