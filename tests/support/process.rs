//! The real broker binary as a child process: on a free loopback port, data in a fresh
//! temporary directory, killed and cleaned up when dropped.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BrokerProcess {
    /// Starts the broker with `overrides` (`key=value`) on top of the listener and log
    /// dir; returns once it accepts connections.
    pub fn start(name: &str, overrides: &[&str]) -> BrokerProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!("kb-{name}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kbroker"));
        command
            .args([
                "--override",
                &format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
            ])
            .args([
                "--override",
                &format!("log.dirs={}", dir.join("data").display()),
            ]);
        for o in overrides {
            command.args(["--override", o]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("broker.log")).expect("log"))
            .spawn()
            .expect("start kbroker");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "broker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        BrokerProcess {
            child,
            addr,
            _dir: TempDir(dir),
        }
    }
}
