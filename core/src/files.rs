//! A session's working directory, as the files API sees it: paths that cannot escape it,
//! only regular files, size limits, and listing.
//!
//! User code runs in the same directory and may swap any part of it for a symlink, a FIFO or
//! another directory at any moment, while a request is being served. So no path is checked
//! and then used: every operation opens the session directory once and resolves the path
//! *beneath that descriptor* (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV`, or one `O_NOFOLLOW` component at a time where the kernel lacks it), then
//! acts on what it opened: `fstat` of the opened descriptor decides what it is, data is read
//! and written through it, and renames and unlinks happen inside a directory descriptor it
//! holds. Files are opened `O_NONBLOCK`, so a FIFO is refused before it can block a thread.
//! Everything runs on a blocking thread as the session's user ([`AsUser`]), and at most
//! [`CONCURRENT_OPS`] operations of one session at once, so one session's calls cannot take
//! the threads every other session needs.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use serde::Serialize;

use crate::sandbox::Credentials;

/// Files-API operations of one session that may run at once; more wait (see [`BUSY_WAIT`]).
pub const CONCURRENT_OPS: usize = 4;
/// How long an operation waits for its turn before it is refused as busy.
const BUSY_WAIT: Duration = Duration::from_secs(10);
/// Directory visits one recursive delete may make (each directory is visited once more per
/// subdirectory it holds).
const MAX_DELETE_VISITS: usize = 1_000_000;
/// The longest name of one path component (NAME_MAX).
const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("invalid path `{path}`: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("no file `{0}`")]
    NotFound(String),
    #[error("`{0}` is a directory")]
    IsADirectory(String),
    #[error("`{0}` is not a regular file (a FIFO, socket or device is never read or written)")]
    NotARegularFile(String),
    #[error("the file is {size} bytes; the limit is {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("the session's files would take {total} bytes; the limit is {max}")]
    QuotaExceeded { total: u64, max: u64 },
    #[error("the session already has {0} file operations running; try again")]
    Busy(usize),
    #[error("the session's user may not change `{path}`: {why}")]
    NotPermitted { path: String, why: &'static str },
    #[error("file i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<Errno> for FileError {
    fn from(e: Errno) -> Self {
        FileError::Io(e.into())
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    /// Relative to the session directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub modified: String,
}

/// A listing: the regular files found, at most `files.max_list_entries` of them.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileListing {
    pub files: Vec<FileInfo>,
    /// More files exist than were listed (the cap was reached, or a directory was too deep
    /// to name).
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    pub max_bytes: u64,
    pub max_total_bytes: u64,
    /// Entries a listing returns at most.
    pub max_list_entries: usize,
}

/// The files of one session. Every operation runs on a blocking thread as the session's user.
#[derive(Debug, Clone)]
pub struct SessionFiles {
    root: PathBuf,
    limits: FileLimits,
    user: Option<Credentials>,
    /// The directory is a filesystem of its own sized to the quota (see
    /// [`crate::session_dir`]): its usage is one `statvfs`, and the kernel enforces it.
    own_fs: bool,
    /// Turns for this session's operations (shared by every `SessionFiles` of the session).
    turns: Arc<tokio::sync::Semaphore>,
}

impl SessionFiles {
    /// `user`: who the session's code runs as (`None`: the server's own user).
    pub fn new(
        root: &Path,
        limits: FileLimits,
        user: Option<Credentials>,
        own_fs: bool,
        turns: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        SessionFiles {
            root: root.to_owned(),
            limits,
            user,
            own_fs,
            turns,
        }
    }

    /// The turns a session's file operations share.
    pub fn turns() -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(CONCURRENT_OPS))
    }

    /// Writes (or replaces) a regular file, creating its parent directories.
    pub async fn put(&self, path: &str, data: bytes::Bytes) -> Result<(), FileError> {
        let path = path.to_owned();
        self.blocking(move |files| files.put_now(&path, &data))
            .await
    }

    /// A regular file's bytes.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, FileError> {
        let path = path.to_owned();
        self.blocking(move |files| files.get_now(&path)).await
    }

    /// Removes a file, or a directory with everything in it (a symlink itself, never what it
    /// points to).
    pub async fn delete(&self, path: &str) -> Result<(), FileError> {
        let path = path.to_owned();
        self.blocking(move |files| files.delete_now(&path)).await
    }

    /// Regular files under the directory, recursively, sorted by path. Symlinks are not
    /// followed; directories the session's user cannot read are skipped.
    pub async fn list(&self) -> Result<FileListing, FileError> {
        self.blocking(|files| files.list_now()).await
    }

    /// Bytes taken by the session's files.
    pub async fn usage(&self) -> Result<u64, FileError> {
        if self.own_fs {
            // One statvfs of a tmpfs: no I/O, no thread needed.
            return Ok(self.fs_usage()?);
        }
        self.blocking(|files| files.usage_now()).await
    }

    /// Bytes taken by the session's files where that is one `statvfs` (the directory is a
    /// filesystem of its own); `None` elsewhere, where only a walk could tell.
    pub fn filesystem_usage(&self) -> Option<u64> {
        self.own_fs.then(|| self.fs_usage().ok()).flatten()
    }

    /// The quota the session's files must stay under.
    pub fn max_total_bytes(&self) -> u64 {
        self.limits.max_total_bytes
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&SessionFiles) -> Result<T, FileError> + Send + 'static,
    ) -> Result<T, FileError> {
        let turn = tokio::time::timeout(BUSY_WAIT, Arc::clone(&self.turns).acquire_owned())
            .await
            .map_err(|_| FileError::Busy(CONCURRENT_OPS))?
            .map_err(|_| FileError::Busy(CONCURRENT_OPS))?;
        let files = self.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let _as_user = AsUser::assume(files.user);
            op(&files)
        })
        .await
        .map_err(|e| FileError::Io(std::io::Error::other(e)))?
    }

    /// Copies `source` (a tree of the server's own, which the session's user may not be able
    /// to read) into a new directory `dest` of the session (made with its parents; whatever
    /// is there first is removed), as the session's user: each source file is opened as the
    /// server, each destination made beneath the session directory's descriptor as the user,
    /// so code that swaps a part of `dest` for a link meanwhile makes the copy fail, never
    /// write elsewhere. `bytes`: what the copy adds, checked against the quota first where
    /// the kernel does not enforce it.
    ///
    /// `source` is kept (not removed) until the copy is over, even when the caller stopped
    /// waiting; a copy that fails or is `stopped` removes what it made of `dest` itself, so
    /// nothing half-copied stays behind a caller that went away.
    pub async fn import_dir<S: AsRef<Path> + Send + 'static>(
        &self,
        source: S,
        dest: &str,
        bytes: u64,
        stopped: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<(), FileError> {
        let turn = tokio::time::timeout(BUSY_WAIT, Arc::clone(&self.turns).acquire_owned())
            .await
            .map_err(|_| FileError::Busy(CONCURRENT_OPS))?
            .map_err(|_| FileError::Busy(CONCURRENT_OPS))?;
        let files = self.clone();
        let dest = dest.to_owned();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let copied = files.import_now(source.as_ref(), &dest, bytes, &stopped);
            if copied.is_err() {
                let _as_user = AsUser::assume(files.user);
                let _ = files.delete_now(&dest);
            }
            copied
        })
        .await
        .map_err(|e| FileError::Io(std::io::Error::other(e)))?
    }

    /// Removes the entries of directory `dir` whose names start with `prefix`, but `keep`
    /// (as the session's user, beneath its directory). No directory there: nothing to do.
    pub async fn remove_entries(
        &self,
        dir: &str,
        prefix: &str,
        keep: Option<&str>,
    ) -> Result<(), FileError> {
        let (dir, prefix, keep) = (dir.to_owned(), prefix.to_owned(), keep.map(str::to_owned));
        self.blocking(move |files| {
            let names = lexical(&dir)?;
            let root = files.open_root()?;
            let entries = match read_dir_beneath(&root, &names) {
                Ok((_, entries)) => entries,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for (name, _) in entries {
                let wanted = name
                    .to_str()
                    .is_some_and(|n| n.starts_with(prefix.as_str()) && keep.as_deref() != Some(n));
                if wanted {
                    let mut path = names.clone();
                    path.push(name);
                    remove_tree(&root, &path)?;
                }
            }
            Ok(())
        })
        .await
    }

    fn import_now(
        &self,
        source: &Path,
        dest: &str,
        bytes: u64,
        stopped: &std::sync::atomic::AtomicBool,
    ) -> Result<(), FileError> {
        let names = lexical(dest)?;
        let Some((name, parents)) = names.split_last() else {
            return Err(invalid(dest, "names the session directory itself"));
        };
        let quota = |total| FileError::QuotaExceeded {
            total,
            max: self.limits.max_total_bytes,
        };
        let top = {
            let _as_user = AsUser::assume(self.user);
            let root = self.open_root()?;
            if !self.own_fs {
                let total = self.usage_beneath(&root)?.saturating_add(bytes);
                if total > self.limits.max_total_bytes {
                    return Err(quota(total));
                }
            }
            let parent = make_parents(&root, parents, dest)?;
            if stat_at(&parent, name).is_ok() {
                remove_tree(&root, &names)?;
            }
            nix::sys::stat::mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o755))?;
            nix::fcntl::openat(
                &parent,
                name.as_os_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?
        };
        let out_of_space = |e: FileError| match e {
            FileError::Io(io) if is_out_of_space(&io) => quota(bytes),
            other => other,
        };
        // Pending directories: the source path and the destination's open descriptor.
        let mut stack = vec![(source.to_owned(), top)];
        while let Some((from, into)) = stack.pop() {
            for entry in std::fs::read_dir(&from)? {
                if stopped.load(Ordering::Acquire) {
                    return Err(FileError::Io(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "the copy was stopped: its caller went away",
                    )));
                }
                let entry = entry?;
                let kind = entry.file_type()?;
                let entry_name = entry.file_name();
                if kind.is_dir() {
                    let _as_user = AsUser::assume(self.user);
                    nix::sys::stat::mkdirat(
                        &into,
                        entry_name.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                    .map_err(|e| out_of_space(e.into()))?;
                    let dir = nix::fcntl::openat(
                        &into,
                        entry_name.as_os_str(),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )?;
                    stack.push((entry.path(), dir));
                } else if kind.is_file() {
                    let mut input = std::fs::File::open(entry.path())?;
                    let executable =
                        std::os::unix::fs::PermissionsExt::mode(&input.metadata()?.permissions())
                            & 0o111
                            != 0;
                    let fd = {
                        let _as_user = AsUser::assume(self.user);
                        nix::fcntl::openat(
                            &into,
                            entry_name.as_os_str(),
                            OFlag::O_WRONLY
                                | OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(if executable { 0o755 } else { 0o644 }),
                        )
                        .map_err(|e| out_of_space(e.into()))?
                    };
                    std::io::copy(&mut input, &mut std::fs::File::from(fd))
                        .map_err(|e| out_of_space(e.into()))?;
                }
                // A link or anything else in a staged install is left out: wheels hold files.
            }
        }
        Ok(())
    }

    /// The session directory, opened once per operation: everything is resolved beneath it.
    fn open_root(&self) -> Result<OwnedFd, FileError> {
        Ok(nix::fcntl::open(
            &self.root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?)
    }

    fn fs_usage(&self) -> nix::Result<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.root)?;
        let used_blocks = stat.blocks().saturating_sub(stat.blocks_free());
        Ok(used_blocks as u64 * stat.fragment_size() as u64)
    }

    fn put_now(&self, path: &str, data: &[u8]) -> Result<(), FileError> {
        let size = data.len() as u64;
        if size > self.limits.max_bytes {
            return Err(FileError::TooLarge {
                size,
                max: self.limits.max_bytes,
            });
        }
        let names = lexical(path)?;
        let Some((name, parents)) = names.split_last() else {
            return Err(invalid(path, "names the session directory itself"));
        };
        let root = self.open_root()?;
        let parent = make_parents(&root, parents, path).map_err(|e| match e {
            FileError::Io(io) if is_out_of_space(&io) => FileError::QuotaExceeded {
                total: self.usage_beneath(&root).unwrap_or(0) + size,
                max: self.limits.max_total_bytes,
            },
            other => other,
        })?;
        let replaced = match stat_at(&parent, name) {
            Ok(stat) if is_dir(&stat) => return Err(FileError::IsADirectory(path.to_owned())),
            Ok(stat) => stat.st_blocks as u64 * 512,
            Err(_) => 0,
        };
        let total = self.usage_beneath(&root)?.saturating_sub(replaced) + size;
        let quota = || FileError::QuotaExceeded {
            total,
            max: self.limits.max_total_bytes,
        };
        if total > self.limits.max_total_bytes {
            return Err(quota());
        }
        // Written beside the target under a short name of our own, then renamed over it: a
        // reader never sees half a file, and whatever is at the target (a link, a FIFO) is
        // replaced, never followed or opened.
        let temp = format!(".replpool-upload-{:016x}", rand::random::<u64>());
        let fd = nix::fcntl::openat(
            &parent,
            temp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        let written = std::fs::File::from(fd).write_all(data);
        let renamed = written.map_err(FileError::from).and_then(|()| {
            nix::fcntl::renameat2(
                &parent,
                temp.as_str(),
                &parent,
                name.as_os_str(),
                RenameFlags::empty(),
            )
            .map_err(FileError::from)
        });
        if let Err(e) = renamed {
            let _ = nix::unistd::unlinkat(&parent, temp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(match e {
                FileError::Io(io) if is_out_of_space(&io) => quota(),
                FileError::Io(io) if io.raw_os_error() == Some(Errno::EISDIR as i32) => {
                    FileError::IsADirectory(path.to_owned())
                }
                other => other,
            });
        }
        Ok(())
    }

    fn get_now(&self, path: &str) -> Result<Vec<u8>, FileError> {
        let names = lexical(path)?;
        let root = self.open_root()?;
        let fd = open_beneath(&root, &names, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
            .map_err(|e| self.refusal(e, path, &names))?;
        let stat = nix::sys::stat::fstat(&fd)?;
        if is_dir(&stat) {
            return Err(FileError::IsADirectory(path.to_owned()));
        }
        if !is_regular(&stat) {
            return Err(FileError::NotARegularFile(path.to_owned()));
        }
        // No more than the size it had when opened: code appending meanwhile cannot make the
        // server read without end.
        let size = stat.st_size.max(0) as u64;
        let mut data = Vec::with_capacity(size.min(self.limits.max_total_bytes) as usize);
        std::fs::File::from(fd).take(size).read_to_end(&mut data)?;
        Ok(data)
    }

    fn delete_now(&self, path: &str) -> Result<(), FileError> {
        let names = lexical(path)?;
        let Some((name, parents)) = names.split_last() else {
            return Err(invalid(path, "names the session directory itself"));
        };
        let root = self.open_root()?;
        let parent = self.open_dir(&root, parents, path)?;
        let stat = stat_at(&parent, name).map_err(|_| FileError::NotFound(path.to_owned()))?;
        let removed = if is_dir(&stat) {
            remove_tree(&root, &names)
        } else {
            nix::unistd::unlinkat(&parent, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
        };
        // The server deletes as the session's user: what code closed to itself (`chmod 0`)
        // it cannot delete through the API either, and that is the caller's to hear.
        removed.map_err(|e| match e {
            Errno::ENAMETOOLONG => invalid(path, "it holds directories nested too deep to name"),
            Errno::EACCES | Errno::EPERM => FileError::NotPermitted {
                path: path.to_owned(),
                why: "a directory on the way is closed to it (its permissions)",
            },
            Errno::EBUSY => FileError::NotPermitted {
                path: path.to_owned(),
                why: "it kept changing while it was being deleted",
            },
            other => other.into(),
        })
    }

    fn list_now(&self) -> Result<FileListing, FileError> {
        let root = self.open_root()?;
        let max = self.limits.max_list_entries;
        let mut files = Vec::new();
        let mut full = false;
        let too_deep = walk_files(&root, |names, stat| {
            if files.len() == max {
                full = true;
                return ControlFlow::Break(());
            }
            files.push(FileInfo {
                path: join(names),
                size: stat.st_size.max(0) as u64,
                modified: modified(stat),
            });
            ControlFlow::Continue(())
        });
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(FileListing {
            files,
            truncated: full || too_deep,
        })
    }

    /// Bytes of regular files (or the filesystem's usage, when it is the session's own).
    fn usage_beneath(&self, root: &OwnedFd) -> Result<u64, FileError> {
        if self.own_fs {
            return Ok(self.fs_usage()?);
        }
        let mut total = 0u64;
        walk_files(root, |_, stat| {
            total += stat.st_size.max(0) as u64;
            ControlFlow::Continue(())
        });
        Ok(total)
    }

    fn usage_now(&self) -> Result<u64, FileError> {
        let root = self.open_root()?;
        self.usage_beneath(&root)
    }

    /// The directory `names` beneath the root (the root itself when empty).
    fn open_dir(
        &self,
        root: &OwnedFd,
        names: &[OsString],
        path: &str,
    ) -> Result<OwnedFd, FileError> {
        open_beneath(root, names, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| self.refusal(e, path, names))
    }

    /// What a failed resolution tells the caller. A link on the way is refused; whether as
    /// "leads out" or "no such file" depends on whether the session's user could reach its
    /// target (the kernel decides, as that user), so that a link to another session's file
    /// says no more than that there is nothing there. Only the error depends on this look:
    /// nothing is read through the link.
    fn refusal(&self, e: Errno, path: &str, names: &[OsString]) -> FileError {
        match e {
            Errno::ELOOP | Errno::EXDEV => {
                let lexical: PathBuf = names.iter().fold(self.root.clone(), |p, n| p.join(n));
                match std::fs::canonicalize(lexical) {
                    Ok(_) => invalid(
                        path,
                        "a symlink on the way leads out of the session directory",
                    ),
                    Err(_) => FileError::NotFound(path.to_owned()),
                }
            }
            Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES => FileError::NotFound(path.to_owned()),
            Errno::ENXIO => FileError::NotARegularFile(path.to_owned()),
            other => other.into(),
        }
    }
}

fn invalid(path: &str, why: &'static str) -> FileError {
    FileError::InvalidPath {
        path: path.to_owned(),
        why,
    }
}

/// The path's names, refusing anything that is not plain relative names of at most
/// NAME_MAX bytes.
fn lexical(path: &str) -> Result<Vec<OsString>, FileError> {
    if path.is_empty() {
        return Err(invalid(path, "empty"));
    }
    if path.contains('\0') {
        return Err(invalid(path, "contains a NUL byte"));
    }
    let mut names = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) if name.len() > NAME_MAX => {
                return Err(invalid(path, "a name is longer than 255 bytes"));
            }
            Component::Normal(name) => names.push(name.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid(path, "`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(path, "absolute paths are not allowed"));
            }
        }
    }
    if names.is_empty() {
        return Err(invalid(path, "names the session directory itself"));
    }
    Ok(names)
}

/// Set once `openat2` turned out to be missing (kernels before 5.6, some seccomp profiles).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `names` beneath `root` (no names: the root itself) without following any symlink or
/// leaving the directory's filesystem: `openat2` where the kernel has it, else one
/// `O_NOFOLLOW` name at a time (each name is a plain name, never `..`, so no step can climb
/// out).
fn open_beneath(root: &OwnedFd, names: &[OsString], flags: OFlag) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if names.is_empty() {
        return nix::fcntl::openat(root, ".", flags, Mode::empty());
    }
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let path: PathBuf = names.iter().collect();
        let how = OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
        match nix::fcntl::openat2(root, &path, how) {
            Err(Errno::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            done => return done,
        }
    }
    let Some((last, parents)) = names.split_last() else {
        return Err(Errno::ENOENT); // handled above
    };
    let mut dir = root.try_clone().map_err(|_| Errno::EMFILE)?;
    for name in parents {
        dir = nix::fcntl::openat(
            &dir,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
    }
    nix::fcntl::openat(&dir, last.as_os_str(), flags, Mode::empty())
}

/// The parent directories of an upload, made where missing, one name at a time beneath the
/// root; a link or a file where a directory should be is refused.
fn make_parents(root: &OwnedFd, names: &[OsString], path: &str) -> Result<OwnedFd, FileError> {
    let mut dir = root.try_clone()?;
    for name in names {
        match nix::sys::stat::mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = nix::fcntl::openat(
            &dir,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOTDIR | Errno::ELOOP => {
                invalid(path, "a parent is a link or a file, not a directory")
            }
            other => other.into(),
        })?;
    }
    Ok(dir)
}

