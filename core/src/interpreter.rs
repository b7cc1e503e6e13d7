//! The Pythons sessions choose from (`[[python.interpreters]]`): each with its own template,
//! warm pool and cold fallback, since a worker forks only from a template of its own
//! interpreter. What they share is everything else: the server, the sandbox, the limits.
//!
//! A session asks for one by name or by version ([`choose`]); it keeps it for its life, its
//! resets and replacement workers included.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::cold::ColdRunner;
use crate::pool::{PoolStatus, WarmPool};

/// One configured interpreter, running.
pub struct Interpreter {
    pub name: String,
    pub executable: PathBuf,
    /// `3.11.7`: what the interpreter said at start.
    pub version: String,
    pub pool: Arc<WarmPool>,
    pub cold: ColdRunner,
}

/// Which Python a session runs (its info's `python`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PythonInfo {
    /// The `[[python.interpreters]]` entry's name (`default` without any).
    pub name: String,
    /// `3.11.7`.
    pub version: String,
}

/// An interpreter as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterpreterHealth {
    pub name: String,
    pub version: String,
    pub executable: String,
    /// The first interpreter: sessions that ask for none get it.
    pub default: bool,
    pub pool: PoolStatus,
}

impl Interpreter {
    pub fn info(&self) -> PythonInfo {
        PythonInfo {
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }

    pub fn health(&self, default: bool) -> InterpreterHealth {
        InterpreterHealth {
            name: self.name.clone(),
            version: self.version.clone(),
            executable: self.executable.display().to_string(),
            default,
            pool: self.pool.status(),
        }
    }

    /// `3.11` of `3.11.7`.
    pub fn minor_version(&self) -> &str {
        minor(&self.version)
    }
}

/// `3.11` of `3.11.7` (all of a version without a second dot).
fn minor(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((i, _)) => &version[..i],
        None => version,
    }
}

/// The interpreter `requested` names: the entry of that name, else the first whose version is
/// `requested` or starts with `requested.` (`3.11` matches `3.11.7`, never `3.1` `3.11.7`).
/// Names first, so that an entry named `3.12` is what `3.12` means even if an earlier one
/// runs a 3.12 too.
pub fn choose<'a>(
    interpreters: &'a [Arc<Interpreter>],
    requested: &str,
) -> Option<&'a Arc<Interpreter>> {
    let pairs: Vec<(&str, &str)> = interpreters
        .iter()
        .map(|i| (i.name.as_str(), i.version.as_str()))
        .collect();
    chosen(&pairs, requested).and_then(|i| interpreters.get(i))
}

/// [`choose`]'s rule over `(name, version)` pairs: the index of the one `requested` names.
fn chosen(interpreters: &[(&str, &str)], requested: &str) -> Option<usize> {
    let of_version = |version: &str| {
        version == requested
            || version
                .strip_prefix(requested)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    interpreters
        .iter()
        // Names are unique ignoring ASCII case (the config refuses others), as Jupyter's
        // spec names are compared.
        .position(|(name, _)| name.eq_ignore_ascii_case(requested))
        .or_else(|| interpreters.iter().position(|(_, v)| of_version(v)))
}

/// The Jupyter kernel spec name of an interpreter: `python3` for the default (what front ends
/// ask for), `python3-` and its name in lower case for another. Interpreter names are
/// letters, digits, `.`, `-` and `_`, all of which a spec name may hold; Jupyter compares spec
/// names ignoring case (and lists them in lower case), which is why the config refuses two
/// interpreter names that differ only in case. The suffix keeps another from ever being
/// `python3`. The Jupyter API's specs and a session's notebook export both name it so.
pub fn kernel_spec_name(interpreter: &str, default: bool) -> String {
    if default {
        KERNEL_SPEC.to_owned()
    } else {
        format!("{KERNEL_SPEC}-{}", interpreter.to_ascii_lowercase())
    }
}

/// The default interpreter's kernel spec name.
pub const KERNEL_SPEC: &str = "python3";

/// What the refusal of an unknown interpreter lists: `name (version)`, comma-separated.
pub fn describe(interpreters: &[Arc<Interpreter>]) -> String {
    interpreters
        .iter()
        .map(|i| format!("{} ({})", i.name, i.version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks `python` its version (`3.11.7`), at start: sessions choose by it before any worker
/// of that interpreter has started. `-I -S`: nothing of the environment or site, only the
/// interpreter itself. One of the server's children, known to the orphan sweep.
pub fn read_version(python: &Path) -> Result<String, String> {
    let mut command = std::process::Command::new(python);
    command
        .args([
            "-I",
            "-S",
            "-c",
            "import sys; print(sys.version.split()[0])",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = crate::reaper::children()
        .spawn(&mut command)
        .map_err(|e| format!("cannot run it: {e}"))?;
    // An interpreter that hangs (a wrapper script waiting for something) must not hold the
    // start for ever. Polled, not waited on: the child stays ours to kill until it is reaped.
    let deadline = std::time::Instant::now() + VERSION_TIMEOUT;
    let exited = loop {
        match child.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            // An error to wait is ended like a hang: killed and reaped.
            Ok(None) | Err(_) => break false,
        }
    };
    if !exited {
        let _ = child.kill();
    }
    let pid = child.id();
    let output = child.wait_with_output();
    crate::reaper::children().forget(pid);
    let output = output.map_err(|e| format!("cannot read its version: {e}"))?;
    if !exited {
        return Err(format!(
            "it did not tell its version within {} s",
            VERSION_TIMEOUT.as_secs()
        ));
    }
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let looks_like_one = version.split('.').take(2).all(|n| n.parse::<u32>().is_ok())
        && version.split('.').count() >= 2;
    if !output.status.success() || !looks_like_one {
        return Err(format!(
            "it did not tell its version ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(version)
}

/// How long an interpreter may take to print its version at start.
const VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_first_then_the_first_of_a_version() {
        let all = [
            ("venv", "3.11.7"),
            ("debian", "3.11.2"),
            ("3.11.2", "3.12.1"),
        ];
        assert_eq!(chosen(&all, "venv"), Some(0));
        assert_eq!(chosen(&all, "debian"), Some(1));
        // Names ignore ASCII case, as the Jupyter API's spec names do.
        assert_eq!(chosen(&all, "Debian"), Some(1));
        // A version: the first interpreter that has it.
        assert_eq!(chosen(&all, "3.11"), Some(0));
        assert_eq!(chosen(&all, "3.12"), Some(2));
        assert_eq!(chosen(&all, "3"), Some(0));
        // A name wins over a version it spells.
        assert_eq!(chosen(&all, "3.11.2"), Some(2));
        assert_eq!(chosen(&all[..2], "3.11.2"), Some(1));
        // Whole parts only: 3.1 is not 3.11, nor is 3.11.7 3.11.70.
        assert_eq!(chosen(&all, "3.1"), None);
        assert_eq!(chosen(&[("a", "3.11.70")], "3.11.7"), None);
        assert_eq!(chosen(&all, ""), None);
        assert_eq!(chosen(&all, "3.13"), None);
    }

    #[test]
    fn minor_of_a_version() {
        assert_eq!(minor("3.11.7"), "3.11");
        assert_eq!(minor("3.13.0rc1"), "3.13");
        assert_eq!(minor("3"), "3");
    }
}
