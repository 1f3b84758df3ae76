//! Test support: a scriptable request handler and a raw-bytes client.
//!
//! Test frames are `api_key (i16) | api_version (i16) | correlation_id (i32) | body`, like a
//! Kafka request header v0; the api key picks what the handler does (see the `API_*`
//! constants). Responses are `size (i32) | correlation_id (i32) | body`.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kbroker_reactor::{
    Chunk, ConnectionId, ReactorConfig, Request, RequestHandler, RequestTimings, Responder,
    Response, SocketServer,
};

/// Echo the body back.
pub const API_ECHO: i16 = 0;
/// Answer `NoResponse`.
pub const API_NO_RESPONSE: i16 = 1;
/// Answer `Close`.
pub const API_CLOSE: i16 = 2;
/// Drop the responder unanswered.
pub const API_DROP: i16 = 3;
/// Panic inside `handle`.
pub const API_PANIC: i16 = 4;
/// Body `offset (u64) | len (u32)`: answer with that region of the handler's file.
pub const API_FILE: i16 = 5;
/// Keep the responder without answering.
pub const API_HOLD: i16 = 6;
/// Answer every held responder with "late", then echo.
pub const API_RELEASE_HELD: i16 = 7;
/// Answer with a size prefix that does not match.
pub const API_BAD_SIZE: i16 = 8;
/// Mark the request a follower's fetch, then echo.
pub const API_FOLLOWER: i16 = 9;

/// A gate handlers wait at while it is closed.
#[derive(Default)]
pub struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    pub fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    pub fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }
}

#[derive(Default)]
pub struct TestHandler {
    pub delay: Duration,
    pub file: Option<Arc<File>>,
    pub gate: Gate,
    /// Requests that entered `handle`.
    pub entered: AtomicUsize,
    /// Times a connection had two requests in `handle` at once (must stay 0).
    pub overlaps: AtomicUsize,
    pub in_handle: Mutex<HashSet<ConnectionId>>,
    pub held: Mutex<Vec<Responder>>,
    pub completions: Mutex<Vec<RequestTimings>>,
}

impl TestHandler {
    pub fn completed(&self) -> usize {
        self.completions.lock().unwrap().len()
    }

    pub fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl RequestHandler for TestHandler {
    fn handle(&self, request: Request, responder: Responder) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        assert_eq!(responder.connection(), request.connection);
        assert!(request.dequeued_at >= request.received_at);
        if !self.in_handle.lock().unwrap().insert(request.connection) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.gate.pass();
        std::thread::sleep(self.delay);
        let api_key = request.api_key();
        let correlation = &request.frame[4..8];
        let body = request.frame.slice(8..);
        // Leave before answering: the processor may dispatch this connection's next request
        // as soon as the response is written.
        self.in_handle.lock().unwrap().remove(&request.connection);
        match api_key {
            API_ECHO => responder.respond(Response::Send(echo(correlation, &body))),
            API_FOLLOWER => {
                responder.mark_follower_fetch();
                responder.respond(Response::Send(echo(correlation, &body)));
            }
            API_NO_RESPONSE => responder.respond(Response::NoResponse),
            API_CLOSE => responder.respond(Response::Close),
            API_DROP => drop(responder),
            API_PANIC => panic!("test handler asked to panic"),
            API_FILE => responder.respond(Response::Send(self.file_region(correlation, &body))),
            API_HOLD => self.held.lock().unwrap().push(responder),
            API_RELEASE_HELD => {
                for held in self.held.lock().unwrap().drain(..) {
                    held.respond(Response::Send(echo(&[0, 0, 0, 0], b"late")));
                }
                responder.respond(Response::Send(echo(correlation, &body)));
            }
            API_BAD_SIZE => {
                let chunks = vec![
                    Chunk::Bytes(Bytes::from_static(&[0, 0, 0, 9])),
                    Chunk::Bytes(Bytes::from_static(b"short")),
                ];
                responder.respond(Response::Send(chunks));
            }
            other => panic!("unknown test api key {other}"),
        }
    }

    fn on_complete(&self, timings: &RequestTimings) {
        self.completions.lock().unwrap().push(*timings);
    }
}

