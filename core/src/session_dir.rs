//! A session's working directory: where its code runs and its files live. Made for the
//! session, owned by its user, on a filesystem of its own sized to the disk quota where the
//! server can mount one (see [`crate::sandbox::mounts`]), and removed when the session ends.

use std::path::{Path, PathBuf};

use crate::sandbox::{Credentials, mounts};

#[derive(Debug)]
pub struct SessionDir {
    path: PathBuf,
    /// A tmpfs of the session's own is mounted on it.
    own_fs: bool,
}

impl SessionDir {
    /// Makes `parent/name`. The sandbox gives it to the session's user afterwards.
    pub fn create(parent: &Path, name: &str) -> std::io::Result<SessionDir> {
        let path = parent.join(name);
        std::fs::create_dir(&path)?;
        Ok(SessionDir {
            path,
            own_fs: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory is a filesystem of its own, whose size is the quota.
    pub fn own_fs(&self) -> bool {
        self.own_fs
    }

    /// Puts a tmpfs of `quota_bytes` on the directory, owned by `owner`, mode 0700: from then
    /// on the kernel enforces the quota.
    pub fn mount_quota(&mut self, quota_bytes: u64, owner: Credentials) -> std::io::Result<()> {
        mounts::mount_tmpfs(&self.path, quota_bytes, owner.uid, owner.gid)?;
        self.own_fs = true;
        Ok(())
    }
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        // What code left there can be up to the quota (freed by the unmount of its own
        // filesystem, or removed file by file), so both leave the async threads when there
        // are any.
        let path = std::mem::take(&mut self.path);
        let own_fs = self.own_fs;
        let remove = move || {
            // EINVAL: no longer a mount point. At shutdown the sessions directory's own mount
            // can be detached (with every mount beneath it) before a pooled place's removal
            // runs on its blocking thread.
            if own_fs
                && let Err(e) = mounts::unmount(&path)
                && e.raw_os_error() != Some(nix::libc::EINVAL)
            {
                tracing::warn!("cannot unmount {}: {e}", path.display());
            }
            if let Err(e) = std::fs::remove_dir_all(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}
