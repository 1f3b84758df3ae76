//! Named crash points for tests of multi-step file operations.
//!
//! `KBROKER_FAILPOINTS=name[,name...]` in the environment makes the process kill itself with
//! SIGKILL — exactly what `kill -9` does: no destructors, no flush — when it reaches one of
//! the named points. Read once; unset (the normal case) costs one load per point reached.
//! Points: `cleaner.after_write_cleaned`, `cleaner.after_rename_to_swap`,
//! `cleaner.after_delete_indexes`, `cleaner.after_replace_log`.

use std::sync::OnceLock;

/// The environment variable naming the armed points.
pub const ENV_VAR: &str = "KBROKER_FAILPOINTS";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(ENV_VAR)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Kills the process if `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|a| a == name) {
        log::error!("failpoint {name} reached: killing the process");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; if it somehow returns, do not continue past the point.
        std::process::abort();
    }
}
