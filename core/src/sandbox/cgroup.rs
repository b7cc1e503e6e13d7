//! Per-session cgroups: a process limit and a memory limit that hold for everything a session
//! starts, however it detaches, and one way to end all of it at once.
//!
//! Machines differ: cgroup v2 alone, v1 alone, or both (v1 controllers beside a v2 hierarchy
//! with none, as on this project's CI machine). For each controller the server uses v2 when v2
//! offers it, else v1's hierarchy of that controller; a v2 hierarchy, even one without
//! controllers, gives `cgroup.kill`. The server's directories are made under its own cgroup in
//! each hierarchy (`…/replpool-<pid>/<session>`), so an operator's limits on the server still
//! hold for its workers. Where nothing is writable, sessions run without (the rlimits still
//! hold) and the start says so.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// What a session's cgroup limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupLimits {
    pub processes: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// Where each controller lives, found once at start.
pub struct Cgroups {
    /// The server's directory in the v2 hierarchy, if there is one.
    v2: Option<PathBuf>,
    /// The server's directories in the v1 hierarchies used (pids, memory).
    v1_pids: Option<PathBuf>,
    v1_memory: Option<PathBuf>,
    v2_pids: bool,
    v2_memory: bool,
    limits: CgroupLimits,
    /// Directories whose processes were still dying when their session ended.
    leftovers: Arc<Mutex<Vec<PathBuf>>>,
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
    leftovers: Arc<Mutex<Vec<PathBuf>>>,
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
        let (mut v2_pids, mut v2_memory) = (false, false);
        if let Some(dir) = &v2 {
            // What the server's own cgroup hands down; enabling more would need its parent.
            let available =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            for (controller, flag) in [("pids", &mut v2_pids), ("memory", &mut v2_memory)] {
                *flag = available.split_whitespace().any(|c| c == controller)
                    && write(
                        &dir.join("cgroup.subtree_control"),
                        &format!("+{controller}"),
                    )
                    .is_ok();
            }
        }
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
                .and_then(|m| own_dir(m, &m.controllers.join(",")))
        };
        let v1_pids = if v2_pids { None } else { v1("pids") };
        let v1_memory = if v2_memory { None } else { v1("memory") };
        if v2.is_none() && v1_pids.is_none() && v1_memory.is_none() {
            return None;
        }
        Some(Cgroups {
            v2,
            v1_pids,
            v1_memory,
            v2_pids,
            v2_memory,
            limits,
            leftovers: Arc::default(),
        })
    }

    /// What is in use, for the start-up log.
    pub fn describe(&self) -> String {
        let where_ = |v2: bool, v1: &Option<PathBuf>| match (v2, v1) {
            (true, _) => "v2",
            (false, Some(_)) => "v1",
            _ => "none",
        };
        format!(
            "pids: {}, memory: {}, kill: {}",
            where_(self.v2_pids, &self.v1_pids),
            where_(self.v2_memory, &self.v1_memory),
            if self.v2.is_some() {
                "cgroup.kill"
            } else {
                "signals"
            }
        )
    }

    /// The server's own directory in each hierarchy used: everything of its sessions is below.
    pub fn dirs(&self) -> Vec<PathBuf> {
        [&self.v2, &self.v1_pids, &self.v1_memory]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Whether sessions get a process limit from a cgroup.
    pub fn limits_processes(&self) -> bool {
        self.v2_pids || self.v1_pids.is_some()
    }

    /// A cgroup for one session, with the limits set.
    pub fn session(&self, name: &str) -> std::io::Result<SessionCgroup> {
        self.remove_leftovers();
        let mut group = SessionCgroup {
            dirs: Vec::new(),
            v2: None,
            pids: None,
            memory: None,
            leftovers: Arc::clone(&self.leftovers),
        };
        if let Some(base) = &self.v2 {
            let dir = make(base, name)?;
            group.dirs.push(dir.clone());
            if self.v2_pids {
                group.pids = Some(dir.clone());
            }
            if self.v2_memory {
                group.memory = Some((dir.clone(), true));
            }
            group.v2 = Some(dir);
        }
        if let Some(base) = &self.v1_pids {
            let dir = make(base, name)?;
            group.dirs.push(dir.clone());
            group.pids = Some(dir);
        }
        if let Some(base) = &self.v1_memory {
            let dir = make(base, name)?;
            group.dirs.push(dir.clone());
            group.memory = Some((dir, false));
        }
        if let (Some(dir), Some(max)) = (&group.pids, self.limits.processes) {
            write(&dir.join("pids.max"), &max.to_string())?;
        }
        if let (Some((dir, v2)), Some(bytes)) = (&group.memory, self.limits.memory_bytes) {
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
        Ok(group)
    }

    fn remove_leftovers(&self) {
        self.leftovers
            .lock()
            .retain(|dir| std::fs::remove_dir(dir).is_err_and(|e| e.kind() != ErrorKind::NotFound));
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Sessions were ended first; what is left is dying. Give it a moment, then let go.
        for _ in 0..100 {
            self.remove_leftovers();
            if self.leftovers.lock().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for dir in [&self.v2, &self.v1_pids, &self.v1_memory]
            .into_iter()
            .flatten()
        {
            if let Err(e) = remove_tree(dir) {
                tracing::warn!("cannot remove cgroup {}: {e}", dir.display());
            }
        }
    }
}

impl SessionCgroup {
    /// Moves a process (a worker about to run the session's code) into the session's cgroup.
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Ends every process of the session.
    pub fn kill(&self) {
        if let Some(dir) = &self.v2
            && write(&dir.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        // Signal what is there until nothing is; the pids limit bounds a fork race.
        for dir in &self.dirs {
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
    }

    pub fn counters(&self) -> Counters {
        let forks_refused = self
            .pids
            .as_ref()
            .and_then(|dir| read_key(&dir.join("pids.events"), "max"))
            .unwrap_or(0);
        let oom_kills = self
            .memory
            .as_ref()
            .and_then(|(dir, v2)| {
                let file = if *v2 {
                    "memory.events"
                } else {
                    "memory.oom_control"
                };
                read_key(&dir.join(file), "oom_kill")
            })
            .unwrap_or(0);
        Counters {
            forks_refused,
            oom_kills,
        }
    }
}

impl Drop for SessionCgroup {
    fn drop(&mut self) {
        self.kill();
        for dir in &self.dirs {
            if std::fs::remove_dir(dir).is_err() {
                self.leftovers.lock().push(dir.clone());
            }
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
    let group = SessionCgroup {
        dirs: vec![dir.to_owned()],
        v2: dir.join("cgroup.kill").exists().then(|| dir.to_owned()),
        pids: None,
        memory: None,
        leftovers: Arc::default(),
    };
    group.kill();
    let dirs = std::mem::take(&mut { group }.dirs);
    let mut last = Ok(());
    for _ in 0..100 {
        last = std::fs::remove_dir(&dirs[0]);
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
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
