//! Orphans: processes that user code detached from its worker.
//!
//! Killing a worker's process group ends everything it started, except what left the group
//! (`setsid()`, `start_new_session=True`, a daemonising double fork). The server makes itself a
//! *child subreaper*, so such processes are re-parented to it rather than to init when their
//! worker dies; a sweep then kills and reaps every child of the server that it did not spawn
//! itself. So nothing user code starts outlives its session by more than a sweep interval.
//!
//! The registry of the server's own children is process-wide, like the subreaper flag. Every
//! spawn goes through [`ChildRegistry::spawn`] (or [`ChildRegistry::output`], which uses it),
//! which holds the registry lock across the fork, so a sweep can never mistake a child that is
//! being born for an orphan. It is the only way in: the core's `clippy.toml` forbids
//! `Command::spawn`, `output` and `status` everywhere else, std's and tokio's alike. Workers forked by the template
//! become the server's children by re-parenting, a moment before the server learns their pid
//! and [adopts](ChildRegistry::adopt) them; so a sweep ends an unknown child only once it has
//! been unknown for [`ORPHAN_GRACE`].

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// How often orphans are looked for (also right after a worker is dropped).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// How long an unknown child is left alone before it counts as an orphan.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ChildRegistry {
    /// Set once this process is a child subreaper (and sweeps).
    subreaper: std::sync::atomic::AtomicBool,
    ours: Mutex<HashSet<u32>>,
    /// Unknown children, and when a sweep first saw them.
    unknown: Mutex<HashMap<u32, Instant>>,
    swept: tokio::sync::Notify,
}

/// The registry of this process.
pub fn children() -> &'static ChildRegistry {
    static REGISTRY: OnceLock<ChildRegistry> = OnceLock::new();
    REGISTRY.get_or_init(ChildRegistry::default)
}

/// A command the registry can start: std's (a process the server waits for at once, or one
/// that outlives it) or tokio's (workers, the template).
pub trait Spawnable {
    type Child;
    fn start(&mut self) -> std::io::Result<Self::Child>;
    fn pid(child: &Self::Child) -> Option<u32>;
}

impl Spawnable for std::process::Command {
    type Child = std::process::Child;

    #[allow(clippy::disallowed_methods)] // the one place it is allowed
    fn start(&mut self) -> std::io::Result<Self::Child> {
        self.spawn()
    }

    fn pid(child: &Self::Child) -> Option<u32> {
        Some(child.id())
    }
}

impl Spawnable for tokio::process::Command {
    type Child = tokio::process::Child;

    #[allow(clippy::disallowed_methods)] // the one place it is allowed
    fn start(&mut self) -> std::io::Result<Self::Child> {
        self.spawn()
    }

    fn pid(child: &Self::Child) -> Option<u32> {
        child.id()
    }
}

impl ChildRegistry {
    /// Spawns `command` and records the child's pid, atomically with respect to sweeps. The
    /// owner of the child calls [`forget`](Self::forget) once it has ended it.
    pub fn spawn<C: Spawnable>(&self, command: &mut C) -> std::io::Result<C::Child> {
        let mut ours = self.ours.lock();
        let child = command.start()?;
        if let Some(pid) = C::pid(&child) {
            ours.insert(pid);
        }
        Ok(child)
    }

    /// Runs `command` to its end (no stdin; stdout and stderr captured), on the calling
    /// thread, and forgets it once reaped.
    pub fn output(
        &self,
        command: &mut std::process::Command,
    ) -> std::io::Result<std::process::Output> {
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = self.spawn(command)?;
        let pid = child.id();
        let output = child.wait_with_output();
        self.forget(pid);
        output
    }

    /// Whether orphans of this process's descendants come back to it (and forked workers can
    /// be its children).
    pub fn is_subreaper(&self) -> bool {
        self.subreaper.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records a child that became ours by re-parenting (a forked worker).
    pub fn adopt(&self, pid: u32) {
        self.ours.lock().insert(pid);
    }

    /// The child is being ended by its owner; from now on a sweep may reap it.
    pub fn forget(&self, pid: u32) {
        self.ours.lock().remove(&pid);
        self.swept.notify_one();
    }

    /// Kills and reaps every child of this process that is not one of ours. Returns how many.
    pub fn sweep(&self) -> usize {
        let ours = self.ours.lock();
        let mut unknown = self.unknown.lock();
        let now = Instant::now();
        let children = our_children();
        unknown.retain(|pid, _| children.contains(pid) && !ours.contains(pid));
        let mut ended = 0;
        for &pid in &children {
            if ours.contains(&pid) {
                continue;
            }
            let first_seen = *unknown.entry(pid).or_insert(now);
            if now.duration_since(first_seen) < ORPHAN_GRACE {
                continue;
            }
            let target = Pid::from_raw(pid as i32);
            let _ = signal::kill(target, Signal::SIGKILL);
            // A zombie is reaped now; one still dying is reaped by the next sweep.
            if let Ok(status) = waitpid(target, Some(WaitPidFlag::WNOHANG))
                && status != nix::sys::wait::WaitStatus::StillAlive
            {
                ended += 1;
            }
        }
        ended
    }

    /// Makes this process the subreaper of its descendants and sweeps until `shutdown`.
    pub fn start_sweeping(&'static self, shutdown: CancellationToken) {
        match nix::sys::prctl::set_child_subreaper(true) {
            Ok(()) => self
                .subreaper
                .store(true, std::sync::atomic::Ordering::Release),
            Err(e) => tracing::warn!(
                "cannot become a child subreaper ({e}); detached user processes may outlive their sessions"
            ),
        }
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
                    _ = self.swept.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
                let ended = tokio::task::spawn_blocking(move || self.sweep())
                    .await
                    .unwrap_or(0);
                if ended > 0 {
                    tracing::info!(ended, "killed processes left behind by ended workers");
                }
            }
        });
    }
}

/// This process's children: what the kernel lists in `/proc/self/task/<tid>/children` for
/// each of its threads (a child's parent is the thread that forked it, and an orphan handed to
/// a subreaper goes to one of its threads). Only our own processes are read, not every pid on
/// the machine. Where the kernel has no such files (built without `CONFIG_PROC_CHILDREN`),
/// every `/proc/<pid>/stat` is read instead.
fn our_children() -> HashSet<u32> {
    let me = std::process::id();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return children_of(me).into_iter().collect();
    };
    let mut children = HashSet::new();
    for task in tasks.flatten() {
        let mut path = task.path();
        path.push("children");
        match std::fs::read_to_string(&path) {
            Ok(list) => children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            ),
            // The thread ended since the directory was listed: it has no children left.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && task.path().exists() => {
                return children_of(me).into_iter().collect();
            }
            Err(_) => {}
        }
    }
    children
}

/// Pids whose parent is `parent`, from `/proc/<pid>/stat` (every process on the machine).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The ppid field of `/proc/<pid>/stat`: the fourth field, counted after the `(comm)` that may
/// itself contain spaces and parentheses.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a test's own child, waited for here
    fn lists_a_child_of_another_thread() {
        // Forked from a thread other than the one that asks: the children of every thread
        // are the process's.
        let child = std::thread::spawn(|| {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep")
        })
        .join()
        .expect("spawning thread");
        let pid = child.id();
        let listed = our_children().contains(&pid);
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed, "child {pid} was not listed");
    }

    #[test]
    fn reads_the_parent_of_this_process() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw() as u32));
    }
}
