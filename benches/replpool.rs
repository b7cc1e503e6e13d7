//! `make bench`: replpool against the alternatives a user would pick instead, side by side in
//! one run on one machine — a cold interpreter (`python -c`, importing what the workload needs)
//! and a Jupyter kernel (benches/peers/jupyter_peer.py) — and the table in docs/benchmarks.md.
//!
//! Every figure is timed from what it names; none is derived from another. Machines here are
//! shared and noisy, so the table leads with ratios measured in the same run.
//!
//! Options (after `--`): `--quick` (reduced counts, a minute or two; what `make test` runs),
//! `--out PATH` (the Markdown table; default docs/benchmarks.md), `--json PATH` (default
//! target/bench.json), `--only STEP[,STEP…]` (only these steps, e.g. `--only cpu,oneshot`; the
//! names are listed by `--help`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use hdrhistogram::Histogram;

#[path = "replpool/humaneval.rs"]
mod humaneval;
#[path = "../tests/common/launcher.rs"]
mod launcher;
#[path = "replpool/procfs.rs"]
mod procfs;
use serde::Serialize;
use serde_json::{Value, json};

const SETUP_DF: &str =
    "df = pd.DataFrame({'k': np.random.randint(0, 100, 100_000), 'v': np.random.rand(100_000)})";
const DATA_CELL: &str = "df.groupby('k')['v'].mean()";
const PLOT_CELL: &str = "plt.plot(np.arange(1000), np.random.rand(1000))";
/// The table of the data-beside-pictures rows: 1,000 rows (`execution.max_table_rows`' default,
/// so none is cut) of an integer, a float and a string column.
const SETUP_TABLE: &str = "df = pd.DataFrame({'i': np.arange(1000), 'x': np.random.rand(1000), 's': [f'row {i}' for i in range(1000)]})";
const TABLE_MIME: &str = "application/vnd.dataresource+json";
const CHART_MIME: &str = "application/vnd.replpool.chart+json";
const JUDGE_PROGRAM: &str = "n = int(input())\nprint(sum(i * i for i in range(n)))";
/// What a cold run of a cell imports: only what the cell uses (the preload list has more), so
/// that the peer does no work the workload does not need.
const DATA_IMPORTS: &str = "import numpy as np\nimport pandas as pd";
const PLOT_IMPORTS: &str = "import numpy as np\nimport matplotlib.pyplot as plt";
/// The matplotlib settings that decide what a figure's PNG is, asked of the process that drew it.
const MPL_SETTINGS_CELL: &str = "import json as _json, matplotlib as _mpl\n\
print(_json.dumps({'backend': _mpl.get_backend(), \
'figure.figsize': list(_mpl.rcParams['figure.figsize']), \
'figure.dpi': _mpl.rcParams['figure.dpi'], 'savefig.dpi': str(_mpl.rcParams['savefig.dpi']), \
'savefig.bbox': str(_mpl.rcParams['savefig.bbox'])}))";
/// Concurrency of the HumanEval-style batch, on both sides (the "4 at once").
const BATCH_IN_FLIGHT: usize = 4;
/// `replpool.Pool(warm_workers=…)` of the Pool's session-ready rows (the package's default).
const POOL_WARM_WORKERS: usize = 2;

/// The Jupyter kernel API's row (`jupyter_api`).
const JUPYTER_API_ROW: &str = "kernel start + first cell, Jupyter API";

/// The steps, in the order they run; `--only` picks some by name.
const STEPS: &[(&str, &str)] = &[
    ("ready", "session ready (create + first 1+1)"),
    ("exec", "warm trivial exec (1+1 in a session)"),
    (
        "cpu",
        "CPU per trivial exec (server, worker, client from /proc)",
    ),
    ("data", "data cell (groupby on 100,000 rows)"),
    ("plot", "plot cell (1,000-point line plot as PNG)"),
    (
        "data_outputs",
        "data beside pictures (1,000-row DataFrame and plot cells, data on and off)",
    ),
    (
        "throughput",
        "throughput (trivial execs/s over parallel sessions)",
    ),
    ("memory", "memory (PSS per idle session)"),
    ("oneshot", "one-shot print(1) (POST /v1/execute)"),
    ("humaneval", "HumanEval-style batch (one-shots, 4 at once)"),
    ("judge", "judge (one program, stdin/stdout cases)"),
    (
        "pool",
        "replpool.Pool session ready (in-process, no server)",
    ),
    (
        "mcp",
        "run_python over MCP (streamable HTTP) beside the native API",
    ),
    (
        "jupyter_api",
        "kernel start + first cell through the Jupyter API (REST + websocket)",
    ),
    (
        "interpreters",
        "session ready per interpreter (a server with the venv's Python and /usr/bin/python3)",
    ),
    (
        "packages",
        "per-session package install: a pin's first install vs the same pin from the cache",
    ),
];

struct Counts {
    ready: usize,
    ready_peer: usize,
    warm: usize,
    warm_peer: usize,
    cpu_execs: usize,
    data: usize,
    data_cold: usize,
    plot: usize,
    plot_cold: usize,
    throughput_secs: f64,
    throughput_levels: Vec<usize>,
    memory_levels: Vec<usize>,
    jupyter_memory_levels: Vec<usize>,
    one_shot: usize,
    one_shot_cold: usize,
    humaneval: usize,
    judge_cases: usize,
    /// Rounds of the Pool's session ready: warm_workers samples within, one beyond, each.
    pool_rounds: usize,
    /// `run_python` calls over MCP per cell, and native execs beside them.
    mcp: usize,
    /// Pairs of installs (first from the index, then from the cache) of the `packages` step.
    packages: usize,
}

impl Counts {
    fn full() -> Counts {
        Counts {
            ready: 50,
            ready_peer: 50,
            warm: 5000,
            warm_peer: 2000,
            cpu_execs: 3000,
            data: 200,
            data_cold: 20,
            plot: 100,
            plot_cold: 20,
            throughput_secs: 3.0,
            throughput_levels: vec![1, 8, 32],
            memory_levels: vec![1, 16, 64],
            jupyter_memory_levels: vec![1, 16],
            one_shot: 100,
            one_shot_cold: 50,
            humaneval: humaneval::HUMANEVAL_SIZE,
            judge_cases: 100,
            pool_rounds: 20,
            mcp: 2000,
            packages: 10,
        }
    }

