//! The Jupyter kernel API: the REST routes and the websocket a gateway client (jupyter_server's
//! `GatewayClient`, hence JupyterLab with `--gateway-url`) or a websocket kernel client
//! (nbclient through `jupyter-kernel-client`) uses.
//!
//! A kernel is a replpool session, nothing more: `POST /api/kernels` creates one of the
//! caller's sessions (the same limits, owner and eviction), `GET /api/kernels` lists the
//! caller's sessions, a session made through `/v1/sessions` is a kernel here too, and the two
//! ids are the same id written two ways (`ids.rs`). One kernel spec per interpreter
//! (`spec.rs`): `python3` is the default one, and a kernel's spec is its session's interpreter's.
//! The messages on `/api/kernels/{id}/channels` are translated in `channels.rs`. Errors are
//! jupyter_server's `{"message", "reason"}` with replpool's `error` beside it (`error.rs`).

mod channels;
mod error;
mod ids;
mod message;
mod spec;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::error::{JupyterError, JupyterErrorBody};
use self::spec::{KernelSpecEntry, KernelSpecs, Spec};
use crate::api::auth::Caller;
use crate::api::error::{ErrorCode, wrong_node};
use crate::api::json::Json;
use crate::api::{ApiError, AppState};
use crate::session::SessionInfo;
use crate::{Config, SessionManager};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_specs))
        .routes(routes!(get_spec))
        .routes(routes!(list_kernels, start_kernel))
        .routes(routes!(get_kernel, delete_kernel))
        .routes(routes!(interrupt_kernel))
        .routes(routes!(restart_kernel))
        .routes(routes!(channels))
}

/// What the Jupyter surface keeps beyond the manager's sessions: its kernel specs, and how
/// many websockets each kernel has open (a kernel model's `connections`).
pub struct Kernels {
    /// One per interpreter, the default's (`python3`) first.
    specs: Vec<Spec>,
    /// A cell's deadline: a notebook cell has none of its own, so the operator's cap on any
    /// execution (`execution.max_timeout_ms`) is its bound.
    cell_timeout: Duration,
    /// The largest message a client may send (`execution.max_frame_bytes`).
    max_message_bytes: usize,
    connections: DashMap<String, usize>,
}

impl Kernels {
    /// The specs of the manager's interpreters, each with its preload from `config` (the
    /// running interpreters know their versions, the configuration their preloads).
    pub fn new(config: &Config, manager: &SessionManager) -> Kernels {
        let configured = config.interpreters();
        let interpreters: Vec<(String, String, Vec<String>)> = manager
            .interpreters()
            .iter()
            .map(|interpreter| {
                let preload = configured
                    .iter()
                    .find(|entry| entry.name == interpreter.name)
                    .and_then(|entry| entry.preload.clone())
                    .unwrap_or_default();
                (
                    interpreter.name.clone(),
                    interpreter.version.clone(),
                    preload,
                )
            })
            .collect();
        Kernels {
            specs: Spec::all(&interpreters),
            cell_timeout: Duration::from_millis(config.execution.max_timeout_ms),
            max_message_bytes: config.execution.max_frame_bytes,
            connections: DashMap::new(),
        }
    }

    /// The spec `name` names, ignoring case as Jupyter does; another name is refused,
    /// listing the specs there are.
    fn spec(&self, name: &str) -> Result<&Spec, JupyterError> {
        self.specs
            .iter()
            .find(|spec| spec.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| JupyterError::spec_not_found(name, &self.spec_names()))
    }

    /// The spec of the interpreter a session runs.
    fn spec_of(&self, info: &SessionInfo) -> Option<&Spec> {
        self.specs
            .iter()
            .find(|spec| spec.interpreter == info.python.name)
    }

