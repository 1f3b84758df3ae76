#![no_main]
//! See kbroker's src/fuzzing.rs: `segment_recovery`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kbroker::fuzzing::segment_recovery(data));
