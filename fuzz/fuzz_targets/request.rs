#![no_main]
//! See kbroker's src/fuzzing.rs: `request`, under a counting allocator — a frame may cost a
//! small multiple of its size (the bound of tests/decode_bounds.rs), whatever it claims.

#[path = "../../tests/support/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let peak = alloc::peak_bytes_during(|| kbroker::fuzzing::request(data));
    assert!(
        peak <= alloc::bytes_max_for(data.len()),
        "a {}-byte frame allocated {peak} bytes",
        data.len()
    );
});