    /// The specs' names, for a refusal of another.
    fn spec_names(&self) -> String {
        self.specs
            .iter()
            .map(|spec| spec.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn connections(&self, session: &str) -> usize {
        self.connections.get(session).map_or(0, |n| *n)
    }

    /// Counts a websocket of `session`'s until the returned guard drops.
    fn connect(self: &std::sync::Arc<Self>, session: &str) -> Connection {
        *self.connections.entry(session.to_owned()).or_insert(0) += 1;
        Connection {
            kernels: std::sync::Arc::clone(self),
            session: session.to_owned(),
        }
    }

    fn model(&self, info: &SessionInfo) -> Option<Kernel> {
        Some(Kernel {
            id: ids::kernel_id(&info.session_id)?,
            name: self.spec_of(info)?.name.clone(),
            last_activity: info.last_used_at.clone(),
            execution_state: info.state,
            connections: self.connections(&info.session_id),
        })
    }
}

/// One open websocket of a kernel's.
struct Connection {
    kernels: std::sync::Arc<Kernels>,
    session: String,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.kernels
            .connections
            .remove_if_mut(&self.session, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
    }
}

/// A kernel, as jupyter_server describes one.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "id": "6c6f63616c_3f2a9c1e-0b7d-4c55-9e21-8a0c5d2e4f61", "name": "python3",
    "last_activity": "2026-11-26T04:05:27.123Z", "execution_state": "idle", "connections": 0
})))]
struct Kernel {
    /// The kernel's id: its session's id, written as Jupyter front ends route kernel ids.
    id: String,
    /// The kernel spec's name: its session's interpreter's (`python3` for the default one,
    /// `python3-<interpreter name in lower case>` for another).
    name: String,
    /// When it last ran something or was created (RFC 3339, UTC).
    last_activity: String,
    /// `idle` or `busy`.
    #[schema(value_type = String)]
    execution_state: &'static str,
    /// Open websockets to it.
    connections: usize,
}

/// `POST /api/kernels`' body, as jupyter_server and `GatewayClient` send it. `env` and `path`
/// are accepted and not used: a kernel's environment is its worker's. Other fields are
/// ignored, as jupyter_server ignores them.
#[derive(Debug, Default, Deserialize, ToSchema)]
struct StartKernel {
    /// The kernel spec (default `python3`, the default interpreter's), ignoring case.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // read by serde, unused: see the type's comment
    path: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code)]
    env: Option<serde_json::Value>,
}

/// The session a kernel id stands for, if it is the caller's: any other id is an unknown
/// kernel (another owner's included: existence is not leaked), one of another node 421.
/// The kernel's session as it is now; one that ended since [`session_of`] found it is the
/// kernel not found, as it would have been a moment earlier.
fn info_of(state: &AppState, session: &str, kernel_id: &str) -> Result<SessionInfo, JupyterError> {
    state.manager.info(session).map_err(|e| match e {
        crate::Error::SessionNotFound(_) => JupyterError::kernel_not_found(kernel_id),
        e => e.into(),
    })
}

fn session_of(state: &AppState, caller: &Caller, kernel_id: &str) -> Result<String, JupyterError> {
    let session =
        ids::session_id(kernel_id).ok_or_else(|| JupyterError::kernel_not_found(kernel_id))?;
    let this = state.manager.node();
    if let Some(node) = crate::node::of(&session)
        && node != this
    {
        return Err(JupyterError(wrong_node(kernel_id, node, this)));
    }
    state
        .manager
        .authorize(&session, caller.owner())
        .map_err(|_| JupyterError::kernel_not_found(kernel_id))?;
    Ok(session)
}

fn model_of(state: &AppState, info: &SessionInfo) -> Result<Kernel, JupyterError> {
    state.jupyter.model(info).ok_or_else(|| {
        JupyterError(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!(
                "session {} is no kernel (no kernel id, or no spec of its interpreter {})",
                info.session_id, info.python.name
            ),
        ))
    })
}

/// The kernel specs, one per interpreter: `python3` (the default, and the default
/// interpreter's), `python3-<name in lower case>` for each other one.
#[utoipa::path(
    get,
    path = "/api/kernelspecs",
    operation_id = "jupyter_kernelspecs",
    tag = "jupyter",
    responses((status = 200, description = "The kernel specs (jupyter_server's shape), one per interpreter", body = KernelSpecs)),
)]
async fn list_specs(State(state): State<AppState>) -> Json<KernelSpecs> {
    Json(spec::specs(&state.jupyter.specs))
}

