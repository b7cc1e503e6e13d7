//! What to run, from either of python-executor's request shapes: the JSON of `/api/v1/eval`,
//! or the multipart `tar` + `metadata` of `/api/v1/exec/*`. Everything python-executor would
//! refuse, or that replpool cannot honour, is refused here with a 400 naming it.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use axum::extract::Multipart;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ExecutorError;
use crate::SessionManager;

/// python-executor refuses code over 100 KB.
const MAX_CODE_BYTES: usize = 100 * 1024;
const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
const SUPPORTED_VERSIONS: [&str; 4] = ["3.10", "3.11", "3.12", "3.13"];

/// What to run, from either request shape.
pub struct Job {
    pub files: Vec<(String, Vec<u8>)>,
    pub entrypoint: String,
    pub stdin: Option<String>,
    pub env: HashMap<String, String>,
    pub args: Vec<String>,
    /// The deadline the program gets: what was asked, at most `execution.max_timeout_ms`.
    pub timeout: Duration,
    /// What was asked, when more than the server allows.
    pub capped_from: Option<Duration>,
    pub eval_last_expr: bool,
    /// The interpreter (its name) `python_version` or `docker_image` chose; `None`: the
    /// default one.
    pub python: Option<String>,
    /// `requirements_txt`: installed into the execution's session before it runs.
    pub requirements: Vec<String>,
}

/// Code to run: `code` (run as `main.py`), or `files` with an `entrypoint`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"code": "print(sum(range(10)))"}), json!({
    "files": [{"name": "main.py", "content": "import util\nprint(util.x)"}, {"name": "util.py", "content": "x = 1"}],
    "entrypoint": "main.py",
    "config": {"timeout_seconds": 10}
})))]
pub struct EvalRequest {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    files: Option<Vec<EvalFile>>,
    #[serde(default)]
    entrypoint: Option<String>,
    #[serde(default)]
    stdin: Option<String>,
    /// `3.10` to `3.13`: runs on the first interpreter of that version; 400 where none is.
    #[serde(default)]
    python_version: Option<String>,
    #[serde(default)]
    eval_last_expr: bool,
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Debug, Deserialize, ToSchema)]
struct EvalFile {
    name: String,
    content: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
struct RunConfig {
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    entrypoint: String,
    #[serde(default)]
    docker_image: Option<String>,
    #[serde(default)]
    python_version: Option<String>,
    #[serde(default)]
    requirements_txt: Option<String>,
    #[serde(default)]
    pre_commands: Option<Vec<String>>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    env_vars: Option<Vec<String>>,
    #[serde(default)]
    script_args: Option<Vec<String>>,
    #[serde(default)]
    config: Option<RunConfig>,
}

impl Job {
    /// The job with its deadline at most `max` (`execution.max_timeout_ms`, which the core
    /// would apply anyway), remembering what was asked so that a timeout can say so.
    pub fn capped_at(mut self, max: Duration) -> Job {
        if self.timeout > max {
            self.capped_from = Some(self.timeout);
            self.timeout = max;
        }
        self
    }
}

/// The job of an `/api/v1/eval` request.
pub fn job_from_eval(manager: &SessionManager, request: EvalRequest) -> Result<Job, ExecutorError> {
    let python = choose_python(manager, request.python_version.as_deref(), None)?;
    let files: Vec<(String, Vec<u8>)> = match (&request.files, &request.code) {
        (Some(files), _) if !files.is_empty() => files
            .iter()
            .map(|f| (f.name.clone(), f.content.clone().into_bytes()))
            .collect(),
        (_, Some(code)) => vec![("main.py".to_owned(), code.clone().into_bytes())],
        _ => {
            return Err(ExecutorError::bad_request(
                "either code or files is required",
            ));
        }
    };
    let size: usize = files.iter().map(|(_, c)| c.len()).sum();
    if size > MAX_CODE_BYTES {
        return Err(ExecutorError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("code is {size} bytes; the limit is {MAX_CODE_BYTES}"),
        ));
    }
    let entrypoint = match request.entrypoint {
        Some(entrypoint) => entrypoint,
        None if files.iter().any(|(n, _)| n == "main.py") => "main.py".to_owned(),
        None => files.first().map(|(n, _)| n.clone()).unwrap_or_default(),
    };
    check_entrypoint(&files, &entrypoint, "among the files sent")?;
    Ok(Job {
        files,
        entrypoint,
        stdin: request.stdin,
        env: HashMap::new(),
        args: Vec::new(),
        timeout: timeout_of(request.config.as_ref()),
        capped_from: None,
        eval_last_expr: request.eval_last_expr,
        python,
        requirements: Vec::new(),
    })
}

