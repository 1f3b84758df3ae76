//! Writes seed corpora for the fuzz targets (run by `scripts/fuzz`, ignored otherwise):
//! valid inputs of every kind, so the fuzzers start from what real peers and real disks
//! hold. `KBROKER_FUZZ_CORPUS=<dir>` names the corpus root (`<dir>/<target>/seed-*`).

mod support;

use std::path::{Path, PathBuf};

use kbroker::handler::SUPPORTED_APIS;
use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::compression;
use kbroker_storage::{Log, LogConfig};

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed");
}

fn records(n: usize) -> Vec<NewRecord> {
    (0..n)
        .map(|i| NewRecord {
            key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
            value: Some(format!("value-{i}").repeat(1 + i % 4).into_bytes()),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

#[test]
#[ignore = "writes seed corpora for scripts/fuzz"]
fn write_seed_corpora() {
    let Some(root) = std::env::var_os("KBROKER_FUZZ_CORPUS").map(PathBuf::from) else {
        panic!("set KBROKER_FUZZ_CORPUS");
    };
    // request: every advertised API and version, defaults and populated
    for &(api, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            for (i, body) in support::requests::samples(api, version).iter().enumerate() {
                let frame = support::requests::frame(api, version, 1, body);
                write(
                    &root,
                    "request",
                    &format!("{api:?}-v{version}-{i}"),
                    &frame[4..],
                );
            }
        }
    }
    // frame: size-prefixed frames back to back, behind 8 bytes of read sizes
    let mut stream = vec![3u8, 200, 1, 7, 255, 16, 2, 90];
    for &(api, min, _) in SUPPORTED_APIS.iter().take(6) {
        for body in support::requests::samples(api, min) {
            stream.extend(support::requests::frame(api, min, 2, &body));
        }
    }
    write(&root, "frame", "pipelined", &stream);
    // record_batch: one batch of every codec, and several batches (internal form)
    let plain = batch::build_batch(0, &records(12));
    for codec in [
        0,
        compression::GZIP,
        compression::SNAPPY,
        compression::LZ4,
        compression::ZSTD,
    ] {
        let b = if codec == 0 {
            plain.clone()
        } else {
            batch::compress_batch(&plain, codec).expect("compress")
        };
        let mut seed = vec![0u8];
        seed.extend_from_slice(&b);
        write(&root, "record_batch", &format!("codec-{codec}"), &seed);
    }
    let mut two = vec![2u8];
    two.extend_from_slice(&plain);
    two.extend_from_slice(&batch::build_batch(0, &records(3)));
    write(&root, "record_batch", "two-batches", &two);
    // segment_recovery: a real segment with its indexes
    let dir = std::env::temp_dir().join(format!("kb-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log_dir = dir.join("t-0");
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        segment_index_bytes: 1024,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let mut log = Log::open(&log_dir, "t", 0, config, 0, 0, true, 0).expect("log");
    for i in 0..20 {
        log.append_internal(&batch::build_batch(0, &records(1 + i % 5)), 0, 0)
            .expect("append");
    }
    log.close().expect("close");
    let part =
        |ext: &str| std::fs::read(log_dir.join(format!("{:020}.{ext}", 0))).unwrap_or_default();
    let (l, x, t) = (part("log"), part("index"), part("timeindex"));
    let mut seed = Vec::new();
    for n in [l.len(), x.len(), t.len()] {
        seed.extend_from_slice(&(n.min(u16::MAX as usize) as u16).to_le_bytes());
    }
    seed.extend_from_slice(&l);
    seed.extend_from_slice(&x);
    seed.extend_from_slice(&t);
    write(&root, "segment_recovery", "segment", &seed);
    let _ = std::fs::remove_dir_all(&dir);
    // journal: a real journal with nodes and a multi
    let jdir = std::env::temp_dir().join(format!("kb-seeds-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&jdir);
    {
        use kbroker_coordinator::{CreateMode, MetadataStore};
        let store = kbroker_coordinator::LocalStore::open(&jdir).expect("store");
        store
            .create("/brokers", b"", CreateMode::Persistent)
            .expect("create");
        store
            .create("/brokers/topics", b"{}", CreateMode::Persistent)
            .expect("create");
        store
            .set("/brokers/topics", b"{\"v\":1}", None)
            .expect("set");
        store
            .create("/tmp", b"x", CreateMode::Ephemeral)
            .expect("create");
    }
    let journal = std::fs::read(jdir.join("metadata.journal")).expect("journal");
    write(&root, "journal", "journal", &journal);
    let _ = std::fs::remove_dir_all(&jdir);
    // checkpoint: an offset checkpoint and a leader-epoch checkpoint
    write(
        &root,
        "checkpoint",
        "offsets",
        b"0\n3\norders 0 1234\norders 1 99\nb-c 7 0\n",
    );
    write(&root, "checkpoint", "epochs", b"0\n2\n0 0\n3 120\n");
}
