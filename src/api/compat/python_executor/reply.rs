//! python-executor's result of an execution, and the translation of replpool's reply into it:
//! what `status`, `exit_code`, `error_type` and `error_line` a program's outcome is there.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::intake::Job;
use crate::execution::{Category, Execution, Status};

/// What every execution id starts with, as python-executor's do.
pub const EXECUTION_ID_PREFIX: &str = "exe_";

/// python-executor's ExecutionResult.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionResult {
    pub execution_id: String,
    /// `pending`, `running`, `completed`, `failed` or `killed`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_line: Option<u32>,
    /// replpool's own addition: what kind of failure, for any outcome but a clean exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// With `eval_last_expr`: the repr of the last expression, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub result: Option<Value>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
}

impl ExecutionResult {
    /// A new execution of `node`'s: its id is `exe_<node>.<a UUID's form>`, python-executor's
    /// shape with the node in it, so that a proxy can route by it.
    pub fn pending(node: &str) -> ExecutionResult {
        ExecutionResult {
            execution_id: format!("{EXECUTION_ID_PREFIX}{node}.{}", uuid_like()),
            status: "pending",
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            error: None,
            error_type: None,
            error_line: None,
            category: None,
            result: None,
            started_at: None,
            finished_at: None,
            duration_ms: 0,
        }
    }
}

/// Translates replpool's reply into python-executor's result.
pub fn fill(result: &mut ExecutionResult, execution: &Execution, job: &Job) {
    result.stdout = execution.stdout.clone();
    result.stderr = execution.stderr.clone();
    result.category = execution.category;
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
            let mut error = format!("execution timed out after {}", seconds(job.timeout));
            if let Some(asked) = job.capped_from {
                error.push_str(&format!(
                    " (of the {} asked: this server's execution.max_timeout_ms caps it)",
                    seconds(asked)
                ));
            }
            result.error = Some(error);
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

/// `5 s`, or `1.5 s` where the milliseconds matter.
fn seconds(duration: std::time::Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

pub fn now() -> String {
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
