//! The python-executor server's API, so that its clients work unchanged: `/api/v1/eval`,
//! `/api/v1/exec/sync|async` (a tar of files and JSON metadata), `/api/v1/executions/{id}`
//! (status, kill), `/health`. Errors are `{"error": "message"}`, as that server answers.
//!
//! A translation onto the core: each execution is a session of its own (a forked worker and a
//! directory, the caller's), with the files written through the files API (so its path checks
//! and quota apply), a first cell that sets `sys.argv`, the environment and `__file__`, then the
//! entrypoint's source run as a cell named after the file (so tracebacks and `error_line` name
//! it), then the session is deleted. Killing an execution deletes its session.

mod error;
mod intake;
mod program;
mod reply;
mod store;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use parking_lot::Mutex;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use reply::EXECUTION_ID_PREFIX;
pub use store::Executions;

use self::error::ExecutorError;
use self::intake::{EvalRequest, Job};
use self::reply::ExecutionResult;
use self::store::Record;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::json::{Json, Rejected};
use crate::api::openapi::ExecutorErrorBody;
use crate::execution::{ExecRequest, Execution, Status};
use crate::{Error, SessionManager};

pub fn routes(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(eval))
        .routes(routes!(exec_sync))
        .routes(routes!(exec_async))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(get_execution, kill_execution))
                .route_layer(axum::middleware::from_fn_with_state(
                    state,
                    crate::api::node::refuse_other_nodes,
                )),
        )
}

/// `{"status": ...}`: python-executor's health and kill replies.
#[derive(Serialize, ToSchema)]
struct StatusReply {
    #[schema(value_type = String)]
    status: &'static str,
}

/// An execution started in the background.
#[derive(Serialize, ToSchema)]
struct Accepted {
    execution_id: String,
}

/// A multipart request of `/api/v1/exec/*`: a tar of the files, and the run's metadata.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: the handlers read the parts from `Multipart`
struct ExecForm {
    /// A tar archive of the program's files (regular files and directories only).
    #[schema(value_type = String, format = Binary, content_media_type = "application/x-tar")]
    tar: Vec<u8>,
    /// JSON: `{"entrypoint", "stdin"?, "env_vars"?: ["K=v"], "script_args"?, "config"?:
    /// {"timeout_seconds"}, "python_version"?, "docker_image"?: "python:X.Y[-variant]",
    /// "requirements_txt"?}` (`pre_commands` is refused).
    #[schema(examples("{\"entrypoint\": \"main.py\"}"))]
    metadata: String,
}

/// python-executor's health check.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "executor_health",
    tag = "python-executor",
    responses((status = 200, description = "Up", body = StatusReply, example = json!({"status": "ok"}))),
)]
async fn health() -> Json<StatusReply> {
    Json(StatusReply { status: "ok" })
}

/// Runs code (or files) to the end and answers with the result.
#[utoipa::path(
    post,
    path = "/api/v1/eval",
    operation_id = "executor_eval",
    tag = "python-executor",
    request_body = EvalRequest,
    responses(
        (status = 200, description = "The execution's result (a program that raised completed: see `exit_code`)", body = ExecutionResult),
        (status = 400, description = "A request python-executor refuses, or replpool cannot honour", body = ExecutorErrorBody),
        (status = 413, description = "More than 100 KB of code", body = ExecutorErrorBody),
        (status = 429, description = "Too many sessions of the caller's", body = ExecutorErrorBody),
        (status = 503, description = "No session could be had", body = ExecutorErrorBody),
    ),
)]
async fn eval(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<EvalRequest>, Rejected>,
) -> Result<Json<ExecutionResult>, ExecutorError> {
    let Json(request) = request?;
    let job =
        intake::job_from_eval(&state.manager, request)?.capped_at(state.executions.max_timeout());
    run_to_the_end(&state, &caller, job).await
}

/// Runs a tar of files to the end and answers with the result.
#[utoipa::path(
    post,
    path = "/api/v1/exec/sync",
    operation_id = "executor_exec_sync",
    tag = "python-executor",
    request_body(content = ExecForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The execution's result", body = ExecutionResult),
        (status = 400, description = "A request python-executor refuses, or replpool cannot honour", body = ExecutorErrorBody),
        (status = 429, description = "Too many sessions of the caller's", body = ExecutorErrorBody),
        (status = 503, description = "No session could be had", body = ExecutorErrorBody),
    ),
)]
async fn exec_sync(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<Json<ExecutionResult>, ExecutorError> {
    let job = intake::job_from_multipart(&state.manager, multipart)
        .await?
        .capped_at(state.executions.max_timeout());
    run_to_the_end(&state, &caller, job).await
}

/// Runs `job` as a new execution of the caller's and answers with its result. The run is a
/// task of its own: a client that goes away drops this future, and the run must still end
/// its session and finish its record.
async fn run_to_the_end(
    state: &AppState,
    caller: &Caller,
    job: Job,
) -> Result<Json<ExecutionResult>, ExecutorError> {
    let record = state.executions.insert(caller.owner());
    let task = {
        let manager = Arc::clone(&state.manager);
        let owner = caller.0.clone();
        let record = Arc::clone(&record);
        tokio::spawn(async move { run(&manager, owner.as_deref(), job, &record).await })
    };
    task.await.map_err(|e| {
        ExecutorError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the execution's task ended: {e}"),
        )
    })??;
    let result = record.lock().result.clone();
    Ok(Json(result))
}

