//! `make bench`: replpool against the alternatives a user would pick instead, side by side in
//! one run on one machine — a cold interpreter (`python -c` with the same imports) and a Jupyter
//! kernel (benches/peers/jupyter_peer.py) — and the table in docs/benchmarks.md.
//!
//! Every figure is timed from what it names; none is derived from another. Machines here are
//! shared and noisy, so the table leads with ratios measured in the same run.
//!
//! Options (after `--`): `--quick` (reduced counts, well under a minute; what `make test` runs),
//! `--out PATH` (the Markdown table; default docs/benchmarks.md), `--json PATH` (default
//! target/bench.json).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

#[path = "../tests/common/launcher.rs"]
mod launcher;
use serde::Serialize;
use serde_json::{Value, json};

const SETUP_DF: &str =
    "df = pd.DataFrame({'k': np.random.randint(0, 100, 100_000), 'v': np.random.rand(100_000)})";
const DATA_CELL: &str = "df.groupby('k')['v'].mean()";
const PLOT_CELL: &str = "plt.plot(np.arange(1000), np.random.rand(1000))";
const JUDGE_PROGRAM: &str = "n = int(input())\nprint(sum(i * i for i in range(n)))";

struct Counts {
    ready: usize,
    ready_peer: usize,
    warm: usize,
    warm_peer: usize,
    data: usize,
    data_cold: usize,
    plot: usize,
    plot_cold: usize,
    throughput_secs: f64,
    throughput_levels: Vec<usize>,
    memory_levels: Vec<usize>,
    jupyter_memory_levels: Vec<usize>,
    judge_cases: usize,
}

impl Counts {
    fn full() -> Counts {
        Counts {
            ready: 50,
            ready_peer: 50,
            warm: 5000,
            warm_peer: 2000,
            data: 200,
            data_cold: 20,
            plot: 100,
            plot_cold: 20,
            throughput_secs: 3.0,
            throughput_levels: vec![1, 8, 32],
            memory_levels: vec![1, 16, 64],
            jupyter_memory_levels: vec![1, 16],
            judge_cases: 100,
        }
    }

    fn quick() -> Counts {
        Counts {
            ready: 5,
            ready_peer: 2,
            warm: 300,
            warm_peer: 50,
            data: 10,
            data_cold: 2,
            plot: 5,
            plot_cold: 2,
            throughput_secs: 0.5,
            throughput_levels: vec![1, 8],
            memory_levels: vec![1, 4],
            jupyter_memory_levels: vec![1],
            judge_cases: 10,
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
        }
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
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
    };
    runtime.block_on(bench.run(&counts))?;
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
            "figures": bench.figures,
        }))?,
    )?;
    println!("{markdown}");
    eprintln!("wrote {} and {}", out.display(), json_out.display());
    Ok(())
}

