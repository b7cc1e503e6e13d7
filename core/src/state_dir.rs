//! The server's state directory (the worker script, the session directories).
//!
//! Made at start in the temporary directory and removed at a clean exit. A server killed
//! with SIGKILL (or a machine that lost power) cannot remove its own, and it holds every
//! session's files: so each server holds a lock on a file in its directory for as long as it
//! lives (an `flock`, which the kernel drops with the process however it ends), and a server
//! that starts removes the directories whose lock it can take.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

const PREFIX: &str = "replpool-";
/// The lock file; it holds the server's pid (for people and tests looking for a server's
/// directory).
pub const LOCK_FILE: &str = "server.lock";

pub struct StateDir {
    dir: tempfile::TempDir,
    _lock: Flock<File>,
}

impl StateDir {
    /// A fresh directory, locked.
    pub fn create() -> std::io::Result<StateDir> {
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir()?;
        // Locked under another name and renamed into place, so that no other server ever
        // sees the lock file unlocked and takes the directory for a dead server's.
        let staging = dir.path().join(".server.lock.new");
        let file = File::create(&staging)?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| std::io::Error::from(errno))?;
        writeln!(lock, "{}", std::process::id())?;
        std::fs::rename(&staging, dir.path().join(LOCK_FILE))?;
        Ok(StateDir { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The state directories in the temporary directory whose server is gone: their lock can be
/// taken. Directories without a lock file (of a server still starting, or of an older one)
/// are left alone.
pub fn abandoned() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .map(|e| e.path())
        .filter(|dir| {
            let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
                return false;
            };
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
        })
        .collect()
}

/// Removes what dead servers left, in the background (it can be many sessions' files).
pub fn remove_abandoned() {
    let dirs = abandoned();
    if dirs.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        for dir in dirs {
            tracing::info!("removing a dead server's state directory {}", dir.display());
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        }
    });
}
