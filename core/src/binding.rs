//! Binding workers to sessions ahead of need.
//!
//! Nothing of what binds a worker to a session depends on *which* session it will be: the
//! session's directory is named at random, its cgroup too, its uid is the next free one, and
//! the id and owner are only the manager's bookkeeping. So the warm pool makes the whole place
//! of a session — directory (and its quota filesystem), uid lease, cgroup with its limits — puts
//! a worker into it and attaches it, off the request's path; creating a session then only
//! records an id (see [`crate::pool::WarmPool::take_bound`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Error;
use crate::sandbox::{Sandbox, SessionSandbox};
use crate::session_dir::SessionDir;
use crate::worker::{Worker, WorkerError};

/// Makes sessions' places: a directory under the sessions directory and a share of the
/// sandbox.
pub struct Places {
    sessions_dir: PathBuf,
    sandbox: Arc<Sandbox>,
    /// The disk quota, when each session directory gets a tmpfs of that size.
    quota_fs_bytes: Option<u64>,
}

/// Where a session lives: its directory and its share of the sandbox (user, cgroup). Dropping
/// it ends the cgroup's processes and removes both.
pub struct SessionPlace {
    pub dir: SessionDir,
    pub sandbox: SessionSandbox,
}

/// A worker attached to a place of its own, in its cgroup, as its user, waiting for a session.
pub struct BoundWorker {
    pub worker: Worker,
    pub place: SessionPlace,
}

impl Places {
    pub fn new(
        sessions_dir: PathBuf,
        sandbox: Arc<Sandbox>,
        quota_fs_bytes: Option<u64>,
    ) -> Places {
        Places {
            sessions_dir,
            sandbox,
            quota_fs_bytes,
        }
    }

    /// A new place (the directory is removed again if the sandbox has no share to give).
    /// Blocks: directories, a mount, cgroup files; see [`Places::make_off_thread`].
    pub fn make(&self) -> Result<SessionPlace, Error> {
        // Named at random, never by the id: mount tables (`/proc/*/mountinfo`) show every
        // session directory's path to every process, and an id is a capability.
        let name = format!("s{:032x}", rand::random::<u128>());
        let mut dir = SessionDir::create(&self.sessions_dir, &name)
            .map_err(Error::io("cannot create the session directory"))?;
        let sandbox = self.sandbox.session(dir.path())?;
        if let (Some(bytes), Some(owner)) = (self.quota_fs_bytes, sandbox.credentials()) {
            dir.mount_quota(bytes, owner)
                .map_err(Error::io("cannot mount the session's filesystem"))?;
        }
        Ok(SessionPlace { dir, sandbox })
    }

    /// [`Places::make`] on a blocking thread.
    pub async fn make_off_thread(self: &Arc<Self>) -> Result<SessionPlace, Error> {
        let places = Arc::clone(self);
        tokio::task::spawn_blocking(move || places.make())
            .await
            .map_err(|e| Error::Internal(format!("the session's place was not made: {e}")))?
    }
}

impl BoundWorker {
    /// Moves `worker` into the place's cgroup and attaches it there (its directory, its user):
    /// from then on it is that place's for good. A worker that fails is killed.
    pub async fn bind(mut worker: Worker, place: SessionPlace) -> Result<BoundWorker, WorkerError> {
        match worker.attach(place.dir.path(), &place.sandbox).await {
            Ok(()) => Ok(BoundWorker { worker, place }),
            Err(e) => {
                worker.kill(&format!("it could not be bound to a session's place: {e}"));
                Err(e)
            }
        }
    }

    /// Ends the worker, and with the place everything in its cgroup, its directory and mount.
    pub fn kill(self, why: &str) {
        self.worker.kill(why);
        drop(self.place);
    }
}
