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

use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Value, json};

pub use reply::EXECUTION_ID_PREFIX;
pub use store::Executions;

use self::error::ExecutorError;
use self::intake::{EvalRequest, Job};
use self::reply::ExecutionResult;
use self::store::Record;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::json::{Json, Rejected};
use crate::execution::{ExecRequest, Execution, Status};
use crate::{Error, SessionManager};

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/eval", post(eval))
        .route("/api/v1/exec/sync", post(exec_sync))
        .route("/api/v1/exec/async", post(exec_async))
        .merge(
            Router::new()
                .route(
                    "/api/v1/executions/{id}",
                    get(get_execution).delete(kill_execution),
                )
                .route_layer(axum::middleware::from_fn_with_state(
                    state,
                    crate::api::node::refuse_other_nodes,
                )),
        )
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

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

async fn exec_sync(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<Json<ExecutionResult>, ExecutorError> {
    let job = intake::job_from_multipart(multipart)
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

async fn exec_async(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<(StatusCode, Json<Value>), ExecutorError> {
    let job = intake::job_from_multipart(multipart)
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
    Ok((StatusCode::ACCEPTED, Json(json!({ "execution_id": id }))))
}

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

async fn kill_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ExecutorError> {
    let record = state
        .executions
        .get(&id, caller.owner())
        .ok_or_else(|| ExecutorError::not_found(&id))?;
    let session = record.lock().kill();
    if let Some(session) = session {
        let _ = state.manager.delete(&session);
    }
    Ok(Json(json!({"status": "killed"})))
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
    let session = match manager.create_for(owner).await {
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
            },
            None,
        )
        .await?)
}
