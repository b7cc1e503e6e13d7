//! The service's configuration: `config.toml`, then `REPLPOOL_<SECTION>_<KEY>` environment
//! overrides, then validation.
//!
//! Every field has a default, so an empty file is a valid configuration. Unknown fields are
//! errors rather than silently ignored: a typo in an operator's file should stop the start, not
//! leave a limit at its default. Every error names the field it is about.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variables with this prefix override config fields: `REPLPOOL_POOL_WARM_WORKERS=4`.
pub const ENV_PREFIX: &str = "REPLPOOL_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
}

impl ConfigError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub python: PythonConfig,
    pub pool: PoolConfig,
    pub sessions: SessionsConfig,
    pub execution: ExecutionConfig,
    pub limits: LimitsConfig,
    pub files: FilesConfig,
    pub judge: JudgeConfig,
    pub executor: ExecutorConfig,
    pub scripts: ScriptsConfig,
    pub packages: PackagesConfig,
    pub auth: AuthConfig,
    pub sandbox: SandboxConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub mcp: McpConfig,
}

/// The server's own log (stderr). Its level is `REPLPOOL_LOG` (`info` by default).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text`: lines for people. `json`: one JSON object a line, with the fields of the
    /// spans it happened in (the request's method, path and route, the session id and the
    /// execution's number), for a log collector.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `GET /metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` without a bearer token even when `auth.tokens` are set (for a
    /// scraper on a network the operator trusts; the figures name no session).
    pub public: bool,
}

/// The MCP server (`/mcp` and `replpool mcp`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// A figure (PNG) larger than this, bytes of the image, is answered as a resource link
    /// (`replpool://sessions/{id}/outputs/{n}`) instead of inline image content: big inline
    /// images break clients and fill a model's context.
    pub max_inline_image_bytes: usize,
    /// How often a running `run_python` tells a client that asked for progress (a
    /// `progressToken`) that it is still running, milliseconds: clients drop calls that stay
    /// silent for minutes.
    pub progress_interval_ms: u64,
    /// `Host` headers `/mcp` accepts (names or `name:port`), against DNS rebinding of a
    /// server on a developer's machine. Empty: any host (the bearer tokens guard the server).
    pub allowed_hosts: Vec<String>,
    /// MCP sessions (`initialize` handshakes over HTTP) open at once on this node; over it a
    /// new `initialize` is refused (503 `too_many_sessions`). Each holds a task and buffers
    /// until closed (DELETE) or idle for rmcp's keep-alive (5 minutes).
    pub max_sessions: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            max_inline_image_bytes: 512 * 1024,
            progress_interval_ms: 5_000,
            allowed_hosts: Vec::new(),
            max_sessions: 256,
        }
    }
}

/// What user code is kept from: other sessions' files, the network, the server's user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// When the server runs as root, workers drop to this user (a name or a number); its
    /// primary group is the workers' group. Empty: workers keep the server's user.
    pub user: String,
    /// `first-last`: each session runs as a uid of its own from this range (with `user`'s
    /// group), so that no session can read another's files. Empty: every session runs as
    /// `user` itself.
    pub session_uids: String,
    /// `none`: workers have a network namespace of their own with only loopback. `host`: the
    /// machine's network.
    pub network: Network,
    /// Per-session cgroups (pids, memory) where the machine offers them.
    pub cgroups: bool,
    /// `view`: where a mount namespace can be made, workers see a minimal root of their own
    /// (the Python installation, system libraries, a small /etc, their session directory).
    /// `host`: the machine's filesystem.
    pub filesystem: FilesystemMode,
    /// More paths workers see (read-only) in their view: data directories, sockets.
    pub expose: Vec<PathBuf>,
    /// Isolation the server must have: it refuses to start, saying what is missing and how to
    /// grant it, rather than run with less. Empty: the strongest the machine allows, reported
    /// by /healthz and at start.
    pub require: Vec<Requirement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilesystemMode {
    View,
    Host,
}

/// One mechanism of `sandbox.require` (see `sandbox/isolation.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// A uid per session.
    Users,
    /// No network but loopback.
    Network,
    /// A private filesystem view.
    Filesystem,
    /// No signals (or /proc) across sessions.
    Processes,
    /// Per-session cgroups.
    Cgroups,
}

