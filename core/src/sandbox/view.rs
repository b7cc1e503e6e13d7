//! The filesystem a worker sees: a minimal root of its own, listed here and built by the
//! worker itself (`worker.py`'s `enter_view`) in its mount namespace, before any import.
//!
//! A worker needs the interpreter and what it loads, not the machine: without a view it
//! could read every world-readable file (`/etc`, `/home/*`, other checkouts, the server's own
//! source), and a server that is not root has no other way to keep sessions out of each
//! other's files. So the root is an empty tmpfs into which only what is listed is bound, each
//! at its own path, read-only unless said otherwise. The list (docs/architecture.md, "Filesystem
//! view"): `/usr` and the library directories (or the links to them), the Python
//! installation's prefixes and `sys.path`, a small `/etc` (with a `passwd` and `group` that
//! name only root, nobody and the workers' users), `/dev/{null,zero,full,random,urandom}`,
//! `/proc`, the server's state directory (read-only: it holds `worker.py`) with the sessions
//! and scratch directories writable, the scripts directory, and `sandbox.expose`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What `enter_view` builds. Paths are absolute and canonical; binds come parents first.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    binds: Vec<Bind>,
    /// `(path, target)`: the merged-/usr links (`/bin -> usr/bin`), `/dev/fd`…
    symlinks: Vec<(String, String)>,
    /// `(path, mode)`: empty directories (mount points for each worker's own tmpfs).
    dirs: Vec<(String, u32)>,
    /// `(path, text)`: files written into the view (`/etc/passwd`, `/etc/group`).
    files: Vec<(String, String)>,
    /// The sessions directory: at attach, a worker covers it, keeping only its own session.
    sessions: String,
    /// Where the worker starts.
    cwd: String,
}

#[derive(Debug, Clone, Serialize)]
struct Bind {
    path: String,
    writable: bool,
}

/// What `/etc` keeps: what Python, the C library (names, time zones, the dynamic linker),
/// SSL, fontconfig and matplotlib read. `/etc/alternatives` because Debian's `/usr/bin/c++`
/// and friends link through it.
const ETC: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "fonts",
    "gai.conf",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "matplotlibrc",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "pki",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
];

/// Top-level directories of the system's programs and libraries (a link on merged-/usr
/// systems, kept as a link).
const SYSTEM: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// What the server knows that the view must hold.
pub struct ViewPlan<'a> {
    /// The Python installation: prefixes, `sys.path`, the interpreter's directories.
    pub python: &'a [PathBuf],
    /// The server's state directory (read-only in the view).
    pub state: &'a Path,
    /// Directories workers write (the sessions and scratch directories).
    pub writable: &'a [PathBuf],
    /// The sessions directory (also in `writable`).
    pub sessions: &'a Path,
    /// More read-only paths: the scripts directory, `sandbox.expose`.
    pub read_only: &'a [PathBuf],
    /// Users the view's `/etc/passwd` names besides root and nobody: `(name, uid, gid)`.
    pub users: &'a [(String, u32, u32)],
    pub cwd: &'a Path,
}

