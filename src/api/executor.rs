//! The python-executor server's API (seed 002, `../shared/python-executor-api.md`), so that
//! its clients work unchanged: `/api/v1/eval`, `/api/v1/exec/sync|async` (a tar of files and
//! JSON metadata), `/api/v1/executions/{id}` (status, kill), `/health`. Errors are
//! `{"error": "message"}`, as that server answers.
//!
//! A translation onto the core: each execution is a session of its own (a forked worker and a
//! directory), with the files written through the files API (so its path checks and quota
//! apply), a first cell that sets `sys.argv`, the environment and `__file__`, then the
//! entrypoint's source run as a cell named after the file (so tracebacks and `error_line` name
//! it), then the session is deleted. Killing an execution deletes its session.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use crate::execution::{ExecRequest, Execution, Status};
use crate::{Error, SessionManager};

/// python-executor refuses code over 100 KB.
const MAX_CODE_BYTES: usize = 100 * 1024;
const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
const SUPPORTED_VERSIONS: [&str; 4] = ["3.10", "3.11", "3.12", "3.13"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/eval", post(eval))
        .route("/api/v1/exec/sync", post(exec_sync))
        .route("/api/v1/exec/async", post(exec_async))
        .route(
            "/api/v1/executions/{id}",
            get(get_execution).delete(kill_execution),
        )
}

/// The executions this surface knows, finished ones for `ttl` after they finished.
pub struct Executions {
    records: DashMap<String, Arc<Mutex<Record>>>,
    ttl: Duration,
}

struct Record {
    result: ExecutionResult,
    /// The session running it, once there is one.
    session: Option<String>,
    finished: Option<Instant>,
}

impl Executions {
    pub fn new(ttl: Duration) -> Executions {
        Executions {
            records: DashMap::new(),
            ttl,
        }
    }

    fn insert(&self, result: ExecutionResult) -> Arc<Mutex<Record>> {
        let ttl = self.ttl;
        self.records.retain(|_, r| {
            r.lock()
                .finished
                .is_none_or(|finished| finished.elapsed() < ttl)
        });
        let record = Arc::new(Mutex::new(Record {
            result: result.clone(),
            session: None,
            finished: None,
        }));
        self.records
            .insert(result.execution_id.clone(), Arc::clone(&record));
        record
    }

    fn get(&self, id: &str) -> Option<Arc<Mutex<Record>>> {
        let record = self.records.get(id).map(|r| Arc::clone(r.value()))?;
        let expired = record
            .lock()
            .finished
            .is_some_and(|f| f.elapsed() >= self.ttl);
        if expired {
            self.records.remove(id);
            return None;
        }
        Some(record)
    }
}

/// The error shape of python-executor: `{"error": "message"}`.
pub struct ExecutorError(StatusCode, String);

impl ExecutorError {
    fn bad_request(message: impl Into<String>) -> Self {
        ExecutorError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ExecutorError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<JsonRejection> for ExecutorError {
    fn from(rejection: JsonRejection) -> Self {
        ExecutorError::bad_request(rejection.body_text())
    }
}

impl From<Error> for ExecutorError {
    fn from(e: Error) -> Self {
        let api = super::ApiError::from(e);
        ExecutorError(api.status, api.message)
    }
}

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ExecutorError))]
struct Json<T>(T);

/// python-executor's ExecutionResult.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionResult {
    execution_id: String,
    /// `pending`, `running`, `completed`, `failed` or `killed`.
    status: &'static str,
    stdout: String,
    stderr: String,
    exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_line: Option<u32>,
    /// With `eval_last_expr`: the repr of the last expression, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration_ms: u64,
}

impl ExecutionResult {
    fn pending() -> ExecutionResult {
        ExecutionResult {
            execution_id: format!("exe_{}", uuid_like()),
            status: "pending",
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            error: None,
            error_type: None,
            error_line: None,
            result: None,
            started_at: None,
            finished_at: None,
            duration_ms: 0,
        }
    }
}

