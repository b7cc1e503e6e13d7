//! The code judge's API: `POST /execute` runs one program against stdin/stdout test cases and
//! says which passed, in exactly the shapes of the judge server whose clients this serves.
//!
//! A translation onto the core: each case is a one-shot execution (a fresh warm worker, so no
//! state leaks between cases), several at once up to the pool's size. C++ is compiled and run
//! inside one-shot workers too (`g++`, then the binary through `subprocess`), so it gets the
//! same limits, deadlines and clean-up as Python.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::python_literal::python_str;
use crate::api::error::ErrorCode;
use crate::api::json::Json;
use crate::api::openapi::ErrorBody;
use crate::api::{ApiError, AppState};
use crate::execution::{Category, ExecRequest, Execution, Status};
use crate::{Config, Error, SessionManager};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(execute))
}

const SUPPORTED: &str = "'python', 'cpp'";

/// A program and its test cases.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({
    "code": "print(int(input()) * 2)",
    "stdin_stdout": [{"stdin": "2\n", "stdout": "4\n"}],
    "language": "python"
})))]
struct JudgeRequest {
    code: String,
    stdin_stdout: Vec<Case>,
    /// `python` or `cpp` (any case).
    language: String,
}

/// One case: what the program reads, and what it must print (compared stripped).
#[derive(Debug, Clone, Deserialize, ToSchema)]
struct Case {
    stdin: String,
    stdout: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
struct Output {
    passed: bool,
    stdout: String,
    stderr: String,
    time_seconds: f64,
    timed_out: bool,
    /// replpool's own addition, only where the program (or its compilation) failed: what kind
    /// of failure (`syntax`, `runtime`, `timeout`, `memory`, …). The judge server's clients
    /// read the fields above and ignore others.
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<Category>,
}

/// The verdict: the compilation's output (Python's is its syntax check), then each case's.
#[derive(Debug, Serialize, ToSchema)]
struct JudgeResponse {
    compile_output: Output,
    exec_outputs: Vec<Output>,
    all_passed: bool,
}

impl Output {
    fn ok(time_seconds: f64) -> Output {
        Output {
            passed: true,
            stdout: String::new(),
            stderr: String::new(),
            time_seconds,
            timed_out: false,
            category: None,
        }
    }

    /// A case's outcome, as the judge server reports it: `passed` compares stripped stdout;
    /// a timeout says so in both streams; an exception's traceback ends stderr, as a Python
    /// process would have printed it.
    fn of_case(execution: &Execution, expected: &str) -> Output {
        let time_seconds = execution.duration_ms / 1000.0;
        if execution.status == Status::Timeout {
            return Output {
                passed: false,
                stdout: "Error: Timed out".into(),
                stderr: "Error: Timed out".into(),
                time_seconds,
                timed_out: true,
                category: Some(Category::Timeout),
            };
        }
        let mut stderr = execution.stderr.clone();
        if let Some(error) = &execution.error {
            for line in &error.traceback {
                stderr.push_str(line);
                stderr.push('\n');
            }
        }
        Output {
            passed: execution.stdout.trim() == expected.trim(),
            stdout: execution.stdout.clone(),
            stderr,
            time_seconds,
            timed_out: false,
            category: execution.category,
        }
    }
}

/// Runs a program against stdin/stdout cases: each case a one-shot execution.
#[utoipa::path(
    post,
    path = "/execute",
    operation_id = "judge_execute",
    tag = "judge",
    request_body = JudgeRequest,
    responses(
        (status = 200, description = "The verdict", body = JudgeResponse),
        (status = 400, description = "`unsupported_language`, `invalid_json`", body = ErrorBody),
        (status = 413, description = "`code_too_large`, `stdin_too_large`, `payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`worker_unavailable`, `sandbox_unavailable`, `shutting_down`, `draining`", body = ErrorBody),
    ),
)]
async fn execute(
    State(state): State<AppState>,
    Json(request): Json<JudgeRequest>,
) -> Result<Json<JudgeResponse>, ApiError> {
    let judge = state.judge.clone();
    let manager = state.manager.clone();
    match request.language.to_ascii_lowercase().as_str() {
        "python" => python(&manager, &judge, request).await.map(Json),
        "cpp" => cpp(&manager, &judge, request).await.map(Json),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedLanguage,
            format!("Language '{other}' is not supported. Supported languages: {SUPPORTED}"),
        )),
    }
}

/// The judge's settings, from `[judge]`.
#[derive(Debug, Clone)]
pub struct JudgeSettings {
    pub run_timeout: Duration,
    pub compile_timeout: Duration,
    pub parallel: usize,
    /// `g++`, if it is installed.
    pub gxx: Option<std::path::PathBuf>,
}

impl JudgeSettings {
    pub fn from_config(config: &Config) -> JudgeSettings {
        JudgeSettings {
            run_timeout: Duration::from_millis(config.judge.run_timeout_ms),
            compile_timeout: Duration::from_millis(config.judge.compile_timeout_ms),
            parallel: if config.judge.parallel == 0 {
                // The judge runs on the default interpreter: its pool's size.
                config.interpreters()[0].warm_workers.unwrap_or(1).max(1)
            } else {
                config.judge.parallel
            },
            gxx: find_on_path("g++"),
        }
    }
}

/// The first `name` on `PATH` that is an executable file, as a shell would find it.
fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