/// One kernel spec.
#[utoipa::path(
    get,
    path = "/api/kernelspecs/{name}",
    operation_id = "jupyter_kernelspec",
    tag = "jupyter",
    params(("name" = String, Path, description = "The spec's name (case is ignored): `python3`, or `python3-<interpreter name in lower case>`")),
    responses(
        (status = 200, description = "The spec", body = KernelSpecEntry),
        (status = 404, description = "`kernel_spec_not_found`", body = JupyterErrorBody),
    ),
)]
async fn get_spec(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<KernelSpecEntry>, JupyterError> {
    Ok(Json(state.jupyter.spec(&name)?.entry()))
}

/// The caller's kernels: every session of theirs, however it was made.
#[utoipa::path(
    get,
    path = "/api/kernels",
    operation_id = "jupyter_list_kernels",
    tag = "jupyter",
    responses((status = 200, description = "The caller's kernels", body = Vec<Kernel>)),
)]
async fn list_kernels(State(state): State<AppState>, caller: Caller) -> Json<Vec<Kernel>> {
    let infos = state.manager.list_for(caller.owner()).await;
    Json(
        infos
            .iter()
            .filter_map(|info| state.jupyter.model(info))
            .collect(),
    )
}

/// Starts a kernel: a new session of the caller's, on a warm worker of the spec's interpreter.
#[utoipa::path(
    post,
    path = "/api/kernels",
    operation_id = "jupyter_start_kernel",
    tag = "jupyter",
    request_body(content = Option<StartKernel>, description = "Empty (`python3`), or `{\"name\": \"<spec>\"}`: one of `GET /api/kernelspecs` (`env`, `path` and other fields are ignored)", content_type = "application/json"),
    responses(
        (status = 201, description = "The kernel", body = Kernel, headers(("location" = String, description = "`/api/kernels/{id}`")),
            links(
                ("jupyter_get_kernel" = (operation_id = "jupyter_get_kernel", parameters(("id" = "$response.body#/id")), description = "The kernel")),
                ("jupyter_delete_kernel" = (operation_id = "jupyter_delete_kernel", parameters(("id" = "$response.body#/id")), description = "Shut it down")),
                ("jupyter_interrupt_kernel" = (operation_id = "jupyter_interrupt_kernel", parameters(("id" = "$response.body#/id")), description = "Interrupt its cell")),
                ("jupyter_restart_kernel" = (operation_id = "jupyter_restart_kernel", parameters(("id" = "$response.body#/id")), description = "Restart it")),
                ("jupyter_channels" = (operation_id = "jupyter_channels", parameters(("id" = "$response.body#/id")), description = "Its channels")),
            ),
        ),
        (status = 400, description = "`invalid_json`", body = JupyterErrorBody),
        (status = 404, description = "`kernel_spec_not_found`: a `name` that is none of the specs", body = JupyterErrorBody),
        (status = 422, description = "`invalid_request`: not an object of that shape", body = JupyterErrorBody),
        (status = 429, description = "`too_many_sessions`: the token's own limit, every one of its sessions busy", body = JupyterErrorBody),
        (status = 503, description = "`too_many_sessions` (at `sessions.max`), `worker_unavailable`, `sandbox_unavailable`, `shutting_down`, `draining`", body = JupyterErrorBody),
    ),
)]
async fn start_kernel(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, JupyterError> {
    let body = body.map_err(ApiError::from)?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        StartKernel::default()
    } else {
        serde_json::from_slice::<StartKernel>(&body).map_err(|e| {
            let (status, code) = if e.is_data() {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest)
            } else {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson)
            };
            ApiError::new(status, code, e.to_string())
        })?
    };
    let interpreter = match request.name.as_deref() {
        Some(name) => Some(state.jupyter.spec(name)?.interpreter.as_str()),
        None => None,
    };
    let info = state.manager.create_on(caller.owner(), interpreter).await?;
    let kernel = model_of(&state, &info)?;
    let location = format!("/api/kernels/{}", kernel.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(kernel),
    )
        .into_response())
}

/// A kernel.
#[utoipa::path(
    get,
    path = "/api/kernels/{id}",
    operation_id = "jupyter_get_kernel",
    tag = "jupyter",
    params(("id" = String, Path, description = "The kernel's id")),
    responses(
        (status = 200, description = "The kernel", body = Kernel),
        (status = 404, description = "`kernel_not_found`", body = JupyterErrorBody),
    ),
)]
async fn get_kernel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Kernel>, JupyterError> {
    let session = session_of(&state, &caller, &id)?;
    let info = info_of(&state, &session, &id)?;
    Ok(Json(model_of(&state, &info)?))
}

