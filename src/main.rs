//! The `replpool` command.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use replpool::config::LogFormat;
use replpool::{Config, SessionManager, api};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

mod http;
mod mcp_stdio;
mod watcher;

/// replpool keeps Python warm: per-session Python workers with numpy, pandas and matplotlib
/// already imported, behind an HTTP API. Code runs in milliseconds and variables persist
/// between calls.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP server.
    ///
    /// Prints `listening on http://ADDR` on stdout once it accepts connections. Logs go to
    /// stderr; set REPLPOOL_LOG (e.g. `debug`, `replpool=trace`) for more.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Listen here instead of `server.bind` (e.g. 127.0.0.1:0 for any free port).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Log as lines for people (`text`) or one JSON object a line (`json`), instead of
        /// `log.format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Serve MCP (Model Context Protocol) on stdin/stdout, for an assistant that starts its
    /// tools as subprocesses.
    ///
    /// Without --url, Python runs in this process's own sessions (the configuration's pools,
    /// sandbox and limits), which end with it. With --url, messages are carried to a running
    /// server's /mcp (its sessions, the token's). stdout is the protocol's: logs go to
    /// stderr (REPLPOOL_LOG sets their level).
    ///
    /// Example (an assistant's MCP configuration):
    ///   {"mcpServers": {"python": {"command": "replpool", "args": ["mcp", "--config", "/etc/replpool/config.toml"]}}}
    Mcp {
        #[command(flatten)]
        config: ConfigArgs,
        /// A running server's MCP endpoint (http://HOST:PORT/mcp) to connect to instead of
        /// running Python here. Plain HTTP.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The bearer token for --url (one of the server's `auth.tokens`); ignored without it.
        #[arg(long, env = "REPLPOOL_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Check a configuration and print it in full, with defaults and overrides applied.
    Config {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The watcher the server starts for itself (see src/watcher.rs); not for people.
    #[command(name = "__watch", hide = true)]
    Watch { dirs: Vec<PathBuf> },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> LogFormat {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Configuration file (TOML). Every field has a default; REPLPOOL_<SECTION>_<KEY>
    /// environment variables override the file.
    #[arg(long, short, env = "REPLPOOL_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref(), std::env::vars())?)
    }
}

fn main() -> anyhow::Result<()> {
    replpool::memory::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Watch { dirs } => {
            watcher::run(&dirs);
            Ok(())
        }
        Command::Config { config } => {
            let config = config.load()?;
            print!("{}", toml::to_string_pretty(&config)?);
            // The interpreters as the server will run them, every default filled in, as a
            // comment: written out as entries they would stop following `python.executable`,
            // `python.preload` and `pool.warm_workers` when the printed file is edited.
            println!("\n# The interpreters this runs (the first is the default):");
            for interpreter in config.interpreters() {
                println!(
                    "#   {} = {} (preload {:?}, warm_workers {})",
                    interpreter.name,
                    interpreter.executable.display(),
                    interpreter.preload.unwrap_or_default(),
                    interpreter.warm_workers.unwrap_or(0)
                );
            }
            Ok(())
        }
        Command::Mcp { config, url, token } => {
            // Text on stderr: whoever started us reads stderr as a person would.
            init_logging(LogFormat::Text);
            let runtime = || {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
            };
            if let Some(url) = url {
                let token = token.filter(|t| !t.is_empty());
                return runtime()?.block_on(mcp_stdio::bridge(&url, token));
            }
            let config = config.load()?;
            // Before the runtime's threads exist: a mount namespace is per thread, and one
            // entered beside running threads leaves them (and the tmpfs they mount) outside.
            if nix::unistd::geteuid().is_root()
                && let Err(e) = replpool::sandbox::mounts::enter_private_namespace()
            {
                tracing::warn!(
                    "no mount namespace of our own ({e}): session disk quotas are measured, not enforced"
                );
            }
            runtime()?.block_on(serve_mcp(config))
        }
        Command::Serve {
            config,
            bind,
            log_format,
        } => {
            let mut config = config.load()?;
            if let Some(bind) = bind {
                config.server.bind = bind;
                config.validate()?; // the address is checked like one from the file
            }
            if let Some(format) = log_format {
                config.log.format = format.into();
            }
            init_logging(config.log.format);
            // While the process has one thread (unshare refuses more): the mounts the server
            // makes (a tmpfs per session) stay its own and end with it.
            if nix::unistd::geteuid().is_root()
                && let Err(e) = replpool::sandbox::mounts::enter_private_namespace()
            {
                tracing::warn!(
                    "no mount namespace of the server's own ({e}): session disk quotas are measured, not enforced"
                );
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(config))
        }
    }
}

