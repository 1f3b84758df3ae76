//! Every input a fuzzer ever crashed on, replayed on stable: `fuzz/regressions/<target>/*`
//! through the same target bodies (`kbroker::fuzzing`), and the `request` target under the
//! same allocation bound as its fuzzer. Add a crash with `scripts/fuzz` (it copies new
//! artifacts here); this test then keeps it fixed.

mod support;

use std::path::Path;

use support::alloc::{bytes_max_for, peak_bytes_during, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn every_recorded_crash_stays_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("regressions");
    let mut replayed = 0usize;
    for target in kbroker::fuzzing::TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            let data = std::fs::read(file).expect("regression input");
            let peak = peak_bytes_during(|| kbroker::fuzzing::run(target, &data));
            if *target == "request" {
                assert!(
                    peak <= bytes_max_for(data.len()),
                    "{}: {} bytes allocated for {} bytes",
                    file.display(),
                    peak,
                    data.len()
                );
            }
            replayed += 1;
        }
    }
    println!("replayed {replayed} recorded fuzz crashes");
}

#[test]
fn every_target_runs_on_empty_and_tiny_inputs() {
    for target in kbroker::fuzzing::TARGETS {
        for data in [&b""[..], b"\0", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff"] {
            assert!(kbroker::fuzzing::run(target, data), "{target} exists");
        }
    }
}
