#![no_main]
//! See kbroker's src/fuzzing.rs: `znode`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kbroker::fuzzing::znode(data));