    fn quick() -> Counts {
        Counts {
            ready: 5,
            ready_peer: 2,
            warm: 300,
            warm_peer: 50,
            cpu_execs: 1000,
            data: 10,
            data_cold: 2,
            plot: 5,
            plot_cold: 2,
            throughput_secs: 0.5,
            throughput_levels: vec![1, 8],
            memory_levels: vec![1, 4],
            jupyter_memory_levels: vec![1],
            one_shot: 5,
            one_shot_cold: 3,
            humaneval: 24,
            judge_cases: 10,
            pool_rounds: 1,
            mcp: 50,
            packages: 2,
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
struct Figure {
    workload: String,
    system: String,
    samples: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// For figures that are not latencies (execs/s, MB, seconds in all).
    value: Option<f64>,
    unit: String,
    /// Shown in the table after the figure (e.g. who used the CPU during a throughput run).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// What else was measured with the figure, for the JSON and the workload descriptions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    details: BTreeMap<String, Value>,
}

impl Figure {
    fn latency(workload: &str, system: &str, samples: &[Duration]) -> Figure {
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        for s in samples {
            hist.record(s.as_micros().max(1) as u64).expect("record");
        }
        Figure {
            workload: workload.into(),
            system: system.into(),
            samples: samples.len(),
            p50_ms: Some(hist.value_at_quantile(0.5) as f64 / 1000.0),
            p99_ms: Some(hist.value_at_quantile(0.99) as f64 / 1000.0),
            value: None,
            unit: "ms".into(),
            note: None,
            details: BTreeMap::new(),
        }
    }

    fn value(workload: &str, system: &str, samples: usize, value: f64, unit: &str) -> Figure {
        Figure {
            workload: workload.into(),
            system: system.into(),
            samples,
            p50_ms: None,
            p99_ms: None,
            value: Some(value),
            unit: unit.into(),
            note: None,
            details: BTreeMap::new(),
        }
    }

    fn with_note(mut self, note: String) -> Figure {
        self.note = Some(note);
        self
    }

    fn with_detail(mut self, key: &str, value: Value) -> Figure {
        self.details.insert(key.into(), value);
        self
    }

    /// The number ratios are taken of.
    fn headline(&self) -> Option<f64> {
        self.p50_ms.or(self.value)
    }
}

struct Bench {
    root: PathBuf,
    python: PathBuf,
    preload_code: String,
    http: reqwest::Client,
    base: String,
    server_pid: u32,
    figures: Vec<Figure>,
    /// The server's installer and its cache (`packages.uv`, `packages.cache_dir`; the server's
    /// own environment overrides them as it would the server's).
    uv: PathBuf,
    uv_cache: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!(
            "cargo bench --bench replpool -- [--quick] [--out PATH] [--json PATH] [--only STEP,…]\nsteps:"
        );
        for (name, what) in STEPS {
            eprintln!("  {name:<11} {what}");
        }
        return Ok(());
    }
    let quick =
        args.iter().any(|a| a == "--quick") || std::env::var_os("QUICK").is_some_and(|v| v == "1");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = value_of("--out").unwrap_or_else(|| root.join("docs/benchmarks.md"));
    let json_out = value_of("--json").unwrap_or_else(|| root.join("target/bench.json"));
    let counts = if quick {
        Counts::quick()
    } else {
        Counts::full()
    };
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    if let Some(names) = &only {
        for name in names {
            anyhow::ensure!(
                STEPS.iter().any(|(n, _)| n == name),
                "unknown step {name:?} (see --help)"
            );
        }
    }
    let steps: Vec<&str> = STEPS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name)))
        .collect();

    let config = replpool::Config::load(Some(&root.join("config.toml")), std::iter::empty())?;
    let preload_code = config
        .python
        .preload
        .iter()
        .map(|spec| format!("import {spec}"))
        .collect::<Vec<_>>()
        .join("\n");
    let server = start_server(&root)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut bench = Bench {
        python: config.python.executable.clone(),
        root: root.clone(),
        preload_code,
        http: reqwest::Client::new(),
        base: server.0.base.clone(),
        server_pid: server.0.child.id(),
        figures: Vec::new(),
        uv: std::env::var_os("REPLPOOL_PACKAGES_UV")
            .map_or_else(|| config.packages.uv.clone(), PathBuf::from),
        uv_cache: std::env::var_os("REPLPOOL_PACKAGES_CACHE_DIR")
            .map_or_else(|| config.packages.cache_dir.clone(), PathBuf::from),
    };
    runtime.block_on(bench.run(&counts, &steps))?;
    drop(server);
    let elapsed = started.elapsed();
    eprintln!("bench finished in {:.0} s", elapsed.as_secs_f64());

    let markdown = render(&bench.figures, quick, elapsed);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &markdown)?;
    if let Some(dir) = json_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &json_out,
        serde_json::to_string_pretty(&json!({
            "quick": quick,
            "git_revision": git_revision(&root),
            "cores": cores(),
            "steps": steps,
            "figures": bench.figures,
        }))?,
    )?;
    println!("{markdown}");
    eprintln!("wrote {} and {}", out.display(), json_out.display());
    Ok(())
}

impl Bench {
    async fn run(&mut self, n: &Counts, steps: &[&str]) -> anyhow::Result<()> {
        self.wait_for_pool().await?;
        for (i, name) in steps.iter().enumerate() {
            let what = STEPS
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, what)| *what);
            step(i + 1, steps.len(), what);
            let started = Instant::now();
            match *name {
                "ready" => self.step_ready(n).await?,
                "exec" => self.step_exec(n).await?,
                "cpu" => self.step_cpu(n).await?,
                "data" => self.step_data(n).await?,
                "plot" => self.step_plot(n).await?,
                "data_outputs" => self.step_data_outputs(n).await?,
                "throughput" => self.step_throughput(n).await?,
                "memory" => self.step_memory(n).await?,
                "oneshot" => self.step_one_shot(n).await?,
                "humaneval" => self.step_humaneval(n).await?,
                "judge" => self.step_judge(n).await?,
                "pool" => self.step_pool(n)?,
                "mcp" => self.step_mcp(n).await?,
                "jupyter_api" => self.step_jupyter_api(n).await?,
                "interpreters" => self.step_interpreters(n).await?,
                "packages" => self.step_packages(n).await?,
                other => anyhow::bail!("no step {other}"),
            }
            // What keeps `--quick` (run by `make test`) short is seen step by step.
            eprintln!("    ({name}: {:.1} s)", started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// `run_python` over `/mcp` with rmcp's own client (a dependency already, for `replpool
    /// mcp --url`): what MCP costs the server, without a Python SDK's own time in the figure.
    /// The native API's warm exec in the same run beside it.
    async fn step_mcp(&mut self, n: &Counts) -> anyhow::Result<()> {
        use rmcp::ServiceExt;
        use rmcp::model::CallToolRequestParams;

        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(self.url("/mcp"));
        let client = ().serve(transport).await?;
        let call = |name: &'static str, arguments: Value| {
            let params = CallToolRequestParams::new(name)
                .with_arguments(arguments.as_object().cloned().unwrap_or_default());
            client.call_tool(params)
        };
        let created = call("create_session", json!({})).await?;
        let id = created
            .structured_content
            .as_ref()
            .and_then(|s| s["session_id"].as_str())
            .ok_or_else(|| anyhow::anyhow!("create_session answered {created:?}"))?
            .to_owned();
        for (workload, code) in [
            ("run_python 1+1 over MCP", "1+1"),
            ("run_python print over MCP", "print('hello')"),
        ] {
            let arguments = json!({"session_id": id, "code": code});
            for _ in 0..(n.mcp / 10).clamp(1, 100) {
                call("run_python", arguments.clone()).await?; // warm-up, not recorded
            }
            let mut samples = Vec::with_capacity(n.mcp);
            for _ in 0..n.mcp {
                let started = Instant::now();
                let result = call("run_python", arguments.clone()).await?;
                samples.push(started.elapsed());
                anyhow::ensure!(result.is_error != Some(true), "{code}: {result:?}");
            }
            self.push(Figure::latency(workload, "replpool", &samples));
        }
        call("close_session", json!({"session_id": id})).await?;
        client.cancel().await?;
        let (samples, _) = self.replpool_cells(n.mcp, "", "1+1", false).await?;
        self.push(Figure::latency(
            "native warm exec 1+1 beside MCP",
            "replpool",
            &samples,
        ));
        Ok(())
    }

    async fn step_ready(&mut self, n: &Counts) -> anyhow::Result<()> {
        let samples = self.replpool_ready(n.ready, true).await?;
        self.push(Figure::latency("session ready", "replpool", &samples));
        let samples = self.replpool_ready(n.ready, false).await?;
        self.push(Figure::latency(
            "session ready, back to back",
            "replpool",
            &samples,
        ));
        let code = format!("{}\nprint(1+1)", self.preload_code);
        let samples = self.cold_runs(n.ready_peer, &code, None)?;
        self.push(Figure::latency("session ready", "cold", &samples));
        let samples = self.jupyter_samples(&[
            "ready",
            &n.ready_peer.to_string(),
            &self.preload_code.clone(),
        ])?;
        self.push(Figure::latency("session ready", "jupyter", &samples));
        Ok(())
    }

