//! The script wrapper's API: load a script from the configured scripts directory under an
//! alias, list what is loaded, call its functions with JSON arguments, install a package.
//!
//! A translation onto the core: each alias is a long-lived session of its own, into which the
//! script is imported as a module; a call is a cell that calls the function and returns its
//! result as `application/json` (its `repr` when it is not JSON-serialisable). Errors of the
//! service are the native `{"error": {"code", "message", "category"}}`; a function that raises
//! answers `{"status": "error", "error": {"ename", "evalue", "traceback"}, "category"}`, as a
//! cell would.
//!
//! An alias belongs to the caller that loaded it (with `auth.tokens` on, each token has aliases
//! of its own, in sessions of its own): another token's alias is unknown to a caller.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::python_literal::{python_literal, python_str};
use crate::api::auth::Caller;
use crate::api::error::ErrorCode;
use crate::api::json::Json;
use crate::api::openapi::ErrorBody;
use crate::api::{ApiError, AppState};
use crate::execution::{Category, ExecRequest, Execution, Status};
use crate::protocol::ErrorInfo;
use crate::{Config, SessionManager};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(load))
        .routes(routes!(list))
        .routes(routes!(call))
        .routes(routes!(install_package))
}

/// How long `pip install` may take, as the script wrapper's clients expect; a server whose
/// `execution.max_timeout_ms` is lower allows only that (and the reply says so).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// What the script wrapper knows: where scripts are, and what is loaded under which alias.
pub struct Scripts {
    dir: PathBuf,
    allow_install: bool,
    /// [`INSTALL_TIMEOUT`], capped by `execution.max_timeout_ms`.
    install_timeout: Duration,
    loaded: DashMap<AliasKey, Loaded>,
}

/// An alias, as its owner (the caller that loaded it) names it.
type AliasKey = (Option<String>, String);

fn key(caller: &Caller, alias: &str) -> AliasKey {
    (caller.owner().map(str::to_owned), alias.to_owned())
}

/// A loaded script.
#[derive(Debug, Clone, Serialize, ToSchema)]
struct Loaded {
    alias: String,
    script_name: String,
    functions: Vec<String>,
    /// What the script's `get_tool_info()` returned, if it has one.
    #[schema(value_type = Value)]
    info: Value,
    #[serde(skip)]
    session: String,
}

impl Scripts {
    pub fn from_config(config: &Config) -> Scripts {
        Scripts {
            dir: config.scripts.dir.clone(),
            allow_install: config.packages.allow_install,
            install_timeout: INSTALL_TIMEOUT
                .min(Duration::from_millis(config.execution.max_timeout_ms)),
            loaded: DashMap::new(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"script_name": "geometry.py", "alias": "geometry"})))]
struct LoadRequest {
    script_name: String,
    alias: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"alias": "geometry", "function_name": "scale", "args": [[1, 2]], "kwargs": {"factor": 3}})))]
struct CallRequest {
    alias: String,
    function_name: String,
    #[serde(default)]
    #[schema(value_type = Vec<Value>)]
    args: Vec<Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    kwargs: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"package_name": "tabulate==0.9.0"})))]
struct InstallRequest {
    package_name: String,
}

fn bad(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn not_found(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code, message)
}

/// A plain name: letters, digits, `_`, `-`, `.`; no path.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Python code that imports `path` as module `name`, keeps it under `alias` in the session,
/// and evaluates to its functions and tool info as JSON.
fn load_cell(path: &str, alias: &str) -> String {
    format!(
        r#"import importlib.util as _util, inspect as _inspect
_spec = _util.spec_from_file_location({module}, {path})
_module = _util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().setdefault("__replpool_tools__", {{}})[{alias}] = _module
_functions = sorted(n for n, f in vars(_module).items()
                    if _inspect.isfunction(f) and not n.startswith("_") and f.__module__ == _module.__name__)
_info = _module.get_tool_info() if callable(getattr(_module, "get_tool_info", None)) else None
__replpool_json__({{"functions": _functions, "info": _info}})"#,
        module = python_str(&format!("replpool_tool_{alias}")),
        path = python_str(path),
        alias = python_str(alias),
    )
}

