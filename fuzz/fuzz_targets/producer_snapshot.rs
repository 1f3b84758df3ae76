#![no_main]
//! See kbroker's src/fuzzing.rs: `producer_snapshot`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kbroker::fuzzing::producer_snapshot(data));
