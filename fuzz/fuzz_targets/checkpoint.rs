#![no_main]
//! See kbroker's src/fuzzing.rs: `checkpoint`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kbroker::fuzzing::checkpoint(data));