/// Shuts a kernel down: its session ends (a running cell with it).
#[utoipa::path(
    delete,
    path = "/api/kernels/{id}",
    operation_id = "jupyter_delete_kernel",
    tag = "jupyter",
    params(("id" = String, Path, description = "The kernel's id")),
    responses(
        (status = 204, description = "Shut down"),
        (status = 404, description = "`kernel_not_found`", body = JupyterErrorBody),
    ),
)]
async fn delete_kernel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, JupyterError> {
    let session = session_of(&state, &caller, &id)?;
    state.manager.delete(&session)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Interrupts the kernel's running cell (a KeyboardInterrupt in it); nothing when none runs.
#[utoipa::path(
    post,
    path = "/api/kernels/{id}/interrupt",
    operation_id = "jupyter_interrupt_kernel",
    tag = "jupyter",
    params(("id" = String, Path, description = "The kernel's id")),
    responses(
        (status = 204, description = "Interrupted (or nothing was running)"),
        (status = 404, description = "`kernel_not_found`", body = JupyterErrorBody),
    ),
)]
async fn interrupt_kernel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, JupyterError> {
    let session = session_of(&state, &caller, &id)?;
    state.manager.interrupt(&session)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restarts the kernel: its running cell is interrupted, then its worker replaced by a fresh
/// warm one of the same interpreter (the session's reset: a new namespace; its id, files and
/// spec stay).
#[utoipa::path(
    post,
    path = "/api/kernels/{id}/restart",
    operation_id = "jupyter_restart_kernel",
    tag = "jupyter",
    params(("id" = String, Path, description = "The kernel's id")),
    responses(
        (status = 200, description = "The kernel, restarted", body = Kernel),
        (status = 404, description = "`kernel_not_found`", body = JupyterErrorBody),
        (status = 409, description = "`session_closed`: it ended meanwhile", body = JupyterErrorBody),
        (status = 429, description = "`queue_full`", body = JupyterErrorBody),
        (status = 503, description = "`worker_unavailable`, `sandbox_unavailable`, `shutting_down`", body = JupyterErrorBody),
    ),
)]
async fn restart_kernel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Kernel>, JupyterError> {
    let session = session_of(&state, &caller, &id)?;
    let info = restart(&state.manager, &session).await?;
    Ok(Json(model_of(&state, &info)?))
}

/// A kernel's restart: what runs is interrupted (a kernel's process would be killed), then the
/// session is reset, behind what was queued before.
async fn restart(
    manager: &crate::SessionManager,
    session: &str,
) -> Result<SessionInfo, crate::Error> {
    manager.interrupt(session)?;
    manager.reset(session).await
}

/// The kernel's channels: Jupyter messages over a websocket, in the default JSON framing.
#[utoipa::path(
    get,
    path = "/api/kernels/{id}/channels",
    operation_id = "jupyter_channels",
    tag = "jupyter",
    params(("id" = String, Path, description = "The kernel's id")),
    responses(
        (status = 101, description = "A websocket: one JSON text frame per message (messaging protocol 5.3)"),
        (status = 400, description = "`bad_request`: not a websocket handshake", body = JupyterErrorBody),
        (status = 404, description = "`kernel_not_found`", body = JupyterErrorBody),
        (status = 426, description = "`bad_request`: the connection cannot be upgraded", body = JupyterErrorBody),
    ),
)]
async fn channels(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, JupyterError> {
    let session = session_of(&state, &caller, &id)?;
    // A session keeps its interpreter for its life, restarts included: its spec is read once.
    let info = info_of(&state, &session, &id)?;
    let spec = state.jupyter.spec_of(&info).cloned().ok_or_else(|| {
        JupyterError(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("no kernel spec of interpreter {}", info.python.name),
        ))
    })?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            ErrorCode::BadRequest,
            rejection.body_text(),
        )
    })?;
    let max = state.jupyter.max_message_bytes;
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| channels::serve(socket, state, session, spec)))
}