impl Requirement {
    pub fn name(self) -> &'static str {
        match self {
            Requirement::Users => "users",
            Requirement::Network => "network",
            Requirement::Filesystem => "filesystem",
            Requirement::Processes => "processes",
            Requirement::Cgroups => "cgroups",
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            user: "nobody".into(),
            session_uids: "200000-299999".into(),
            network: Network::None,
            cgroups: true,
            filesystem: FilesystemMode::View,
            expose: Vec::new(),
            require: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    None,
    Host,
}

impl SandboxConfig {
    /// The `session_uids` range, if one is set.
    pub fn session_uid_range(&self) -> Result<Option<(u32, u32)>, ConfigError> {
        let text = self.session_uids.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || {
            ConfigError::field(
                "sandbox.session_uids",
                format!("{text:?} is not a range `first-last` of uids above 0"),
            )
        };
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let last: u32 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(Some((first, last)))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Bearer tokens. When any is set, every route but `/healthz` needs one, and a session
    /// belongs to the token that created it.
    pub tokens: Vec<String>,
    /// A file of more tokens, one per line (blank lines and `#` comments skipped).
    pub tokens_file: Option<PathBuf>,
    /// Without tokens, binding to an address other machines can reach is refused unless this
    /// says the operator means it.
    pub allow_anonymous_public: bool,
    /// Most sessions one token may hold at once; 0: a fair share, `sessions.max` divided by
    /// the number of tokens. At it, the token's own least recently used idle session is ended
    /// to make room, never another token's.
    pub max_sessions_per_token: usize,
}

impl AuthConfig {
    /// The sessions one token may hold (see `max_sessions_per_token`).
    pub fn sessions_per_token(&self, max_sessions: usize) -> usize {
        match self.max_sessions_per_token {
            0 => (max_sessions / self.tokens.len().max(1)).max(1),
            n => n.min(max_sessions),
        }
    }
}

/// The script wrapper (`/python/...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptsConfig {
    /// Where `POST /python/load` finds `<script_name>.py` (relative to the config file).
    pub dir: PathBuf,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        ScriptsConfig {
            dir: PathBuf::from("scripts"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackagesConfig {
    /// Let `POST /python/installPackage` pip-install into the workers' environment.
    pub allow_install: bool,
    /// Per-session installs (`POST /v1/sessions/{id}/packages`, `requirements` at creation,
    /// `%pip install` in cells, python-executor's `requirements_txt`).
    pub enabled: bool,
    /// The installer, `uv` (a path relative to the config file, or a name on `PATH`).
    pub uv: PathBuf,
    /// uv's cache, shared by every session's installs: written only by the server (relative
    /// to the config file).
    pub cache_dir: PathBuf,
    /// The package index (uv's `--index-url`); unset: uv's default, PyPI.
    pub index_url: Option<String>,
    /// Directories or pages of wheels to look in as well (uv's `--find-links`).
    pub find_links: Vec<String>,
    /// Globs over normalized package names (PEP 503) a session may install.
    pub allow: Vec<String>,
    /// Globs over normalized package names no session may install (wins over `allow`).
    pub deny: Vec<String>,
    /// Build packages that have no wheel from their sources. Off: a build runs the package's
    /// own code, as the server's user and with its network.
    pub allow_builds: bool,
    /// How long one install (resolution, downloads, unpacking) may take.
    pub timeout_ms: u64,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        PackagesConfig {
            allow_install: false,
            enabled: true,
            uv: PathBuf::from(".venv/bin/uv"),
            cache_dir: PathBuf::from(".cache/replpool-uv"),
            index_url: None,
            find_links: Vec::new(),
            allow: vec!["*".to_owned()],
            deny: Vec::new(),
            allow_builds: false,
            timeout_ms: 120_000,
        }
    }
}

/// The python-executor surface (`/api/v1/...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// How long a finished execution's result stays available to `GET /api/v1/executions/{id}`.
    pub keep_secs: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig { keep_secs: 3600 }
    }
}

/// The code judge's `POST /execute` (seed 000).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Deadline of one test case (the seed server's: 120 s).
    pub run_timeout_ms: u64,
    /// Deadline of a C++ compilation (the seed server's: 60 s).
    pub compile_timeout_ms: u64,
    /// Test cases run at once (0: as many as `pool.warm_workers`).
    pub parallel: usize,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            run_timeout_ms: 120_000,
            compile_timeout_ms: 60_000,
            parallel: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Largest file the files API accepts (413 above it).
    pub max_bytes: u64,
    /// Largest total of a session's files, uploads and what code wrote (507 above it).
    pub max_total_bytes: u64,
    /// Most files a listing returns (it says `truncated` when there are more).
    pub max_list_entries: usize,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_bytes: 100 << 20,
            max_total_bytes: 1 << 30,
            max_list_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// This node's name, in every id a client keeps (`<node>.<random>`), so that a proxy in
    /// front of several nodes can route by it. A DNS label; default: the host name.
    pub node: String,
    /// Address the HTTP API listens on. Loopback by default: the API runs arbitrary code.
    pub bind: SocketAddr,
    /// On SIGTERM/Ctrl-C, how long running executions may take to finish before every
    /// worker is killed.
    pub shutdown_grace_ms: u64,
    /// From the first byte of a request to the end of its headers; a connection slower than
    /// that is closed (a slowloris holds nothing longer).
    pub header_read_timeout_ms: u64,
    /// From the end of a request's headers to the end of its body; slower, the request is
    /// answered 408 `request_timeout` and the connection closed.
    pub body_read_timeout_ms: u64,
    /// A connection with no request in progress that receives nothing for this long (a new
    /// one that stays silent, or a kept-alive one between requests) is closed.
    pub keep_alive_timeout_ms: u64,
    /// Connections served at once. At the cap the server stops accepting (new connections
    /// wait in the kernel's backlog) until one closes. Clamped to half the open-file limit.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node: crate::node::default_name(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8765)),
            shutdown_grace_ms: 10_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            keep_alive_timeout_ms: 10_000,
            max_connections: 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PythonConfig {
    /// Interpreter for workers: a path (relative to the config file) or a name on `PATH`.
    pub executable: PathBuf,
    /// Imported once per worker before any session uses it, as in an import statement.
    pub preload: Vec<String>,
    /// `OPENBLAS_NUM_THREADS`, `OMP_NUM_THREADS`, `MKL_NUM_THREADS` for workers.
    pub blas_threads: u32,
    /// Run one-shot executions whose code cannot need the preload (see `preload_use.rs`) on
    /// workers without it, from a second, lean template and pool.
    pub lean_oneshots: bool,
    /// Several Pythons side by side, each with its own template and warm pool; the first is
    /// the default. Empty: `executable` with `preload` is the one interpreter (named
    /// [`DEFAULT_INTERPRETER`]); otherwise `executable` is not used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interpreters: Vec<InterpreterConfig>,
    /// Requirements installed (with `packages.uv`) into the interpreter's own environment at
    /// start, before the template imports the preload; what is already satisfied is left.
    pub extra_packages: Vec<String>,
}

/// The name of the one interpreter of a configuration without `[[python.interpreters]]`.
pub const DEFAULT_INTERPRETER: &str = "default";

/// One `[[python.interpreters]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterpreterConfig {
    /// What sessions ask for (`{"python": "3.12"}`), in metrics and `/healthz`: letters,
    /// digits, `.`, `-`, `_`.
    pub name: String,
    /// A path (relative to the config file) or a name on `PATH`.
    pub executable: PathBuf,
    /// Default: `python.preload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<Vec<String>>,
    /// Default: `pool.warm_workers` for the first (the default) interpreter, 1 for the others:
    /// every warm worker holds its preload's memory and a uid, and the other interpreters are
    /// asked for less often; a session that finds none ready waits for a fork (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_workers: Option<usize>,
}

impl Default for PythonConfig {
    fn default() -> Self {
        PythonConfig {
            executable: PathBuf::from(".venv/bin/python"),
            preload: vec![
                "numpy as np".to_owned(),
                "pandas as pd".to_owned(),
                "matplotlib.pyplot as plt".to_owned(),
            ],
            blas_threads: 1,
            lean_oneshots: true,
            interpreters: Vec::new(),
            extra_packages: Vec::new(),
        }
    }
}

