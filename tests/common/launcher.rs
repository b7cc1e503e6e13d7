//! Starting and stopping a replpool server from outside: the one launcher of the tests
//! (`tests/common`) and the benchmark (`benches/replpool.rs`, which includes this file by
//! `#[path]`); `python/tests/conftest.py` follows the same conventions in Python.
//!
//! The conventions: `<binary> serve --bind 127.0.0.1:0 --config <file>` with `REPLPOOL_LOG=warn`
//! (warnings still reach stderr), the server's stdout read until its `listening on <url>` line
//! and drained afterwards (so it never blocks on a full pipe), and a stop that is SIGTERM (the
//! server ends its workers itself), then SIGKILL after a grace, by pid.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// A started server: its process and the base URL it listens on.
pub struct Launched {
    pub child: Child,
    pub base: String,
}

/// Starts `binary serve` with `config` on a free loopback port and waits until it listens.
pub fn launch(binary: &Path, config: &Path, env: &[(&str, &str)]) -> std::io::Result<Launched> {
    launch_through(&[], binary, config, env)
}

/// [`launch`], through `wrapper` (a command that ends by executing its arguments in its own
/// place, so that the child's pid is the server's).
pub fn launch_through(
    wrapper: &[std::ffi::OsString],
    binary: &Path,
    config: &Path,
    env: &[(&str, &str)],
) -> std::io::Result<Launched> {
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("REPLPOOL_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe. If the launching thread dies, so does its server
    // (and the server's workers die with the server).
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let Some(stdout) = child.stdout.take() else {
        stop(&mut child, Duration::ZERO);
        return Err(std::io::Error::other("the server's stdout is not piped"));
    };
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    break url.to_owned();
                }
            }
            other => {
                stop(&mut child, Duration::ZERO);
                return Err(std::io::Error::other(format!(
                    "the server exited before listening: {other:?}"
                )));
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Launched { child, base })
}

/// Waits up to `within` for `child` to exit by itself.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL if the server has not exited after `grace`; reaps it either way.
pub fn stop(child: &mut Child, grace: Duration) {
    let _ = signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    if wait_exit(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
