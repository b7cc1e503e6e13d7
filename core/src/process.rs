//! The OS process behind a worker (or the template), however it was made: spawned by the
//! server (a tokio `Child`), forked by the template and re-parented to the server, or forked
//! by the template and kept as the template's child (where the server is no subreaper).
//!
//! Both are watched through a pidfd, which refers to the process itself rather than to its pid
//! number: the owner can ask whether it lives, wait for its end without reaping it, kill its
//! process group while the group id cannot yet be reused, and only then reap it and learn how
//! it ended. Dropping a `Process` kills its group, unless it was already reaped.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::Child;

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use crate::reaper;

pub struct Process {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    /// Spawned processes are reaped through tokio, which owns their `Child`.
    child: Option<Child>,
    reaped: bool,
    /// For a worker the template keeps as its own child: the template's socket, on which it
    /// is told to reap the worker once we killed its group (see [`Process::release`]).
    keeper: Option<Arc<UnixDatagram>>,
    /// What it had used when it ended, read from its zombie before it was reaped (a reaped
    /// process's counts are gone with its `/proc` entry).
    exit_usage: Option<Usage>,
}

impl Process {
    pub fn spawned(child: Child) -> std::io::Result<Process> {
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the child has no pid"))?;
        Process::watch(pid, Some(child))
    }

    /// A process forked by the template, now (or about to be) our child by re-parenting.
    pub fn forked(pid: u32) -> std::io::Result<Process> {
        reaper::children().adopt(pid);
        Process::watch(pid, None)
    }

    /// A process forked by the template that stays the template's child: `template` is the
    /// template's socket, to release its zombie once its group was killed.
    pub fn kept_by_template(pid: u32, template: Arc<UnixDatagram>) -> std::io::Result<Process> {
        let mut process = Process::watch(pid, None)?;
        process.keeper = Some(template);
        Ok(process)
    }

    fn watch(pid: u32, child: Option<Child>) -> std::io::Result<Process> {
        let fd = pidfd_open(pid)?;
        // SAFETY: the OwnedFd is a valid descriptor, owned by the AsyncFd from here on, and
        // refers to the same pidfd for as long as it lives.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Process {
            pid,
            pidfd,
            child,
            reaped: false,
            keeper: None,
            exit_usage: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the process has used: read now, or as it ended (see [`Process::wait`]).
    pub fn usage(&self) -> Usage {
        match self.exit_usage {
            Some(used) => used,
            None => usage(self.pid),
        }
    }

    /// False once the process has ended (it may have been killed while idle).
    pub fn is_alive(&self) -> bool {
        if self.reaped {
            return false;
        }
        // A pidfd becomes readable when the process ends.
        let mut fds = [nix::poll::PollFd::new(
            self.pidfd.get_ref().as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(0)
        )
    }

    /// Waits for the end; then kills what is left of the group, reaps, and says how it ended
    /// ("exit code 3", "signal 11 (SIGSEGV)").
    pub async fn wait(&mut self) -> String {
        if !self.reaped {
            let _ = self.pidfd.readable().await;
            self.exit_usage = Some(usage(self.pid));
        }
        self.kill_group();
        if self.keeper.is_some() {
            // waitid(2) works on children only; the zombie, which the template keeps until
            // released, shows its wait status in /proc.
            let how = zombie_wait_status(self.pid).map_or_else(
                || "status unknown (it ended as the template's child)".to_owned(),
                describe_wait_status,
            );
            self.release();
            return how;
        }
        let how = match self.child.as_mut() {
            Some(child) => match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("status unknown: {e}"),
            },
            None => match waitpid(Pid::from_raw(self.pid as i32), None) {
                Ok(WaitStatus::Exited(_, code)) => format!("exit code {code}"),
                Ok(WaitStatus::Signaled(_, sig, _)) => describe_signal(sig as i32),
                Ok(other) => format!("{other:?}"),
                // Not our child: the server is not a subreaper, so init reaped it.
                Err(e) => format!("status unknown: {e}"),
            },
        };
        self.reaped = true;
        how
    }

    /// Tells the template keeping this process to reap it. Only after its group was killed:
    /// until reaped, its pid (and so its group id) cannot be reused, so our killpg cannot hit
    /// an unrelated group. From here on we send it nothing.
    fn release(&mut self) {
        if self.reaped {
            return;
        }
        self.reaped = true;
        if let Some(template) = &self.keeper {
            let message = format!(r#"{{"op":"reap","pid":{}}}"#, self.pid);
            // A template that is gone cannot be told; its end killed the worker and init reaps.
            if let Err(e) = template.send(message.as_bytes()) {
                tracing::debug!(pid = self.pid, "cannot tell the template to reap: {e}");
            }
        }
    }

    /// Waits, blocking the thread, up to `timeout` for the process to end; whether it did.
    pub fn wait_exit_blocking(&self, timeout: std::time::Duration) -> bool {
        if self.reaped {
            return true;
        }
        let mut fds = [nix::poll::PollFd::new(
            self.pidfd.get_ref().as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        matches!(nix::poll::poll(&mut fds, millis), Ok(n) if n > 0)
    }

    /// SIGKILL to the process group (workers and the template lead their own).
    pub fn kill_group(&self) {
        if !self.reaped {
            // ESRCH (the group is already gone) is the expected case after a clean exit.
            let _ = signal::killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_group();
        // The zombie is reaped by tokio's orphan reaper (spawned), by the sweep (forked), or
        // by the template (kept by it).
        if self.keeper.is_some() {
            self.release();
        } else {
            reaper::children().forget(self.pid);
        }
    }
}

/// CPU time (user + system, all threads) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the command name: the state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks()?)
}

/// What a process has used, as far as `/proc` tells.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    /// User + system time of the process and of the children it waited for, seconds.
    pub cpu_seconds: Option<f64>,
    /// Its peak resident set (`VmHWM`), bytes.
    pub memory_peak_bytes: Option<u64>,
}

/// What `pid` has used: `/proc/<pid>/stat` (utime, stime, cutime, cstime) and `status`.
pub fn usage(pid: u32) -> Usage {
    Usage {
        cpu_seconds: cpu_seconds_with_children(pid),
        memory_peak_bytes: memory_peak_bytes(pid),
    }
}

fn cpu_seconds_with_children(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14 to 17.
    let mut ticks = 0.0;
    for field in fields.get(11..15)? {
        ticks += field.parse::<f64>().ok()?;
    }
    Some(ticks / clock_ticks()?)
}

fn memory_peak_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn clock_ticks() -> Option<f64> {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map(|t| t as f64)
}

/// Why a process that was sent SIGINT may not have acted on it, as `/proc/<pid>/status`
/// shows: stopped, stuck in an uninterruptible wait, or ignoring the signal. `None` when
/// nothing there explains it (Python code that catches KeyboardInterrupt, C code that does
/// not return to the interpreter).
pub fn why_unresponsive(pid: u32) -> Option<&'static str> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    unresponsive_cause(&status)
}

fn unresponsive_cause(status: &str) -> Option<&'static str> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    match field("State")?.chars().next()? {
        'T' | 't' => return Some("the worker was stopped"),
        'D' => return Some("the worker was stuck in an uninterruptible wait in the kernel"),
        _ => {}
    }
    let ignored = u64::from_str_radix(field("SigIgn")?, 16).ok()?;
    let sigint = 1u64 << (Signal::SIGINT as u64 - 1);
    (ignored & sigint != 0).then_some("the code set SIGINT to be ignored")
}