/// What to run, from either request shape.
struct Job {
    files: Vec<(String, Vec<u8>)>,
    entrypoint: String,
    stdin: Option<String>,
    env: HashMap<String, String>,
    args: Vec<String>,
    timeout: Duration,
    eval_last_expr: bool,
}

#[derive(Debug, Deserialize)]
struct EvalRequest {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    files: Option<Vec<EvalFile>>,
    #[serde(default)]
    entrypoint: Option<String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    python_version: Option<String>,
    #[serde(default)]
    eval_last_expr: bool,
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Debug, Deserialize)]
struct EvalFile {
    name: String,
    content: String,
}

#[derive(Debug, Default, Deserialize)]
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

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn eval(
    State(state): State<AppState>,
    Json(request): Json<EvalRequest>,
) -> Result<axum::Json<ExecutionResult>, ExecutorError> {
    check_python_version(&state.manager, request.python_version.as_deref())?;
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
        return Err(ExecutorError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("code is {size} bytes; the limit is {MAX_CODE_BYTES}"),
        ));
    }
    let entrypoint = request.entrypoint.clone().unwrap_or_else(|| {
        if files.iter().any(|(n, _)| n == "main.py") {
            "main.py".to_owned()
        } else {
            files[0].0.clone()
        }
    });
    let job = Job {
        files,
        entrypoint,
        stdin: request.stdin,
        env: HashMap::new(),
        args: Vec::new(),
        timeout: timeout_of(request.config.as_ref()),
        eval_last_expr: request.eval_last_expr,
    };
    let record = state.executions.insert(ExecutionResult::pending());
    run(&state.manager, job, &record).await?;
    let result = record.lock().result.clone();
    Ok(axum::Json(result))
}

async fn exec_sync(
    State(state): State<AppState>,
    multipart: Multipart,
) -> Result<axum::Json<ExecutionResult>, ExecutorError> {
    let job = job_from_multipart(multipart).await?;
    let record = state.executions.insert(ExecutionResult::pending());
    run(&state.manager, job, &record).await?;
    let result = record.lock().result.clone();
    Ok(axum::Json(result))
}

async fn exec_async(
    State(state): State<AppState>,
    multipart: Multipart,
) -> Result<(StatusCode, axum::Json<Value>), ExecutorError> {
    let job = job_from_multipart(multipart).await?;
    let record = state.executions.insert(ExecutionResult::pending());
    let id = record.lock().result.execution_id.clone();
    let manager = Arc::clone(&state.manager);
    tokio::spawn(async move {
        if let Err(ExecutorError(_, message)) = run(&manager, job, &record).await {
            let mut r = record.lock();
            r.result.status = "failed";
            r.result.error = Some(message);
            r.finished = Some(Instant::now());
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "execution_id": id })),
    ))
}

async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ExecutionResult>, ExecutorError> {
    let record = state.executions.get(&id).ok_or_else(|| not_found(&id))?;
    let result = record.lock().result.clone();
    Ok(axum::Json(result))
}

async fn kill_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ExecutorError> {
    let record = state.executions.get(&id).ok_or_else(|| not_found(&id))?;
    let session = {
        let mut r = record.lock();
        if r.finished.is_none() {
            r.result.status = "killed";
            r.result.exit_code = 137;
            r.result.error = Some("killed on request".into());
            r.finished = Some(Instant::now());
            r.result.finished_at = Some(now());
        }
        r.session.take()
    };
    if let Some(session) = session {
        let _ = state.manager.delete(&session);
    }
    Ok(axum::Json(json!({"status": "killed"})))
}

fn not_found(id: &str) -> ExecutorError {
    ExecutorError(StatusCode::NOT_FOUND, format!("execution {id} not found"))
}

fn timeout_of(config: Option<&RunConfig>) -> Duration {
    Duration::from_secs(
        config
            .and_then(|c| c.timeout_seconds)
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
    )
}

