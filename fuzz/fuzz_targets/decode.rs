//! The batch decoder over arbitrary bytes: several batches through one
//! `Decoder`, then `merge_by_time` on what each yields.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maptrace_fuzz::batches::check_stream(data));
