//! `kbroker [server.properties] [--override key=value ...]`
//! `kbroker metadata ls|get|dump [PATH] [--log-dir DIR]` (see `metadata_tool`)
//!
//! Starts the broker, waits for SIGTERM or SIGINT, shuts down cleanly and exits 0. A bad
//! configuration exits 2 with a message naming the key; a failure to start exits 1.

use clap::{Arg, ArgAction, Command};
use nix::sys::signal::{SigSet, Signal};

/// Raises the soft limit on open files to the hard limit, as the JVM does for Kafka: a
/// broker keeps a descriptor per segment and per connection.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot read the open files limit: {e}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("metadata") {
        std::process::exit(kbroker::metadata_tool::run(&args[2..]));
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let matches = Command::new("kbroker")
        .about("A Kafka-protocol broker")
        .version(env!("CARGO_PKG_VERSION"))
        .arg(
            Arg::new("config")
                .value_name("server.properties")
                .help("Kafka-style properties file"),
        )
        .arg(
            Arg::new("override")
                .long("override")
                .value_name("key=value")
                .action(ArgAction::Append)
                .help("Override one property"),
        )
        .get_matches();
    let path = matches.get_one::<String>("config").map(String::as_str);
    let overrides: Vec<String> = matches
        .get_many::<String>("override")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let config = match kbroker::config::Config::load(path, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kbroker: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    // Block the shutdown signals before any thread starts, so only sigwait sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("kbroker: cannot block signals: {e}");
        std::process::exit(1);
    }
    raise_open_files_limit();
    // A signal during start-up (waiting for ZooKeeper, for an old registration to expire)
    // ends the process at once: nothing has been acknowledged yet, and the logs recover as
    // after a crash. After start-up it begins a clean shutdown.
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (signal_tx, signal_rx) = std::sync::mpsc::channel();
    let flag = std::sync::Arc::clone(&started);
    let waiter = std::thread::Builder::new()
        .name("kb-signals".into())
        .spawn(move || match signals.wait() {
            Ok(sig) if !flag.load(std::sync::atomic::Ordering::Acquire) => {
                eprintln!("kbroker: received {sig:?} during start-up; exiting");
                std::process::exit(1);
            }
            Ok(sig) => {
                let _ = signal_tx.send(Some(sig));
            }
            Err(e) => {
                log::error!("waiting for signals failed: {e}");
                let _ = signal_tx.send(None);
            }
        });
    if let Err(e) = waiter {
        eprintln!("kbroker: cannot start the signal thread: {e}");
        std::process::exit(1);
    }
    let server = match kbroker::server::Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            log::error!("kbroker failed to start: {e}");
            eprintln!("kbroker: failed to start: {e}");
            std::process::exit(1);
        }
    };
    started.store(true, std::sync::atomic::Ordering::Release);
    if let Ok(Some(sig)) = signal_rx.recv() {
        log::info!("received {sig:?}");
    }
    match server.shutdown() {
        Ok(sendfile_bytes) => {
            log::info!("kbroker stopped cleanly sendfile_bytes={sendfile_bytes}");
            std::process::exit(0);
        }
        Err(e) => {
            log::error!("shutdown failed: {e}");
            std::process::exit(1);
        }
    }
}