/// Entries of a directory beneath the root.
type Entries = Vec<(OsString, FileStat)>;

/// A directory beneath the root, opened, and its entries (each with its own `lstat`), `.` and
/// `..` left out; the directory stays open for the caller to act in.
fn read_dir_beneath(root: &OwnedFd, names: &[OsString]) -> nix::Result<(nix::dir::Dir, Entries)> {
    let fd = open_beneath(root, names, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let names: Vec<OsString> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|entry| OsStr::from_bytes(entry.file_name().to_bytes()).to_owned())
        .filter(|name| name != "." && name != "..")
        .collect();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        // Gone meanwhile (code deletes while we list): not listed.
        if let Ok(stat) = stat_at(&dir.as_fd(), &name) {
            entries.push((name, stat));
        }
    }
    Ok((dir, entries))
}

/// Calls `visit` with each regular file beneath the root (its names from the root, its
/// `lstat`), depth first, until it breaks. A directory that cannot be opened — code closed it
/// to its own user (`chmod 0`), or swapped it for a link meanwhile — is passed over, and
/// nothing fails; returns whether one was nested too deep to name.
fn walk_files(
    root: &OwnedFd,
    mut visit: impl FnMut(&[OsString], &FileStat) -> ControlFlow<()>,
) -> bool {
    let mut too_deep = false;
    let mut pending: Vec<Vec<OsString>> = vec![Vec::new()];
    while let Some(dir) = pending.pop() {
        let entries = match read_dir_beneath(root, &dir) {
            Ok((_, entries)) => entries,
            Err(Errno::ENAMETOOLONG) => {
                too_deep = true;
                continue;
            }
            Err(_) => continue,
        };
        for (name, stat) in entries {
            let mut path = dir.clone();
            path.push(name);
            if is_dir(&stat) {
                pending.push(path);
            } else if is_regular(&stat) && visit(&path, &stat).is_break() {
                return too_deep;
            }
        }
    }
    too_deep
}

