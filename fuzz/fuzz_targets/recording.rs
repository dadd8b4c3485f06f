//! The recording reader and the decode pipeline behind `--source file:`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maptrace_fuzz::recording::check(data));
