//! Shutdown and thread naming. One test in its own binary (process), so the thread names
//! seen in /proc/self/task belong to the servers started here only.

mod common;

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kbroker_reactor::ReactorConfig;

fn reactor_thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_string())
        .filter(|name| name.starts_with("kb-"))
        .collect();
    names.sort();
    names
}

/// Every reactor thread has exited. A joined thread can stay listed in /proc/self/task for
/// an instant (join returns when the kernel clears the thread's id, just before the task is
/// released), so this waits a bounded while for the list to empty.
fn threads_gone() {
    wait_until("the reactor's threads to leave /proc/self/task", || {
        reactor_thread_names().is_empty()
    });
}

#[test]
fn shutdown_delivers_in_flight_responses_and_joins_every_thread() {
    assert!(reactor_thread_names().is_empty());
    let handler = Arc::new(TestHandler {
        delay: Duration::from_millis(300),
        ..TestHandler::default()
    });
    let config = ReactorConfig {
        listeners: vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ],
        num_network_threads: 3,
        num_io_threads: 2,
        ..config()
    };
    let (server, addr) = start(config, &handler);
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    let expected = [
        "kb-acceptor-0",
        "kb-acceptor-1",
        "kb-handler-0",
        "kb-handler-1",
        "kb-net-0",
        "kb-net-1",
        "kb-net-2",
    ];
    // Each thread names itself as it starts.
    wait_until("named threads", || {
        reactor_thread_names().len() == expected.len()
    });
    assert_eq!(reactor_thread_names(), expected);

    // A request in a handler when shutdown starts, and one pipelined behind it.
    let mut idle_client = connect(addrs[1]);
    echo_round_trip(&mut idle_client, 0, b"");
    let mut client = connect(addr);
    let mut pipelined = request(API_ECHO, 1, b"in flight");
    pipelined.extend(request(API_ECHO, 2, b"behind"));
    std::io::Write::write_all(&mut client, &pipelined).unwrap();
    wait_until("the first request in a handler", || {
        handler.entered.load(Ordering::SeqCst) == 2
    });

    let started = Instant::now();
    let shutdown = std::thread::spawn(move || server.shutdown());
    expect_response(&mut client, 1, b"in flight");
    // Draining reads no new requests: the pipelined one is never answered.
    expect_closed(&mut client);
    expect_closed(&mut idle_client);
    shutdown.join().expect("shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(handler.entered.load(Ordering::SeqCst), 2);
    threads_gone();
    assert!(TcpStream::connect(addr).is_err(), "listener still open");

    // Dropping a running server shuts it down the same way.
    let (server, addr) = start(common::config(), &handler);
    let mut client = connect(addr);
    echo_round_trip(&mut client, 3, b"before drop");
    drop(server);
    expect_closed(&mut client);
    threads_gone();
}