/// Refuses an entrypoint that names none of the files sent: python-executor would fail to
/// open it, where running nothing would report a program that succeeded.
fn check_entrypoint(
    files: &[(String, Vec<u8>)],
    entrypoint: &str,
    sent_as: &str,
) -> Result<(), ExecutorError> {
    if files.iter().any(|(name, _)| name == entrypoint) {
        return Ok(());
    }
    Err(ExecutorError::bad_request(format!(
        "entrypoint {entrypoint:?} is not {sent_as}"
    )))
}

fn timeout_of(config: Option<&RunConfig>) -> Duration {
    Duration::from_secs(
        config
            .and_then(|c| c.timeout_seconds)
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
    )
}

/// The interpreter a job runs on: the first of the version `python_version` names (`3.10` to
/// `3.13`, as python-executor takes), or `docker_image` (`python:X.Y[-variant]`, the image
/// python-executor would run) does. Any other image, a version no interpreter has, or the two
/// disagreeing: a 400 naming the field.
fn choose_python(
    manager: &SessionManager,
    python_version: Option<&str>,
    docker_image: Option<&str>,
) -> Result<Option<String>, ExecutorError> {
    if let Some(requested) = python_version
        && !SUPPORTED_VERSIONS.contains(&requested)
    {
        return Err(ExecutorError::bad_request(format!(
            "python_version {requested:?} is not supported (one of {SUPPORTED_VERSIONS:?})"
        )));
    }
    let image_version = match docker_image {
        None => None,
        Some(image) => Some(image_python_version(image).ok_or_else(|| {
            ExecutorError::bad_request(format!(
                "metadata.docker_image {image:?} is not supported: replpool runs its own Python interpreters, and maps only python:X.Y[-variant] images to the interpreter of that version"
            ))
        })?),
    };
    let (field, version) = match (python_version, image_version) {
        (Some(asked), Some(image)) if asked != image => {
            return Err(ExecutorError::bad_request(format!(
                "python_version {asked} and metadata.docker_image (Python {image}) disagree"
            )));
        }
        (Some(asked), _) => ("python_version", asked),
        (None, Some(image)) => ("metadata.docker_image", image),
        (None, None) => return Ok(None),
    };
    let interpreters = manager.interpreters();
    match interpreters.iter().find(|i| i.minor_version() == version) {
        Some(interpreter) => Ok(Some(interpreter.name.clone())),
        None => Err(ExecutorError::bad_request(format!(
            "{field}: Python {version} is not available: this server's interpreters are {}",
            crate::interpreter::describe(interpreters)
        ))),
    }
}

/// `3.11` of `python:3.11`, `python:3.11-slim`, `python:3.11.7-bookworm` (a pinned
/// `@sha256:…` after the tag is the same version); `None` for any other image (another name,
/// a registry, `latest`, a digest alone).
fn image_python_version(image: &str) -> Option<&str> {
    let image = image.split_once('@').map_or(image, |(name, _digest)| name);
    let tag = image.strip_prefix("python:")?;
    let version = tag.split_once('-').map_or(tag, |(version, _)| version);
    let mut parts = version.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(major) && digits(minor) && parts.all(digits)) {
        return None;
    }
    Some(&version[..major.len() + 1 + minor.len()])
}