/// Starts a tar of files in the background: poll `/api/v1/executions/{id}`.
#[utoipa::path(
    post,
    path = "/api/v1/exec/async",
    operation_id = "executor_exec_async",
    tag = "python-executor",
    request_body(content = ExecForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Started", body = Accepted,
            links(
                ("get_execution" = (operation_id = "executor_get_execution", parameters(("id" = "$response.body#/execution_id")), description = "Its status and result")),
                ("kill_execution" = (operation_id = "executor_kill_execution", parameters(("id" = "$response.body#/execution_id")), description = "Kill it")),
            ),
        ),
        (status = 400, description = "A request python-executor refuses, or replpool cannot honour", body = ExecutorErrorBody),
    ),
)]
async fn exec_async(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<(StatusCode, Json<Accepted>), ExecutorError> {
    let job = intake::job_from_multipart(&state.manager, multipart)
        .await?
        .capped_at(state.executions.max_timeout());
    let record = state.executions.insert(caller.owner());
    let id = record.lock().result.execution_id.clone();
    let manager = Arc::clone(&state.manager);
    let owner = caller.0;
    tokio::spawn(async move {
        // However it ends, the record says so: there is nobody to answer here.
        let _ = run(&manager, owner.as_deref(), job, &record).await;
    });
    Ok((StatusCode::ACCEPTED, Json(Accepted { execution_id: id })))
}

/// An execution's status, and its result once it has one.
#[utoipa::path(
    get,
    path = "/api/v1/executions/{id}",
    operation_id = "executor_get_execution",
    tag = "python-executor",
    params(("id" = String, Path, description = "The execution's id (`exe_…`)")),
    responses(
        (status = 200, description = "The execution", body = ExecutionResult),
        (status = 404, description = "No such execution of the caller's", body = ExecutorErrorBody),
    ),
)]
async fn get_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ExecutionResult>, ExecutorError> {
    let record = state
        .executions
        .get(&id, caller.owner())
        .ok_or_else(|| ExecutorError::not_found(&id))?;
    let result = record.lock().result.clone();
    Ok(Json(result))
}

/// Kills an execution (its session ends).
#[utoipa::path(
    delete,
    path = "/api/v1/executions/{id}",
    operation_id = "executor_kill_execution",
    tag = "python-executor",
    params(("id" = String, Path, description = "The execution's id (`exe_…`)")),
    responses(
        (status = 200, description = "Killed", body = StatusReply, example = json!({"status": "killed"})),
        (status = 404, description = "No such execution of the caller's", body = ExecutorErrorBody),
    ),
)]
async fn kill_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StatusReply>, ExecutorError> {
    let record = state
        .executions
        .get(&id, caller.owner())
        .ok_or_else(|| ExecutorError::not_found(&id))?;
    let session = record.lock().kill();
    if let Some(session) = session {
        let _ = state.manager.delete(&session);
    }
    Ok(Json(StatusReply { status: "killed" }))
}

/// Runs a job in a session of its own (`owner`'s) and writes the outcome into `record`,
/// which is finished however this ends. A client's mistake, or a session that could not be
/// had, is also the `Err` a synchronous request answers with.
async fn run(
    manager: &Arc<SessionManager>,
    owner: Option<&str>,
    job: Job,
    record: &Arc<Mutex<Record>>,
) -> Result<(), ExecutorError> {
    if record.lock().is_finished() {
        return Ok(()); // killed while pending
    }
    // From its session's creation to its deletion, cells and files: all one execution.
    let _work = manager.work();
    let session = match manager.create_on(owner, job.python.as_deref()).await {
        Ok(info) => info.session_id,
        Err(e) => {
            let e = ExecutorError::from(e);
            record.lock().fail(e.message.clone(), e.category);
            return Err(e);
        }
    };
    {
        let mut r = record.lock();
        if r.is_finished() {
            drop(r);
            let _ = manager.delete(&session);
            return Ok(());
        }
        r.start(session.clone());
    }
    let started = Instant::now();
    let outcome = execute_job(manager, &session, &job).await;
    let _ = manager.delete(&session);
    let mut r = record.lock();
    if r.is_finished() {
        return Ok(()); // killed: the record says so already
    }
    r.result.duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(execution) => {
            reply::fill(&mut r.result, &execution, &job);
            r.finish();
        }
        Err(e) if e.status.is_client_error() => {
            r.fail(e.message.clone(), e.category);
            return Err(e);
        }
        Err(e) => r.fail(e.message, e.category),
    }
    Ok(())
}

/// The files, the set-up cell, then the entrypoint as a cell named after it.
async fn execute_job(
    manager: &SessionManager,
    session: &str,
    job: &Job,
) -> Result<Execution, ExecutorError> {
    if !job.requirements.is_empty() {
        manager.install_packages(session, &job.requirements).await?;
    }
    for (path, data) in &job.files {
        manager
            .put_file(session, path, bytes::Bytes::from(data.clone()))
            .await
            .map_err(|e| match e {
                Error::File(file) => ExecutorError::bad_request(file.to_string()),
                other => ExecutorError::from(other),
            })?;
    }
    let setup = ExecRequest {
        code: program::setup_cell(job),
        ..ExecRequest::default()
    };
    let ran = manager.execute(session, &setup, None).await?;
    if ran.status != Status::Ok {
        return Err(ExecutorError::new(
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
                // Its result is read as `text/plain` only: no table or chart to make.
                data: false,
                pip_magic: false,
            },
            None,
        )
        .await?)
}
