//! `kbroker metadata ls|get|dump [PATH] [--log-dir DIR]`: shows the broker's metadata tree —
//! Kafka's ZooKeeper layout: `/brokers/...`, `/controller`, `/consumers/{group}/...` — as
//! the running broker last dumped it to `<DIR>/.metadata/tree.dump` (refreshed within about
//! half a second of any change; ephemeral nodes included, marked `E`). Read-only: it never
//! touches the store itself, so it is safe while the broker runs.
//!
//! Dump format: one node per line, `path<TAB>E|P<TAB>data` (newlines and tabs in data
//! replaced by spaces).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::broker::METADATA_DUMP;

const USAGE: &str =
    "usage: kbroker metadata ls|get|dump [PATH] [--log-dir DIR]   (DIR defaults to ./data)";

/// Runs the tool; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let mut dir = PathBuf::from("./data");
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--log-dir" | "--log-dirs" => match it.next() {
                Some(d) => dir = PathBuf::from(d.split(',').next().unwrap_or(d)),
                None => return usage(),
            },
            _ => rest.push(a.as_str()),
        }
    }
    let path = dir.join(".metadata").join(METADATA_DUMP);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "kbroker metadata: cannot read {}: {e} (is a broker running with log.dirs={}?)",
                path.display(),
                dir.display()
            );
            return 1;
        }
    };
    let nodes: BTreeMap<&str, (&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            Some((parts.next()?, (parts.next()?, parts.next().unwrap_or(""))))
        })
        .collect();
    match rest.as_slice() {
        ["dump"] => {
            print!("{text}");
            0
        }
        ["ls", p] => {
            let p = p.trim_end_matches('/');
            let p = if p.is_empty() { "/" } else { p };
            if !nodes.contains_key(p) {
                eprintln!("kbroker metadata: no node {p}");
                return 1;
            }
            let prefix = if p == "/" {
                "/".to_string()
            } else {
                format!("{p}/")
            };
            for child in nodes
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|c| !c.is_empty() && !c.contains('/'))
            {
                println!("{child}");
            }
            0
        }
        ["get", p] => match nodes.get(p.trim_end_matches('/')) {
            Some((_, data)) => {
                println!("{data}");
                0
            }
            None => {
                eprintln!("kbroker metadata: no node {p}");
                1
            }
        },
        _ => usage(),
    }
}

fn usage() -> i32 {
    eprintln!("{USAGE}");
    2
}
