//! What a worker process sees of the machine, set up between fork and exec of every process
//! the server starts for Python (the template, direct and cold workers; forked workers inherit
//! the template's).
//!
//! - `sandbox.network = "none"`: a network namespace of its own, with only loopback, up. The
//!   template makes one, and every worker forked from it shares it (one namespace, not one per
//!   worker: making and tearing down a namespace costs milliseconds of kernel work).
//! - When workers run as another user: a mount namespace in which the directories they need
//!   (the Python installation, the venv, the server's state directory) can be reached even
//!   where an ancestor is closed to that user, as with a pyenv under a 0700 `/root`. Such an
//!   ancestor is covered with an empty tmpfs holding only the needed children, bind-mounted
//!   from the real ones; whatever else it held stays out of sight.
//!
//! Everything is computed before the fork; the closure that runs after it only makes system
//! calls (it must not allocate: the server has threads, and one of them may hold the
//! allocator's lock at the moment of the fork).

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;

use super::uids::Credentials;

/// Children of one covered directory that can be kept visible (more is refused at start).
const MAX_KEPT: usize = 16;

#[derive(Debug, Default)]
pub struct Isolation {
    network: bool,
    covers: Vec<Cover>,
}

/// A directory the workers' user cannot pass through, and the children of it they need.
#[derive(Debug)]
struct Cover {
    dir: CString,
    keep: Vec<CString>,
}