/// The most `pool.cold_starts` may be.
pub const MAX_COLD_STARTS: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Started, preloaded, idle workers kept ready for new sessions.
    pub warm_workers: usize,
    /// How long a worker may take to start and preload before it is given up on.
    pub start_timeout_ms: u64,
    /// How long an execution waits for a warm worker before it runs cold instead.
    pub acquire_timeout_ms: u64,
    /// Cold interpreters starting at once, server-wide (0: one per CPU). Past its acquire
    /// timeout an execution waits for a start or its warm worker, whichever comes first.
    pub cold_starts: usize,
    /// Fork workers from a preloaded template process (milliseconds per worker) rather than
    /// start each one directly (about a second each).
    pub template: bool,
    /// Idle workers without the preload kept ready for one-shot executions that cannot need
    /// it (`python.lean_oneshots`).
    pub lean_workers: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            warm_workers: 2,
            start_timeout_ms: 60_000,
            acquire_timeout_ms: 5_000,
            cold_starts: 0,
            template: true,
            lean_workers: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Most sessions alive at once; creating one more is refused with 503.
    pub max: usize,
    /// Executions that may wait behind the running one in a session; one more gets 429.
    pub queue_depth: usize,
    /// A session unused this long is ended (0: never).
    pub idle_ttl_secs: u64,
    /// Executions kept in a session's history and notebook (the oldest are dropped).
    pub history_max: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            max: 64,
            queue_depth: 32,
            idle_ttl_secs: 3600,
            history_max: 1000,
        }
    }
}

/// Per-worker resource limits (0: no limit). They apply to the worker and everything it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Address space of a worker process (RLIMIT_AS), MiB. Beyond it allocations raise
    /// MemoryError. A preloaded worker maps about 400 MiB before any user data.
    pub memory_mb: u64,
    /// Largest file a worker may write (RLIMIT_FSIZE), MiB.
    pub file_size_mb: u64,
    /// Open file descriptors per worker process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// CPU time one execution may use, seconds (SIGXCPU, reported as CPUTimeLimitExceeded).
    pub cpu_seconds: u64,
    /// Processes (and threads) of one session: its pids cgroup, else RLIMIT_NPROC of its uid.
    pub processes: u64,
    /// CPU of one session's processes together, in cores (its cgroup's `cpu.max` / CFS quota);
    /// 0: no ceiling. Sessions also get equal CPU weights, whatever this is.
    pub cpus: f64,
    /// CPU time a session's processes may use while none of its cells runs (threads and
    /// processes a cell left behind), seconds over the last minute; beyond it the session's
    /// worker is reset. 0: no budget (still counted and reported).
    pub background_cpu_seconds_per_minute: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory_mb: 4096,
            file_size_mb: 1024,
            open_files: 1024,
            cpu_seconds: 600,
            processes: 256,
            cpus: 1.0,
            background_cpu_seconds_per_minute: 30.0,
        }
    }
}

/// `[limits]` is the one declaration of the resource limits: what each enforcing part needs
/// is derived from it here, so a new limit is a field above plus the view that carries it.
/// Every field is in exactly one view ([`LimitsConfig::VIEWS`] and its test say which).
impl LimitsConfig {
    /// Where each field is enforced, by the view that carries it.
    pub const VIEWS: [(&'static str, LimitView); 7] = [
        ("memory_mb", LimitView::PerProcess),
        ("file_size_mb", LimitView::PerProcess),
        ("open_files", LimitView::PerProcess),
        ("processes", LimitView::PerSession),
        ("cpus", LimitView::PerSession),
        ("cpu_seconds", LimitView::PerCell),
        ("background_cpu_seconds_per_minute", LimitView::Background),
    ];

    fn nonzero(value: u64) -> Option<u64> {
        (value > 0).then_some(value)
    }

    /// The rlimits every worker process gets between fork and exec (inherited by all it
    /// starts, not raisable by user code).
    pub fn per_process(&self) -> ProcessLimits {
        ProcessLimits {
            address_space_bytes: self.address_space_bytes(),
            file_size_bytes: self.file_size_bytes(),
            open_files: self.open_files(),
        }
    }

    /// What holds a session's processes together: its cgroup where there is one (pids,
    /// memory, cpu), else RLIMIT_NPROC of its uid for `processes`.
    pub fn per_session(&self) -> SessionLimits {
        SessionLimits {
            processes: self.processes(),
            memory_bytes: self.address_space_bytes(),
            cpus: self.cpus(),
        }
    }

    /// CPU time one cell may use (sent with each execution to the worker).
    pub fn per_cell_cpu_seconds(&self) -> Option<u64> {
        self.cpu_seconds()
    }

    pub fn address_space_bytes(&self) -> Option<u64> {
        Self::nonzero(self.memory_mb).map(|mb| mb << 20)
    }

    pub fn file_size_bytes(&self) -> Option<u64> {
        Self::nonzero(self.file_size_mb).map(|mb| mb << 20)
    }

    pub fn open_files(&self) -> Option<u64> {
        Self::nonzero(self.open_files)
    }

    pub fn cpu_seconds(&self) -> Option<u64> {
        Self::nonzero(self.cpu_seconds)
    }

    pub fn processes(&self) -> Option<u64> {
        Self::nonzero(self.processes)
    }

    pub fn cpus(&self) -> Option<f64> {
        (self.cpus > 0.0).then_some(self.cpus)
    }

    /// The background CPU budget the server's watch holds sessions to.
    pub fn background_cpu_budget(&self) -> Option<f64> {
        (self.background_cpu_seconds_per_minute > 0.0)
            .then_some(self.background_cpu_seconds_per_minute)
    }
}

/// Which part of the service enforces a `[limits]` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitView {
    /// [`LimitsConfig::per_process`]: rlimits set on each worker.
    PerProcess,
    /// [`LimitsConfig::per_session`]: the session's cgroup (or RLIMIT_NPROC).
    PerSession,
    /// [`LimitsConfig::per_cell_cpu_seconds`]: each execution's request to the worker.
    PerCell,
    /// [`LimitsConfig::background_cpu_budget`]: the server's background CPU watch.
    Background,
}

