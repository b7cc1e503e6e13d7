//! What the machine lets the server do, found out by trying: `worker.py`'s `probe` makes each
//! kind of namespace (and the whole filesystem view) in a child process of its own, which ends
//! with everything it made, so a probe that fails halfway leaves nothing behind.
//!
//! Trying beats reading settings: whether a user namespace, a mount or a fresh `/proc` is
//! allowed depends on the kernel's sysctls, the container engine's seccomp profile, AppArmor,
//! masked `/proc` paths and capabilities, and only the attempt answers for all of them.

use std::path::Path;

use super::SandboxError;
use super::isolation::Isolation;

/// Each mechanism: works, or the error the attempt met.
#[derive(Debug, Clone)]
pub struct Probe {
    pub user_namespace: Result<(), String>,
    pub network: Result<(), String>,
    pub mount: Result<(), String>,
    /// `None`: no view was asked for.
    pub view: Option<Result<(), String>>,
    pub pid: Result<(), String>,
}

#[derive(serde::Deserialize)]
struct Reply {
    user_namespace: Option<String>,
    network: Option<String>,
    mount: Option<String>,
    view: Option<String>,
    pid: Option<String>,
}

/// Runs the probe with `python` and the worker script: `wanted` says what to try (a user
/// namespace first when the server is not root; the view, if one is planned).
pub fn run(
    python: &Path,
    script: &Path,
    wanted: &Isolation,
    keep: &[std::path::PathBuf],
) -> Result<Probe, SandboxError> {
    let mut probe = serde_json::json!({
        "user_namespace": wanted.user_namespace,
        "keep": keep,
    });
    if let Some(view) = &wanted.view {
        probe["view"] = serde_json::to_value(view).unwrap_or_default();
        probe["must_see"] = serde_json::to_value(view.must_see()).unwrap_or_default();
    }
    let mut command = std::process::Command::new(python);
    command
        .arg("-I")
        .arg(script)
        .arg(serde_json::json!({ "probe": probe }).to_string())
        .current_dir("/");
    let output = super::ask_python(python, &mut command)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reply: Reply = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| SandboxError::Probe {
            status: output.status.to_string(),
            output: format!(
                "{} {}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })?;
    let result = |e: Option<String>| match e {
        None => Ok(()),
        Some(e) => Err(e),
    };
    Ok(Probe {
        user_namespace: result(reply.user_namespace),
        network: result(reply.network),
        mount: result(reply.mount),
        view: wanted.view.as_ref().map(|_| result(reply.view)),
        pid: result(reply.pid),
    })
}