/// Python code that calls the function and evaluates to its result as JSON.
fn call_cell(
    alias: &str,
    function: &str,
    args: &[Value],
    kwargs: &serde_json::Map<String, Value>,
) -> String {
    format!(
        r#"import json as _json
_fn = getattr(__replpool_tools__[{alias}], {function}, None)
if not callable(_fn):
    raise LookupError({function})
_value = _fn(*{args}, **{kwargs})
try:
    _json.dumps(_value)
    _out = {{"result": _value}}
except (TypeError, ValueError):
    _out = {{"result": repr(_value), "repr": True}}
__replpool_json__(_out)"#,
        alias = python_str(alias),
        function = python_str(function),
        args = python_literal(&Value::Array(args.to_vec())),
        kwargs = python_literal(&Value::Object(kwargs.clone())),
    )
}

/// Defines `__replpool_json__(value)`: an object whose `application/json` repr is `value`.
const JSON_HELPER: &str = r#"class __replpool_json__:
    def __init__(self, value):
        self.value = value
    def _repr_json_(self):
        return self.value
    def __repr__(self):
        return "<json>"
"#;

/// The `application/json` value of a cell's result.
fn json_result(execution: &Execution) -> Option<Value> {
    execution
        .result
        .as_ref()
        .and_then(|r| r.get("application/json"))
        .cloned()
}

/// The reply of a load, a call or an install: `status` says which shape it is.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // a schema only: the handlers build these replies with `json!`
struct ScriptReply {
    /// `success` or `error`.
    status: String,
    alias: Option<String>,
    script_name: Option<String>,
    functions: Option<Vec<String>>,
    /// A call's return value (its `repr` when it is not JSON).
    #[schema(value_type = Value, required = false)]
    result: Option<Value>,
    /// Whether `result` is a `repr`.
    repr: Option<bool>,
    package_name: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    timeout_ms: Option<u64>,
    /// The exception the script raised (`{"ename", "evalue", "traceback"}`), or, for an
    /// install, what went wrong.
    #[schema(value_type = Value, required = false)]
    error: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // a schema only: `list` builds it with `json!`
struct ScriptList {
    scripts: Vec<Loaded>,
}

/// Loads a script of the scripts directory under an alias (a session of its own), replacing
/// what the alias held.
#[utoipa::path(
    post,
    path = "/python/load",
    operation_id = "python_load",
    tag = "scripts",
    request_body = LoadRequest,
    responses(
        (status = 200, description = "Loaded (`status: success`), or the script raised (`status: error`)", body = ScriptReply),
        (status = 400, description = "`invalid_script_name`, `invalid_alias`, `invalid_json`", body = ErrorBody),
        (status = 404, description = "`script_not_found`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 429, description = "`too_many_sessions`, `queue_full`", body = ErrorBody),
        (status = 503, description = "`too_many_sessions`, `worker_unavailable`, `sandbox_unavailable`, `shutting_down`, `draining`", body = ErrorBody),
    ),
)]
async fn load(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<LoadRequest>,
) -> Result<Json<Value>, ApiError> {
    let scripts = &state.scripts;
    let name = request.script_name.trim_end_matches(".py");
    if !is_plain_name(name) {
        return Err(bad(
            ErrorCode::InvalidScriptName,
            format!(
                "script_name {:?} must be a plain name in the scripts directory",
                request.script_name
            ),
        ));
    }
    if !is_plain_name(&request.alias) {
        return Err(bad(
            ErrorCode::InvalidAlias,
            "alias must be letters, digits, `_`, `-` or `.`",
        ));
    }
    let path = scripts.dir.join(format!("{name}.py"));
    if !path.is_file() {
        return Err(not_found(
            ErrorCode::ScriptNotFound,
            format!("no script {name}.py in {}", scripts.dir.display()),
        ));
    }
    // A task of its own: a client that goes away must not leave the session behind.
    let task = tokio::spawn(load_alias(
        state,
        key(&caller, &request.alias),
        name.to_owned(),
        path,
    ));
    task.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("the load's task ended: {e}"),
        )
    })?
}

