//! The scenario parser over arbitrary bytes (lossily made UTF-8).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    maptrace_fuzz::scenario::check(&String::from_utf8_lossy(data));
});
