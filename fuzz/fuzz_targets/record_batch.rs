#![no_main]
//! See kbroker's src/fuzzing.rs: `record_batch`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kbroker::fuzzing::record_batch(data));
