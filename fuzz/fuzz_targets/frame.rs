#![no_main]
//! See kbroker's src/fuzzing.rs: `frame`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kbroker::fuzzing::frame(data));
