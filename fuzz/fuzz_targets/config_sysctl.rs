//! Config writes through the real shim's sysctl handler on the simulator.
#![no_main]

use std::cell::Cell;

use maptrace_fuzz::config::Harness;

thread_local! {
    /// One simulator per process, booted on the first input and never
    /// dropped: at exit its drop would run after the simulator's own
    /// thread-locals are gone.
    static HARNESS: Cell<Option<&'static mut Harness>> = const { Cell::new(None) };
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let h = HARNESS
        .take()
        .unwrap_or_else(|| Box::leak(Box::new(Harness::boot())));
    h.check(data);
    HARNESS.set(Some(h));
});