async fn python(
    manager: &Arc<SessionManager>,
    judge: &JudgeSettings,
    request: JudgeRequest,
) -> Result<JudgeResponse, ApiError> {
    let cases = run_cases(manager, judge, &request.stdin_stdout, None, |case| {
        ExecRequest {
            code: request.code.clone(),
            stdin: Some(case.stdin.clone()),
            timeout: Some(judge.run_timeout),
            filename: None,
            // A judge reads stdout: no table or chart to make.
            data: false,
            pip_magic: false,
        }
    })
    .await?;
    // A syntax error stops the program before it runs: the same in every case. It is the
    // "compilation" failure of Python (a SyntaxError raised at run time has a traceback).
    if let Some(syntax) = cases.iter().filter_map(|e| e.error.as_ref()).find(|e| {
        e.ename == "SyntaxError"
            && e.traceback
                .first()
                .is_none_or(|l| !l.starts_with("Traceback"))
    }) {
        return Ok(JudgeResponse {
            compile_output: Output {
                passed: false,
                stdout: String::new(),
                stderr: syntax.traceback.join("\n"),
                time_seconds: 0.0,
                timed_out: false,
                category: Some(Category::Syntax),
            },
            exec_outputs: Vec::new(),
            all_passed: false,
        });
    }
    Ok(verdict(Output::ok(0.0), &cases, &request.stdin_stdout))
}

async fn cpp(
    manager: &Arc<SessionManager>,
    judge: &JudgeSettings,
    request: JudgeRequest,
) -> Result<JudgeResponse, ApiError> {
    let Some(gxx) = &judge.gxx else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedLanguage,
            "Language 'cpp' needs g++, which is not installed on this server. Supported languages: 'python'",
        ));
    };
    let dir = manager.scratch_dir().map_err(ApiError::from)?;
    let source = dir.path().join("program.cpp");
    let binary = dir.path().join("program");
    tokio::fs::write(&source, &request.code)
        .await
        .map_err(|e| ApiError::from(Error::Internal(format!("cannot write the source: {e}"))))?;
    let compile = format!(
        "import subprocess, sys\np = subprocess.run([{gxx}, '-std=c++20', '-o', {binary}, {source}], capture_output=True, text=True)\nsys.stdout.write(p.stdout)\nsys.stderr.write(p.stderr)\nraise SystemExit(p.returncode)",
        gxx = python_str(&gxx.to_string_lossy()),
        binary = python_str(&binary.to_string_lossy()),
        source = python_str(&source.to_string_lossy()),
    );
    let compiled = manager
        .execute_once(
            &ExecRequest {
                code: compile,
                stdin: None,
                timeout: Some(judge.compile_timeout),
                filename: None,
                data: false,
                pip_magic: false,
            },
            None,
            Some(dir.path()),
        )
        .await?;
    let compile_output = Output {
        passed: compiled.status == Status::Ok,
        stdout: String::new(),
        stderr: if compiled.status == Status::Timeout {
            "Compilation timed out".into()
        } else {
            compiled.stderr.clone()
        },
        time_seconds: compiled.duration_ms / 1000.0,
        timed_out: compiled.status == Status::Timeout,
        // g++ refusing the program is the C++ program's "does not compile": `syntax`.
        category: match compiled.status {
            Status::Ok => None,
            Status::Timeout => Some(Category::Timeout),
            Status::Error => Some(match compiled.category {
                Some(Category::Runtime) | None => Category::Syntax,
                Some(other) => other,
            }),
        },
    };
    if !compile_output.passed {
        return Ok(JudgeResponse {
            compile_output,
            exec_outputs: Vec::new(),
            all_passed: false,
        });
    }
    let run = format!(
        "import subprocess, sys\np = subprocess.run([{binary}], input=sys.stdin.read(), capture_output=True, text=True)\nsys.stdout.write(p.stdout)\nsys.stderr.write(p.stderr)",
        binary = python_str(&binary.to_string_lossy()),
    );
    let cases = run_cases(
        manager,
        judge,
        &request.stdin_stdout,
        Some(dir.path()),
        |case| ExecRequest {
            code: run.clone(),
            stdin: Some(case.stdin.clone()),
            timeout: Some(judge.run_timeout),
            filename: None,
            data: false,
            pip_magic: false,
        },
    )
    .await?;
    Ok(verdict(compile_output, &cases, &request.stdin_stdout))
}

/// One one-shot execution per case, up to `parallel` at once, in the cases' order.
/// `shared`: the request's scratch directory, when its cases need one (a compiled program).
async fn run_cases(
    manager: &Arc<SessionManager>,
    judge: &JudgeSettings,
    cases: &[Case],
    shared: Option<&std::path::Path>,
    request: impl Fn(&Case) -> ExecRequest,
) -> Result<Vec<Execution>, ApiError> {
    let requests: Vec<ExecRequest> = cases.iter().map(request).collect();
    let results: Vec<Result<Execution, Error>> = futures::stream::iter(requests)
        .map(|r| {
            let manager = Arc::clone(manager);
            async move { manager.execute_once(&r, None, shared).await }
        })
        .buffered(judge.parallel.max(1))
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::from)
}

fn verdict(compile_output: Output, executions: &[Execution], cases: &[Case]) -> JudgeResponse {
    let exec_outputs: Vec<Output> = executions
        .iter()
        .zip(cases)
        .map(|(e, c)| Output::of_case(e, &c.stdout))
        .collect();
    let all_passed = exec_outputs.iter().all(|o| o.passed);
    JudgeResponse {
        compile_output,
        exec_outputs,
        all_passed,
    }
}
