//! The socket server over real sockets on 127.0.0.1, driven with raw bytes.

mod common;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kbroker_reactor::ReactorConfig;

#[test]
fn frames_round_trip_with_stage_timings() {
    let handler = Arc::new(TestHandler::default());
    let (server, addr) = start(config(), &handler);
    let stats = server.stats();
    let mut client = connect(addr);
    let large: Vec<u8> = (0..900_000).map(|i| (i % 253) as u8).collect();
    echo_round_trip(&mut client, 1, b"");
    echo_round_trip(&mut client, 2, b"hello");
    echo_round_trip(&mut client, 3, &large);
    wait_until("three completions", || handler.completed() == 3);

    let completions = handler.completions.lock().unwrap().clone();
    for timings in &completions {
        assert_eq!(timings.api_key, API_ECHO);
        assert!(timings.received_at <= timings.dequeued_at);
        assert!(timings.dequeued_at <= timings.responded_at);
        assert!(timings.responded_at <= timings.send_started_at);
        assert!(timings.send_started_at <= timings.completed_at);
        assert_eq!(
            timings.total_time(),
            timings.completed_at - timings.received_at
        );
    }
    assert_eq!(completions[2].request_bytes, 8 + large.len());
    assert_eq!(completions[2].response_bytes, 8 + large.len());
    assert_eq!(stats.requests_received.load(Ordering::Relaxed), 3);
    assert_eq!(stats.responses_completed.load(Ordering::Relaxed), 3);
    assert_eq!(
        stats.bytes_in.load(Ordering::Relaxed),
        3 * 12 + 5 + large.len() as u64
    );
    assert_eq!(
        stats.bytes_out.load(Ordering::Relaxed),
        3 * 8 + 5 + large.len() as u64
    );
    assert_eq!(stats.sendfile_bytes.load(Ordering::Relaxed), 0);
    assert_eq!(stats.connections_active.load(Ordering::Relaxed), 1);
    assert_eq!(stats.request_queue_size.load(Ordering::Relaxed), 0);
    server.shutdown();
}

#[test]
fn a_request_records_when_its_handler_returned_and_what_it_was() {
    let handler = Arc::new(TestHandler::default());
    let (server, addr) = start(config(), &handler);
    let mut parked = connect(addr);
    let mut other = connect(addr);
    // Answered inside `handle`: no return instant (all of it is local time).
    echo_round_trip(&mut other, 1, b"now");
    // Parked, then answered by another request's handler after its own handle returned.
    send(&mut parked, API_HOLD, 2, b"");
    wait_until("held", || handler.held() == 1);
    send(&mut other, API_RELEASE_HELD, 3, b"go");
    expect_response(&mut other, 3, b"go");
    assert_eq!(
        read_response(&mut parked).unwrap().map(|(_, b)| b),
        Some(b"late".to_vec())
    );
    send(&mut other, API_FOLLOWER, 4, b"f");
    expect_response(&mut other, 4, b"f");
    wait_until("four completions", || handler.completed() == 4);
    let completions = handler.completions.lock().unwrap().clone();
    let by_api = |api| {
        completions
            .iter()
            .find(|t| t.api_key == api)
            .copied()
            .unwrap()
    };
    let now = by_api(API_ECHO);
    assert_eq!(now.handle_returned_at, None);
    assert!(!now.from_follower);
    let late = by_api(API_HOLD);
    let returned = late
        .handle_returned_at
        .expect("handle returned before the answer");
    assert!(late.dequeued_at <= returned && returned <= late.responded_at);
    assert!(!late.from_follower);
    let follower = by_api(API_FOLLOWER);
    assert!(follower.from_follower);
    assert_eq!(follower.handle_returned_at, None);
    server.shutdown();
}

