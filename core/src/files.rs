//! A session's working directory, as the files API sees it: paths that cannot escape it,
//! size limits, and listing.
//!
//! User code runs in the same directory and may put anything there, symlinks included; so
//! every path is checked against the directory's canonical form *after* resolving links, and
//! writes never follow a link.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::sandbox::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("invalid path `{path}`: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("no file `{0}`")]
    NotFound(String),
    #[error("`{0}` is a directory")]
    IsADirectory(String),
    #[error("the file is {size} bytes; the limit is {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("the session's files would take {total} bytes; the limit is {max}")]
    QuotaExceeded { total: u64, max: u64 },
    #[error("file i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

/// One entry of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    /// Relative to the session directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub modified: String,
}

#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    pub max_bytes: u64,
    pub max_total_bytes: u64,
}

/// The files of one session. Every operation runs on a blocking thread as the session's user
/// (see [`AsUser`]).
#[derive(Debug, Clone)]
pub struct SessionFiles {
    root: PathBuf,
    limits: FileLimits,
    user: Option<Credentials>,
}

impl SessionFiles {
    /// `user`: who the session's code runs as (`None`: the server's own user).
    pub fn new(root: &Path, limits: FileLimits, user: Option<Credentials>) -> Self {
        SessionFiles {
            root: root.to_owned(),
            limits,
            user,
        }
    }

    /// Writes (or replaces) a file, creating its parent directories.
    pub async fn put(&self, path: &str, data: bytes::Bytes) -> Result<(), FileError> {
        let path = path.to_owned();
        self.blocking(move |files| files.put_now(&path, &data))
            .await
    }

