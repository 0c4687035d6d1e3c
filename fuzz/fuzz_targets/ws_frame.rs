//! libFuzzer entry for `bistream_fuzz::ws_frame` (the check and its oracle are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bistream_fuzz::ws_frame(data));
