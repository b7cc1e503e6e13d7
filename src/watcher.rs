//! The watcher: a small process that outlives the server to end what the server's sessions
//! left running if the server dies without cleaning up (`kill -9`, a crash, the OOM killer).
//!
//! Workers die with the server by their death signal, but a process a session detached (its
//! own session, a daemon) does not. Everything a session starts is in its cgroup, so the
//! watcher, holding the read end of a pipe whose write end only the server has, waits for
//! end of file (the server is gone, however it went) and then kills every process below the
//! server's cgroup directories and removes them. It runs in a session of its own, so a signal
//! to the server's process group does not reach it, and it has no death signal.
//!
//! It is the server binary itself (`replpool __watch DIR...`), so nothing else need be
//! installed; after a clean exit it finds nothing left and exits.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The hidden subcommand the watcher runs as.
pub const SUBCOMMAND: &str = "__watch";

/// Starts the watcher for `dirs`. The returned pipe end must be kept open for the server's
/// whole life (dropping it makes the watcher clean up at once).
pub fn start(dirs: &[PathBuf]) -> std::io::Result<std::process::ChildStdin> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg(SUBCOMMAND)
        .args(dirs)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: setsid is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = replpool::reaper::children().spawn(&mut command)?;
    child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("the watcher has no stdin"))
}

/// The watcher's own life: wait for the server to be gone, then end what it left.
pub fn run(dirs: &[PathBuf]) {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    // Nothing is ever written: any read that returns means the server's end closed.
    while let Ok(n) = stdin.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    replpool::sandbox::cgroup::end_all(dirs);
}
