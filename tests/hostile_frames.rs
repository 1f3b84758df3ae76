//! The real binary against hostile frames: for every advertised API and version, every
//! sample request with a huge count spliced in at every position (see `support/requests.rs`)
//! is sent on its own connection. The broker must answer or close that connection, keep
//! serving (ApiVersions works after each API), and stay small: its peak resident memory
//! (VmHWM) after all of them is bounded. Before bounded decoding the first such frame
//! aborted the process.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kbroker::handler::SUPPORTED_APIS;
use support::process::BrokerProcess;

/// Peak resident memory the broker may reach while taking every bomb.
const PEAK_RSS_BYTES_MAX: u64 = 512 * 1024 * 1024;

fn start_broker() -> BrokerProcess {
    BrokerProcess::start("hostile", &["max.connections.per.ip=100000"])
}

/// How long to wait for an answer: requests that decode may park (a Fetch waiting
/// `max_wait_ms`, a JoinGroup waiting for members); those are left behind.
const ANSWER_WAIT: Duration = Duration::from_millis(100);

/// Sends one frame; reads until the broker answers, closes, or `ANSWER_WAIT` passes.
fn send(addr: SocketAddr, frame: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(ANSWER_WAIT)).expect("timeout");
    let _ = s.write_all(frame);
    let mut size = [0u8; 4];
    if s.read_exact(&mut size).is_ok() {
        let n = i32::from_be_bytes(size).max(0) as usize;
        let mut body = vec![0u8; n.min(64 << 20)];
        let _ = s.read_exact(&mut body);
    }
}

fn api_versions_works(addr: SocketAddr) -> bool {
    let frame = support::requests::frame(ApiKey::ApiVersions, 0, 99, &[]);
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    if s.write_all(&frame).is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    s.read_exact(&mut head).is_ok()
        && i32::from_be_bytes([head[4], head[5], head[6], head[7]]) == 99
}

fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn every_count_bomb_of_every_api_is_survived() {
    let mut broker = start_broker();
    let mut frames = 0usize;
    for &(api, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            for body in support::requests::samples(api, version) {
                for bomb in support::requests::count_bombs(&body) {
                    send(
                        broker.addr,
                        &support::requests::frame(api, version, 7, &bomb),
                    );
                    frames += 1;
                }
            }
        }
        assert!(
            api_versions_works(broker.addr),
            "the broker serves after the {api:?} bombs"
        );
    }
    assert!(
        matches!(broker.child.try_wait(), Ok(None)),
        "the broker process is still running"
    );
    let peak = peak_rss_bytes(broker.child.id());
    println!(
        "sent {frames} hostile frames; broker peak RSS {} MiB",
        peak >> 20
    );
    assert!(
        frames > 5_000,
        "every API and version was covered ({frames} frames)"
    );
    assert!(
        peak > 0 && peak <= PEAK_RSS_BYTES_MAX,
        "peak RSS {peak} bytes"
    );
}