/// Only the workers' own Python can run code here.
fn check_python_version(
    manager: &SessionManager,
    requested: Option<&str>,
) -> Result<(), ExecutorError> {
    let Some(requested) = requested else {
        return Ok(());
    };
    if !SUPPORTED_VERSIONS.contains(&requested) {
        return Err(ExecutorError::bad_request(format!(
            "python_version {requested:?} is not supported (one of {SUPPORTED_VERSIONS:?})"
        )));
    }
    if let Some(ours) = manager.python_version() {
        let ours_minor: String = ours.split('.').take(2).collect::<Vec<_>>().join(".");
        if ours_minor != requested {
            return Err(ExecutorError::bad_request(format!(
                "python_version {requested} is not available: this server's workers run Python {ours}"
            )));
        }
    }
    Ok(())
}

async fn job_from_multipart(mut multipart: Multipart) -> Result<Job, ExecutorError> {
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
    for (field, present) in [
        ("docker_image", metadata.docker_image.is_some()),
        (
            "requirements_txt",
            metadata
                .requirements_txt
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty()),
        ),
        (
            "pre_commands",
            metadata
                .pre_commands
                .as_ref()
                .is_some_and(|c| !c.is_empty()),
        ),
    ] {
        if present {
            return Err(ExecutorError::bad_request(format!(
                "metadata.{field} is not supported: replpool runs code in its own preloaded Python workers, with no image to choose and no package installs"
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
    if !files.iter().any(|(name, _)| *name == metadata.entrypoint) {
        return Err(ExecutorError::bad_request(format!(
            "entrypoint {:?} is not in the archive",
            metadata.entrypoint
        )));
    }
    Ok(Job {
        files,
        entrypoint: metadata.entrypoint,
        stdin: metadata.stdin,
        env,
        args: metadata.script_args.unwrap_or_default(),
        timeout: timeout_of(metadata.config.as_ref()),
        eval_last_expr: false,
    })
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

/// Runs a job in a session of its own and writes the outcome into `record`.
async fn run(
    manager: &Arc<SessionManager>,
    job: Job,
    record: &Arc<Mutex<Record>>,
) -> Result<(), ExecutorError> {
    if record.lock().finished.is_some() {
        return Ok(()); // killed while pending
    }
    let session = manager.create().await?.session_id;
    {
        let mut r = record.lock();
        if r.finished.is_some() {
            drop(r);
            let _ = manager.delete(&session);
            return Ok(());
        }
        r.session = Some(session.clone());
        r.result.status = "running";
        r.result.started_at = Some(now());
    }
    let started = Instant::now();
    let outcome = execute_job(manager, &session, &job).await;
    let _ = manager.delete(&session);
    let mut r = record.lock();
    if r.finished.is_some() {
        return Ok(()); // killed: the record says so already
    }
    r.session = None;
    r.finished = Some(Instant::now());
    r.result.finished_at = Some(now());
    r.result.duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(execution) => fill(&mut r.result, &execution, &job),
        Err(ExecutorError(status, message)) if status.is_client_error() => {
            r.result.status = "failed";
            r.result.error = Some(message.clone());
            drop(r);
            return Err(ExecutorError(status, message));
        }
        Err(ExecutorError(_, message)) => {
            r.result.status = "failed";
            r.result.error = Some(message);
        }
    }
    Ok(())
}

async fn execute_job(
    manager: &SessionManager,
    session: &str,
    job: &Job,
) -> Result<Execution, ExecutorError> {
    for (path, data) in &job.files {
        manager
            .put_file(session, path, bytes::Bytes::from(data.clone()))
            .await
            .map_err(|e| match e {
                Error::File(file) => ExecutorError::bad_request(file.to_string()),
                other => ExecutorError::from(other),
            })?;
    }
    let setup = format!(
        "import os as _os, sys as _sys\n_sys.argv = {argv}\n_os.environ.update({env})\n__file__ = _os.path.abspath({entry})\ndel _os, _sys",
        argv = python_literal(&json!(
            std::iter::once(job.entrypoint.clone())
                .chain(job.args.iter().cloned())
                .collect::<Vec<_>>()
        )),
        env = python_literal(&json!(job.env)),
        entry = python_literal(&json!(job.entrypoint)),
    );
    let ran = manager
        .execute(
            session,
            &ExecRequest {
                code: setup,
                ..ExecRequest::default()
            },
            None,
        )
        .await?;
    if ran.status != Status::Ok {
        return Err(ExecutorError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot prepare the execution: {:?}", ran.error),
        ));
    }
    let source = job
        .files
        .iter()
        .find(|(name, _)| *name == job.entrypoint)
        .map(|(_, data)| String::from_utf8_lossy(data).into_owned())
        .unwrap_or_default();
    Ok(manager
        .execute(
            session,
            &ExecRequest {
                code: source,
                stdin: job.stdin.clone(),
                timeout: Some(job.timeout),
                filename: Some(job.entrypoint.clone()),
            },
            None,
        )
        .await?)
}

/// JSON strings, lists and objects of strings are Python literals as they are.
fn python_literal(value: &Value) -> String {
    value.to_string()
}

/// Translates replpool's reply into python-executor's result.
fn fill(result: &mut ExecutionResult, execution: &Execution, job: &Job) {
    result.stdout = execution.stdout.clone();
    result.stderr = execution.stderr.clone();
    if job.eval_last_expr {
        result.result = Some(
            execution
                .result
                .as_ref()
                .and_then(|r| r.get("text/plain").cloned())
                .unwrap_or(Value::Null),
        );
    }
    match (execution.status, &execution.error) {
        (Status::Ok, _) => {
            result.status = "completed";
            result.exit_code = 0;
        }
        (Status::Timeout, _) => {
            result.status = "failed";
            result.exit_code = 124;
            result.error = Some(format!(
                "execution timed out after {} s",
                job.timeout.as_secs()
            ));
            result.error_type = Some("TimeoutError".into());
        }
        (Status::Error, Some(error)) if error.ename == "WorkerDied" => {
            result.status = "failed";
            result.exit_code = 1;
            result.error = Some(error.evalue.clone());
            result.error_type = Some(error.ename.clone());
        }
        (Status::Error, Some(error)) => {
            // The program ran and raised: the service did its job.
            result.status = "completed";
            result.exit_code = if error.ename == "SystemExit" {
                error.evalue.parse().unwrap_or(1)
            } else {
                1
            };
            for line in &error.traceback {
                result.stderr.push_str(line);
                result.stderr.push('\n');
            }
            result.error_type = Some(error.ename.clone());
            result.error_line = error_line(&error.traceback);
        }
        (Status::Error, None) => {
            result.status = "completed";
            result.exit_code = 1;
        }
    }
}

/// The line of the innermost frame of a traceback (`  File "main.py", line 3, in <module>`).
fn error_line(traceback: &[String]) -> Option<u32> {
    traceback.iter().rev().find_map(|line| {
        let rest = line.trim_start().strip_prefix("File \"")?;
        let after = &rest[rest.find("\", line ")? + 8..];
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// 128 random bits in the 8-4-4-4-12 form of a UUID.
fn uuid_like() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_is_the_innermost_frame() {
        let tb: Vec<String> = [
            "Traceback (most recent call last):",
            "  File \"main.py\", line 3, in <module>",
            "    f()",
            "  File \"main.py\", line 1, in f",
            "NameError: name 'x' is not defined",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(error_line(&tb), Some(1));
        let syntax: Vec<String> = [
            "  File \"main.py\", line 2",
            "    x = (",
            "SyntaxError: '(' was never closed",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(error_line(&syntax), Some(2));
    }
}