/// SIGINT to one process (not its group).
pub fn interrupt(pid: u32) {
    if pid != 0 {
        let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGINT);
    }
}

/// `pidfd_open(2)`.
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments; on success it returns a new
    // descriptor that nothing else owns.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// "exit code 3" or "signal 11 (SIGSEGV)".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(sig) = status.signal() {
        describe_signal(sig)
    } else {
        status.to_string()
    }
}

/// The wait status of a zombie, from the last field of `/proc/<pid>/stat` (`exit_code`).
fn zombie_wait_status(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3, the state: only a zombie's exit_code is final.
    if fields.first() != Some(&"Z") {
        return None;
    }
    fields.last()?.parse().ok()
}

/// "exit code 3" or "signal 11 (SIGSEGV)", from a raw wait status.
fn describe_wait_status(status: i32) -> String {
    if status & 0x7f == 0 {
        format!("exit code {}", (status >> 8) & 0xff)
    } else {
        describe_signal(status & 0x7f)
    }
}

fn describe_signal(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => format!("signal {sig} ({})", s.as_str()),
        Err(_) => format!("signal {sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_of_an_unanswered_interrupt_is_read_from_status() {
        let status = |state: &str, ignored: &str| {
            format!(
                "Name:\tpython\nState:\t{state}\nSigBlk:\t0000000000000000\nSigIgn:\t{ignored}\n"
            )
        };
        assert_eq!(
            unresponsive_cause(&status("R (running)", "0000000001001000")),
            None
        );
        assert_eq!(
            unresponsive_cause(&status("R (running)", "0000000001001002")),
            Some("the code set SIGINT to be ignored")
        );
        assert_eq!(
            unresponsive_cause(&status("T (stopped)", "0000000000000000")),
            Some("the worker was stopped")
        );
        assert_eq!(
            unresponsive_cause(&status("D (disk sleep)", "0000000000000000")),
            Some("the worker was stuck in an uninterruptible wait in the kernel")
        );
    }
}