impl TestHandler {
    fn file_region(&self, correlation: &[u8], body: &[u8]) -> Vec<Chunk> {
        let offset = u64::from_be_bytes(body[..8].try_into().unwrap());
        let len = u32::from_be_bytes(body[8..12].try_into().unwrap()) as usize;
        let file = Arc::clone(self.file.as_ref().expect("test handler has a file"));
        let mut head = BytesMut::new();
        head.put_i32((4 + len) as i32);
        head.put_slice(correlation);
        vec![
            Chunk::Bytes(head.freeze()),
            Chunk::File { file, offset, len },
        ]
    }
}

/// A response echoing `body`, split in two byte chunks to exercise writev.
pub fn echo(correlation: &[u8], body: &[u8]) -> Vec<Chunk> {
    let mut head = BytesMut::new();
    head.put_i32((4 + body.len()) as i32);
    head.put_slice(correlation);
    vec![
        Chunk::Bytes(head.freeze()),
        Chunk::Bytes(Bytes::copy_from_slice(body)),
    ]
}

pub fn config() -> ReactorConfig {
    ReactorConfig {
        listeners: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        num_network_threads: 2,
        num_io_threads: 2,
        queued_max_requests: 16,
        socket_request_max_bytes: 1 << 20,
        connections_max_idle_ms: 60_000,
        ..ReactorConfig::default()
    }
}

pub fn start(config: ReactorConfig, handler: &Arc<TestHandler>) -> (SocketServer, SocketAddr) {
    let server = SocketServer::start(config, Arc::clone(handler) as Arc<dyn RequestHandler>)
        .expect("server starts");
    let addr = server.local_addrs()[0];
    (server, addr)
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Bytes of one request frame, size prefix included.
pub fn request(api_key: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(12 + body.len());
    frame.extend_from_slice(&((8 + body.len()) as i32).to_be_bytes());
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&0_i16.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

pub fn send(stream: &mut TcpStream, api_key: i16, correlation_id: i32, body: &[u8]) {
    stream
        .write_all(&request(api_key, correlation_id, body))
        .expect("send request");
}

/// Reads one response: `(correlation_id, body)`; `None` on a clean end of stream.
pub fn read_response(stream: &mut TcpStream) -> io::Result<Option<(i32, Vec<u8>)>> {
    let mut size = [0_u8; 4];
    match stream.read(&mut size[..1])? {
        0 => return Ok(None),
        _ => stream.read_exact(&mut size[1..])?,
    }
    let size = i32::from_be_bytes(size) as usize;
    let mut response = vec![0_u8; size];
    stream.read_exact(&mut response)?;
    let correlation_id = i32::from_be_bytes(response[..4].try_into().unwrap());
    Ok(Some((correlation_id, response.split_off(4))))
}

pub fn expect_response(stream: &mut TcpStream, correlation_id: i32, body: &[u8]) {
    let (got_correlation, got_body) = read_response(stream)
        .expect("read response")
        .expect("a response, not EOF");
    assert_eq!(got_correlation, correlation_id);
    assert!(
        got_body == body,
        "body mismatch: {} bytes, expected {}",
        got_body.len(),
        body.len()
    );
}

pub fn echo_round_trip(stream: &mut TcpStream, correlation_id: i32, body: &[u8]) {
    send(stream, API_ECHO, correlation_id, body);
    expect_response(stream, correlation_id, body);
}

/// Asserts the server closes the connection (EOF or reset) without sending anything more.
pub fn expect_closed(stream: &mut TcpStream) {
    let mut buffer = [0_u8; 64];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(read) => panic!("expected close, got {read} bytes"),
        Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
        Err(error) => panic!("expected close, got {error}"),
    }
}

/// Asserts nothing arrives and the connection stays open for `duration`.
pub fn expect_silence(stream: &mut TcpStream, duration: Duration) {
    stream.set_read_timeout(Some(duration)).unwrap();
    let mut buffer = [0_u8; 64];
    match stream.read(&mut buffer) {
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}

pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A temporary file with `contents`, already unlinked.
pub fn temp_file(name: &str, contents: &[u8]) -> Arc<File> {
    let path = std::env::temp_dir().join(format!(
        "kbroker-reactor-test-{}-{name}",
        std::process::id()
    ));
    std::fs::write(&path, contents).unwrap();
    let file = File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    Arc::new(file)
}
