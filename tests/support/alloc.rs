//! A counting global allocator: peak bytes live on the calling thread while a closure runs.
//! Shared by tests/decode_bounds.rs, tests/fuzz_regressions.rs and the `request` fuzz target
//! (each installs it with `#[global_allocator]`).

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A frame may cost this many times its size in decoder allocations ...
pub const BYTES_PER_FRAME_BYTE_MAX: usize = 64;
/// ... plus this much for the decoder's fixed state.
pub const FIXED_BYTES_MAX: usize = 16 * 1024;

/// The allocation bound for a frame of `len` bytes.
pub fn bytes_max_for(len: usize) -> usize {
    BYTES_PER_FRAME_BYTE_MAX * len + FIXED_BYTES_MAX
}

pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: forwards every call to the system allocator; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Peak bytes allocated (beyond what was live before) on this thread while `f` runs.
pub fn peak_bytes_during<T>(f: impl FnOnce() -> T) -> usize {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let _ = f();
    let peak = PEAK.with(|p| p.get()) - base;
    peak.max(0) as usize
}