/// Loads the script at `path` into a new session of the key's owner and keeps it under the
/// key's alias, replacing (and ending) what was there.
async fn load_alias(
    state: AppState,
    key: AliasKey,
    script_name: String,
    path: PathBuf,
) -> Result<Json<Value>, ApiError> {
    let manager = &state.manager;
    let (owner, alias) = &key;
    let session = manager.create_for(owner.as_deref()).await?.session_id;
    // A session whose script is not loaded serves nobody: it ends however the load fails.
    let described = match import(manager, &session, &path, alias).await {
        Ok(Ok(described)) => described,
        Ok(Err((error, category))) => {
            let _ = manager.delete(&session);
            return Ok(Json(
                json!({"status": "error", "error": error, "category": category}),
            ));
        }
        Err(e) => {
            let _ = manager.delete(&session);
            return Err(e.into());
        }
    };
    let entry = Loaded {
        alias: alias.clone(),
        script_name,
        functions: serde_json::from_value(described["functions"].clone()).unwrap_or_default(),
        info: described["info"].clone(),
        session,
    };
    if let Some(previous) = state.scripts.loaded.insert(key, entry.clone()) {
        let _ = manager.delete(&previous.session);
    }
    Ok(Json(json!({
        "status": "success",
        "alias": entry.alias,
        "script_name": entry.script_name,
        "functions": entry.functions,
    })))
}

/// Imports the script at `path` into `session` under `alias`: its functions and tool info
/// (`Ok(Ok(_))`), or the error the script raised (`Ok(Err(_))`).
async fn import(
    manager: &SessionManager,
    session: &str,
    path: &std::path::Path,
    alias: &str,
) -> Result<Result<Value, (Option<ErrorInfo>, Category)>, crate::Error> {
    let run = |code: String| ExecRequest {
        code,
        ..ExecRequest::default()
    };
    let defined = manager
        .execute(session, &run(JSON_HELPER.to_owned()), None)
        .await?;
    if defined.status != Status::Ok {
        let category = failure(&defined);
        return Ok(Err((defined.error, category)));
    }
    let loaded = manager
        .execute(
            session,
            &run(load_cell(&path.to_string_lossy(), alias)),
            None,
        )
        .await?;
    Ok(json_result(&loaded)
        .filter(|_| loaded.status == Status::Ok)
        .ok_or_else(|| (loaded.error.clone(), failure(&loaded))))
}

/// The category of an execution that did not give what the wrapper wanted: its own, or
/// `runtime` for a cell that ended well without the JSON value it should have made.
fn failure(execution: &Execution) -> Category {
    execution.category.unwrap_or(Category::Runtime)
}

/// The caller's loaded scripts.
#[utoipa::path(
    get,
    path = "/python/list",
    operation_id = "python_list",
    tag = "scripts",
    responses((status = 200, description = "The caller's scripts, by alias", body = ScriptList)),
)]
async fn list(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let mut scripts: Vec<Loaded> = state
        .scripts
        .loaded
        .iter()
        .filter(|e| e.key().0.as_deref() == caller.owner())
        .map(|e| e.value().clone())
        .collect();
    scripts.sort_by(|a, b| a.alias.cmp(&b.alias));
    Json(json!({ "scripts": scripts }))
}

