//! The installer: `uv`, run by the server (never in a worker's sandbox: it needs the network,
//! and workers have none), against one interpreter's base environment, into a staging
//! directory of the server's that nothing of a session can reach.
//!
//! An install resolves the session's whole list (its earlier requirements and the new ones)
//! with the base's installed versions as constraints, so that what the base has (numpy,
//! pandas, …) is never installed again and what is installed works with it; then it installs
//! only what the base lacks, `--no-deps` (the resolution chose them all), into a fresh staging
//! directory. Wheels only unless `packages.allow_builds`: building an sdist runs the
//! package's own code, with the server's user and network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{PackageError, Policy, Requirement, requirement};
use crate::config::PackagesConfig;
use crate::reaper;

/// What the reply keeps of the installer's output, bytes (its end: where errors are).
const OUTPUT_KEEP: usize = 4000;

pub struct Installer {
    uv: PathBuf,
    cache_dir: PathBuf,
    index_url: Option<String>,
    find_links: Vec<String>,
    allow_builds: bool,
    timeout: Duration,
    /// Where installs are staged: the server's own, mode 0700.
    staging: PathBuf,
    /// Each interpreter's installed packages, read once (the base does not change while the
    /// server runs, but for `python.extra_packages` at start, which comes before).
    bases: parking_lot::Mutex<HashMap<PathBuf, Arc<Base>>>,
}

/// What an interpreter's environment has installed.
struct Base {
    /// `name==version` per package, as the resolver's constraints.
    constraints: PathBuf,
    /// Normalized name to version.
    versions: HashMap<String, String>,
}

/// An install done into a staging directory, not yet anyone's layer.
pub struct Staged {
    /// What to copy into the session's layer (removed when dropped).
    pub dir: tempfile::TempDir,
    /// `name==version` of each package in it.
    pub pins: Vec<String>,
    /// Bytes the files in it take.
    pub bytes: u64,
    /// Resolved and installed from the shared cache alone, without the index.
    pub from_cache: bool,
    /// The end of the installer's output.
    pub output: String,
}

impl Installer {
    pub fn new(config: &PackagesConfig, staging: PathBuf) -> Installer {
        Installer {
            uv: config.uv.clone(),
            cache_dir: config.cache_dir.clone(),
            index_url: config.index_url.clone().filter(|u| !u.is_empty()),
            find_links: config.find_links.clone(),
            allow_builds: config.allow_builds,
            timeout: Duration::from_millis(config.timeout_ms),
            staging,
            bases: parking_lot::Mutex::default(),
        }
    }

    /// Installs `requirements` (a session's whole list) for `python` into a fresh staging
    /// directory, refusing a result larger than `max_bytes`. All within `packages.timeout_ms`;
    /// a request that gives up on it (dropped) kills the installer's processes.
    pub async fn stage(
        &self,
        python: &Path,
        requirements: &[Requirement],
        max_bytes: u64,
        policy: &Policy,
    ) -> Result<Staged, PackageError> {
        let timeout_ms = self.timeout.as_millis() as u64;
        tokio::time::timeout(
            self.timeout,
            self.stage_now(python, requirements, max_bytes, policy),
        )
        .await
        .map_err(|_| PackageError::Timeout { timeout_ms })?
    }