impl View {
    pub fn plan(plan: &ViewPlan) -> Result<View, String> {
        let mut symlinks = Vec::new();
        let mut binds: Vec<(PathBuf, bool)> = Vec::new();
        for name in SYSTEM {
            let path = Path::new("/").join(name);
            match std::fs::read_link(&path) {
                Ok(target) => symlinks.push((text(&path)?, text(&target)?)),
                Err(_) if path.is_dir() => binds.push((path, false)),
                Err(_) => {}
            }
        }
        for name in ETC {
            let path = Path::new("/etc").join(name);
            if path.exists() {
                binds.push((path, false));
            }
        }
        // Debian's interpreter reads /etc/python3.X (sitecustomize).
        if let Ok(entries) = std::fs::read_dir("/etc") {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("python3") {
                    binds.push((entry.path(), false));
                }
            }
        }
        for device in DEVICES {
            let path = Path::new("/dev").join(device);
            if path.exists() {
                binds.push((path, true));
            }
        }
        for (link, target) in [
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
        ] {
            symlinks.push((link.into(), target.into()));
        }
        let canonical = |p: &Path| std::fs::canonicalize(p).ok();
        for path in plan.python.iter().chain(plan.read_only) {
            if let Some(path) = canonical(path) {
                binds.push((path, false));
            }
        }
        binds.extend(canonical(plan.state).map(|p| (p, false)));
        for path in plan.writable {
            binds.extend(canonical(path).map(|p| (p, true)));
        }
        let binds = without_redundant(binds)
            .into_iter()
            .map(|(path, writable)| {
                Ok(Bind {
                    path: text(&path)?,
                    writable,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let dirs = [("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/dev/shm", 0o1777)]
            .into_iter()
            .map(|(p, m)| (p.to_owned(), m))
            .collect();
        let sessions = canonical(plan.sessions)
            .ok_or_else(|| format!("{} does not exist", plan.sessions.display()))?;
        Ok(View {
            binds,
            symlinks,
            dirs,
            files: vec![
                ("/etc/passwd".into(), passwd(plan.users)),
                ("/etc/group".into(), group(plan.users)),
            ],
            sessions: text(&sessions)?,
            cwd: text(plan.cwd)?,
        })
    }

    /// Paths that must exist in the view for the interpreter to start (the probe checks).
    pub fn must_see(&self) -> Vec<String> {
        self.binds
            .iter()
            .filter(|b| !b.path.starts_with("/dev") && !b.path.starts_with("/etc"))
            .map(|b| b.path.clone())
            .collect()
    }

    /// Every path bound into the view, for the log.
    pub fn describe(&self) -> String {
        let mut paths: Vec<String> = self
            .binds
            .iter()
            .map(|b| {
                if b.writable {
                    format!("{} (rw)", b.path)
                } else {
                    b.path.clone()
                }
            })
            .collect();
        paths.extend(self.symlinks.iter().map(|(p, t)| format!("{p} -> {t}")));
        paths.join(", ")
    }
}

fn text(path: &Path) -> Result<String, String> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        format!(
            "{} is not UTF-8: it cannot be put in the workers' view",
            path.display()
        )
    })
}

/// Parents before children; a path inside another bound path is already there, unless it is
/// to be writable inside a read-only one (binding it again would also make its mount point in
/// the bound directory).
fn without_redundant(mut binds: Vec<(PathBuf, bool)>) -> Vec<(PathBuf, bool)> {
    binds.sort_by(|a, b| (a.0.components().count(), &a.0).cmp(&(b.0.components().count(), &b.0)));
    let mut kept: Vec<(PathBuf, bool)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, writable) in binds {
        if !seen.insert(path.clone()) {
            continue;
        }
        // The innermost bound ancestor decides what the path already is.
        let inside = kept
            .iter()
            .filter(|(k, _)| path.starts_with(k))
            .max_by_key(|(k, _)| k.components().count());
        match inside {
            Some((_, inside_writable)) if *inside_writable || !writable => {}
            _ => kept.push((path, writable)),
        }
    }
    kept
}

fn passwd(users: &[(String, u32, u32)]) -> String {
    let mut text = String::from(
        "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    );
    for (name, uid, gid) in users {
        if *uid != 0 && *uid != 65534 {
            text.push_str(&format!(
                "{name}:x:{uid}:{gid}::/nonexistent:/usr/sbin/nologin\n"
            ));
        }
    }
    text
}

fn group(users: &[(String, u32, u32)]) -> String {
    let mut text = String::from("root:x:0:\nnogroup:x:65534:\n");
    let mut gids: BTreeSet<u32> = users.iter().map(|(_, _, g)| *g).collect();
    gids.remove(&0);
    gids.remove(&65534);
    for gid in gids {
        let name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map_or_else(|| format!("g{gid}"), |g| g.name);
        text.push_str(&format!("{name}:x:{gid}:\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_covered_paths_are_dropped() {
        let binds = [
            ("/usr/lib/python3/dist-packages", false),
            ("/usr", false),
            ("/tmp/replpool-x/sessions", true),
            ("/tmp/replpool-x", false),
            ("/tmp/replpool-x/sessions/a", true),
            ("/tmp/replpool-x/sessions/b", false),
            ("/usr", false),
        ]
        .into_iter()
        .map(|(p, w)| (PathBuf::from(p), w))
        .collect();
        let kept: Vec<(String, bool)> = without_redundant(binds)
            .into_iter()
            .map(|(p, w)| (p.display().to_string(), w))
            .collect();
        assert_eq!(
            kept,
            [
                ("/usr".to_owned(), false),
                ("/tmp/replpool-x".to_owned(), false),
                ("/tmp/replpool-x/sessions".to_owned(), true),
            ]
        );
    }

    #[test]
    fn passwd_names_only_root_nobody_and_the_workers() {
        let text = passwd(&[("replpool".into(), 1001, 1001)]);
        let names: Vec<&str> = text.lines().filter_map(|l| l.split(':').next()).collect();
        assert_eq!(names, ["root", "nobody", "replpool"]);
    }
}
