//! Per-session cgroups: a process limit, a memory limit and a CPU share and ceiling that hold
//! for everything a session starts, however it detaches; the CPU time it used; and one way to
//! end all of it at once.
//!
//! Machines differ: cgroup v2 alone, v1 alone, or both (v1 controllers beside a v2 hierarchy
//! with none, as on this project's CI machine). For each controller the server uses v2 when v2
//! offers it, else v1's hierarchy of that controller; a v2 hierarchy, even one without
//! controllers, gives `cgroup.kill` and `cpu.stat`. The server's directories are made under its
//! own cgroup in each hierarchy (`…/replpool-<pid>/s<random>`), so an operator's limits on the
//! server still hold for its workers. Where nothing is writable, sessions run without (the
//! rlimits still hold) and the start says so.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::SessionLimits;

/// What a session's cgroup limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupLimits {
    /// What each session's cgroup holds its processes to (`[limits]`' per-session view).
    pub session: SessionLimits,
    /// Most sessions at once: what the server's own CPU weight is made of.
    pub sessions: usize,
}

/// The CFS period the CPU quota is given over.
const CPU_PERIOD_US: u64 = 100_000;
/// Every session's `cpu.weight` (v2) and `cpu.shares` (v1): the same for all, so that under
/// contention each session gets an equal share, however many threads it runs.
const CPU_WEIGHT_V2: u64 = 100;
const CPU_SHARES_V1: u64 = 1024;
const CPU_WEIGHT_V2_MAX: u64 = 10_000;
const CPU_SHARES_V1_MAX: u64 = 262_144;
/// How long the remover keeps trying to remove an ended session's directory.
const REMOVE_FOR: Duration = Duration::from_secs(30);
const REMOVE_RETRY: Duration = Duration::from_millis(20);

/// Where one controller lives: the server's directory in the hierarchy that offers it.
#[derive(Debug, Clone)]
struct Controller {
    base: PathBuf,
    v2: bool,
}

/// Where each controller lives, found once at start.
pub struct Cgroups {
    /// The server's directory in the v2 hierarchy, if there is one.
    v2: Option<PathBuf>,
    pids: Option<Controller>,
    memory: Option<Controller>,
    cpu: Option<Controller>,
    /// Where the CPU time a session used is counted: v2's `cpu.stat` (present in every v2
    /// group, controller or not), else v1's `cpuacct.usage`.
    usage: Option<Controller>,
    limits: CgroupLimits,
    /// Hands ended sessions' directories to the thread that removes them.
    remover: mpsc::Sender<PathBuf>,
}

/// How many times the limits refused something, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub forks_refused: u64,
    pub oom_kills: u64,
}

/// One session's cgroup (a directory in each hierarchy used).
pub struct SessionCgroup {
    dirs: Vec<PathBuf>,
    /// The v2 directory, whose `cgroup.kill` ends everything in it.
    v2: Option<PathBuf>,
    pids: Option<PathBuf>,
    memory: Option<(PathBuf, bool)>,
    usage: Option<(PathBuf, bool)>,
    /// `pids.events` and the memory controller's OOM counter, open for the session's life:
    /// they are read after every execution.
    forks_refused: Option<EventFile>,
    oom_kills: Option<EventFile>,
    remover: Option<mpsc::Sender<PathBuf>>,
}

/// One counter of a flat-keyed cgroup file that is read often, kept open. Reading an open
/// cgroup file from offset 0 makes the kernel render it afresh, so each look is one `pread`
/// into a buffer on the stack, not an `openat`, a `read`, a `close` and a `String`.
struct EventFile {
    file: std::fs::File,
    key: &'static str,
}

impl EventFile {
    /// The counter files are a few short lines (`memory.events` is the longest, ~80 bytes).
    const MAX_LEN: usize = 512;