    /// A file's bytes.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, FileError> {
        let path = path.to_owned();
        self.blocking(move |files| files.get_now(&path)).await
    }

    /// Removes a file, or a directory with everything in it.
    pub async fn delete(&self, path: &str) -> Result<(), FileError> {
        let path = path.to_owned();
        self.blocking(move |files| files.delete_now(&path)).await
    }

    /// Every regular file under the directory, recursively, sorted by path. Symlinks are not
    /// followed.
    pub async fn list(&self) -> Result<Vec<FileInfo>, FileError> {
        self.blocking(|files| files.list_now()).await
    }

    /// Bytes taken by the session's regular files.
    pub async fn usage(&self) -> Result<u64, FileError> {
        self.blocking(|files| files.usage_now()).await
    }

    /// The quota the session's files must stay under.
    pub fn max_total_bytes(&self) -> u64 {
        self.limits.max_total_bytes
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&SessionFiles) -> Result<T, FileError> + Send + 'static,
    ) -> Result<T, FileError> {
        let files = self.clone();
        tokio::task::spawn_blocking(move || {
            let _as_user = AsUser::assume(files.user);
            op(&files)
        })
        .await
        .map_err(|e| FileError::Io(std::io::Error::other(e)))?
    }

    fn put_now(&self, path: &str, data: &[u8]) -> Result<(), FileError> {
        let size = data.len() as u64;
        if size > self.limits.max_bytes {
            return Err(FileError::TooLarge {
                size,
                max: self.limits.max_bytes,
            });
        }
        let target = self.writable(path)?;
        let replaced = std::fs::symlink_metadata(&target).map_or(0, |m| m.len());
        let total = self.usage_now()?.saturating_sub(replaced) + size;
        if total > self.limits.max_total_bytes {
            return Err(FileError::QuotaExceeded {
                total,
                max: self.limits.max_total_bytes,
            });
        }
        // Written beside the target and renamed over it: a reader never sees half a file,
        // and a symlink at the target is replaced, not followed.
        let temp = target.with_file_name(format!(
            ".{}.upload-{:016x}",
            target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file"),
            rand::random::<u64>()
        ));
        std::fs::write(&temp, data)?;
        if let Err(e) = std::fs::rename(&temp, &target) {
            let _ = std::fs::remove_file(&temp);
            return Err(e.into());
        }
        Ok(())
    }

    fn get_now(&self, path: &str) -> Result<Vec<u8>, FileError> {
        let resolved = self.existing(path)?;
        if resolved.is_dir() {
            return Err(FileError::IsADirectory(path.to_owned()));
        }
        Ok(std::fs::read(&resolved)?)
    }

    fn delete_now(&self, path: &str) -> Result<(), FileError> {
        let target = self.lexical(path)?;
        let meta =
            std::fs::symlink_metadata(&target).map_err(|_| FileError::NotFound(path.to_owned()))?;
        // A symlink is removed itself, never what it points to.
        self.check_parents(&target, path)?;
        if meta.is_dir() {
            std::fs::remove_dir_all(&target)?;
        } else {
            std::fs::remove_file(&target)?;
        }
        Ok(())
    }

    fn list_now(&self) -> Result<Vec<FileInfo>, FileError> {
        let mut files = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let meta = entry.metadata()?; // does not follow symlinks
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if meta.is_file() {
                    let relative = entry.path();
                    let relative = relative.strip_prefix(&self.root).unwrap_or(&relative);
                    files.push(FileInfo {
                        path: relative.to_string_lossy().into_owned(),
                        size: meta.len(),
                        modified: meta
                            .modified()
                            .map(|t| humantime::format_rfc3339_millis(t).to_string())
                            .unwrap_or_else(|_| {
                                humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH).to_string()
                            }),
                    });
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn usage_now(&self) -> Result<u64, FileError> {
        Ok(self.list_now()?.iter().map(|f| f.size).sum())
    }

    /// `path` joined to the root, refusing anything that is not plain relative names.
    fn lexical(&self, path: &str) -> Result<PathBuf, FileError> {
        let invalid = |why| FileError::InvalidPath {
            path: path.to_owned(),
            why,
        };
        if path.is_empty() {
            return Err(invalid("empty"));
        }
        if path.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let mut joined = self.root.clone();
        for component in Path::new(path).components() {
            match component {
                Component::Normal(name) => joined.push(name),
                Component::CurDir => {}
                Component::ParentDir => return Err(invalid("`..` is not allowed")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(invalid("absolute paths are not allowed"));
                }
            }
        }
        if joined == self.root {
            return Err(invalid("names the session directory itself"));
        }
        Ok(joined)
    }

    /// An existing path, with symlinks resolved, that must still be inside the root.
    fn existing(&self, path: &str) -> Result<PathBuf, FileError> {
        let joined = self.lexical(path)?;
        let resolved =
            std::fs::canonicalize(&joined).map_err(|_| FileError::NotFound(path.to_owned()))?;
        if !resolved.starts_with(&self.root) {
            return Err(FileError::InvalidPath {
                path: path.to_owned(),
                why: "it leads out of the session directory",
            });
        }
        Ok(resolved)
    }

    /// A path to write: its parent directories are created (or must be real directories
    /// inside the root, not links), and an existing directory is not replaced.
    fn writable(&self, path: &str) -> Result<PathBuf, FileError> {
        let target = self.lexical(path)?;
        if let Some(parent) = target.parent() {
            let mut dir = self.root.clone();
            for component in parent
                .strip_prefix(&self.root)
                .unwrap_or(Path::new(""))
                .components()
            {
                dir.push(component);
                match std::fs::symlink_metadata(&dir) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(FileError::InvalidPath {
                            path: path.to_owned(),
                            why: "a parent is a link or a file, not a directory",
                        });
                    }
                    Err(_) => std::fs::create_dir(&dir)?,
                }
            }
        }
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Err(FileError::IsADirectory(path.to_owned()));
        }
        Ok(target)
    }

    /// The parents of a lexical path must be real directories (no link leads out).
    fn check_parents(&self, target: &Path, path: &str) -> Result<(), FileError> {
        if let Some(parent) = target.parent() {
            let resolved =
                std::fs::canonicalize(parent).map_err(|_| FileError::NotFound(path.to_owned()))?;
            if !resolved.starts_with(&self.root) {
                return Err(FileError::InvalidPath {
                    path: path.to_owned(),
                    why: "it leads out of the session directory",
                });
            }
        }
        Ok(())
    }
}

/// The calling thread's file-system identity (`setfsuid`/`setfsgid`) made the session's user
/// until dropped. The server is root and the directory belongs to the session's code, which
/// may swap a checked directory for a link at any moment: as the session's user, the kernel
/// itself refuses whatever the session could not reach, whatever the race.
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
        }
    }

    #[test]
    fn paths_that_escape_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let files = SessionFiles::new(&root, limits(), None);
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "."] {
            assert!(
                matches!(files.lexical(bad), Err(FileError::InvalidPath { .. })),
                "{bad}"
            );
        }
        assert!(files.lexical("a/b.csv").is_ok());
        std::os::unix::fs::symlink("/etc", root.join("etc")).expect("symlink");
        assert!(matches!(
            files.existing("etc/passwd"),
            Err(FileError::InvalidPath { .. })
        ));
        assert!(matches!(
            files.writable("etc/x"),
            Err(FileError::InvalidPath { .. })
        ));
    }

    #[tokio::test]
    async fn sizes_are_limited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let files = SessionFiles::new(&root, limits(), None);
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
        let listed: Vec<String> = files
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(listed, ["a", "sub/b"]);
        assert_eq!(files.get("sub/b").await.expect("read"), vec![1; 60]);
        files.delete("sub").await.expect("delete");
        assert!(matches!(
            files.get("sub/b").await,
            Err(FileError::NotFound(_))
        ));
    }
}