/// Calls a function of a loaded script with JSON arguments.
#[utoipa::path(
    post,
    path = "/python/call",
    operation_id = "python_call",
    tag = "scripts",
    request_body = CallRequest,
    responses(
        (status = 200, description = "Its result (`status: success`), or what it raised (`status: error`)", body = ScriptReply),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 404, description = "`alias_not_found`, `function_not_found`", body = ErrorBody),
        (status = 409, description = "`session_closed`", body = ErrorBody),
        (status = 413, description = "`code_too_large`, `payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 429, description = "`queue_full`", body = ErrorBody),
        (status = 503, description = "`worker_unavailable`, `sandbox_unavailable`, `shutting_down`", body = ErrorBody),
    ),
)]
async fn call(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CallRequest>,
) -> Result<Json<Value>, ApiError> {
    let loaded = state
        .scripts
        .loaded
        .get(&key(&caller, &request.alias))
        .map(|e| e.value().clone())
        .ok_or_else(|| {
            not_found(
                ErrorCode::AliasNotFound,
                format!("no script is loaded as {:?}", request.alias),
            )
        })?;
    if !loaded.functions.contains(&request.function_name) {
        return Err(not_found(
            ErrorCode::FunctionNotFound,
            format!(
                "{:?} has no function {:?} (it has {:?})",
                request.alias, request.function_name, loaded.functions
            ),
        ));
    }
    let code = call_cell(
        &request.alias,
        &request.function_name,
        &request.args,
        &request.kwargs,
    );
    let execution = state
        .manager
        .execute(
            &loaded.session,
            &ExecRequest {
                code,
                ..ExecRequest::default()
            },
            None,
        )
        .await
        .map_err(|e| match e {
            crate::Error::SessionNotFound(_) => not_found(
                ErrorCode::AliasNotFound,
                format!(
                    "the session of {:?} has ended; load the script again",
                    request.alias
                ),
            ),
            other => ApiError::from(other),
        })?;
    match (execution.status, json_result(&execution)) {
        (Status::Ok, Some(out)) => Ok(Json(json!({
            "status": "success",
            "result": out["result"],
            "repr": out.get("repr").is_some(),
            "stdout": execution.stdout,
        }))),
        _ => Ok(Json(json!({
            "status": "error",
            "error": execution.error,
            "category": failure(&execution),
            "stdout": execution.stdout,
            "stderr": execution.stderr,
        }))),
    }
}

/// Installs a package with pip (when `packages.allow_install`), then restarts the template so
/// that new workers see it.
#[utoipa::path(
    post,
    path = "/python/installPackage",
    operation_id = "python_install_package",
    tag = "scripts",
    request_body = InstallRequest,
    responses(
        (status = 200, description = "Installed (`status: success`), or pip failed or took too long (`status: error`)", body = ScriptReply),
        (status = 400, description = "`invalid_package_name`, `invalid_json`", body = ErrorBody),
        (status = 403, description = "`install_disabled`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`worker_unavailable`, `sandbox_unavailable`, `shutting_down`, `draining`", body = ErrorBody),
    ),
)]
async fn install_package(
    State(state): State<AppState>,
    Json(request): Json<InstallRequest>,
) -> Result<Json<Value>, ApiError> {
    if !state.scripts.allow_install {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InstallDisabled,
            "package installs are disabled (set packages.allow_install = true to allow them)",
        ));
    }
    let name = &request.package_name;
    let valid = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-=<>!~,[]".contains(c));
    if !valid {
        return Err(bad(
            ErrorCode::InvalidPackageName,
            format!("{name:?} is not a package requirement"),
        ));
    }
    let code = format!(
        "import subprocess, sys\np = subprocess.run([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', {}], capture_output=True, text=True)\nprint(p.stdout[-4000:])\nprint(p.stderr[-4000:], file=sys.stderr)\nraise SystemExit(p.returncode)",
        python_str(name)
    );
    let timeout = state.scripts.install_timeout;
    let execution = state
        .manager
        .execute_once(
            &ExecRequest {
                code,
                timeout: Some(timeout),
                ..ExecRequest::default()
            },
            None,
            None,
        )
        .await?;
    let timeout_ms = timeout.as_millis() as u64;
    if execution.status == Status::Timeout {
        let mut error = format!("pip did not finish within {timeout_ms} ms");
        if timeout < INSTALL_TIMEOUT {
            error.push_str(&format!(
                " (installPackage allows {} s; this server's execution.max_timeout_ms caps it)",
                INSTALL_TIMEOUT.as_secs()
            ));
        }
        return Ok(Json(json!({
            "status": "error",
            "error": error,
            "category": Category::Timeout,
            "timeout_ms": timeout_ms,
            "stdout": execution.stdout,
            "stderr": execution.stderr,
        })));
    }
    if execution.status != Status::Ok {
        return Ok(Json(json!({
            "status": "error",
            "category": failure(&execution),
            "timeout_ms": timeout_ms,
            "stdout": execution.stdout,
            "stderr": execution.stderr,
        })));
    }
    // New workers must see the package: the template re-imports from scratch.
    state.manager.restart_template();
    Ok(Json(
        json!({"status": "success", "package_name": name, "stdout": execution.stdout}),
    ))
}