    fn open(path: &Path, key: &'static str) -> Option<EventFile> {
        match std::fs::File::open(path) {
            Ok(file) => Some(EventFile { file, key }),
            Err(e) => {
                tracing::warn!("cannot open {}: {e}", path.display());
                None
            }
        }
    }

    fn read(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; Self::MAX_LEN];
        let len = self.file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(buf.get(..len)?).ok()?;
        find_key(text, self.key)
    }
}

impl Cgroups {
    /// Makes the server's directories. `None` when the machine offers no writable hierarchy.
    pub fn setup(limits: CgroupLimits) -> Option<Cgroups> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = parse_mounts(&mountinfo);
        let name = format!("replpool-{}", std::process::id());
        let own_dir = |mount: &Mount, key: &str| -> Option<PathBuf> {
            let path = membership.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                (controllers == key).then(|| path.to_owned())
            })?;
            let relative = path.strip_prefix(&mount.root).unwrap_or(&path);
            let parent = mount.point.join(relative.trim_start_matches('/'));
            clean_stale(&parent);
            let dir = parent.join(&name);
            match std::fs::create_dir(&dir) {
                Ok(()) => Some(dir),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Some(dir),
                Err(e) => {
                    tracing::debug!("cannot use cgroup hierarchy {}: {e}", parent.display());
                    None
                }
            }
        };
        let v2 = mounts.iter().find(|m| m.v2).and_then(|m| own_dir(m, ""));
        let on_v2 = |controller: &str| -> Option<Controller> {
            let dir = v2.as_ref()?;
            // What the server's own cgroup hands down; enabling more would need its parent.
            let available =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            (available.split_whitespace().any(|c| c == controller)
                && write(
                    &dir.join("cgroup.subtree_control"),
                    &format!("+{controller}"),
                )
                .is_ok())
            .then(|| Controller {
                base: dir.clone(),
                v2: true,
            })
        };
        let (v2_pids, v2_memory, v2_cpu) = (on_v2("pids"), on_v2("memory"), on_v2("cpu"));
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
                .and_then(|m| own_dir(m, &m.controllers.join(",")))
                .map(|base| Controller { base, v2: false })
        };
        let pids = v2_pids.or_else(|| v1("pids"));
        let memory = v2_memory.or_else(|| v1("memory"));
        let cpu = v2_cpu.or_else(|| v1("cpu"));
        if let Some(cpu) = &cpu {
            set_server_weight(cpu, limits.sessions);
        }
        let usage = match &v2 {
            Some(base) if base.join("cpu.stat").exists() => Some(Controller {
                base: base.clone(),
                v2: true,
            }),
            _ => v1("cpuacct"),
        };
        if v2.is_none() && pids.is_none() && memory.is_none() && cpu.is_none() && usage.is_none() {
            return None;
        }
        Some(Cgroups {
            v2,
            pids,
            memory,
            cpu,
            usage,
            limits,
            remover: spawn_remover(),
        })
    }

    /// What is in use, for the start-up log.
    pub fn describe(&self) -> String {
        let where_ = |c: &Option<Controller>| match c {
            Some(Controller { v2: true, .. }) => "v2",
            Some(Controller { v2: false, .. }) => "v1",
            None => "none",
        };
        format!(
            "pids: {}, memory: {}, cpu: {}, cpu usage: {}, kill: {}",
            where_(&self.pids),
            where_(&self.memory),
            where_(&self.cpu),
            where_(&self.usage),
            if self.v2.is_some() {
                "cgroup.kill"
            } else {
                "signals"
            }
        )
    }

    /// Which cgroup versions the session cgroups use: `v2`, `v1` or `v1+v2`.
    pub fn version(&self) -> &'static str {
        let controllers = [&self.pids, &self.memory, &self.cpu, &self.usage];
        let v1 = controllers
            .iter()
            .any(|c| matches!(c, Some(Controller { v2: false, .. })));
        let v2 = self.v2.is_some()
            || controllers
                .iter()
                .any(|c| matches!(c, Some(Controller { v2: true, .. })));
        match (v1, v2) {
            (true, true) => "v1+v2",
            (true, false) => "v1",
            _ => "v2",
        }
    }

    /// The server's own directory in each hierarchy used: everything of its sessions is below.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let controllers = [&self.pids, &self.memory, &self.cpu, &self.usage];
        let bases = controllers.into_iter().flatten().map(|c| &c.base);
        for dir in self.v2.iter().chain(bases) {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }

    /// Whether sessions get a process limit from a cgroup.
    pub fn limits_processes(&self) -> bool {
        self.pids.is_some()
    }

    /// A cgroup for one session, with the limits set. Its name is random, not the session's
    /// id: any process can read any other's `/proc/<pid>/cgroup`, and an id is a capability.
    pub fn session(&self) -> std::io::Result<SessionCgroup> {
        let name = format!("s{:032x}", rand::random::<u128>());
        let mut group = SessionCgroup {
            dirs: Vec::new(),
            v2: None,
            pids: None,
            memory: None,
            usage: None,
            forks_refused: None,
            oom_kills: None,
            remover: Some(self.remover.clone()),
        };
        // Made one by one, so that a failure part way leaves only what the drop removes.
        for base in self.dirs() {
            group.dirs.push(make(&base, &name)?);
        }
        let dir_of = |c: &Controller| (c.base.join(&name), c.v2);
        group.v2 = self.v2.as_ref().map(|base| base.join(&name));
        group.pids = self.pids.as_ref().map(|c| dir_of(c).0);
        group.memory = self.memory.as_ref().map(dir_of);
        group.usage = self.usage.as_ref().map(dir_of);
        if let (Some(dir), Some(max)) = (&group.pids, self.limits.session.processes) {
            write(&dir.join("pids.max"), &max.to_string())?;
        }
        if let (Some((dir, v2)), Some(bytes)) = (&group.memory, self.limits.session.memory_bytes) {
            let file = if *v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            write(&dir.join(file), &bytes.to_string())?;
            if *v2 {
                // No swap: past the limit the session's processes are killed, not slowed.
                let _ = write(&dir.join("memory.swap.max"), "0");
            }
        }
        group.forks_refused = group
            .pids
            .as_ref()
            .and_then(|dir| EventFile::open(&dir.join("pids.events"), "max"));
        group.oom_kills = group.memory.as_ref().and_then(|(dir, v2)| {
            let file = if *v2 {
                "memory.events"
            } else {
                "memory.oom_control"
            };
            EventFile::open(&dir.join(file), "oom_kill")
        });
        if let Some((dir, v2)) = self.cpu.as_ref().map(dir_of) {
            let quota = self
                .limits
                .session
                .cpus
                .map(|cores| ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000));
            if v2 {
                write(&dir.join("cpu.weight"), &CPU_WEIGHT_V2.to_string())?;
                let max = quota.map_or_else(|| "max".to_owned(), |q| q.to_string());
                write(&dir.join("cpu.max"), &format!("{max} {CPU_PERIOD_US}"))?;
            } else {
                write(&dir.join("cpu.shares"), &CPU_SHARES_V1.to_string())?;
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                let quota = quota.map_or_else(|| "-1".to_owned(), |q| q.to_string());
                write(&dir.join("cpu.cfs_quota_us"), &quota)?;
            }
        }
        Ok(group)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Sessions were ended first; what is left of them is killed and removed with the
        // server's own directories.
        for dir in self.dirs() {
            if let Err(e) = remove_tree(&dir) {
                tracing::warn!("cannot remove cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// The server's own directory weighs as much as `sessions` ordinary processes against its
/// neighbours on the machine. Under it, a session's threads compete with each other only; at
/// the default weight, all sessions together would weigh as much as one process of the host,
/// so a busy host would starve every session (before cgroups, each thread of each session
/// weighed that much by itself). The per-session CPU ceiling bounds what this hands out.
fn set_server_weight(cpu: &Controller, sessions: usize) {
    let sessions = (sessions as u64).max(1);
    let (file, value) = if cpu.v2 {
        (
            "cpu.weight",
            (CPU_WEIGHT_V2 * sessions).min(CPU_WEIGHT_V2_MAX),
        )
    } else {
        (
            "cpu.shares",
            (CPU_SHARES_V1 * sessions).min(CPU_SHARES_V1_MAX),
        )
    };
    if let Err(e) = write(&cpu.base.join(file), &value.to_string()) {
        tracing::warn!("cannot set {}/{file}: {e}", cpu.base.display());
    }
}

/// A thread that removes ended sessions' directories. A directory cannot be removed while
/// processes are in it, and killed processes take a moment to go: retrying sleeps, which no
/// async thread may do, and a session's end must not wait for it.
fn spawn_remover() -> mpsc::Sender<PathBuf> {
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let spawned = std::thread::Builder::new()
        .name("cgroup-remover".into())
        .spawn(move || {
            let mut pending: Vec<(PathBuf, Instant)> = Vec::new();
            loop {
                let next = if pending.is_empty() {
                    rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(REMOVE_RETRY)
                };
                match next {
                    Ok(dir) => pending.push((dir, Instant::now() + REMOVE_FOR)),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The server is ending: its own directories' removal takes the rest.
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                pending.extend(rx.try_iter().map(|dir| (dir, Instant::now() + REMOVE_FOR)));
                pending.retain(|(dir, give_up)| match std::fs::remove_dir(dir) {
                    Ok(()) => false,
                    Err(e) if e.kind() == ErrorKind::NotFound => false,
                    Err(e) if Instant::now() >= *give_up => {
                        tracing::warn!("cannot remove cgroup {}: {e}", dir.display());
                        false
                    }
                    Err(_) => {
                        // A process forked while the others were being killed.
                        signal_members(dir);
                        true
                    }
                });
            }
        });
    if let Err(e) = spawned {
        // Then the senders' directories stay until the server's own are removed.
        tracing::warn!("cannot start the cgroup remover: {e}");
    }
    tx
}

impl SessionCgroup {
    /// The move of `pid` (a worker about to run the session's code) into the session's cgroup, to be made where blocking is allowed: a
    /// migration waits for an RCU grace period (milliseconds), which no async thread may.
    pub fn entry(&self, pid: u32) -> Entry {
        Entry {
            procs: self.dirs.iter().map(|d| d.join("cgroup.procs")).collect(),
            pid,
        }
    }

    /// Ends every process of the session.
    pub fn kill(&self) {
        if let Some(dir) = &self.v2
            && write(&dir.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for dir in &self.dirs {
            signal_members(dir);
        }
    }

    /// CPU time the session's processes have used, seconds, all of them together since the
    /// session began (a replaced worker's included).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let (dir, v2) = self.usage.as_ref()?;
        if *v2 {
            read_key(&dir.join("cpu.stat"), "usage_usec").map(|us| us as f64 / 1e6)
        } else {
            let text = std::fs::read_to_string(dir.join("cpuacct.usage")).ok()?;
            text.trim().parse::<u64>().ok().map(|ns| ns as f64 / 1e9)
        }
    }

    /// The most memory the session's processes held at once, bytes: v2's `memory.peak`
    /// (Linux 5.19 on), v1's `memory.max_usage_in_bytes`.
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        let (dir, v2) = self.memory.as_ref()?;
        let file = if *v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        text.trim().parse().ok()
    }

    pub fn counters(&self) -> Counters {
        let count = |file: &Option<EventFile>| file.as_ref().and_then(EventFile::read).unwrap_or(0);
        Counters {
            forks_refused: count(&self.forks_refused),
            oom_kills: count(&self.oom_kills),
        }
    }
}

impl Drop for SessionCgroup {
    fn drop(&mut self) {
        self.kill();
        let Some(remover) = self.remover.take() else {
            return;
        };
        for dir in self.dirs.drain(..) {
            if let Err(mpsc::SendError(dir)) = remover.send(dir) {
                // No remover: one attempt here, and the server's exit removes the rest.
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// A process's move into a session's cgroup (see [`SessionCgroup::entry`]).
#[derive(Debug, Default)]
pub struct Entry {
    procs: Vec<PathBuf>,
    pid: u32,
}

impl Entry {
    /// Whether there is anything to do (no cgroup: nothing).
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Writes the pid into every hierarchy's `cgroup.procs`. Blocks.
    pub fn run(self) -> std::io::Result<()> {
        for procs in &self.procs {
            write(procs, &self.pid.to_string())?;
        }
        Ok(())
    }
}

/// SIGKILL to every process in a directory, until none is left; the pids limit bounds a
/// fork race.
fn signal_members(dir: &Path) {
    for _ in 0..64 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

struct Mount {
    point: PathBuf,
    root: String,
    v2: bool,
    controllers: Vec<String>,
}

/// The cgroup mounts of `/proc/self/mountinfo`.
fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _source = after.next()?;
            let options = after.next().unwrap_or("");
            let (root, point) = (fields.get(3)?, fields.get(4)?);
            let v2 = fstype == "cgroup2";
            if !v2 && fstype != "cgroup" {
                return None;
            }
            let controllers = options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                .map(str::to_owned)
                .collect();
            Some(Mount {
                point: PathBuf::from(point),
                root: (*root).to_owned(),
                v2,
                controllers,
            })
        })
        .collect()
}

/// Removes what servers killed with SIGKILL left behind: their directories, and whatever
/// still runs in them.
fn clean_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("replpool-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || is_running(pid) {
            continue;
        }
        tracing::info!(
            "ending what a dead server (pid {pid}) left in {}",
            entry.path().display()
        );
        let _ = remove_tree(&entry.path());
    }
}

/// Whether a process exists and has not exited (a zombie has).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Ends every process below `dirs` (a server's own directories) and removes the directories:
/// what a watcher does for a server that died.
pub fn end_all(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(e) = remove_tree(dir)
            && e.kind() != ErrorKind::NotFound
        {
            eprintln!("replpool watcher: cannot remove {}: {e}", dir.display());
        }
    }
}

/// Kills everything in a directory of cgroups and removes them, deepest first.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = remove_tree(&entry.path());
            }
        }
    }
    if !(dir.join("cgroup.kill").exists() && write(&dir.join("cgroup.kill"), "1").is_ok()) {
        signal_members(dir);
    }
    let mut last = Ok(());
    for _ in 0..100 {
        last = std::fs::remove_dir(dir);
        match &last {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    last
}

fn make(base: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = base.join(name);
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

/// `key N` from a flat-keyed cgroup file.
fn read_key(path: &Path, key: &str) -> Option<u64> {
    find_key(&std::fs::read_to_string(path).ok()?, key)
}

fn find_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_file_kept_open_is_read_afresh_each_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("memory.events");
        std::fs::write(&path, "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n").expect("write");
        let file = EventFile::open(&path, "oom_kill").expect("open");
        assert_eq!(file.read(), Some(1));
        std::fs::write(&path, "low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\n").expect("rewrite");
        assert_eq!(file.read(), Some(2), "the same open file, read again");
        let missing = EventFile {
            file: std::fs::File::open(&path).expect("open"),
            key: "nothing",
        };
        assert_eq!(missing.read(), None);
    }

    #[test]
    fn mounts_of_a_hybrid_machine() {
        let info = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                    40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n";
        let mounts = parse_mounts(info);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].controllers, ["memory"]);
        assert!(
            mounts[2].controllers.is_empty(),
            "named hierarchies have no controller"
        );
        assert!(mounts[3].v2);
        assert_eq!(mounts[3].point, Path::new("/sys/fs/cgroup/unified"));
    }
}
