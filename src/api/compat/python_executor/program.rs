//! The Python an execution runs before its entrypoint: the process-level set-up a script
//! expects of being run as `python <entrypoint> <args...>`.

use serde_json::json;

use super::intake::Job;
use crate::api::compat::python_literal::python_literal;

/// A cell that sets `sys.argv` (the entrypoint, then the script's arguments), adds the job's
/// environment variables and sets `__file__`, leaving no other name behind.
pub fn setup_cell(job: &Job) -> String {
    let argv: Vec<&str> = std::iter::once(job.entrypoint.as_str())
        .chain(job.args.iter().map(String::as_str))
        .collect();
    format!(
        "import os as _os, sys as _sys\n_sys.argv = {argv}\n_os.environ.update({env})\n__file__ = _os.path.abspath({entry})\ndel _os, _sys",
        argv = python_literal(&json!(argv)),
        env = python_literal(&json!(job.env)),
        entry = python_literal(&json!(job.entrypoint)),
    )
}