/// Removes a directory beneath the root with everything in it, deepest first. Pending
/// directories are kept as names from the root, not as open descriptors, so that a wide or
/// deep tree cannot run the server out of descriptors.
fn remove_tree(root: &OwnedFd, top: &[OsString]) -> nix::Result<()> {
    let mut stack: Vec<Vec<OsString>> = vec![top.to_vec()];
    // Code may keep adding to the tree while it is deleted; the work is bounded all the same.
    let mut visits = 0usize;
    while let Some(dir) = stack.last().cloned() {
        visits += 1;
        if visits > MAX_DELETE_VISITS {
            return Err(Errno::EBUSY);
        }
        let (fd, entries) = read_dir_beneath(root, &dir)?;
        let mut subdirs = Vec::new();
        for (name, stat) in entries {
            if is_dir(&stat) {
                let mut path = dir.clone();
                path.push(name);
                subdirs.push(path);
            } else {
                match nix::unistd::unlinkat(&fd, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if subdirs.is_empty() {
            stack.pop();
            let Some((name, parents)) = dir.split_last() else {
                return Ok(());
            };
            let parent = open_beneath(root, parents, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            match nix::unistd::unlinkat(&parent, name.as_os_str(), UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        } else {
            stack.extend(subdirs);
        }
    }
    Ok(())
}

fn stat_at<Fd: AsFd>(dir: &Fd, name: &OsStr) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_regular(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == Errno::ENOSPC as i32 || code == Errno::EDQUOT as i32)
}

fn join(names: &[OsString]) -> String {
    names
        .iter()
        .map(|n| n.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn modified(stat: &FileStat) -> String {
    let time = SystemTime::UNIX_EPOCH
        + Duration::new(
            stat.st_mtime.max(0) as u64,
            stat.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        );
    humantime::format_rfc3339_millis(time).to_string()
}

/// The calling thread's file-system identity (`setfsuid`/`setfsgid`) made the session's user
/// until dropped. Resolution beneath the directory already keeps every path inside it; as the
/// session's user, the kernel also refuses whatever that user could not touch itself.
struct AsUser(Option<(nix::unistd::Uid, nix::unistd::Gid)>);

impl AsUser {
    fn assume(user: Option<Credentials>) -> AsUser {
        AsUser(user.map(|c| {
            let gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(c.gid));
            let uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(c.uid));
            (uid, gid)
        }))
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.0 {
            nix::unistd::setfsuid(uid);
            nix::unistd::setfsgid(gid);
        }
    }
}

/// A content type from the file name (what a browser or client expects for common data files).
pub fn content_type(path: &str) -> &'static str {
    let extension = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => "text/csv",
        Some("tsv") => "text/tab-separated-values",
        Some("txt" | "log" | "py" | "md") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("xml") => "application/xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("pdf") => "application/pdf",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some("zip") => "application/zip",
        Some("ipynb") => "application/x-ipynb+json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FileLimits {
        FileLimits {
            max_bytes: 100,
            max_total_bytes: 150,
            max_list_entries: 2,
        }
    }

    fn files_in(root: &Path) -> SessionFiles {
        SessionFiles::new(root, limits(), None, false, SessionFiles::turns())
    }

    #[test]
    fn paths_that_escape_are_refused() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "", ".", "./."] {
            assert!(
                matches!(lexical(bad), Err(FileError::InvalidPath { .. })),
                "{bad}"
            );
        }
        let long = "x".repeat(256);
        assert!(matches!(
            lexical(&format!("a/{long}")),
            Err(FileError::InvalidPath { .. })
        ));
        assert_eq!(lexical("a/./b.csv").expect("plain names"), ["a", "b.csv"]);
        assert!(lexical(&"x".repeat(255)).is_ok());
    }

    #[tokio::test]
    async fn links_fifos_and_files_where_directories_belong_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let files = files_in(&root);
        std::os::unix::fs::symlink("/etc", root.join("etc")).expect("symlink");
        assert!(matches!(
            files.get("etc/passwd").await,
            Err(FileError::InvalidPath { .. })
        ));
        assert!(matches!(
            files.put("etc/x", bytes::Bytes::from_static(b"x")).await,
            Err(FileError::InvalidPath { .. })
        ));
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).expect("fifo");
        assert!(matches!(
            files.get("fifo").await,
            Err(FileError::NotARegularFile(_))
        ));
        std::fs::write(root.join("plain"), b"x").expect("file");
        assert!(matches!(
            files.put("plain/x", bytes::Bytes::from_static(b"x")).await,
            Err(FileError::InvalidPath { .. })
        ));
        assert!(matches!(
            files.get("sub").await,
            Err(FileError::NotFound(_))
        ));
        // The link is deleted, not what it points to.
        files.delete("etc").await.expect("delete the link");
        assert!(Path::new("/etc/passwd").exists());
    }

    #[tokio::test]
    async fn sizes_are_limited_and_listings_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let files = files_in(&root);
        let bytes = |b: u8, n: usize| bytes::Bytes::from(vec![b; n]);
        assert!(matches!(
            files.put("big", bytes(0, 101)).await,
            Err(FileError::TooLarge { .. })
        ));
        files.put("a", bytes(0, 100)).await.expect("fits");
        files
            .put("a", bytes(0, 90))
            .await
            .expect("a replacement counts once");
        assert!(matches!(
            files.put("b", bytes(0, 61)).await,
            Err(FileError::QuotaExceeded { .. })
        ));
        files.put("sub/b", bytes(1, 60)).await.expect("fits");
        let listing = files.list().await.expect("list");
        let listed: Vec<String> = listing.files.into_iter().map(|f| f.path).collect();
        assert_eq!(listed, ["a", "sub/b"]);
        assert!(!listing.truncated);
        assert_eq!(files.get("sub/b").await.expect("read"), vec![1; 60]);
        files.delete("a").await.expect("delete");
        files.put("sub/deeper/c", bytes(2, 1)).await.expect("fits");
        files.put("d", bytes(2, 1)).await.expect("fits");
        files.put("e", bytes(2, 1)).await.expect("fits");
        assert!(files.list().await.expect("list").truncated, "capped at 2");
        files.delete("sub").await.expect("delete a tree");
        assert!(matches!(
            files.get("sub/b").await,
            Err(FileError::NotFound(_))
        ));
        assert!(!root.join("sub").exists());
    }
}
