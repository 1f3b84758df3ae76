#![no_main]
//! See kbroker's src/fuzzing.rs: `journal`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kbroker::fuzzing::journal(data));