impl Bench {
    async fn run(&mut self, n: &Counts) -> anyhow::Result<()> {
        let total = 7;
        self.wait_for_pool().await?;
        step(1, total, "session ready (create + first 1+1)");
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

        step(2, total, "warm trivial exec (1+1 in a session)");
        let samples = self.replpool_cells(n.warm, "", "1+1", false).await?;
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

        step(3, total, "data cell (groupby on 100,000 rows)");
        let samples = self
            .replpool_cells(n.data, SETUP_DF, DATA_CELL, false)
            .await?;
        self.push(Figure::latency("data cell", "replpool", &samples));
        let code = format!("{}\n{SETUP_DF}\nprint({DATA_CELL})", self.preload_code);
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

        step(4, total, "plot cell (1,000-point line plot as PNG)");
        let samples = self.replpool_cells(n.plot, "", PLOT_CELL, true).await?;
        self.push(Figure::latency("plot cell", "replpool", &samples));
        let code = format!(
            "{}\nimport io, base64\n{PLOT_CELL}\nbuf = io.BytesIO()\nplt.savefig(buf, format='png')\nprint(len(base64.b64encode(buf.getvalue())))",
            self.preload_code
        );
        let samples = self.cold_runs(n.plot_cold, &code, None)?;
        self.push(Figure::latency("plot cell", "cold", &samples));
        let samples = self.jupyter_samples(&[
            "exec",
            &n.plot.to_string(),
            &self.preload_code.clone(),
            "pass",
            PLOT_CELL,
        ])?;
        self.push(Figure::latency("plot cell", "jupyter", &samples));

        step(
            5,
            total,
            "throughput (trivial execs/s over parallel sessions)",
        );
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

        step(6, total, "memory (PSS per idle session)");
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

        step(7, total, "judge (one program, stdin/stdout cases)");
        let (wall, samples) = self.replpool_judge(n.judge_cases).await?;
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
        let (wall, samples) = self.cold_judge(n.judge_cases)?;
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

    fn push(&mut self, figure: Figure) {
        match (figure.p50_ms, figure.p99_ms, figure.value) {
            (Some(p50), Some(p99), _) => eprintln!(
                "    {:<28} {:<9} p50 {p50:>10.3} ms  p99 {p99:>10.3} ms  (n={})",
                figure.workload, figure.system, figure.samples
            ),
            (_, _, Some(v)) => eprintln!(
                "    {:<28} {:<9} {v:>10.2} {}  (n={})",
                figure.workload, figure.system, figure.unit, figure.samples
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

    async fn exec(&self, id: &str, code: &str) -> anyhow::Result<Value> {
        let reply = self
            .post(&format!("/v1/sessions/{id}/execute"), json!({"code": code}))
            .await?;
        anyhow::ensure!(reply["status"] == "ok", "cell failed: {reply}");
        Ok(reply)
    }

    /// Waits until the server's pool holds as many ready workers as it aims to (and its
    /// template, if any, runs): measurements start from a server that has finished starting.
    async fn wait_for_pool(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let health: Value = self
                .http
                .get(self.url("/healthz"))
                .send()
                .await?
                .json()
                .await?;
            let pool = &health["pool"];
            let template_ok = pool["template"].is_null() || pool["template"]["state"] == "running";
            if template_ok && pool["ready"] == pool["target"] {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the pool never filled: {health}");
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
    ) -> anyhow::Result<Vec<Duration>> {
        let id = self.create_session().await?;
        if !setup.is_empty() {
            self.exec(&id, setup).await?;
        }
        for _ in 0..(n / 10).clamp(1, 100) {
            self.exec(&id, code).await?; // warm-up, not recorded
        }
        let mut samples = Vec::with_capacity(n);
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
        }
        self.delete_session(&id).await?;
        Ok(samples)
    }

    async fn replpool_throughput(&self, sessions: usize, seconds: f64) -> anyhow::Result<Figure> {
        let mut ids = Vec::new();
        for _ in 0..sessions {
            ids.push(self.create_session().await?);
        }
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
        for id in &ids {
            self.delete_session(id).await?;
        }
        let ops = done.load(Ordering::Relaxed);
        Ok(Figure::value(
            &format!("throughput, {sessions} sessions"),
            "replpool",
            ops as usize,
            ops as f64 / elapsed,
            "execs/s",
        ))
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

    async fn replpool_judge(&self, cases: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
        let started = Instant::now();
        let mut tasks = Vec::new();
        let parallel = Arc::new(tokio::sync::Semaphore::new(cores()));
        for i in 0..cases {
            let (http, url, parallel) = (
                self.http.clone(),
                self.url("/v1/execute"),
                Arc::clone(&parallel),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = parallel.acquire_owned().await?;
                let n = 1000 + i;
                let t = Instant::now();
                let reply: Value = http
                    .post(&url)
                    .json(&json!({"code": JUDGE_PROGRAM, "stdin": format!("{n}\n")}))
                    .send()
                    .await?
                    .json()
                    .await?;
                let elapsed = t.elapsed();
                let expected: u64 = (0..n as u64).map(|i| i * i).sum();
                anyhow::ensure!(
                    reply["stdout"] == format!("{expected}\n"),
                    "wrong judge output: {reply}"
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
            .map(|_| cold_once(&self.python, code, stdin))
            .collect()
    }

    fn cold_judge(&self, cases: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
        let code = format!("{}\n{JUDGE_PROGRAM}", self.preload_code);
        let started = Instant::now();
        let next = AtomicU64::new(0);
        let samples = parking_lot::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..cores() {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= cases {
                            return;
                        }
                        let stdin = format!("{}\n", 1000 + i);
                        if let Ok(d) = cold_once(&self.python, &code, Some(&stdin)) {
                            samples.lock().push(d);
                        }
                    }
                });
            }
        });
        let samples = samples.into_inner();
        anyhow::ensure!(samples.len() == cases, "some cold judge runs failed");
        Ok((started.elapsed(), samples))
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
        let result = self.peer(script, args)?;
        Ok(result["samples_s"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(Duration::from_secs_f64)
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn cold_once(python: &Path, code: &str, stdin: Option<&str>) -> anyhow::Result<Duration> {
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
    Ok(elapsed)
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
        Some(f) => match (f.p50_ms, f.p99_ms, f.value) {
            (Some(p50), Some(p99), _) => {
                format!("{} / {} ms (n={})", num(p50), num(p99), f.samples)
            }
            (_, _, Some(v)) => format!("{} {} (n={})", num(v), f.unit, f.samples),
            _ => "—".to_owned(),
        },
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
    md.push_str("The ratio columns say how many times better replpool is than the peer in the same run (p50 for latencies).\n\n");
    md.push_str("| workload | replpool | cold `python -c` | Jupyter kernel | vs cold | vs Jupyter |\n|---|---|---|---|---|---|\n");
    for w in &workloads {
        let ours = by.get(&(*w, "replpool"));
        let cold = by.get(&(*w, "cold"));
        let jupyter = by.get(&(*w, "jupyter"));
        md.push_str(&format!(
            "| {w} | {} | {} | {} | {} | {} |\n",
            cell(ours),
            cell(cold),
            cell(jupyter),
            ratio(ours, cold),
            ratio(ours, jupyter)
        ));
    }
    md.push_str(
        "\nWhat each workload is:\n\n\
         - **session ready**: replpool `POST /v1/sessions` + first `1+1`, each sample starting with the warm pool full (the server refills it between samples, untimed); cold: `python -c` importing the preload list and printing `1+1`; Jupyter: kernel start, wait for ready, a first cell importing the preload list and `1+1`.\n\
         - **session ready, back to back**: the same without waiting: sessions made as fast as workers can be forked, so the pool runs dry.\n\
         - **warm exec 1+1**: `1+1` in a session that exists (cold has no sessions).\n\
         - **warm exec 1+1, in-process Pool**: the same through the `replpool` Python package's `Pool` (no server, no HTTP), timed by the calling Python code.\n\
         - **data cell**: `df.groupby('k')['v'].mean()` on a 100,000-row DataFrame made earlier in the session (cold makes it in the same run).\n\
         - **plot cell**: a 1,000-point line plot returned as PNG.\n\
         - **throughput**: trivial execs per second, one closed-loop client per session, all sessions at once.\n\
         - **memory**: PSS (`/proc/<pid>/smaps_rollup`) per idle session after one `1+1`, averaged over the sessions; server RSS beside it.\n\
         - **judge**: one program against N stdin/stdout cases, each a one-shot `POST /v1/execute` (fresh worker) vs. a cold subprocess, as many at once as the machine has cores; and the same cases in one request to the code judge's own `POST /execute`.\n",
    );
    md
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