/// The per-process limits (rlimits) of a worker; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessLimits {
    /// RLIMIT_AS: beyond it allocations fail (a MemoryError in Python).
    pub address_space_bytes: Option<u64>,
    /// RLIMIT_FSIZE: writing past it fails with EFBIG (Python ignores SIGXFSZ).
    pub file_size_bytes: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
}

/// The limits of one session's processes together; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionLimits {
    /// Processes and threads (`pids.max`, else RLIMIT_NPROC of the session's uid).
    pub processes: Option<u64>,
    /// Memory of all its processes (`memory.max` / `memory.limit_in_bytes`).
    pub memory_bytes: Option<u64>,
    /// CPU time per wall-clock second, in cores (`cpu.max` / the CFS quota).
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionConfig {
    /// Deadline of an execute that does not name one.
    pub default_timeout_ms: u64,
    /// Largest `timeout_ms` a request may ask for; larger requests are capped to it.
    pub max_timeout_ms: u64,
    /// After the deadline the worker gets SIGINT; this long later it is killed.
    pub interrupt_grace_ms: u64,
    /// stdout and stderr of one execution together are cut at this many bytes.
    pub max_output_bytes: usize,
    /// Largest `code` accepted (413 above it).
    pub max_code_bytes: usize,
    /// Largest protocol frame between server and worker, either way.
    pub max_frame_bytes: usize,
    /// Rows of a DataFrame's or Series' table (`application/vnd.dataresource+json`), and
    /// points of a series (bars, wedges, boxes) of a chart, kept in a bundle's data.
    pub max_table_rows: usize,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            default_timeout_ms: 30_000,
            max_timeout_ms: 600_000,
            interrupt_grace_ms: 2_000,
            max_output_bytes: 1 << 20,
            max_code_bytes: 1 << 20,
            max_frame_bytes: 64 << 20,
            max_table_rows: 1000,
        }
    }
}

