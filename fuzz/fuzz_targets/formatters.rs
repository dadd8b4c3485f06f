//! The formatters output over a recording: see `maptrace_fuzz::outputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maptrace_fuzz::outputs::formatters(data));