impl Isolation {
    /// `needed`: directories the workers must reach; `user`: who they run as (`None`: the
    /// server's own user, who can reach them already).
    pub fn new(
        network_none: bool,
        needed: &[PathBuf],
        user: Option<Credentials>,
    ) -> Result<Isolation, String> {
        let mut covers: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
        if let Some(user) = user {
            for path in needed {
                let Ok(path) = std::fs::canonicalize(path) else {
                    continue;
                };
                let mut ancestor = PathBuf::from("/");
                for component in path.components().skip(1) {
                    let child = ancestor.join(component);
                    if !searchable(&ancestor, user) {
                        match covers.iter_mut().find(|(dir, _)| *dir == ancestor) {
                            Some((_, keep)) if keep.contains(&child) => {}
                            Some((_, keep)) => keep.push(child.clone()),
                            None => covers.push((ancestor.clone(), vec![child.clone()])),
                        }
                    }
                    ancestor = child;
                }
            }
        }
        // Deepest first: a cover's bind mounts are recursive, so they carry the deeper ones.
        covers.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.components().count()));
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{p:?} holds a NUL byte"))
        };
        let covers = covers
            .into_iter()
            .map(|(dir, keep)| {
                if keep.len() > MAX_KEPT {
                    return Err(format!(
                        "{} is closed to the workers' user and {} of its children are needed (at most {MAX_KEPT})",
                        dir.display(),
                        keep.len()
                    ));
                }
                Ok(Cover {
                    dir: c(&dir)?,
                    keep: keep.iter().map(|k| c(k)).collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        for cover in &covers {
            tracing::info!(
                "workers' view: {:?} is closed to uid {}; they see only {:?} in it",
                cover.dir,
                user.map_or(0, |u| u.uid),
                cover.keep
            );
        }
        Ok(Isolation {
            network: network_none,
            covers,
        })
    }

    /// In the child, between fork and exec. Only system calls; no allocation.
    pub fn apply(&self) -> std::io::Result<()> {
        let mut flags = CloneFlags::empty();
        if self.network {
            flags |= CloneFlags::CLONE_NEWNET;
        }
        if !self.covers.is_empty() {
            flags |= CloneFlags::CLONE_NEWNS;
        }
        if flags.is_empty() {
            return Ok(());
        }
        unshare(flags)?;
        if self.network {
            loopback_up()?;
        }
        if !self.covers.is_empty() {
            // Nothing done here may reach the machine's (or the server's) mount table; what
            // the server mounts later (a session's tmpfs) still comes in: a slave.
            super::mounts::make_root_slave()?;
            for cover in &self.covers {
                cover.apply()?;
            }
        }
        Ok(())
    }
}

impl Cover {
    fn apply(&self) -> std::io::Result<()> {
        let mut held = [-1; MAX_KEPT];
        for (slot, child) in held.iter_mut().zip(&self.keep) {
            let fd = open(
                child.as_c_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            *slot = std::os::fd::IntoRawFd::into_raw_fd(fd);
        }
        mount(
            Some(c"tmpfs"),
            self.dir.as_c_str(),
            Some(c"tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(c"mode=0755,size=4m"),
        )?;
        for (fd, child) in held.iter().zip(&self.keep) {
            nix::unistd::mkdir(child.as_c_str(), Mode::from_bits_truncate(0o755))?;
            let mut buffer = [0u8; 32];
            mount(
                Some(fd_path(*fd, &mut buffer)),
                child.as_c_str(),
                None::<&CStr>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&CStr>,
            )?;
            nix::unistd::close(*fd)?;
        }
        Ok(())
    }
}

/// `/proc/self/fd/<fd>` written into `buffer`, without allocating.
fn fd_path(fd: i32, buffer: &mut [u8; 32]) -> &CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buffer[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buffer[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buffer[PREFIX.len() + len] = 0;
    CStr::from_bytes_until_nul(&buffer[..]).unwrap_or(c"/")
}

/// A new network namespace has `lo`, down. Bring it up (SIOCSIFFLAGS), so that code that
/// talks to itself over 127.0.0.1 still works.
fn loopback_up() -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: plain system calls on a socket this function owns, with a zeroed `ifreq`.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        let mut result = libc::ioctl(socket, libc::SIOCGIFFLAGS as _, &mut request);
        if result == 0 {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            result = libc::ioctl(socket, libc::SIOCSIFFLAGS as _, &request);
        }
        let error = std::io::Error::last_os_error();
        libc::close(socket);
        if result != 0 {
            return Err(error);
        }
    }
    Ok(())
}

/// Whether `user` may pass through `dir` (its search bit). The user is never the owner of
/// the installation's directories; the group and the others' bits decide.
fn searchable(dir: &Path, user: Credentials) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        return true; // nothing to cover
    };
    let mode = meta.mode();
    if meta.uid() == user.uid {
        return mode & 0o100 != 0;
    }
    if meta.gid() == user.gid {
        return mode & 0o010 != 0;
    }
    mode & 0o001 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths() {
        let mut buffer = [0u8; 32];
        assert_eq!(fd_path(7, &mut buffer), c"/proc/self/fd/7");
        assert_eq!(fd_path(1234, &mut buffer), c"/proc/self/fd/1234");
        assert_eq!(fd_path(0, &mut buffer), c"/proc/self/fd/0");
    }

    #[test]
    fn closed_ancestors_are_covered_keeping_only_what_is_needed() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let closed = root.path().join("closed");
        let needed = closed.join("python").join("lib");
        std::fs::create_dir_all(&needed).expect("dirs");
        std::fs::create_dir(closed.join("secret")).expect("secret");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let user = Credentials {
            uid: 4_000_000,
            gid: 4_000_000,
        };
        let isolation = Isolation::new(false, &[needed], Some(user)).expect("plan");
        let closed = std::fs::canonicalize(&closed).expect("canonical");
        let covered: Vec<_> = isolation.covers.iter().map(|c| c.dir.clone()).collect();
        assert!(covered.contains(&CString::new(closed.as_os_str().as_bytes()).expect("c")));
        let cover = isolation
            .covers
            .iter()
            .find(|c| c.dir.as_bytes() == closed.as_os_str().as_bytes())
            .expect("cover");
        assert_eq!(cover.keep.len(), 1);
        assert!(cover.keep[0].to_bytes().ends_with(b"/closed/python"));
    }
}