    /// Session ready (create on the interpreter + first `1+1`) on a second server of two
    /// interpreters: the configured one (the repository's config, with its preload) and
    /// Debian's `/usr/bin/python3` (no preload), each sample starting with that interpreter's
    /// pool full. Skipped, saying so, where Debian's interpreter is missing.
    async fn step_interpreters(&mut self, n: &Counts) -> anyhow::Result<()> {
        const DEBIAN: &str = "/usr/bin/python3";
        if !Path::new(DEBIAN).exists() {
            eprintln!("    skipped: {DEBIAN} is not installed");
            return Ok(());
        }
        let mut config =
            replpool::Config::load(Some(&self.root.join("config.toml")), std::iter::empty())?;
        // Paths are absolute once loaded: the written copy works from any directory.
        config.python.interpreters = vec![
            replpool::config::InterpreterConfig {
                name: "venv".to_owned(),
                executable: config.python.executable.clone(),
                preload: None,
                warm_workers: None,
            },
            replpool::config::InterpreterConfig {
                name: "debian".to_owned(),
                executable: PathBuf::from(DEBIAN),
                preload: Some(Vec::new()),
                warm_workers: None,
            },
        ];
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml::to_string(&config)?)?;
        let server = Server(launcher::launch(
            &self.root.join("target/release/replpool"),
            &path,
            &[],
        )?);
        let main_base = std::mem::replace(&mut self.base, server.0.base.clone());
        let measured = self.interpreters_ready(n.ready).await;
        self.base = main_base;
        drop(server);
        for (name, version, samples) in measured? {
            self.push(Figure::latency(
                // Not `session ready…`: that row's target and description are the default's.
                &format!("interpreter {name} ({version}): session ready"),
                "replpool",
                &samples,
            ));
        }
        Ok(())
    }

    /// Per interpreter the server lists: its name, version and `n` session-ready samples.
    async fn interpreters_ready(
        &self,
        n: usize,
    ) -> anyhow::Result<Vec<(String, String, Vec<Duration>)>> {
        let health: Value = self
            .http
            .get(self.url("/healthz"))
            .send()
            .await?
            .json()
            .await?;
        let interpreters: Vec<(String, String)> = health["interpreters"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no interpreters in {health}"))?
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap_or_default().to_owned(),
                    i["version"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let mut measured = Vec::new();
        for (name, version) in interpreters {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                self.wait_for_interpreter_pool(&name).await?;
                let started = Instant::now();
                let created = self.post("/v1/sessions", json!({"python": name})).await?;
                let id = created["session_id"].as_str().unwrap_or_default();
                self.exec(id, "1+1").await?;
                samples.push(started.elapsed());
                self.delete_session(id).await?;
            }
            measured.push((name, version, samples));
        }
        Ok(measured)
    }

    /// Waits until `/healthz` shows the pool of interpreter `name` full.
    async fn wait_for_interpreter_pool(&self, name: &str) -> anyhow::Result<()> {
        self.wait_for_health(&format!("the pool of {name}"), |health| {
            health["interpreters"]
                .as_array()
                .and_then(|all| all.iter().find(|i| i["name"] == name))
                .is_some_and(|i| pool_full(&i["pool"]))
        })
        .await
    }

    /// Both sides through the same Python client (benches/peers/jupyter_api_peer.py): replpool's
    /// Jupyter kernel API, and an IPython kernel behind jupyter_server.
    async fn step_jupyter_api(&mut self, n: &Counts) -> anyhow::Result<()> {
        self.wait_for_pool().await?;
        let result = self.peer(
            "jupyter_api_peer.py",
            &[
                &n.ready_peer.to_string(),
                &self.base.clone(),
                &self.preload_code.clone(),
            ],
        )?;
        for system in ["replpool", "jupyter"] {
            let samples = durations(&result[system]["samples_s"]);
            self.push(Figure::latency(JUPYTER_API_ROW, system, &samples));
        }
        Ok(())
    }

    async fn step_exec(&mut self, n: &Counts) -> anyhow::Result<()> {
        let (samples, _) = self.replpool_cells(n.warm, "", "1+1", false).await?;
        self.push(Figure::latency("warm exec 1+1", "replpool", &samples));
        let samples = self.jupyter_samples(&[
            "exec",
            &n.warm_peer.to_string(),
            &self.preload_code.clone(),
            "pass",
            "1+1",
        ])?;
        self.push(Figure::latency("warm exec 1+1", "jupyter", &samples));
        let samples = self.peer_samples("pool_peer.py", &["exec", &n.warm.to_string()])?;
        self.push(Figure::latency(
            "warm exec 1+1, in-process Pool",
            "replpool",
            &samples,
        ));
        Ok(())
    }

    /// `1+1` over one kept-alive connection, one at a time, and the CPU time the server, the
    /// session's worker and this client used meanwhile (`/proc/<pid>/stat`), per execution.
    async fn step_cpu(&mut self, n: &Counts) -> anyhow::Result<()> {
        let id = self.create_session().await?;
        let worker_pid = self.session_pid(&id).await?;
        for _ in 0..100 {
            self.exec(&id, "1+1").await?; // warm-up: the connection is open from here on
        }
        let server = procfs::CpuMeter::start(&[self.server_pid]);
        let worker = procfs::CpuMeter::start(&[worker_pid]);
        let client = procfs::CpuMeter::start(&[std::process::id()]);
        let started = Instant::now();
        for _ in 0..n.cpu_execs {
            self.exec(&id, "1+1").await?;
        }
        let wall = started.elapsed();
        let used = [server.used(), worker.used(), client.used()];
        self.delete_session(&id).await?;
        let rate = n.cpu_execs as f64 / wall.as_secs_f64();
        for (who, used) in ["server", "worker", "client (this bench)"].iter().zip(used) {
            let used = used.ok_or_else(|| anyhow::anyhow!("cannot read the {who}'s CPU time"))?;
            let per_exec_us = used.as_secs_f64() * 1e6 / n.cpu_execs as f64;
            self.push(
                Figure::value(
                    &format!("CPU per trivial exec: {who}"),
                    "replpool",
                    n.cpu_execs,
                    per_exec_us,
                    "µs CPU/exec",
                )
                .with_detail("cpu_seconds", json!(used.as_secs_f64()))
                .with_detail("wall_seconds", json!(wall.as_secs_f64()))
                .with_detail("execs_per_second", json!(rate)),
            );
        }
        Ok(())
    }

    async fn step_data(&mut self, n: &Counts) -> anyhow::Result<()> {
        let (samples, _) = self
            .replpool_cells(n.data, SETUP_DF, DATA_CELL, false)
            .await?;
        self.push(Figure::latency("data cell", "replpool", &samples));
        let code = format!("{DATA_IMPORTS}\n{SETUP_DF}\nprint({DATA_CELL})");
        let samples = self.cold_runs(n.data_cold, &code, None)?;
        self.push(Figure::latency("data cell", "cold", &samples));
        let samples = self.jupyter_samples(&[
            "exec",
            &n.data.to_string(),
            &self.preload_code.clone(),
            SETUP_DF,
            DATA_CELL,
        ])?;
        self.push(Figure::latency("data cell", "jupyter", &samples));
        Ok(())
    }

    /// The same cell on each side; what each side's PNG is (pixels, bytes) and the settings
    /// it was drawn with are kept with the figures, for the workload's description.
    async fn step_plot(&mut self, n: &Counts) -> anyhow::Result<()> {
        let (samples, last) = self.replpool_cells(n.plot, "", PLOT_CELL, true).await?;
        let png = last["display"][0]["image/png"].as_str().unwrap_or_default();
        let settings = self.replpool_mpl_settings().await?;
        self.push(
            Figure::latency("plot cell", "replpool", &samples)
                .with_detail("png", png_facts(png))
                .with_detail("settings", settings)
                .with_detail("savefig", json!(worker_savefig_calls(&self.root))),
        );
        let code = format!(
            "{PLOT_IMPORTS}\nimport io, base64\n{PLOT_CELL}\nbuf = io.BytesIO()\nplt.savefig(buf, format='png', bbox_inches='tight')\nprint(len(base64.b64encode(buf.getvalue())))"
        );
        let samples = self.cold_runs(n.plot_cold, &code, None)?;
        self.push(Figure::latency("plot cell", "cold", &samples));
        let result = self.jupyter(&[
            "exec",
            &n.plot.to_string(),
            &self.preload_code.clone(),
            "pass",
            PLOT_CELL,
        ])?;
        let mut figure = Figure::latency("plot cell", "jupyter", &samples_of(&result));
        for key in ["png", "settings"] {
            if !result[key].is_null() {
                figure = figure.with_detail(key, result[key].clone());
            }
        }
        self.push(figure);
        Ok(())
    }

    /// The cost of tables and charts beside pictures: the same cell with `"data"` on (the
    /// default) and off, alternating in one session so that both see the same machine.
    async fn step_data_outputs(&mut self, n: &Counts) -> anyhow::Result<()> {
        for (workload, setup, code, data_at) in [
            ("table result", SETUP_TABLE, "df", "/result"),
            ("plot", "", PLOT_CELL, "/display/0"),
        ] {
            let mime = if setup.is_empty() {
                CHART_MIME
            } else {
                TABLE_MIME
            };
            let id = self.create_session().await?;
            if !setup.is_empty() {
                self.exec(&id, setup).await?;
            }
            let mut on = Vec::with_capacity(n.plot);
            let mut off = Vec::with_capacity(n.plot);
            let warm_up = (n.plot / 10).clamp(1, 100);
            for i in 0..(warm_up + n.plot) {
                for data in [true, false] {
                    let started = Instant::now();
                    let reply = self
                        .post(
                            &format!("/v1/sessions/{id}/execute"),
                            json!({"code": code, "data": data}),
                        )
                        .await?;
                    let took = started.elapsed();
                    anyhow::ensure!(reply["status"] == "ok", "cell failed: {reply}");
                    let bundle = reply.pointer(data_at).cloned().unwrap_or_default();
                    anyhow::ensure!(
                        bundle.get(mime).is_some() == data,
                        "{mime} with data {data}: {bundle}"
                    );
                    if i >= warm_up {
                        if data { &mut on } else { &mut off }.push(took);
                    }
                }
            }
            self.delete_session(&id).await?;
            let off = Figure::latency(&format!("{workload}, data off"), "replpool", &off);
            let mut on = Figure::latency(&format!("{workload}, data on"), "replpool", &on);
            if let (Some(with), Some(without)) = (on.p50_ms, off.p50_ms) {
                on.note = Some(format!("{:+.2} ms p50 for the data", with - without));
            }
            self.push(on);
            self.push(off);
        }
        Ok(())
    }

    /// One pin installed into a fresh session with nothing of it cached (its entries taken
    /// out of the server's uv cache first, `uv cache clean <package>`), then the same pin into
    /// a second session, from the cache. The whole `POST …/packages`, as a client waits for it.
    async fn step_packages(&mut self, n: &Counts) -> anyhow::Result<()> {
        const PACKAGE: &str = "tabulate";
        const PIN: &str = "tabulate==0.9.0";
        let mut first = Vec::with_capacity(n.packages);
        let mut cached = Vec::with_capacity(n.packages);
        for _ in 0..n.packages {
            let cleaned = Command::new(&self.uv)
                .args(["cache", "clean", PACKAGE, "--cache-dir"])
                .arg(&self.uv_cache)
                .output()?;
            anyhow::ensure!(
                cleaned.status.success(),
                "uv cache clean failed: {}",
                String::from_utf8_lossy(&cleaned.stderr)
            );
            for (samples, from_cache) in [(&mut first, false), (&mut cached, true)] {
                let id = self.create_session().await?;
                let started = Instant::now();
                let reply = self
                    .post(
                        &format!("/v1/sessions/{id}/packages"),
                        json!({"requirements": [PIN]}),
                    )
                    .await?;
                samples.push(started.elapsed());
                anyhow::ensure!(
                    reply["from_cache"] == from_cache,
                    "install (from_cache {from_cache} expected): {reply}"
                );
                let reply = self
                    .exec(&id, "import tabulate; tabulate.__version__")
                    .await?;
                anyhow::ensure!(reply["status"] == "ok", "import failed: {reply}");
                self.delete_session(&id).await?;
            }
        }
        let first = Figure::latency("package install, first (index)", "replpool", &first);
        let mut cached =
            Figure::latency("package install, cached (2nd session)", "replpool", &cached);
        if let (Some(f), Some(c)) = (first.p50_ms, cached.p50_ms) {
            cached.note = Some(format!(
                "{:.1}x faster than the first (p50)",
                f / c.max(0.001)
            ));
        }
        self.push(first);
        self.push(cached);
        Ok(())
    }

    async fn replpool_mpl_settings(&self) -> anyhow::Result<Value> {
        let id = self.create_session().await?;
        let reply = self.exec(&id, MPL_SETTINGS_CELL).await;
        self.delete_session(&id).await?;
        let stdout = reply?["stdout"].as_str().unwrap_or_default().to_owned();
        Ok(serde_json::from_str(stdout.trim())?)
    }

    async fn step_throughput(&mut self, n: &Counts) -> anyhow::Result<()> {
        for &c in &n.throughput_levels {
            let rate = self.replpool_throughput(c, n.throughput_secs).await?;
            self.push(rate);
            let result = self.jupyter(&[
                "throughput",
                &c.to_string(),
                &n.throughput_secs.to_string(),
                &self.preload_code.clone(),
            ])?;
            let ops = result["ops"].as_f64().unwrap_or(0.0);
            let secs = result["seconds"].as_f64().unwrap_or(1.0);
            self.push(Figure::value(
                &format!("throughput, {c} sessions"),
                "jupyter",
                ops as usize,
                ops / secs,
                "execs/s",
            ));
        }
        Ok(())
    }

    async fn step_memory(&mut self, n: &Counts) -> anyhow::Result<()> {
        for &k in &n.memory_levels {
            let (per_session, server_rss) = self.replpool_memory(k).await?;
            self.push(Figure::value(
                &format!("memory, {k} idle sessions"),
                "replpool",
                k,
                per_session / 1e6,
                "MB PSS/session",
            ));
            self.push(Figure::value(
                &format!("server RSS, {k} sessions"),
                "replpool",
                1,
                server_rss / 1e6,
                "MB",
            ));
        }
        for &k in &n.jupyter_memory_levels {
            let result = self.jupyter(&["memory", &k.to_string(), &self.preload_code.clone()])?;
            let per = result["pss_bytes_per_kernel"].as_f64().unwrap_or(0.0);
            self.push(Figure::value(
                &format!("memory, {k} idle sessions"),
                "jupyter",
                k,
                per / 1e6,
                "MB PSS/session",
            ));
        }
        Ok(())
    }

    /// The lean pool of one-shot workers starts at the first one-shot that can use it: one
    /// untimed, then its pool full, so that no row measures a server still starting.
    async fn warm_one_shots(&self) -> anyhow::Result<()> {
        let reply = self
            .post("/v1/execute", json!({"code": "print(1)"}))
            .await?;
        anyhow::ensure!(reply["status"] == "ok", "wrong one-shot reply: {reply}");
        self.wait_for_pool().await
    }

    async fn step_one_shot(&mut self, n: &Counts) -> anyhow::Result<()> {
        self.warm_one_shots().await?;
        let samples = self.replpool_one_shots(n.one_shot, true).await?;
        self.push(Figure::latency("one-shot print(1)", "replpool", &samples));
        let samples = self.replpool_one_shots(n.one_shot, false).await?;
        self.push(Figure::latency(
            "one-shot print(1), back to back",
            "replpool",
            &samples,
        ));
        let samples = self.cold_runs(n.one_shot_cold, "print(1)", None)?;
        self.push(Figure::latency("one-shot print(1)", "cold", &samples));
        Ok(())
    }

    async fn step_humaneval(&mut self, n: &Counts) -> anyhow::Result<()> {
        let programs = humaneval::programs(n.humaneval);
        let jobs: Vec<Job> = programs
            .iter()
            .map(|code| Job {
                code: code.clone(),
                stdin: None,
                expected: humaneval::EXPECTED_STDOUT.to_owned(),
            })
            .collect();
        let workload = format!("HumanEval-style batch, {} programs", programs.len());
        self.warm_one_shots().await?;
        let (wall, samples) = self.replpool_one_shot_batch(&jobs, BATCH_IN_FLIGHT).await?;
        self.push(Figure::value(
            &workload,
            "replpool",
            jobs.len(),
            wall.as_secs_f64(),
            "s",
        ));
        self.push(Figure::latency(
            "HumanEval-style program",
            "replpool",
            &samples,
        ));
        let (wall, samples) = self.cold_batch(&jobs, BATCH_IN_FLIGHT)?;
        self.push(Figure::value(
            &workload,
            "cold",
            jobs.len(),
            wall.as_secs_f64(),
            "s",
        ));
        self.push(Figure::latency("HumanEval-style program", "cold", &samples));
        Ok(())
    }

    async fn step_judge(&mut self, n: &Counts) -> anyhow::Result<()> {
        let jobs: Vec<Job> = (0..n.judge_cases)
            .map(|i| {
                let n = 1000 + i as u64;
                let expected: u64 = (0..n).map(|i| i * i).sum();
                Job {
                    code: JUDGE_PROGRAM.to_owned(),
                    stdin: Some(format!("{n}\n")),
                    expected: format!("{expected}\n"),
                }
            })
            .collect();
        let (wall, samples) = self.replpool_one_shot_batch(&jobs, cores()).await?;
        self.push(Figure::latency("judge case", "replpool", &samples));
        self.push(Figure::value(
            &format!("judge, {} cases in all", n.judge_cases),
            "replpool",
            n.judge_cases,
            wall.as_secs_f64(),
            "s",
        ));
        let wall = self.replpool_judge_endpoint(n.judge_cases).await?;
        self.push(Figure::value(
            &format!("judge via POST /execute, {} cases", n.judge_cases),
            "replpool",
            n.judge_cases,
            wall.as_secs_f64(),
            "s",
        ));
        let (wall, samples) = self.cold_batch(&jobs, cores())?;
        self.push(Figure::latency("judge case", "cold", &samples));
        self.push(Figure::value(
            &format!("judge, {} cases in all", n.judge_cases),
            "cold",
            n.judge_cases,
            wall.as_secs_f64(),
            "s",
        ));
        Ok(())
    }

    /// The in-process pool makes sessions faster than it keeps workers warm: within its warm
    /// size each takes a ready worker, beyond it each waits for one to be made.
    fn step_pool(&mut self, n: &Counts) -> anyhow::Result<()> {
        let result = self.peer(
            "pool_peer.py",
            &[
                "ready",
                &n.pool_rounds.to_string(),
                &POOL_WARM_WORKERS.to_string(),
            ],
        )?;
        for (key, label) in [("within_s", "within"), ("beyond_s", "beyond")] {
            let samples = durations(&result[key]);
            self.push(Figure::latency(
                &format!("replpool.Pool session ready, {label} warm_workers"),
                "replpool",
                &samples,
            ));
        }
        Ok(())
    }

    fn push(&mut self, figure: Figure) {
        match (figure.p50_ms, figure.p99_ms, figure.value) {
            (Some(p50), Some(p99), _) => eprintln!(
                "    {:<28} {:<9} p50 {p50:>10.3} ms  p99 {p99:>10.3} ms  (n={})",
                figure.workload, figure.system, figure.samples
            ),
            (_, _, Some(v)) => eprintln!(
                "    {:<28} {:<9} {v:>10.2} {}  (n={}){}",
                figure.workload,
                figure.system,
                figure.unit,
                figure.samples,
                figure
                    .note
                    .as_ref()
                    .map(|n| format!("  {n}"))
                    .unwrap_or_default()
            ),
            _ => {}
        }
        self.figures.push(figure);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self.http.post(self.url(path)).json(&body).send().await?;
        let status = response.status();
        let value: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {value}");
        Ok(value)
    }

    async fn create_session(&self) -> anyhow::Result<String> {
        let created = self.post("/v1/sessions", json!({})).await?;
        Ok(created["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    async fn delete_session(&self, id: &str) -> anyhow::Result<()> {
        self.http
            .delete(self.url(&format!("/v1/sessions/{id}")))
            .send()
            .await?;
        Ok(())
    }

    /// The pid of the session's worker, as the server reports it.
    async fn session_pid(&self, id: &str) -> anyhow::Result<u32> {
        let info: Value = self
            .http
            .get(self.url(&format!("/v1/sessions/{id}")))
            .send()
            .await?
            .json()
            .await?;
        info["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| anyhow::anyhow!("no worker pid in {info}"))
    }

    async fn exec(&self, id: &str, code: &str) -> anyhow::Result<Value> {
        let reply = self
            .post(&format!("/v1/sessions/{id}/execute"), json!({"code": code}))
            .await?;
        anyhow::ensure!(reply["status"] == "ok", "cell failed: {reply}");
        Ok(reply)
    }

    /// Waits until the server's pool holds as many ready workers as it aims to (and its
    /// template, if any, runs): measurements start from a server that has finished starting.
    /// Every `{ready, target}` under `/healthz`'s `pool` and `lean_pool` counts, so that a
    /// second pool (of one-shot workers) is waited for too once it runs.
    async fn wait_for_pool(&self) -> anyhow::Result<()> {
        self.wait_for_health("the pool", |health| {
            pool_full(&health["pool"]) && pool_full(&health["lean_pool"])
        })
        .await
    }

    /// Polls `/healthz` until `full` holds of it (`what` never filled, after two minutes).
    async fn wait_for_health(
        &self,
        what: &str,
        full: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let health: Value = self
                .http
                .get(self.url("/healthz"))
                .send()
                .await?
                .json()
                .await?;
            if full(&health) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{what} never filled: {health}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `refilled`: each sample starts with the pool full again (the latency a user sees);
    /// otherwise sessions are made back to back, as fast as workers can be made.
    async fn replpool_ready(&self, n: usize, refilled: bool) -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            if refilled {
                self.wait_for_pool().await?;
            }
            let started = Instant::now();
            let id = self.create_session().await?;
            self.exec(&id, "1+1").await?;
            samples.push(started.elapsed());
            self.delete_session(&id).await?;
        }
        Ok(samples)
    }

    async fn replpool_cells(
        &self,
        n: usize,
        setup: &str,
        code: &str,
        want_png: bool,
    ) -> anyhow::Result<(Vec<Duration>, Value)> {
        let id = self.create_session().await?;
        if !setup.is_empty() {
            self.exec(&id, setup).await?;
        }
        for _ in 0..(n / 10).clamp(1, 100) {
            self.exec(&id, code).await?; // warm-up, not recorded
        }
        let mut samples = Vec::with_capacity(n);
        let mut last = Value::Null;
        for _ in 0..n {
            let started = Instant::now();
            let reply = self.exec(&id, code).await?;
            samples.push(started.elapsed());
            if want_png {
                anyhow::ensure!(
                    reply["display"][0]["image/png"].is_string(),
                    "no PNG: {reply}"
                );
            }
            last = reply;
        }
        self.delete_session(&id).await?;
        Ok((samples, last))
    }

    async fn replpool_throughput(&self, sessions: usize, seconds: f64) -> anyhow::Result<Figure> {
        let mut ids = Vec::new();
        let mut worker_pids = Vec::new();
        for _ in 0..sessions {
            let id = self.create_session().await?;
            worker_pids.push(self.session_pid(&id).await?);
            ids.push(id);
        }
        let client = procfs::CpuMeter::start(&[std::process::id()]);
        let server = procfs::CpuMeter::start(&[self.server_pid]);
        let workers = procfs::CpuMeter::start(&worker_pids);
        let done = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for id in &ids {
            let (http, url, done) = (
                self.http.clone(),
                self.url(&format!("/v1/sessions/{id}/execute")),
                Arc::clone(&done),
            );
            tasks.push(tokio::spawn(async move {
                while Instant::now() < stop {
                    let ok = http
                        .post(&url)
                        .json(&json!({"code": "1+1"}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        // Shares of the whole machine (cores × wall time): where the cores went, the client
        // included, since it runs on the same machine as what it measures.
        let share = |used: Option<Duration>| {
            used.map(|u| 100.0 * u.as_secs_f64() / (elapsed * cores() as f64))
        };
        let shares = [
            ("client", share(client.used())),
            ("server", share(server.used())),
            ("workers", share(workers.used())),
        ];
        for id in &ids {
            self.delete_session(id).await?;
        }
        let ops = done.load(Ordering::Relaxed);
        let mut figure = Figure::value(
            &format!("throughput, {sessions} sessions"),
            "replpool",
            ops as usize,
            ops as f64 / elapsed,
            "execs/s",
        );
        let mut parts = Vec::new();
        for (who, share) in shares {
            if let Some(share) = share {
                parts.push(format!("{who} {share:.0}%"));
                figure = figure.with_detail(&format!("cpu_share_{who}_percent"), json!(share));
            }
        }
        Ok(figure.with_note(format!("CPU: {} of {} cores", parts.join(", "), cores())))
    }

    async fn replpool_memory(&self, k: usize) -> anyhow::Result<(f64, f64)> {
        let mut ids = Vec::new();
        for _ in 0..k {
            let id = self.create_session().await?;
            self.exec(&id, "1+1").await?;
            ids.push(id);
        }
        let mut total = 0.0;
        for id in &ids {
            let info: Value = self
                .http
                .get(self.url(&format!("/v1/sessions/{id}")))
                .send()
                .await?
                .json()
                .await?;
            total += info["memory_pss_bytes"].as_f64().unwrap_or(0.0);
        }
        let rss = rss_bytes(self.server_pid).unwrap_or(0) as f64;
        for id in &ids {
            self.delete_session(id).await?;
        }
        Ok((total / k as f64, rss))
    }

    /// `print(1)` as one-shots (`POST /v1/execute`), one at a time. `refilled`: each starts
    /// with the server's pools full again (the pool not empty, as the target row has
    /// it); otherwise back to back, as fast as the server makes them.
    async fn replpool_one_shots(&self, n: usize, refilled: bool) -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            if refilled {
                self.wait_for_pool().await?;
            }
            let started = Instant::now();
            let reply = self
                .post("/v1/execute", json!({"code": "print(1)"}))
                .await?;
            samples.push(started.elapsed());
            anyhow::ensure!(
                reply["status"] == "ok" && reply["stdout"] == "1\n",
                "wrong one-shot reply: {reply}"
            );
        }
        Ok(samples)
    }

    /// Every job as a one-shot `POST /v1/execute`, `in_flight` at once; the wall time of all
    /// and each one's latency. A wrong output is an error, not a figure.
    async fn replpool_one_shot_batch(
        &self,
        jobs: &[Job],
        in_flight: usize,
    ) -> anyhow::Result<(Duration, Vec<Duration>)> {
        let started = Instant::now();
        let mut tasks = Vec::new();
        let parallel = Arc::new(tokio::sync::Semaphore::new(in_flight));
        for job in jobs {
            let (http, url, parallel, job) = (
                self.http.clone(),
                self.url("/v1/execute"),
                Arc::clone(&parallel),
                job.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = parallel.acquire_owned().await?;
                let mut body = json!({"code": job.code});
                if let Some(stdin) = &job.stdin {
                    body["stdin"] = json!(stdin);
                }
                let t = Instant::now();
                let reply: Value = http.post(&url).json(&body).send().await?.json().await?;
                let elapsed = t.elapsed();
                anyhow::ensure!(
                    reply["status"] == "ok" && reply["stdout"] == job.expected.as_str(),
                    "wrong one-shot output: {reply}"
                );
                Ok::<Duration, anyhow::Error>(elapsed)
            }));
        }
        let mut samples = Vec::new();
        for task in tasks {
            samples.push(task.await??);
        }
        Ok((started.elapsed(), samples))
    }

    /// The code judge's own API: one `POST /execute` with all the cases.
    async fn replpool_judge_endpoint(&self, cases: usize) -> anyhow::Result<Duration> {
        let stdin_stdout: Vec<Value> = (0..cases)
            .map(|i| {
                let n = 1000 + i as u64;
                let expected: u64 = (0..n).map(|i| i * i).sum();
                json!({"stdin": format!("{n}\n"), "stdout": expected.to_string()})
            })
            .collect();
        let started = Instant::now();
        let reply = self
            .post(
                "/execute",
                json!({"code": JUDGE_PROGRAM, "stdin_stdout": stdin_stdout, "language": "python"}),
            )
            .await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(reply["all_passed"] == true, "judge failed: {reply}");
        Ok(elapsed)
    }

    /// `python -c CODE` n times, one after another.
    fn cold_runs(
        &self,
        n: usize,
        code: &str,
        stdin: Option<&str>,
    ) -> anyhow::Result<Vec<Duration>> {
        (0..n)
            .map(|_| cold_once(&self.python, code, stdin).map(|(d, _)| d))
            .collect()
    }

    /// Every job as `python -c` (the bare interpreter: a job imports what it uses itself),
    /// `in_flight` at once; the wall time of all and each one's latency.
    fn cold_batch(
        &self,
        jobs: &[Job],
        in_flight: usize,
    ) -> anyhow::Result<(Duration, Vec<Duration>)> {
        let started = Instant::now();
        let next = AtomicU64::new(0);
        let samples = parking_lot::Mutex::new(Vec::new());
        let failure = parking_lot::Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..in_flight {
                scope.spawn(|| {
                    while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                        match cold_once(&self.python, &job.code, job.stdin.as_deref()) {
                            Ok((d, stdout)) if stdout == job.expected => samples.lock().push(d),
                            Ok((_, stdout)) => {
                                *failure.lock() = Some(format!("wrong cold output: {stdout:?}"));
                            }
                            Err(e) => *failure.lock() = Some(e.to_string()),
                        }
                    }
                });
            }
        });
        if let Some(failure) = failure.into_inner() {
            anyhow::bail!("a cold run failed: {failure}");
        }
        Ok((started.elapsed(), samples.into_inner()))
    }

    /// Runs a peer script of `benches/peers/` and reads its JSON answer.
    fn peer(&self, script: &str, args: &[&str]) -> anyhow::Result<Value> {
        let output = Command::new(&self.python)
            .arg(self.root.join("benches/peers").join(script))
            .args(args)
            .stderr(Stdio::inherit())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{script} failed: {:?}",
            output.status
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    fn jupyter(&self, args: &[&str]) -> anyhow::Result<Value> {
        self.peer("jupyter_peer.py", args)
    }

    fn jupyter_samples(&self, args: &[&str]) -> anyhow::Result<Vec<Duration>> {
        self.peer_samples("jupyter_peer.py", args)
    }

    fn peer_samples(&self, script: &str, args: &[&str]) -> anyhow::Result<Vec<Duration>> {
        Ok(samples_of(&self.peer(script, args)?))
    }
}

/// One program of a batch of one-shots, with what it must print.
#[derive(Clone)]
struct Job {
    code: String,
    stdin: Option<String>,
    expected: String,
}

/// A peer's `samples_s`.
fn samples_of(result: &Value) -> Vec<Duration> {
    durations(&result["samples_s"])
}

/// A JSON array of seconds.
fn durations(seconds: &Value) -> Vec<Duration> {
    seconds
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(Duration::from_secs_f64)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every pool `/healthz` reports is full: each object with `ready` and `target` has
/// its target, and a template, where there is one, runs.
fn pool_full(pool: &Value) -> bool {
    match pool {
        Value::Object(fields) => {
            let level_ok = match (fields.get("ready"), fields.get("target")) {
                (Some(ready), Some(target)) => ready.as_u64() >= target.as_u64(),
                _ => true,
            };
            let template_ok = fields.iter().all(|(key, value)| {
                !key.contains("template") || value.is_null() || value["state"] == "running"
            });
            level_ok && template_ok && fields.values().all(pool_full)
        }
        _ => true,
    }
}

/// Pixel size and bytes of a base64 PNG (from its IHDR chunk), or null if it is not one.
fn png_facts(base64_png: &str) -> Value {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(base64_png) else {
        return Value::Null;
    };
    if bytes.len() < 24 || !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Value::Null;
    }
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    json!({"width": be(16), "height": be(20), "bytes": bytes.len()})
}

/// How the worker saves a figure: its `savefig(…)` calls, quoted from bootstrap/worker.py, so
/// that the plot row's description says what the measured code did whatever it is now.
fn worker_savefig_calls(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("bootstrap/worker.py"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("savefig(") && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `python -c code`: its wall time and stdout.
fn cold_once(python: &Path, code: &str, stdin: Option<&str>) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let mut child = Command::new(python)
        .arg("-c")
        .arg(code)
        .env("MPLBACKEND", "Agg")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or("").as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "cold run failed: {:?}",
        output.status
    );
    Ok((
        elapsed,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

fn step(i: usize, total: usize, what: &str) {
    eprintln!("[{i}/{total}] {what}");
}

/// The server under test, stopped (by pid) when dropped.
struct Server(launcher::Launched);

/// The release binary with the repository's own `config.toml`, started as the tests start
/// theirs (tests/common/launcher.rs).
fn start_server(root: &Path) -> anyhow::Result<Server> {
    let binary = root.join("target/release/replpool");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: run `cargo build --release` (make bench does)",
        binary.display()
    );
    Ok(Server(launcher::launch(
        &binary,
        &root.join("config.toml"),
        &[],
    )?))
}

impl Drop for Server {
    fn drop(&mut self) {
        launcher::stop(&mut self.0.child, Duration::from_secs(30));
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn git_revision(root: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The row whose peers a workload is compared with when it has none of its own: the same
/// work seen from the peer's side (a peer has no "back to back" or "in-process" variant).
fn peer_row(workload: &str) -> &str {
    match workload {
        "session ready, back to back"
        | "replpool.Pool session ready, within warm_workers"
        | "replpool.Pool session ready, beyond warm_workers" => "session ready",
        "warm exec 1+1, in-process Pool"
        | "run_python 1+1 over MCP"
        | "run_python print over MCP"
        | "native warm exec 1+1 beside MCP" => "warm exec 1+1",
        "one-shot print(1), back to back" => "one-shot print(1)",
        other => other,
    }
}

/// Issue 19's targets beside what this run measured: the row, the figure, the target, and
/// whether it was met (rows this run did not measure are left out).
fn targets(figures: &[Figure]) -> String {
    let find = |workload: &str, system: &str| {
        figures
            .iter()
            .find(|f| f.system == system && f.workload.starts_with(workload))
    };
    let p50 = |workload: &str, system: &str| find(workload, system).and_then(|f| f.p50_ms);
    let value = |workload: &str, system: &str| find(workload, system).and_then(|f| f.value);
    // (row, measured as text, target as text, met)
    let mut rows: Vec<(&str, String, &str, bool)> = Vec::new();
    if let Some(f) = find("session ready", "replpool")
        && let (Some(p50), Some(p99)) = (f.p50_ms, f.p99_ms)
    {
        rows.push((
            "session ready p50 / p99 (pool full)",
            format!("{} / {} ms", num(p50), num(p99)),
            "≤ 2 / ≤ 10 ms",
            p50 <= 2.0 && p99 <= 10.0,
        ));
    }
    if let Some(v) = p50("warm exec 1+1", "replpool") {
        rows.push((
            "warm exec `1+1` over HTTP p50",
            format!("{} ms", num(v)),
            "≤ 0.25 ms",
            v <= 0.25,
        ));
    }
    if let Some(v) = value("CPU per trivial exec: server", "replpool") {
        rows.push((
            "server CPU per trivial exec",
            format!("{} µs", num(v)),
            "≤ 60 µs",
            v <= 60.0,
        ));
    }
    if let Some(v) = value("throughput, 32 sessions", "replpool") {
        rows.push((
            "throughput, 32 sessions",
            format!("{} execs/s", num(v)),
            "≥ 10,000/s",
            v >= 10_000.0,
        ));
    }
    if let Some(v) = p50("one-shot print(1)", "replpool") {
        rows.push((
            "one-shot `print(1)` p50, pool not empty",
            format!("{} ms", num(v)),
            "≤ 3 ms",
            v <= 3.0,
        ));
    }
    if let (Some(ours), Some(bare)) = (
        value("HumanEval-style batch", "replpool"),
        value("HumanEval-style batch", "cold"),
    ) && ours > 0.0
    {
        let r = bare / ours;
        rows.push((
            "HumanEval-style batch vs bare `python -c`, 4 at once",
            format!("{}×", num(r)),
            "≥ 2×",
            r >= 2.0,
        ));
    }
    if let (Some(ours), Some(jupyter)) = (p50("plot cell", "replpool"), p50("plot cell", "jupyter"))
        && ours > 0.0
    {
        let r = jupyter / ours;
        rows.push((
            "plot cell vs Jupyter",
            format!("{}×", num(r)),
            "≥ 3×",
            r >= 3.0,
        ));
    }
    if let Some(v) = p50(
        "replpool.Pool session ready, beyond warm_workers",
        "replpool",
    ) {
        rows.push((
            "`replpool.Pool` session ready p50 (beyond warm_workers)",
            format!("{} ms", num(v)),
            "≤ 20 ms",
            v <= 20.0,
        ));
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\nIssue 19's targets, from the rows above (docs/architecture.md and the issue's notes say \
         where the time goes where one is not met):\n\n| row | this run | target | met |\n|---|---|---|---|\n",
    );
    for (row, measured, target, met) in rows {
        let met = if met { "yes" } else { "no" };
        md.push_str(&format!("| {row} | {measured} | {target} | {met} |\n"));
    }
    md
}

/// The Markdown report: one row per workload, the three systems side by side, and the ratios.
fn render(figures: &[Figure], quick: bool, elapsed: Duration) -> String {
    let mut workloads: Vec<&str> = Vec::new();
    let mut by: BTreeMap<(&str, &str), &Figure> = BTreeMap::new();
    for f in figures {
        if !workloads.contains(&f.workload.as_str()) {
            workloads.push(&f.workload);
        }
        by.insert((f.workload.as_str(), f.system.as_str()), f);
    }
    let cell = |f: Option<&&Figure>| match f {
        None => "—".to_owned(),
        Some(f) => {
            let figure = match (f.p50_ms, f.p99_ms, f.value) {
                (Some(p50), Some(p99), _) => {
                    format!("{} / {} ms (n={})", num(p50), num(p99), f.samples)
                }
                (_, _, Some(v)) => format!("{} {} (n={})", num(v), f.unit, f.samples),
                _ => "—".to_owned(),
            };
            match &f.note {
                Some(note) => format!("{figure}; {note}"),
                None => figure,
            }
        }
    };
    // How many times better replpool is: time and memory are better lower, rates higher.
    let ratio = |ours: Option<&&Figure>, theirs: Option<&&Figure>| match (ours, theirs) {
        (Some(o), Some(t)) => match (o.headline(), t.headline()) {
            (Some(o_v), Some(t_v)) if o_v > 0.0 && t_v > 0.0 => {
                let r = if o.unit == "execs/s" {
                    o_v / t_v
                } else {
                    t_v / o_v
                };
                format!("{}×", num(r))
            }
            _ => "—".to_owned(),
        },
        _ => "—".to_owned(),
    };
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Written by `make bench` (`cargo bench --bench replpool`); do not edit by hand.\n\n",
    );
    md.push_str(&format!(
        "- date: {}\n- machine: {} cores\n- git revision: {}\n- mode: {}\n- run time: {:.0} s\n\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        cores(),
        git_revision(Path::new(env!("CARGO_MANIFEST_DIR"))),
        if quick {
            "quick (reduced counts; not for comparison)"
        } else {
            "full"
        },
        elapsed.as_secs_f64(),
    ));
    md.push_str("Latencies are p50 / p99 measured by the client, end to end; `n` is the number of samples.\n");
    md.push_str("The ratio columns say how many times better replpool is than the peer in the same run (p50 for latencies). ");
    md.push_str("A row with no peer of its own is compared with the row its peer cells name.\n\n");
    md.push_str("| workload | replpool | cold `python -c` | Jupyter kernel | vs cold | vs Jupyter |\n|---|---|---|---|---|---|\n");
    for w in &workloads {
        let ours = by.get(&(*w, "replpool"));
        let peers = peer_row(w);
        let peer_cell = |system: &str| match (by.get(&(*w, system)), by.get(&(peers, system))) {
            (Some(own), _) => (cell(Some(own)), Some(*own)),
            (None, Some(borrowed)) => (format!("as *{peers}*"), Some(*borrowed)),
            (None, None) => ("—".to_owned(), None),
        };
        let (cold_cell, cold) = peer_cell("cold");
        let (jupyter_cell, jupyter) = peer_cell("jupyter");
        md.push_str(&format!(
            "| {w} | {} | {cold_cell} | {jupyter_cell} | {} | {} |\n",
            cell(ours),
            ratio(ours, cold.as_ref()),
            ratio(ours, jupyter.as_ref())
        ));
    }
    md.push_str(&targets(figures));
    md.push_str("\nWhat each workload is:\n\n");
    // Only the rows the run has (`--only` runs some steps), each described once.
    let plot = plot_description(&by);
    let pool = format!(
        "- **replpool.Pool session ready**: the `replpool` package's `Pool(warm_workers={POOL_WARM_WORKERS})` inside a Python process (benches/peers/pool_peer.py; no server): `pool.session()` + first `1+1`, timed by the caller. In rounds of warm_workers + 1 sessions made one after the other and kept open, each round starting with the pool full (its processes all started and idle, read from `/proc`; untimed): the first warm_workers of a round take a ready worker (**within**), the last finds none and waits for a worker started for it (**beyond**; one per round, as a second would often get one the pool's refill finished meanwhile). Compared with *session ready*'s peers."
    );
    let descriptions: [(&str, &str); 19] = [
        (
            "session ready",
            "- **session ready**: replpool `POST /v1/sessions` + first `1+1`, each sample starting with the warm pool full (the server refills it between samples, untimed); cold: `python -c` importing the preload list and printing `1+1`; Jupyter: kernel start, wait for ready, a first cell importing the preload list and `1+1`.",
        ),
        (
            "session ready, back to back",
            "- **session ready, back to back**: the same without waiting: sessions made as fast as workers can be forked, so the pool runs dry.",
        ),
        (
            "warm exec 1+1",
            "- **warm exec 1+1**: `1+1` in a session that exists (cold has no sessions).",
        ),
        (
            "warm exec 1+1, in-process Pool",
            "- **warm exec 1+1, in-process Pool**: the same through the `replpool` Python package's `Pool` (no server, no HTTP), timed by the calling Python code, as the Jupyter peer times its kernel.",
        ),
        (
            "CPU per trivial exec",
            "- **CPU per trivial exec**: `1+1` one at a time in one session over one kept-alive connection (after 100 untimed), n times; the user + system CPU time (`/proc/<pid>/stat`, 10 ms ticks) each process used meanwhile, divided by n: the server (all its threads, its background tasks included), the session's worker (the `pid` of the session's info) and this benchmark's process (the HTTP client). No peer.",
        ),
        (
            "data cell",
            "- **data cell**: `df.groupby('k')['v'].mean()` on a 100,000-row DataFrame made earlier in the session (cold: `python -c` importing numpy and pandas only, making it in the same run).",
        ),
        ("plot cell", &plot),
        (
            "table result, data",
            "- **table result, data on / off**: a 1,000-row DataFrame (an integer, a float and a string column) made earlier in the session as the cell's value: its `text/plain` and `text/html`, and with data on (the default) its rows as `application/vnd.dataresource+json` (pandas' `to_json(orient=\"table\")`); off: `\"data\": false` in the request. On and off alternate in one session; the data-on cell says what the data cost at p50. No peer.",
        ),
        (
            "plot, data",
            "- **plot, data on / off**: the plot cell's 1,000-point line plot as PNG, and with data on its chart as `application/vnd.replpool.chart+json` (1,000 points), alternating as above. No peer.",
        ),
        (
            "throughput",
            "- **throughput**: trivial execs per second, one closed-loop client per session, all sessions at once. replpool's CPU: each side's CPU time over the run (`/proc/<pid>/stat`) as a share of the machine (cores × wall time): the client (this benchmark: reqwest on tokio, on the same machine), the server, the sessions' workers.",
        ),
        (
            "memory",
            "- **memory**: PSS (`/proc/<pid>/smaps_rollup`) per idle session after one `1+1`, averaged over the sessions; server RSS beside it.",
        ),
        (
            "one-shot print(1)",
            "- **one-shot print(1)**: `POST /v1/execute` with `print(1)` (a fresh worker for the one execution), one at a time, each sample starting with every pool `/healthz` reports at its target (waited for between samples, untimed): the pool is not empty. **Back to back**: the same without waiting. Cold: `python -c 'print(1)'`, the bare interpreter.",
        ),
        (
            "HumanEval-style",
            "- **HumanEval-style batch**: generated plain-Python programs (benches/replpool/humaneval.rs: one small function each — fib, is_prime, digit_sum, is_palindrome, gcd, count_vowels, unique_sorted, max_subarray — a `check` of 3–6 literal asserts, `print(\"ok\")`; no imports; the same programs every run; 164 like HumanEval in a full run), 4 at once on both sides: replpool as one-shot `POST /v1/execute`, cold as `python -c` per program with the bare interpreter (no preload imported). The batch's wall time, and each program's latency on the row below; a wrong output fails the run.",
        ),
        (
            "judge",
            "- **judge**: one program against N stdin/stdout cases, each a one-shot `POST /v1/execute` (fresh worker) vs. `python -c` with the bare interpreter (the program imports nothing), as many at once as the machine has cores; and the same cases in one request to the code judge's own `POST /execute`.",
        ),
        ("replpool.Pool session ready", &pool),
        (
            "run_python",
            "- **run_python over MCP**: the MCP tool `run_python` with `1+1`, and with `print('hello')`, in a session made by `create_session`, over `/mcp` (streamable HTTP: a POST per call, answered as JSON or one SSE event) with rmcp's own client (the Rust SDK the server uses; no Python SDK's time in the figure), one call at a time after an untimed tenth; **native warm exec 1+1 beside MCP** is `POST /v1/sessions/{id}/execute` with `1+1` in the same run, for the cost of the protocol. Compared with *warm exec 1+1*'s peers.",
        ),
        (
            "interpreter ",
            "- **interpreter NAME (VERSION): session ready**: *session ready* (`POST /v1/sessions {\"python\": NAME}` + first `1+1`, each sample starting with that interpreter's pool full) on a second server of two `[[python.interpreters]]`: the configured Python with its preload (`venv`), and Debian's `/usr/bin/python3` without one (`debian`). No peer.",
        ),
        (
            JUPYTER_API_ROW,
            "- **kernel start + first cell, Jupyter API**: `POST /api/kernels`, open its `/api/kernels/{id}/channels` websocket, one `execute_request` and wait for its `execute_reply` and `idle` status; the same Python client on both sides (benches/peers/jupyter_api_peer.py: urllib and websocket-client, the default JSON framing), the kernel closed and deleted after each sample (untimed). replpool: the first cell is `1+1`, each sample starting with the warm pool full; Jupyter: an IPython kernel behind `jupyter server` (jupyter_server's own kernel manager), its first cell importing the preload list, then `1+1`.",
        ),
        (
            "package install",
            "- **package install, first / cached**: `POST /v1/sessions/{id}/packages` with `tabulate==0.9.0` into a fresh session, as the client waits for it: **first** with nothing of the package in the server's uv cache (`uv cache clean tabulate` before each pair: resolution and the wheel from the index), **cached** the same pin into a second session right after (resolved and installed from the cache alone, `\"from_cache\": true`); each session then imports it. The cached row says how many times faster it is at p50. No peer.",
        ),
    ];
    for (key, text) in descriptions {
        if workloads.iter().any(|w| w.starts_with(key)) {
            md.push_str(text);
            md.push('\n');
        }
    }
    md
}

/// The plot row's description, from what the run found: each side's saving code and settings,
/// and the PNG it returned, so that a reader can see the two sides drew the same picture.
fn plot_description(by: &BTreeMap<(&str, &str), &Figure>) -> String {
    let detail = |system: &str, key: &str| {
        by.get(&("plot cell", system))
            .and_then(|f| f.details.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let png = |system: &str| {
        let png = detail(system, "png");
        match (
            png["width"].as_u64(),
            png["height"].as_u64(),
            png["bytes"].as_u64(),
        ) {
            (Some(w), Some(h), Some(b)) => format!("{w}×{h} px, {b} bytes"),
            _ => "not measured".to_owned(),
        }
    };
    let compact = |v: Value| serde_json::to_string(&v).unwrap_or_default();
    let savefig = detail("replpool", "savefig");
    let savefig: Vec<String> = savefig
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .filter_map(Value::as_str)
                .map(|c| format!("`{c}`"))
                .collect()
        })
        .unwrap_or_default();
    let jupyter_settings = detail("jupyter", "settings");
    let same_size = {
        let (ours, theirs) = (detail("replpool", "png"), detail("jupyter", "png"));
        match (
            ours.is_null() || theirs.is_null(),
            ours["width"] == theirs["width"] && ours["height"] == theirs["height"],
        ) {
            (true, _) => "",
            (false, true) => " Both sides' PNGs have the same pixel size.",
            (false, false) => {
                " **The two sides' PNGs differ in pixel size: the figures are not the same picture; compare with care.**"
            }
        }
    };
    format!(
        "- **plot cell**: `{PLOT_CELL}` in a session where the preload was imported, the figure returned as a PNG. \
         replpool: the worker saves each figure left open with {} (bootstrap/worker.py), matplotlib settings {}; its PNG: {}. \
         Jupyter: the inline backend (matplotlib-inline) saves with IPython's `print_figure(fig, dpi=fig.dpi, bbox_inches=…, **print_figure_kwargs)`, print_figure_kwargs {}, figure formats {}, matplotlib settings {}; its PNG: {}. \
         Cold: `python -c` importing numpy and matplotlib.pyplot (Agg), `plt.savefig(buf, format='png', bbox_inches='tight')` and base64.{same_size}",
        if savefig.is_empty() {
            "(no `savefig(` call found)".to_owned()
        } else {
            savefig.join(", ")
        },
        compact(detail("replpool", "settings")),
        png("replpool"),
        compact(jupyter_settings["print_figure_kwargs"].clone()),
        compact(jupyter_settings["figure_formats"].clone()),
        compact(jupyter_settings["rc"].clone()),
        png("jupyter"),
    )
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