impl Config {
    /// Reads `path` (if given), applies `REPLPOOL_*` variables from `env`, and validates.
    ///
    /// Relative paths in the file are resolved against the file's directory, so the server
    /// behaves the same from any working directory.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, base_dir) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Syntax {
                            path: path.to_owned(),
                            message: e.message().to_owned(),
                        })?;
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
                let dir = absolute.parent().map(Path::to_owned).unwrap_or_default();
                (table, dir)
            }
            None => (toml::Table::new(), PathBuf::new()),
        };
        apply_env_overrides(&mut table, env)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let field = e.path().to_string();
                ConfigError::field(field, e.into_inner().message().to_owned())
            })?;
        config.resolve_paths(&base_dir);
        config.read_tokens_file()?;
        config.validate()?;
        Ok(config)
    }

    /// Adds the tokens of `auth.tokens_file` to `auth.tokens`.
    fn read_tokens_file(&mut self) -> Result<(), ConfigError> {
        let Some(file) = &self.auth.tokens_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::field(
                "auth.tokens_file",
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        self.auth.tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        Ok(())
    }

    fn resolve_paths(&mut self, base_dir: &Path) {
        let exe = &self.python.executable;
        // A bare name ("python3") is looked up on PATH by the OS, like a shell would.
        if exe.is_relative() && exe.components().count() > 1 {
            self.python.executable = base_dir.join(exe);
        }
        for entry in &mut self.python.interpreters {
            if entry.executable.is_relative() && entry.executable.components().count() > 1 {
                entry.executable = base_dir.join(&entry.executable);
            }
        }
        let uv = &self.packages.uv;
        if uv.is_relative() && uv.components().count() > 1 {
            self.packages.uv = base_dir.join(uv);
        }
        if self.packages.cache_dir.is_relative() {
            self.packages.cache_dir = base_dir.join(&self.packages.cache_dir);
        }
        for link in &mut self.packages.find_links {
            // A local directory is relative to the config file; a URL is left as it is.
            if !link.contains("://") && Path::new(link.as_str()).is_relative() {
                *link = base_dir.join(link.as_str()).display().to_string();
            }
        }
        if self.scripts.dir.is_relative() {
            self.scripts.dir = base_dir.join(&self.scripts.dir);
        }
        for path in &mut self.sandbox.expose {
            if path.is_relative() {
                *path = base_dir.join(&*path);
            }
        }
        if let Some(file) = &self.auth.tokens_file
            && file.is_relative()
        {
            self.auth.tokens_file = Some(base_dir.join(file));
        }
    }

    /// The interpreters workers run, with every default filled in: `[[python.interpreters]]`,
    /// or `python.executable` alone. The first is the default.
    pub fn interpreters(&self) -> Vec<InterpreterConfig> {
        if self.python.interpreters.is_empty() {
            return vec![InterpreterConfig {
                name: DEFAULT_INTERPRETER.to_owned(),
                executable: self.python.executable.clone(),
                preload: Some(self.python.preload.clone()),
                warm_workers: Some(self.pool.warm_workers),
            }];
        }
        self.python
            .interpreters
            .iter()
            .enumerate()
            .map(|(i, entry)| InterpreterConfig {
                preload: Some(
                    entry
                        .preload
                        .clone()
                        .unwrap_or_else(|| self.python.preload.clone()),
                ),
                warm_workers: Some(entry.warm_workers.unwrap_or(if i == 0 {
                    self.pool.warm_workers
                } else {
                    1
                })),
                ..entry.clone()
            })
            .collect()
    }

    /// Checks what the types cannot: ranges, relations between fields, preload syntax.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ex = &self.execution;
        let positive = [
            ("execution.default_timeout_ms", ex.default_timeout_ms),
            ("execution.max_timeout_ms", ex.max_timeout_ms),
            ("execution.max_output_bytes", ex.max_output_bytes as u64),
            ("execution.max_code_bytes", ex.max_code_bytes as u64),
            ("execution.max_table_rows", ex.max_table_rows as u64),
            ("pool.start_timeout_ms", self.pool.start_timeout_ms),
            ("pool.acquire_timeout_ms", self.pool.acquire_timeout_ms),
            ("sessions.max", self.sessions.max as u64),
            ("python.blas_threads", u64::from(self.python.blas_threads)),
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "server.body_read_timeout_ms",
                self.server.body_read_timeout_ms,
            ),
            (
                "server.keep_alive_timeout_ms",
                self.server.keep_alive_timeout_ms,
            ),
            ("server.max_connections", self.server.max_connections as u64),
            ("mcp.progress_interval_ms", self.mcp.progress_interval_ms),
            ("packages.timeout_ms", self.packages.timeout_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::field(field, "must be greater than 0"));
            }
        }
        // More would make tokio's semaphore panic (its limit is 2^61 - 1); a few thousand
        // starts at once is already more than any machine runs.
        if self.pool.cold_starts > MAX_COLD_STARTS {
            return Err(ConfigError::field(
                "pool.cold_starts",
                format!("must be at most {MAX_COLD_STARTS} (0: one per CPU)"),
            ));
        }
        if !crate::node::is_valid(&self.server.node) {
            return Err(ConfigError::field(
                "server.node",
                format!(
                    "{:?} is not a DNS label ([a-z0-9]([a-z0-9-]{{0,61}}[a-z0-9])?); the default is the host name, set one that is",
                    self.server.node
                ),
            ));
        }
        if ex.default_timeout_ms > ex.max_timeout_ms {
            return Err(ConfigError::field(
                "execution.default_timeout_ms",
                format!(
                    "{} is above execution.max_timeout_ms ({})",
                    ex.default_timeout_ms, ex.max_timeout_ms
                ),
            ));
        }
        for (field, value) in [
            ("judge.run_timeout_ms", self.judge.run_timeout_ms),
            ("judge.compile_timeout_ms", self.judge.compile_timeout_ms),
        ] {
            if value == 0 || value > ex.max_timeout_ms {
                return Err(ConfigError::field(
                    field,
                    format!(
                        "must be between 1 and execution.max_timeout_ms ({})",
                        ex.max_timeout_ms
                    ),
                ));
            }
        }
        // A reply carries the capped output plus its JSON escaping; a request carries the code.
        let needed = ex.max_output_bytes.max(ex.max_code_bytes).saturating_mul(2) + 4096;
        if ex.max_frame_bytes < needed {
            return Err(ConfigError::field(
                "execution.max_frame_bytes",
                format!(
                    "{} is too small for max_output_bytes/max_code_bytes; it must be at least {needed}",
                    ex.max_frame_bytes
                ),
            ));
        }
        if ex.max_frame_bytes > u32::MAX as usize {
            return Err(ConfigError::field(
                "execution.max_frame_bytes",
                "must fit a 4-byte length (at most 4294967295)",
            ));
        }
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::field(
                    format!("auth.tokens[{i}]"),
                    "a token must be at least 16 characters, without spaces",
                ));
            }
        }
        if !self.server.bind.ip().is_loopback()
            && self.auth.tokens.is_empty()
            && !self.auth.allow_anonymous_public
        {
            return Err(ConfigError::field(
                "server.bind",
                format!(
                    "{} is reachable from other machines, and without auth.tokens anyone who reaches the API can run code; \
                     set auth.tokens, bind to 127.0.0.1, or set auth.allow_anonymous_public = true if that is meant",
                    self.server.bind
                ),
            ));
        }
        if self.files.max_bytes == 0 || self.files.max_total_bytes < self.files.max_bytes {
            return Err(ConfigError::field(
                "files.max_total_bytes",
                "must be at least files.max_bytes, which must be greater than 0",
            ));
        }
        if self.limits.memory_mb != 0 && self.limits.memory_mb < 256 {
            return Err(ConfigError::field(
                "limits.memory_mb",
                "must be 0 (no limit) or at least 256: the preloaded interpreter alone maps more",
            ));
        }
        if self.limits.open_files != 0 && self.limits.open_files < 64 {
            return Err(ConfigError::field(
                "limits.open_files",
                "must be 0 (no limit) or at least 64",
            ));
        }
        if self.limits.processes != 0 && self.limits.processes < 16 {
            return Err(ConfigError::field(
                "limits.processes",
                "must be 0 (no limit) or at least 16: a worker alone runs several threads",
            ));
        }
        // The kernel's smallest CFS quota is 1 ms per 100 ms period.
        if !(self.limits.cpus == 0.0 || (0.01..=1e6).contains(&self.limits.cpus)) {
            return Err(ConfigError::field(
                "limits.cpus",
                "must be 0 (no ceiling) or a number of cores of at least 0.01",
            ));
        }
        if !(0.0..=1e6).contains(&self.limits.background_cpu_seconds_per_minute) {
            return Err(ConfigError::field(
                "limits.background_cpu_seconds_per_minute",
                "must be 0 (no budget) or a positive number of seconds",
            ));
        }
        // Every live session and every bound worker waiting in a pool holds a uid; twice that
        // leaves room for the one-shots and for uids not reused at once.
        // Saturating: counts come from the file, and a sum that wrapped could pass the check.
        let holders = self
            .interpreters()
            .iter()
            .map(|i| i.warm_workers.unwrap_or(0))
            .fold(self.sessions.max, usize::saturating_add)
            .saturating_add(self.pool.lean_workers);
        if let Some((first, last)) = self.sandbox.session_uid_range()?
            && u64::from(last - first) + 1 < (holders as u64).saturating_mul(2)
        {
            return Err(ConfigError::field(
                "sandbox.session_uids",
                format!(
                    "{first}-{last} holds fewer than twice sessions.max + pool.warm_workers \
                     (every interpreter's) + pool.lean_workers ({holders}) uids"
                ),
            ));
        }
        if self.packages.allow_install && self.sandbox.network == Network::None {
            return Err(ConfigError::field(
                "packages.allow_install",
                "pip needs the network, and sandbox.network = \"none\" keeps workers off it; set sandbox.network = \"host\" too",
            ));
        }
        // Never a writable environment in the view: any session could plant a `.pth` that the
        // next template runs, privileged, before the sandbox is complete.
        if self.packages.allow_install && self.sandbox.filesystem == FilesystemMode::View {
            return Err(ConfigError::field(
                "packages.allow_install",
                "pip writes into the workers' environment, which the filesystem view shows read-only; set sandbox.filesystem = \"host\" too",
            ));
        }
        for (i, text) in self.python.extra_packages.iter().enumerate() {
            if let Err(e) = crate::packages::Requirement::parse(text) {
                return Err(ConfigError::field(
                    format!("python.extra_packages[{i}]"),
                    e.to_string(),
                ));
            }
        }
        if self.packages.uv.as_os_str().is_empty() {
            return Err(ConfigError::field("packages.uv", "must not be empty"));
        }
        if self.python.executable.as_os_str().is_empty() {
            return Err(ConfigError::field("python.executable", "must not be empty"));
        }
        for (i, spec) in self.python.preload.iter().enumerate() {
            if !is_import_spec(spec) {
                return Err(ConfigError::field(
                    format!("python.preload[{i}]"),
                    format!("{spec:?} is not `module` or `module as name`"),
                ));
            }
        }
        self.validate_interpreters()
    }

    /// Names unique and plain, executables there, preloads well-formed: a typo in an entry
    /// stops the start naming the entry, rather than leaving its pool failing forever.
    fn validate_interpreters(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in self.python.interpreters.iter().enumerate() {
            let field = |name: &str| format!("python.interpreters[{i}].{name}");
            let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if entry.name.is_empty() || !entry.name.chars().all(plain) {
                return Err(ConfigError::field(
                    field("name"),
                    format!("{:?} must be letters, digits, `.`, `-` or `_`", entry.name),
                ));
            }
            // Ignoring case: each entry is a Jupyter kernel spec too (`python3-<name>`), and
            // Jupyter compares spec names ignoring case.
            if !seen.insert(entry.name.to_ascii_lowercase()) {
                return Err(ConfigError::field(
                    field("name"),
                    format!(
                        "{:?} names another entry already (names are compared ignoring case)",
                        entry.name
                    ),
                ));
            }
            if !executable_exists(&entry.executable) {
                return Err(ConfigError::field(
                    field("executable"),
                    format!(
                        "{} (interpreter {:?}) is not an executable file{}",
                        entry.executable.display(),
                        entry.name,
                        if entry.executable.components().count() > 1 {
                            ""
                        } else {
                            " on PATH"
                        }
                    ),
                ));
            }
            for (j, spec) in entry.preload.iter().flatten().enumerate() {
                if !is_import_spec(spec) {
                    return Err(ConfigError::field(
                        field(&format!("preload[{j}]")),
                        format!("{spec:?} is not `module` or `module as name`"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `exe` (a path, or a bare name looked up on `PATH` as the OS will) is an executable
/// file.
fn executable_exists(exe: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if exe.components().count() > 1 {
        return runnable(exe);
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(exe))))
}

/// `a.b.c` or `a.b.c as name`: what may follow `import` in a Python statement. Checked here
/// because the worker executes it as one.
fn is_import_spec(spec: &str) -> bool {
    fn identifier(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
    }
    let words: Vec<&str> = spec.split_whitespace().collect();
    let module_ok = |m: &str| m.split('.').all(identifier);
    match words.as_slice() {
        [module] => module_ok(module),
        [module, "as", alias] => module_ok(module) && identifier(alias),
        _ => false,
    }
}

const SECTIONS: [&str; 16] = [
    "server",
    "python",
    "pool",
    "sessions",
    "execution",
    "limits",
    "files",
    "judge",
    "executor",
    "scripts",
    "packages",
    "auth",
    "sandbox",
    "log",
    "metrics",
    "mcp",
];

/// Variables with [`ENV_PREFIX`] that belong to the program rather than to a config field:
/// the CLI's own, and the one the server sets on its workers (so that a `replpool` started
/// from inside a session is not refused).
const OWN_VARIABLES: [&str; 3] = ["CONFIG", "LOG", "SERVER_PID"];

/// `REPLPOOL_POOL_WARM_WORKERS=4` sets `pool.warm_workers = 4`. The value is read as a TOML
/// value where it parses as one (numbers, booleans, arrays) and as a string otherwise.
///
/// Only `REPLPOOL_<known section>_<key>` is an override: other variables that happen to share
/// the prefix (`REPLPOOL_CHECKOUT`, a test harness's own) are none of the server's business
/// and are ignored. An unknown key in a known section is a typo, and stops the start naming
/// the variable.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if OWN_VARIABLES.contains(&rest) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        if !is_field(section, key, &parsed) {
            return Err(ConfigError::field(
                name.clone(),
                format!("section `{section}` has no field `{key}`"),
            ));
        }
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::field(section, "must be a table"));
        };
        section_table.insert(key.to_owned(), parsed);
    }
    Ok(())
}

