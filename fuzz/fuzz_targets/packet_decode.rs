//! libFuzzer entry for `bistream_fuzz::packet_decode` (the check and its oracle are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bistream_fuzz::packet_decode(data));