pub async fn job_from_multipart(
    manager: &SessionManager,
    mut multipart: Multipart,
) -> Result<Job, ExecutorError> {
    let mut archive = None;
    let mut metadata = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ExecutorError::bad_request(format!("malformed multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ExecutorError::bad_request(format!("cannot read field {name}: {e}")))?;
        match name.as_str() {
            "tar" => archive = Some(bytes),
            "metadata" => metadata = Some(bytes),
            _ => {}
        }
    }
    let archive =
        archive.ok_or_else(|| ExecutorError::bad_request("the `tar` field is required"))?;
    let metadata =
        metadata.ok_or_else(|| ExecutorError::bad_request("the `metadata` field is required"))?;
    let metadata: Metadata = serde_json::from_slice(&metadata)
        .map_err(|e| ExecutorError::bad_request(format!("invalid metadata: {e}")))?;
    let python = choose_python(
        manager,
        metadata.python_version.as_deref(),
        metadata.docker_image.as_deref(),
    )?;
    for (field, present) in [(
        "pre_commands",
        metadata
            .pre_commands
            .as_ref()
            .is_some_and(|c| !c.is_empty()),
    )] {
        if present {
            return Err(ExecutorError::bad_request(format!(
                "metadata.{field} is not supported: replpool runs code in its own preloaded Python workers, with no commands before the program"
            )));
        }
    }
    let mut env = HashMap::new();
    for var in metadata.env_vars.unwrap_or_default() {
        let (key, value) = var.split_once('=').ok_or_else(|| {
            ExecutorError::bad_request(format!("env_vars entry {var:?} is not KEY=value"))
        })?;
        env.insert(key.to_owned(), value.to_owned());
    }
    let files = unpack(&archive)?;
    check_entrypoint(&files, &metadata.entrypoint, "in the archive")?;
    Ok(Job {
        files,
        entrypoint: metadata.entrypoint,
        stdin: metadata.stdin,
        env,
        args: metadata.script_args.unwrap_or_default(),
        timeout: timeout_of(metadata.config.as_ref()),
        capped_from: None,
        eval_last_expr: false,
        python,
        requirements: requirements_of(metadata.requirements_txt.as_deref()),
    })
}

/// The requirements of a `requirements.txt`: one a line, comments and blank lines left out.
/// What is left is checked like any install's requirements (options such as `-r` or
/// `--index-url` are refused there, 400).
fn requirements_of(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .lines()
        .map(|line| line.split_once(" #").map_or(line, |(kept, _)| kept).trim())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The regular files of a tar archive. Links and entries that would land outside the
/// directory refuse the whole archive.
fn unpack(archive: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ExecutorError> {
    let mut files = Vec::new();
    let mut tar = tar::Archive::new(archive);
    let entries = tar
        .entries()
        .map_err(|e| ExecutorError::bad_request(format!("invalid tar archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| ExecutorError::bad_request(format!("invalid tar archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| ExecutorError::bad_request(format!("invalid path in archive: {e}")))?
            .to_string_lossy()
            .into_owned();
        let path = path.trim_start_matches("./").to_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(ExecutorError::bad_request(format!(
                "archive entry {path:?} is not a regular file (links are not allowed)"
            )));
        }
        let escapes = path.starts_with('/')
            || std::path::Path::new(&path)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if escapes {
            return Err(ExecutorError::bad_request(format!(
                "archive entry {path:?} would be written outside the execution's directory"
            )));
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| ExecutorError::bad_request(format!("cannot read {path:?}: {e}")))?;
        files.push((path, data));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_images_map_to_their_version() {
        for (image, version) in [
            ("python:3.11-slim", Some("3.11")),
            ("python:3.11", Some("3.11")),
            ("python:3.12.1-bookworm", Some("3.12")),
            ("python:3.13-slim-bookworm", Some("3.13")),
            ("python:latest", None),
            ("python:3", None),
            ("python:3.x-slim", None),
            ("docker.io/library/python:3.11", None),
            ("ubuntu:22.04", None),
            ("python", None),
            ("python:3.11@sha256:0123abcd", Some("3.11")),
            ("python:3.11-slim@sha256:0123abcd", Some("3.11")),
            ("python@sha256:0123abcd", None),
        ] {
            assert_eq!(image_python_version(image), version, "{image}");
        }
    }
}