/// Whether `section.key` is a config field: the configuration's own parser decides, so the
/// answer cannot drift from the structs (a bad *value* is reported later, naming the field).
fn is_field(section: &str, key: &str, value: &toml::Value) -> bool {
    let mut fields = toml::Table::new();
    fields.insert(key.to_owned(), value.clone());
    let mut probe = toml::Table::new();
    probe.insert(section.to_owned(), toml::Value::Table(fields));
    match toml::Value::Table(probe).try_into::<Config>() {
        Ok(_) => true,
        Err(e) => !e.message().starts_with("unknown field"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), env)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = load_str("", &[]).expect("valid");
        assert_eq!(config.pool.warm_workers, 2);
        assert_eq!(config.server.bind.to_string(), "127.0.0.1:8765");
    }

    #[test]
    fn cold_starts_default_to_one_per_cpu_and_have_a_ceiling() {
        assert_eq!(load_str("", &[]).expect("valid").pool.cold_starts, 0);
        let most = format!("[pool]\ncold_starts = {MAX_COLD_STARTS}\n");
        assert_eq!(
            load_str(&most, &[]).expect("valid").pool.cold_starts,
            MAX_COLD_STARTS
        );
        let err = load_str("[pool]\ncold_starts = 9223372036854775807\n", &[]).unwrap_err();
        assert!(err.to_string().contains("pool.cold_starts"), "{err}");
    }

    #[test]
    fn package_paths_are_beside_the_config_and_bad_extra_packages_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[packages]\nfind_links = [\"wheels\", \"https://example.org/w/\"]\n",
        )
        .expect("write config");
        let packages = Config::load(Some(&path), std::iter::empty())
            .expect("valid")
            .packages;
        let dir = std::path::absolute(dir.path()).expect("absolute");
        assert_eq!(packages.uv, dir.join(".venv/bin/uv"));
        assert_eq!(packages.cache_dir, dir.join(".cache/replpool-uv"));
        assert_eq!(
            packages.find_links,
            [
                dir.join("wheels").display().to_string(),
                "https://example.org/w/".to_owned()
            ]
        );
        assert_eq!(
            (packages.allow, packages.timeout_ms),
            (vec!["*".to_owned()], 120_000)
        );
        let err =
            load_str("[python]\nextra_packages = [\"seaborn\", \"-e .\"]\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("python.extra_packages[1]"),
            "{err}"
        );
        let err = load_str("[packages]\ntimeout_ms = 0\n", &[]).unwrap_err();
        assert!(err.to_string().contains("packages.timeout_ms"), "{err}");
    }

    #[test]
    fn http_timeouts_and_cap_have_defaults_and_refuse_zero() {
        let server = load_str("", &[]).expect("valid").server;
        assert_eq!(
            (
                server.header_read_timeout_ms,
                server.body_read_timeout_ms,
                server.keep_alive_timeout_ms,
                server.max_connections
            ),
            (10_000, 60_000, 10_000, 1024)
        );
        for field in [
            "header_read_timeout_ms",
            "body_read_timeout_ms",
            "keep_alive_timeout_ms",
            "max_connections",
        ] {
            let err = load_str(&format!("[server]\n{field} = 0\n"), &[]).unwrap_err();
            assert!(
                err.to_string().contains(&format!("server.{field}")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_log_format_is_text_unless_json_is_asked_for() {
        assert_eq!(
            load_str("", &[]).expect("valid").log.format,
            LogFormat::Text
        );
        let from_file = load_str("[log]\nformat = \"json\"\n", &[]).expect("valid");
        assert_eq!(from_file.log.format, LogFormat::Json);
        let from_env = load_str("", &[("REPLPOOL_LOG_FORMAT", "json")]).expect("valid");
        assert_eq!(from_env.log.format, LogFormat::Json);
        // REPLPOOL_LOG, the level, is not the config's.
        assert!(load_str("", &[("REPLPOOL_LOG", "debug")]).is_ok());
        let err = load_str("[log]\nformat = \"xml\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("log.format"), "{err}");
    }

    #[test]
    fn bad_type_names_the_field() {
        let err = load_str("[pool]\nwarm_workers = \"many\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("pool.warm_workers"), "{err}");
    }

    #[test]
    fn unknown_field_names_the_field() {
        let err = load_str("[pool]\nwarm_wrkers = 3\n", &[]).unwrap_err();
        assert!(err.to_string().contains("warm_wrkers"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let config = load_str(
            "[pool]\nwarm_workers = 3\n",
            &[
                ("REPLPOOL_POOL_WARM_WORKERS", "5"),
                ("REPLPOOL_SERVER_BIND", "127.0.0.1:0"),
                ("OTHER", "x"),
            ],
        )
        .expect("valid");
        assert_eq!(config.pool.warm_workers, 5);
        assert_eq!(config.server.bind.port(), 0);
    }

    #[test]
    fn env_without_a_known_section_is_not_an_override() {
        let config = load_str(
            "",
            &[
                ("REPLPOOL_CHECKOUT", "x"),
                ("REPLPOOL_POLL_SIZE", "1"),
                ("REPLPOOL_TEST_PYTHON", "/usr/bin/python3"),
                ("REPLPOOL_SERVER_PID", "1"),
                ("REPLPOOL_", "x"),
            ],
        )
        .expect("ignored");
        assert_eq!(config.pool.warm_workers, 2);
    }

    #[test]
    fn env_with_unknown_key_in_a_known_section_names_it() {
        let err = load_str("", &[("REPLPOOL_POOL_WARM_WRKERS", "1")]).unwrap_err();
        assert!(
            err.to_string().contains("REPLPOOL_POOL_WARM_WRKERS"),
            "{err}"
        );
        assert!(err.to_string().contains("warm_wrkers"), "{err}");
        // A field whose default is absent from the file is a field all the same.
        let config = load_str("", &[("REPLPOOL_AUTH_TOKENS_FILE", "/nonexistent")]);
        assert!(
            config.is_err_and(|e| e.to_string().contains("auth.tokens_file")),
            "tokens_file is a field"
        );
    }

    #[test]
    fn sandbox_settings_are_checked() {
        let config = load_str("", &[]).expect("valid");
        assert_eq!(
            config.sandbox.session_uid_range().expect("range"),
            Some((200_000, 299_999))
        );
        for bad in ["100", "5-2", "0-10", "a-b"] {
            let err = load_str(&format!("[sandbox]\nsession_uids = {bad:?}\n"), &[]).unwrap_err();
            assert!(
                err.to_string().contains("sandbox.session_uids"),
                "{bad}: {err}"
            );
        }
        let err = load_str("[sandbox]\nsession_uids = \"10-20\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("twice sessions.max"), "{err}");
        let err = load_str("[sandbox]\nnetwork = \"internet\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sandbox.network"), "{err}");
        let err = load_str("[packages]\nallow_install = true\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sandbox.network"), "{err}");
        load_str(
            "[packages]\nallow_install = true\n[sandbox]\nnetwork = \"host\"\nfilesystem = \"host\"\n",
            &[],
        )
        .expect("installs with the network");
    }

    #[test]
    fn every_limit_is_in_exactly_one_view() {
        let table = toml::Table::try_from(LimitsConfig::default()).expect("serializes");
        let mut fields: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut viewed: Vec<&str> = LimitsConfig::VIEWS.iter().map(|(f, _)| *f).collect();
        fields.sort_unstable();
        viewed.sort_unstable();
        assert_eq!(
            fields, viewed,
            "a [limits] field without a view, or a view without one"
        );
        let limits = LimitsConfig {
            memory_mb: 512,
            file_size_mb: 2,
            open_files: 100,
            cpu_seconds: 7,
            processes: 32,
            cpus: 0.5,
            background_cpu_seconds_per_minute: 3.0,
        };
        assert_eq!(
            limits.per_process(),
            ProcessLimits {
                address_space_bytes: Some(512 << 20),
                file_size_bytes: Some(2 << 20),
                open_files: Some(100),
            }
        );
        assert_eq!(
            limits.per_session(),
            SessionLimits {
                processes: Some(32),
                memory_bytes: Some(512 << 20),
                cpus: Some(0.5),
            }
        );
        assert_eq!(limits.per_cell_cpu_seconds(), Some(7));
        assert_eq!(limits.background_cpu_budget(), Some(3.0));
        let none = LimitsConfig {
            memory_mb: 0,
            file_size_mb: 0,
            open_files: 0,
            cpu_seconds: 0,
            processes: 0,
            cpus: 0.0,
            background_cpu_seconds_per_minute: 0.0,
        };
        assert_eq!(none.per_process(), ProcessLimits::default());
        assert_eq!(none.per_session(), SessionLimits::default());
        assert_eq!(none.per_cell_cpu_seconds(), None);
        assert_eq!(none.background_cpu_budget(), None);
    }

    #[test]
    fn cpu_limits_are_checked() {
        let config = load_str("", &[]).expect("valid");
        assert_eq!(config.limits.cpus(), Some(1.0));
        assert_eq!(config.limits.background_cpu_budget(), Some(30.0));
        let config = load_str(
            "[limits]\ncpus = 0\nbackground_cpu_seconds_per_minute = 0\n",
            &[],
        )
        .expect("valid");
        assert_eq!(config.limits.cpus(), None);
        assert_eq!(config.limits.background_cpu_budget(), None);
        for bad in ["-1", "0.001", "nan"] {
            let err = load_str(&format!("[limits]\ncpus = {bad}\n"), &[]).unwrap_err();
            assert!(err.to_string().contains("limits.cpus"), "{bad}: {err}");
        }
        let err = load_str("[limits]\nbackground_cpu_seconds_per_minute = -1\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("limits.background_cpu_seconds_per_minute"),
            "{err}"
        );
    }

    #[test]
    fn relations_are_checked() {
        let err = load_str(
            "[execution]\ndefault_timeout_ms = 10\nmax_timeout_ms = 5\n",
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("execution.default_timeout_ms"),
            "{err}"
        );
    }

    #[test]
    fn a_public_address_needs_the_operator_to_mean_it() {
        let err = load_str("[server]\nbind = \"0.0.0.0:8765\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("server.bind"), "{err}");
        let config = load_str(
            "[server]\nbind = \"0.0.0.0:8765\"\n[auth]\nallow_anonymous_public = true\n",
            &[],
        )
        .expect("allowed");
        assert!(!config.server.bind.ip().is_loopback());
    }

    #[test]
    fn preload_specs_are_checked() {
        assert!(is_import_spec("numpy"));
        assert!(is_import_spec("matplotlib.pyplot as plt"));
        assert!(!is_import_spec("os; os.system('x')"));
        assert!(!is_import_spec("numpy as"));
        let err = load_str("[python]\npreload = [\"numpy\", \"1bad\"]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("python.preload[1]"), "{err}");
    }

    #[test]
    fn relative_executable_is_resolved_against_the_file() {
        let config = load_str("[python]\nexecutable = \"venv/bin/python\"\n", &[]).expect("ok");
        assert!(config.python.executable.is_absolute());
        let config = load_str("[python]\nexecutable = \"python3\"\n", &[]).expect("ok");
        assert_eq!(config.python.executable, PathBuf::from("python3"));
    }

    #[test]
    fn without_interpreters_the_executable_is_the_one_interpreter() {
        let config =
            load_str("[python]\nexecutable = \"python3\"\npreload = []\n", &[]).expect("ok");
        let interpreters = config.interpreters();
        assert_eq!(interpreters.len(), 1);
        assert_eq!(interpreters[0].name, DEFAULT_INTERPRETER);
        assert_eq!(interpreters[0].executable, PathBuf::from("python3"));
        assert_eq!(interpreters[0].preload, Some(Vec::new()));
        assert_eq!(interpreters[0].warm_workers, Some(2));
    }

    #[test]
    fn interpreter_entries_get_their_defaults() {
        let config = load_str(
            "[pool]\nwarm_workers = 3\n[[python.interpreters]]\nname = \"a\"\nexecutable = \"sh\"\n\
             [[python.interpreters]]\nname = \"b\"\nexecutable = \"sh\"\npreload = []\n",
            &[],
        )
        .expect("ok");
        let interpreters = config.interpreters();
        assert_eq!(
            interpreters
                .iter()
                .map(|i| (
                    i.name.as_str(),
                    i.warm_workers,
                    i.preload.as_ref().map(Vec::len)
                ))
                .collect::<Vec<_>>(),
            [("a", Some(3), Some(3)), ("b", Some(1), Some(0))]
        );
    }

    #[test]
    fn interpreter_entries_are_checked() {
        let entry = |name: &str, exe: &str| {
            format!("[[python.interpreters]]\nname = \"{name}\"\nexecutable = \"{exe}\"\n")
        };
        let twice = format!("{}{}", entry("a", "sh"), entry("a", "sh"));
        let err = load_str(&twice, &[]).unwrap_err();
        assert!(
            err.to_string().contains("python.interpreters[1].name"),
            "{err}"
        );
        let twice_but_case = format!("{}{}", entry("deb", "sh"), entry("Deb", "sh"));
        let err = load_str(&twice_but_case, &[]).unwrap_err();
        assert!(
            err.to_string().contains("python.interpreters[1].name"),
            "{err}"
        );
        let err = load_str(&entry("a b", "sh"), &[]).unwrap_err();
        assert!(
            err.to_string().contains("python.interpreters[0].name"),
            "{err}"
        );
        let missing = format!("{}{}", entry("a", "sh"), entry("b", "/nonexistent/python9"));
        let err = load_str(&missing, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("python.interpreters[1].executable")
                && err.to_string().contains("/nonexistent/python9"),
            "{err}"
        );
        let err = load_str(&entry("a", "no-such-python-anywhere"), &[]).unwrap_err();
        assert!(err.to_string().contains("on PATH"), "{err}");
        let bad_preload = format!("{}preload = [\"1bad\"]\n", entry("a", "sh"));
        let err = load_str(&bad_preload, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("python.interpreters[0].preload[0]"),
            "{err}"
        );
    }
}
