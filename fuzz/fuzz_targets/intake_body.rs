#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| closeflow_fuzz::checks::intake_body(data));
