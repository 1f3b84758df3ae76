//! The CPU cost of validating produced batches (storage/validate.rs), in process: what the
//! broker spends per byte produced before it appends, for each codec. Batches of 1,024
//! records of 1,000 bytes (about 1 MiB uncompressed, semi-compressible values) are
//! validated repeatedly on one thread for about a second each; CPU time is the thread's own
//! (CLOCK_THREAD_CPUTIME_ID), so other load on the machine does not count.

use std::time::Duration;

use kbroker_storage::batch::{self, NewRecord};
use kbroker_storage::compression;
use kbroker_storage::validate::{validate_client_records, ProduceRules};

/// One codec's figures.
#[derive(Debug, Clone)]
pub struct ValidationCost {
    pub codec: &'static str,
    pub batch_bytes: usize,
    pub uncompressed_bytes: u64,
    /// CPU seconds per GB (10^9 bytes) of batches as produced.
    pub cpu_s_per_gb_produced: f64,
    /// CPU seconds per GB of records after decompression.
    pub cpu_s_per_gb_uncompressed: f64,
}

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn sample_batch() -> Vec<u8> {
    let records: Vec<NewRecord> = (0..1024u32)
        .map(|i| {
            // half repeated text, half pseudo-random bytes: compresses about 2:1
            let mut value = format!("{i:08}-").repeat(56).into_bytes();
            value.truncate(500);
            let mut x = i.wrapping_mul(2_654_435_761);
            while value.len() < 1000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                value.push(x as u8);
            }
            NewRecord {
                key: Some(format!("key-{}", i % 64).into_bytes()),
                value: Some(value),
                headers: Vec::new(),
                timestamp: 1_700_000_000_000 + i as i64,
            }
        })
        .collect();
    batch::build_batch(0, &records)
}

/// Measures every codec for about `per_codec` each.
pub fn measure(per_codec: Duration) -> Result<Vec<ValidationCost>, String> {
    let plain = sample_batch();
    let rules = ProduceRules {
        max_message_bytes: 64 << 20,
        compacted: false,
    };
    let codecs = [
        ("none", compression::NONE),
        ("gzip", compression::GZIP),
        ("snappy", compression::SNAPPY),
        ("lz4", compression::LZ4),
        ("zstd", compression::ZSTD),
    ];
    let mut out = Vec::new();
    for (name, codec) in codecs {
        let bytes = if codec == compression::NONE {
            plain.clone()
        } else {
            batch::compress_batch(&plain, codec).map_err(|e| format!("compress {name}: {e}"))?
        };
        let uncompressed = validate_client_records(&bytes, &rules)
            .map_err(|e| format!("validate {name}: {e}"))?
            .batches()[0]
            .uncompressed_bytes;
        let start = thread_cpu_s();
        let mut rounds = 0u64;
        while thread_cpu_s() - start < per_codec.as_secs_f64() || rounds < 3 {
            let v = validate_client_records(&bytes, &rules).map_err(|e| e.to_string())?;
            std::hint::black_box(&v);
            rounds += 1;
        }
        let cpu = thread_cpu_s() - start;
        out.push(ValidationCost {
            codec: name,
            batch_bytes: bytes.len(),
            uncompressed_bytes: uncompressed,
            cpu_s_per_gb_produced: cpu / (rounds as f64 * bytes.len() as f64 / 1e9),
            cpu_s_per_gb_uncompressed: cpu / (rounds as f64 * uncompressed as f64 / 1e9),
        });
    }
    Ok(out)
}

/// The report section; `broker_cpu_s_per_gb` is the raw-produce run's broker CPU per GB.
pub fn section(costs: &[ValidationCost], broker_cpu_s_per_gb: Option<f64>) -> String {
    let mut s = String::from(
        "## Produce validation cost\n\nCPU the broker spends validating one batch of 1,024 \
         records × 1,000 B before appending (every record parsed; compressed batches \
         decompressed in 16 KiB pieces), one thread, in process.\n\n\
         | codec | batch bytes | records bytes | CPU-s per GB produced | CPU-s per GB of records |\n\
         |---|---|---|---|---|\n",
    );
    for c in costs {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} |\n",
            c.codec,
            c.batch_bytes,
            c.uncompressed_bytes,
            c.cpu_s_per_gb_produced,
            c.cpu_s_per_gb_uncompressed
        ));
    }
    if let (Some(total), Some(none)) = (broker_cpu_s_per_gb, costs.first()) {
        s.push_str(&format!(
            "\nUncompressed validation is {:.3} CPU-s/GB against {:.2} CPU-s/GB the broker \
             spent in all on raw produce in this run ({:.1} %).\n",
            none.cpu_s_per_gb_produced,
            total,
            100.0 * none.cpu_s_per_gb_produced / total.max(1e-9)
        ));
    }
    s
}