/// The log on stderr, at `REPLPOOL_LOG`'s level (`info` by default). As JSON, each line is
/// one object: the event's fields, and those of every span it happened in (`spans`: the
/// request's method, path and route, the execution's session and number).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("REPLPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    // Processes that user code detaches from its worker come back to us and are ended; and
    // workers forked by the template become our children. Before the manager starts.
    replpool::reaper::children().start_sweeping(stop.clone());
    replpool::memory::trim_periodically(stop.clone());
    // Before the manager starts, so that the pool's first refills and the template's start
    // are counted.
    replpool::metrics::keep_up(replpool::metrics::install(), stop.clone());
    replpool::packages::install_extra_packages(&config)
        .await
        .context("cannot install python.extra_packages")?;
    let manager = SessionManager::start(&config)?;
    // Kept open until this process is gone, however it goes; see watcher.rs.
    let _watcher = match manager.cgroup_dirs() {
        dirs if dirs.is_empty() => None,
        dirs => Some(watcher::start(&dirs).context("cannot start the cgroup watcher")?),
    };
    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .with_context(|| format!("cannot listen on {} (server.bind)", config.server.bind))?;
    let addr = listener.local_addr()?;
    let app = api::router(manager.clone(), &config);
    println!("listening on http://{addr}");
    let python = config
        .interpreters()
        .iter()
        .map(|i| format!("{}={}", i.name, i.executable.display()))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(%addr, %python, "replpool serving");

    let limits = http::Limits {
        header_read: Duration::from_millis(config.server.header_read_timeout_ms),
        body_read: Duration::from_millis(config.server.body_read_timeout_ms),
        keep_alive: Duration::from_millis(config.server.keep_alive_timeout_ms),
        max_connections: connection_cap(config.server.max_connections),
    };
    tracing::debug!(?limits, "connection limits");

    let draining = CancellationToken::new();
    let mut server = tokio::spawn(http::serve(listener, app, limits, draining.clone()));
    tokio::select! {
        finished = &mut server => {
            manager.shutdown();
            stop.cancel();
            finished?;
            anyhow::bail!("the server stopped accepting connections by itself");
        }
        _ = shutdown_signal() => {}
    }
    // Readiness turns false at once and new sessions are refused, so the proxy sends new
    // work elsewhere; what this node holds is still served, new connections included, while
    // executions run. Then stop accepting: requests in progress get the rest of the grace
    // period to finish.
    manager.drain();
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let deadline = tokio::time::Instant::now() + grace;
    tokio::select! {
        () = until_idle(&manager) => {}
        () = tokio::time::sleep_until(deadline) => {}
        _ = &mut server => {}
    }
    draining.cancel();
    let drained = tokio::time::timeout_at(deadline, &mut server).await.is_ok();
    if !drained {
        tracing::warn!("executions still running after {grace:?}; ending them");
    }
    manager.shutdown();
    stop.cancel();
    if !drained {
        // With the workers gone, the remaining requests answer at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `replpool mcp` without `--url`: the core in this process, as `serve` starts it, until the
/// MCP client closes stdin (or a signal).
async fn serve_mcp(config: Config) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    replpool::reaper::children().start_sweeping(stop.clone());
    replpool::packages::install_extra_packages(&config)
        .await
        .context("cannot install python.extra_packages")?;
    let manager = SessionManager::start(&config)?;
    let _watcher = match manager.cgroup_dirs() {
        dirs if dirs.is_empty() => None,
        dirs => Some(watcher::start(&dirs).context("cannot start the cgroup watcher")?),
    };
    let served = tokio::select! {
        served = mcp_stdio::serve_in_process(manager.clone(), &config) => served,
        _ = shutdown_signal() => Ok(()),
    };
    manager.shutdown();
    stop.cancel();
    served
}

/// Returns once no execution is running or waiting. Polled: executions end in many ways
/// (reply, deadline, death, delete), and a look every 20 ms costs nothing.
async fn until_idle(manager: &SessionManager) {
    while manager.busy() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `server.max_connections`, held below the open-file limit: every connection is a
/// descriptor, and sessions need theirs (worker pipes, pidfds, files). The soft limit is raised
/// to the hard one first, since the usual soft default (1024) would cap the server needlessly.
fn connection_cap(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            return wanted;
        }
    };
    let room = usize::try_from(limit / 2).unwrap_or(usize::MAX).max(1);
    if wanted > room {
        tracing::warn!(
            "server.max_connections {wanted} is above half the open-file limit ({limit}); serving at most {room}"
        );
    }
    wanted.min(room)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
