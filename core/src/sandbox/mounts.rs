//! The server's own mount namespace, and a filesystem per session in it.
//!
//! A session's files live on a tmpfs of its own, sized to its disk quota: the kernel then
//! refuses a write past the quota in the cell itself (`ENOSPC`), however the code writes, and
//! the usage is one `statvfs`, which no `chmod 0` on a subdirectory can hide.
//!
//! Those mounts must not appear on the machine, nor outlive the server however it ends
//! (`kill -9` included). So the server makes a mount namespace of its own first thing
//! ([`enter_private_namespace`], before any thread starts: `unshare(CLONE_NEWNS)` refuses a
//! threaded caller) into which the machine's later mounts still propagate (it is a slave of
//! the machine's) but from which none of its own leak; it ends with its last process.
//!
//! Workers live in mount namespaces of their own as well (copies made when the template or a
//! worker started: `worker.py`'s `enter_namespaces` and `private_tmp`), made before the
//! sessions they will serve exist. For a session's tmpfs to appear in them, the sessions
//! directory is made a shared mount ([`share`]) before any worker starts: their copies follow
//! it as slaves, so a tmpfs mounted below it later shows up in every one of them.

use std::ffi::CStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

static PRIVATE: AtomicBool = AtomicBool::new(false);

/// Moves the calling process (which must have one thread) into a mount namespace of its own.
/// Needs root (CAP_SYS_ADMIN); where it fails, sessions' quotas are measured, not enforced.
pub fn enter_private_namespace() -> std::io::Result<()> {
    // unshare(CLONE_NEWNS) succeeds beside other threads but moves only the caller: the
    // others would go on mounting (and measuring) in the machine's namespace.
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads > 1 {
        return Err(std::io::Error::other(format!(
            "the process has {threads} threads already; a mount namespace is entered before any starts"
        )));
    }
    unshare(CloneFlags::CLONE_NEWNS)?;
    make_root_slave()?;
    PRIVATE.store(true, Ordering::Release);
    Ok(())
}

/// Whether this process entered a mount namespace of its own: only then does it mount.
pub fn in_private_namespace() -> bool {
    PRIVATE.load(Ordering::Acquire)
}

/// Makes `dir` a shared mount (a bind mount of itself), so that what is mounted below it
/// later propagates into the mount namespaces copied from this one.
pub fn share(dir: &Path) -> std::io::Result<()> {
    mount(
        Some(dir),
        dir,
        None::<&CStr>,
        MsFlags::MS_BIND,
        None::<&CStr>,
    )?;
    mount(
        None::<&CStr>,
        dir,
        None::<&CStr>,
        MsFlags::MS_SHARED,
        None::<&CStr>,
    )?;
    Ok(())
}

/// A tmpfs of `size_bytes` at `dir`, owned by `uid:gid`, mode 0700. Its inodes are bounded
/// too (one per 4 KiB of quota, at least 4096): an empty file costs no bytes, but it costs
/// kernel memory.
pub fn mount_tmpfs(dir: &Path, size_bytes: u64, uid: u32, gid: u32) -> std::io::Result<()> {
    let inodes = (size_bytes / 4096).max(4096);
    let options = format!("size={size_bytes},nr_inodes={inodes},mode=0700,uid={uid},gid={gid}");
    mount(
        Some(c"tmpfs"),
        dir,
        Some(c"tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )?;
    Ok(())
}

/// Unmounts `dir` (lazily: a worker that is still dying may hold it for a moment).
pub fn unmount(dir: &Path) -> std::io::Result<()> {
    umount2(dir, MntFlags::MNT_DETACH)?;
    Ok(())
}

/// Makes every mount of the calling process's (new) mount namespace a slave: nothing mounted
/// here reaches the namespace it was copied from, while mounts made there still come in.
/// (Workers do the same for themselves, in `worker.py`.)
fn make_root_slave() -> nix::Result<()> {
    mount(
        None::<&CStr>,
        c"/",
        None::<&CStr>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&CStr>,
    )
}