    async fn stage_now(
        &self,
        python: &Path,
        requirements: &[Requirement],
        max_bytes: u64,
        policy: &Policy,
    ) -> Result<Staged, PackageError> {
        let base = self.base(python).await?;
        // Exact pins may be served by the cache alone, with no round trip to the index; what
        // is not pinned asks the index what is newest.
        if requirements.iter().all(Requirement::is_pinned) {
            match self
                .stage_with(python, &base, requirements, max_bytes, policy, true)
                .await
            {
                Ok(staged) => return Ok(staged),
                Err(PackageError::Failed { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        self.stage_with(python, &base, requirements, max_bytes, policy, false)
            .await
    }

    async fn stage_with(
        &self,
        python: &Path,
        base: &Base,
        requirements: &[Requirement],
        max_bytes: u64,
        policy: &Policy,
        offline: bool,
    ) -> Result<Staged, PackageError> {
        let mut output = String::new();
        let wanted: String = requirements
            .iter()
            .map(|r| format!("{}\n", r.text))
            .collect();
        let mut compile = vec!["pip".into(), "compile".into(), "-".into()];
        compile.extend(self.common_args(python, offline));
        compile.extend([
            "--constraint".into(),
            base.constraints.display().to_string(),
            "--no-header".into(),
            "--no-annotate".into(),
            "--quiet".into(),
        ]);
        let resolved = self.run(&compile, Some(wanted)).await?;
        output.push_str(&resolved.stderr);
        let pins: Vec<String> = resolved
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|pin| !in_base(base, pin))
            .map(str::to_owned)
            .collect();
        // The lists hold for what comes in as a dependency (or through an extra) too, and are
        // checked before anything of it is fetched.
        for pin in &pins {
            let name = pin.split_once("==").map_or(pin.as_str(), |(name, _)| name);
            let name = requirement::normalize(name.trim());
            let asked = requirements.iter().any(|r| r.name == name);
            match policy.check(&Requirement {
                name,
                text: pin.clone(),
            }) {
                Err(PackageError::NotAllowed { package, why }) if !asked => {
                    let by = requirements
                        .iter()
                        .map(|r| r.text.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(PackageError::DependencyNotAllowed { package, by, why });
                }
                Err(refused) => return Err(refused),
                Ok(()) => {}
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("install-")
            .tempdir_in(&self.staging)
            .map_err(PackageError::io("cannot make a staging directory"))?;
        if !pins.is_empty() {
            let mut install = vec![
                "pip".into(),
                "install".into(),
                "--target".into(),
                dir.path().display().to_string(),
                "--no-deps".into(),
            ];
            install.extend(self.common_args(python, offline));
            install.extend(pins.iter().cloned());
            let installed = self.run(&install, None).await?;
            output.push_str(&installed.stderr);
            output.push_str(&installed.stdout);
        }
        let path = dir.path().to_owned();
        let bytes = tokio::task::spawn_blocking(move || tree_bytes(&path))
            .await
            .map_err(|e| PackageError::Internal(format!("measuring the install failed: {e}")))?
            .map_err(PackageError::io("cannot measure the staged install"))?;
        if bytes > max_bytes {
            return Err(PackageError::OverQuota {
                bytes,
                free: max_bytes,
            });
        }
        Ok(Staged {
            dir,
            pins,
            bytes,
            from_cache: offline,
            output: tail(&output),
        })
    }

    /// Installs `requirements` into `python`'s own environment (`python.extra_packages`, at
    /// start, before any worker imports from it); uv leaves what is already satisfied alone.
    pub async fn install_into_base(
        &self,
        python: &Path,
        requirements: &[Requirement],
    ) -> Result<String, PackageError> {
        let mut args = vec!["pip".into(), "install".into()];
        args.extend(self.common_args(python, false));
        args.extend(requirements.iter().map(|r| r.text.clone()));
        let run = tokio::time::timeout(self.timeout, self.run(&args, None));
        let done = run.await.map_err(|_| PackageError::Timeout {
            timeout_ms: self.timeout.as_millis() as u64,
        })??;
        self.bases.lock().remove(python);
        Ok(tail(&format!("{}{}", done.stderr, done.stdout)))
    }

    fn common_args(&self, python: &Path, offline: bool) -> Vec<String> {
        let mut args = vec![
            "--python".into(),
            python.display().to_string(),
            "--cache-dir".into(),
            self.cache_dir.display().to_string(),
            "--no-config".into(),
            "--no-progress".into(),
            "--color".into(),
            "never".into(),
        ];
        if !self.allow_builds {
            args.push("--no-build".into());
        }
        if let Some(url) = &self.index_url {
            args.extend(["--index-url".into(), url.clone()]);
        }
        for link in &self.find_links {
            args.extend(["--find-links".into(), link.clone()]);
        }
        if offline {
            args.push("--offline".into());
        }
        args
    }

    /// The base environment of `python`: read once, kept.
    async fn base(&self, python: &Path) -> Result<Arc<Base>, PackageError> {
        if let Some(base) = self.bases.lock().get(python) {
            return Ok(Arc::clone(base));
        }
        let args = vec![
            "pip".into(),
            "list".into(),
            "--format".into(),
            "json".into(),
            "--python".into(),
            python.display().to_string(),
            "--no-config".into(),
            "--offline".into(),
        ];
        let listed = self.run(&args, None).await?;
        #[derive(serde::Deserialize)]
        struct Listed {
            name: String,
            version: String,
            /// An editable install (a project of the machine's) is no pin.
            editable_project_location: Option<String>,
        }
        let listed: Vec<Listed> = serde_json::from_str(&listed.stdout).map_err(|e| {
            PackageError::Internal(format!("uv pip list gave no package list: {e}"))
        })?;
        let versions: HashMap<String, String> = listed
            .into_iter()
            .filter(|p| p.editable_project_location.is_none())
            .map(|p| (requirement::normalize(&p.name), p.version))
            .collect();
        let text: String = versions
            .iter()
            .map(|(name, version)| format!("{name}=={version}\n"))
            .collect();
        let constraints = self
            .staging
            .join(format!("base-{:016x}.txt", rand::random::<u64>()));
        tokio::fs::write(&constraints, text)
            .await
            .map_err(PackageError::io("cannot write the base's constraints"))?;
        let base = Arc::new(Base {
            constraints,
            versions,
        });
        tracing::info!(
            python = %python.display(),
            packages = base.versions.len(),
            "read the base environment's packages for installs"
        );
        self.bases
            .lock()
            .insert(python.to_owned(), Arc::clone(&base));
        Ok(base)
    }

    /// Runs uv to its end. Its process group is killed if this is dropped first (a timeout,
    /// a client that left): nothing it started outlives the install.
    async fn run(&self, args: &[String], stdin: Option<String>) -> Result<UvOutput, PackageError> {
        let mut command = tokio::process::Command::new(&self.uv);
        command
            .args(args)
            .env("UV_NO_CONFIG", "1")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = reaper::children().spawn(&mut command).map_err(|source| {
            PackageError::Installer(format!(
                "cannot start uv ({}, packages.uv): {source}",
                self.uv.display()
            ))
        })?;
        let group = GroupGuard {
            pid: child.id(),
            done: false,
        };
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows as uv's own failure below.
            let _ = pipe.write_all(text.as_bytes()).await;
            drop(pipe);
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(PackageError::io("waiting for uv failed"))?;
        let mut group = group;
        group.done = true;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            let message = if stderr.trim().is_empty() {
                &stdout
            } else {
                &stderr
            };
            return Err(PackageError::Failed {
                message: tail(message.trim()),
            });
        }
        Ok(UvOutput { stdout, stderr })
    }
}

struct UvOutput {
    stdout: String,
    stderr: String,
}

/// Kills uv's process group unless it ran to its end, and lets the reaper's registry forget
/// the pid.
struct GroupGuard {
    pid: Option<u32>,
    done: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let Some(pid) = self.pid else {
            return;
        };
        if !self.done {
            // Still unreaped here (the child is dropped after this guard), so the group id
            // cannot have been reused.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            tracing::info!(
                pid,
                "the installer was stopped (timeout or request dropped)"
            );
        }
        reaper::children().forget(pid);
    }
}

/// Whether the base has this pin (`name==version`) already.
fn in_base(base: &Base, pin: &str) -> bool {
    let Some((name, version)) = pin.split_once("==") else {
        return false;
    };
    base.versions
        .get(&requirement::normalize(name.trim()))
        .is_some_and(|v| v == version.trim())
}

/// The end of `text`, at most [`OUTPUT_KEEP`] bytes, cut at a character boundary.
fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_KEEP {
        return text.to_owned();
    }
    let mut start = text.len() - OUTPUT_KEEP;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &text[start..])
}

/// Bytes of the regular files under `dir` (the server's own staging: no links to fear).
fn tree_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}