#[test]
fn pipelined_requests_are_answered_in_order_one_at_a_time() {
    let handler = Arc::new(TestHandler {
        delay: Duration::from_millis(1),
        ..TestHandler::default()
    });
    let config = ReactorConfig {
        num_io_threads: 4,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let requests_per_connection = 40;
    let clients: Vec<_> = (0..4)
        .map(|client_index| {
            std::thread::spawn(move || {
                let mut client = connect(addr);
                let mut pipelined = Vec::new();
                for id in 0..requests_per_connection {
                    let body = format!("client-{client_index}-request-{id}");
                    pipelined.extend(request(API_ECHO, id, body.as_bytes()));
                }
                client.write_all(&pipelined).unwrap();
                for id in 0..requests_per_connection {
                    let body = format!("client-{client_index}-request-{id}");
                    expect_response(&mut client, id, body.as_bytes());
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    assert_eq!(
        handler.entered.load(Ordering::SeqCst),
        4 * requests_per_connection as usize
    );
    assert_eq!(
        handler.overlaps.load(Ordering::SeqCst),
        0,
        "two requests of one connection in handlers at once"
    );
    server.shutdown();
}

#[test]
fn bad_frame_sizes_close_only_their_connection() {
    let handler = Arc::new(TestHandler::default());
    let config = ReactorConfig {
        socket_request_max_bytes: 1000,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let stats = server.stats();
    let mut good = connect(addr);
    echo_round_trip(&mut good, 1, b"before");
    for (index, size) in [1001_i32, -5, i32::MIN, 7, 0].into_iter().enumerate() {
        let mut bad = connect(addr);
        bad.write_all(&size.to_be_bytes()).unwrap();
        expect_closed(&mut bad);
        echo_round_trip(&mut good, index as i32 + 2, b"still working");
    }
    // Exactly the limit is accepted.
    let body = vec![9_u8; 1000 - 8];
    echo_round_trip(&mut good, 99, &body);
    assert_eq!(stats.frames_rejected.load(Ordering::Relaxed), 5);
    assert_eq!(handler.entered.load(Ordering::SeqCst), 7);
    server.shutdown();
}

#[test]
fn a_large_claim_waits_for_bytes_and_idles_out() {
    let handler = Arc::new(TestHandler::default());
    let config = ReactorConfig {
        socket_request_max_bytes: 100 * 1024 * 1024,
        connections_max_idle_ms: 400,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let mut liar = connect(addr);
    let started = Instant::now();
    liar.write_all(&(90 * 1024 * 1024_i32).to_be_bytes())
        .unwrap();
    liar.write_all(b"only a few bytes").unwrap();
    expect_silence(&mut liar, Duration::from_millis(200));
    expect_closed(&mut liar);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}, before the idle limit"
    );
    assert!(
        waited < Duration::from_secs(5),
        "idle close took {waited:?}"
    );
    assert_eq!(handler.entered.load(Ordering::SeqCst), 0);
    server.shutdown();
}

#[test]
fn a_connection_with_a_request_in_flight_is_not_idle() {
    let handler = Arc::new(TestHandler::default());
    let config = ReactorConfig {
        connections_max_idle_ms: 200,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let mut waiting = connect(addr);
    send(&mut waiting, API_HOLD, 1, b"");
    wait_until("request held", || handler.held() == 1);
    expect_silence(&mut waiting, Duration::from_millis(700));
    let mut other = connect(addr);
    echo_round_trip(&mut other, 5, b"release");
    send(&mut other, API_RELEASE_HELD, 6, b"");
    expect_response(&mut other, 6, b"");
    expect_response(&mut waiting, 0, b"late");
    // Once answered the connection is idle again and is closed.
    expect_closed(&mut waiting);
    server.shutdown();
}

#[test]
fn file_chunks_are_sent_with_sendfile() {
    let contents: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let handler = Arc::new(TestHandler {
        file: Some(temp_file("sendfile", &contents)),
        ..TestHandler::default()
    });
    let config = ReactorConfig {
        socket_send_buffer_bytes: 16 * 1024,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let stats = server.stats();
    let mut client = connect(addr);
    let (offset, len) = (1000_u64, 2 * 1024 * 1024 + 17_u32);
    let mut body = offset.to_be_bytes().to_vec();
    body.extend(len.to_be_bytes());
    send(&mut client, API_FILE, 42, &body);
    // Read slowly at first so the server meets a full socket and waits for WRITABLE.
    std::thread::sleep(Duration::from_millis(100));
    expect_response(
        &mut client,
        42,
        &contents[offset as usize..offset as usize + len as usize],
    );
    // The client can hold the last bytes before the processor counts them; the next
    // request on the connection is read only after the send completed (one in flight).
    echo_round_trip(&mut client, 43, b"after the file");
    assert_eq!(stats.sendfile_bytes.load(Ordering::Relaxed), len as u64);
    server.shutdown();
}

#[test]
fn a_file_shorter_than_its_region_closes_the_connection() {
    let handler = Arc::new(TestHandler {
        file: Some(temp_file("short", &[5_u8; 100])),
        ..TestHandler::default()
    });
    let (server, addr) = start(config(), &handler);
    let stats = server.stats();
    let mut client = connect(addr);
    let mut body = 60_u64.to_be_bytes().to_vec();
    body.extend(80_u32.to_be_bytes());
    send(&mut client, API_FILE, 1, &body);
    let mut received = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut received).ok();
    assert_eq!(
        received.len(),
        8 + 40,
        "header and the 40 bytes that exist, then close"
    );
    assert_eq!(stats.sendfile_bytes.load(Ordering::Relaxed), 40);
    let mut other = connect(addr);
    echo_round_trip(&mut other, 2, b"unaffected");
    server.shutdown();
}

#[test]
fn no_response_unmutes_the_connection() {
    let handler = Arc::new(TestHandler::default());
    let (server, addr) = start(config(), &handler);
    let mut client = connect(addr);
    let mut pipelined = request(API_NO_RESPONSE, 1, b"acks=0");
    pipelined.extend(request(API_ECHO, 2, b"next"));
    client.write_all(&pipelined).unwrap();
    expect_response(&mut client, 2, b"next");
    wait_until("both completions", || handler.completed() == 2);
    let completions = handler.completions.lock().unwrap().clone();
    assert_eq!(completions[0].api_key, API_NO_RESPONSE);
    assert_eq!(completions[0].response_bytes, 0);
    assert_eq!(completions[1].api_key, API_ECHO);
    server.shutdown();
}

#[test]
fn close_dropped_responder_panic_and_bad_response_close_the_connection() {
    let handler = Arc::new(TestHandler::default());
    let config = ReactorConfig {
        num_io_threads: 1,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    for api_key in [API_CLOSE, API_DROP, API_PANIC, API_BAD_SIZE] {
        let mut client = connect(addr);
        send(&mut client, api_key, 1, b"");
        expect_closed(&mut client);
        // The single handler thread survived and the server still serves.
        let mut other = connect(addr);
        echo_round_trip(&mut other, 2, b"alive");
    }
    wait_until("the four echoes complete", || handler.completed() == 4);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(handler.completed(), 4, "only the four echoes complete");
    server.shutdown();
}

#[test]
fn a_full_request_channel_blocks_no_processor() {
    let handler = Arc::new(TestHandler::default());
    handler.gate.close();
    let config = ReactorConfig {
        num_network_threads: 1,
        num_io_threads: 1,
        queued_max_requests: 1,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let stats = server.stats();
    let mut clients: Vec<_> = (0..5).map(|_| connect(addr)).collect();
    for (index, client) in clients.iter_mut().enumerate() {
        let mut pipelined = request(API_ECHO, 0, format!("{index}-0").as_bytes());
        pipelined.extend(request(API_ECHO, 1, format!("{index}-1").as_bytes()));
        client.write_all(&pipelined).unwrap();
    }
    wait_until("one request in the handler", || {
        handler.entered.load(Ordering::SeqCst) == 1
    });
    wait_until("the channel full", || {
        stats.request_queue_size.load(Ordering::Relaxed) == 1
    });
    wait_until("every first request read", || {
        stats.requests_received.load(Ordering::Relaxed) == 5
    });

    // The only processor still accepts, reads and closes while requests wait for room.
    let mut bad = connect(addr);
    bad.write_all(&(-1_i32).to_be_bytes()).unwrap();
    expect_closed(&mut bad);
    assert_eq!(stats.frames_rejected.load(Ordering::Relaxed), 1);

    handler.gate.open();
    for (index, client) in clients.iter_mut().enumerate() {
        expect_response(client, 0, format!("{index}-0").as_bytes());
        expect_response(client, 1, format!("{index}-1").as_bytes());
    }
    assert_eq!(handler.overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(stats.request_queue_size.load(Ordering::Relaxed), 0);
    server.shutdown();
}

#[test]
fn max_connections_per_ip_closes_the_extra_connection() {
    let handler = Arc::new(TestHandler::default());
    let config = ReactorConfig {
        max_connections_per_ip: 2,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let stats = server.stats();
    let mut first = connect(addr);
    let mut second = connect(addr);
    echo_round_trip(&mut first, 1, b"one");
    echo_round_trip(&mut second, 2, b"two");
    let mut third = connect(addr);
    expect_closed(&mut third);
    assert_eq!(stats.connections_rejected.load(Ordering::Relaxed), 1);
    drop(first);
    wait_until("the first connection closed", || {
        stats.connections_active.load(Ordering::Relaxed) == 1
    });
    let mut fourth = connect(addr);
    echo_round_trip(&mut fourth, 4, b"room again");
    echo_round_trip(&mut second, 5, b"unaffected");
    server.shutdown();
}

#[test]
fn max_connections_pauses_accepting_and_resumes_below_the_limit() {
    let handler = Arc::new(TestHandler::default());
    let config = ReactorConfig {
        max_connections: 2,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let stats = server.stats();
    let mut first = connect(addr);
    let mut second = connect(addr);
    echo_round_trip(&mut first, 1, b"one");
    echo_round_trip(&mut second, 2, b"two");
    // The kernel completes the handshake from the backlog; the broker does not accept yet.
    let mut third = connect(addr);
    send(&mut third, API_ECHO, 3, b"waiting");
    expect_silence(&mut third, Duration::from_millis(300));
    assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 2);
    drop(first);
    expect_response(&mut third, 3, b"waiting");
    assert_eq!(stats.connections_rejected.load(Ordering::Relaxed), 0);
    server.shutdown();
}

#[test]
fn a_late_response_never_reaches_a_reused_slot() {
    let handler = Arc::new(TestHandler::default());
    let config = ReactorConfig {
        num_network_threads: 1,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let stats = server.stats();
    let mut gone = connect(addr);
    send(&mut gone, API_HOLD, 1, b"");
    wait_until("request held", || handler.held() == 1);
    // Reset (SO_LINGER 0): the processor sees the error although the connection is muted.
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&gone, nix::sys::socket::sockopt::Linger, &linger).unwrap();
    drop(gone);
    wait_until("the reset connection closed", || {
        stats.connections_closed.load(Ordering::Relaxed) == 1
    });

    let mut reuser = connect(addr);
    send(&mut reuser, API_RELEASE_HELD, 7, b"mine");
    expect_response(&mut reuser, 7, b"mine");
    assert_eq!(handler.held(), 0, "the held responder answered");
    echo_round_trip(&mut reuser, 8, b"nothing else arrived in between");
    wait_until("two completions", || handler.completed() == 2);
    server.shutdown();
}

#[test]
fn invalid_config_is_refused_with_the_key() {
    let handler = Arc::new(TestHandler::default());
    let config = ReactorConfig {
        num_network_threads: 0,
        ..config()
    };
    let error = kbroker_reactor::SocketServer::start(config, handler).expect_err("zero processors");
    assert!(error.to_string().contains("num.network.threads"), "{error}");
}

#[test]
fn a_busy_port_is_refused_with_the_address() {
    let handler = Arc::new(TestHandler::default());
    let (server, addr) = start(config(), &handler);
    let config = ReactorConfig {
        listeners: vec![addr],
        ..config()
    };
    let error = kbroker_reactor::SocketServer::start(config, Arc::clone(&handler) as _)
        .expect_err("port in use");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    server.shutdown();
}
