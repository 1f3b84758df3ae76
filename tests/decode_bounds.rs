//! Bounded decoding: no request frame of any advertised API and version makes the decoder
//! allocate more than a small multiple of the frame's size.
//!
//! Every sample request (defaults and populated, see `support/requests.rs`) gets a huge count
//! spliced in at every byte position, as an INT32 and as a varint; each frame is decoded the
//! way the broker's dispatch decodes it while a counting allocator records the peak bytes
//! live on this thread. Before the kafka-protocol patch (vendor/kafka-protocol/PATCHED.md)
//! the first such frame aborted the process.

mod support;

use bytes::Bytes;
use kbroker::handler::{decode_frame, SUPPORTED_APIS};
use support::alloc::{bytes_max_for, peak_bytes_during, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated while decoding `frame`, and whether it decoded.
fn peak_decode_bytes(frame: Bytes) -> (usize, bool) {
    let mut ok = false;
    let peak = peak_bytes_during(|| ok = decode_frame(frame).is_ok());
    (peak, ok)
}

#[test]
fn every_api_and_version_decodes_within_a_small_multiple_of_the_frame() {
    let mut frames = 0usize;
    let mut worst_ratio = 0.0f64;
    for &(api, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            let samples = support::requests::samples(api, version);
            assert!(!samples.is_empty(), "{api:?} v{version} has a sample");
            for body in &samples {
                let plain = support::requests::frame(api, version, 7, body);
                let (_, ok) = peak_decode_bytes(Bytes::from(plain[4..].to_vec()));
                assert!(ok, "the plain {api:?} v{version} sample decodes");
                for bomb in support::requests::count_bombs(body) {
                    let framed = support::requests::frame(api, version, 7, &bomb);
                    let len = framed.len() - 4;
                    let (peak, _) = peak_decode_bytes(Bytes::from(framed[4..].to_vec()));
                    frames += 1;
                    worst_ratio = worst_ratio.max(peak as f64 / len as f64);
                    assert!(
                        peak <= bytes_max_for(len),
                        "{api:?} v{version}: a {len}-byte frame allocated {peak} bytes"
                    );
                }
            }
        }
    }
    println!("decoded {frames} hostile frames; worst peak/frame ratio {worst_ratio:.1}");
    assert!(
        frames > 5_000,
        "the bombs cover every API and version ({frames})"
    );
}

#[test]
fn many_small_elements_cost_a_bounded_multiple_of_their_bytes() {
    // The other way to make a decoder allocate: a frame full of minimal array elements.
    use kafka_protocol::messages::ApiKey;
    for &(api, version) in &[
        (ApiKey::DescribeGroups, 5i16),
        (ApiKey::DescribeGroups, 0),
        (ApiKey::Metadata, 11),
        (ApiKey::DeleteGroups, 2),
    ] {
        let n: usize = 200_000;
        let mut body = Vec::new();
        let flexible = api.request_header_version(version) >= 2;
        if flexible {
            // compact array of n empty compact strings (and their element tags where present)
            let mut count = n as u64 + 1;
            while count >= 0x80 {
                body.push((count as u8) | 0x80);
                count >>= 7;
            }
            body.push(count as u8);
            for _ in 0..n {
                if api == ApiKey::Metadata {
                    body.extend_from_slice(&[0u8; 16]); // topic id
                    body.push(1); // empty name
                    body.push(0); // element tags
                } else {
                    body.push(1);
                }
            }
        } else {
            body.extend_from_slice(&(n as i32).to_be_bytes());
            for _ in 0..n {
                body.extend_from_slice(&0i16.to_be_bytes());
            }
        }
        body.extend_from_slice(&[0u8; 8]);
        let framed = support::requests::frame(api, version, 1, &body);
        let len = framed.len() - 4;
        let (peak, _) = peak_decode_bytes(Bytes::from(framed[4..].to_vec()));
        println!("{api:?} v{version}: {len} bytes of minimal elements allocated {peak} bytes");
        assert!(
            peak <= bytes_max_for(len),
            "{api:?} v{version}: {peak} for {len}"
        );
    }
}
