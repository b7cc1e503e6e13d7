//! A session's history as a Jupyter notebook (nbformat 4.5), so that what ran in replpool can
//! be opened, read and re-run in Jupyter as is.

use serde_json::{Value, json};

use crate::execution::{Execution, Status};
use crate::protocol::MimeBundle;
use crate::session::HistoryEntry;

/// The notebook of `entries`, oldest first. `python_version` goes into `language_info`;
/// `kernel_spec` is the spec of the session's interpreter (see
/// [`crate::interpreter::kernel_spec_name`]), so that the notebook reopens on it.
pub fn to_notebook(
    entries: &[HistoryEntry],
    python_version: Option<&str>,
    kernel_spec: &str,
) -> Value {
    let cells: Vec<Value> = entries.iter().map(cell).collect();
    // Shown only where the spec is not found (another server); Jupyter's own for python3.
    let display_name = match kernel_spec {
        crate::interpreter::KERNEL_SPEC => "Python 3".to_owned(),
        other => format!("Python 3 ({other})"),
    };
    let mut language_info = json!({"name": "python"});
    if let Some(version) = python_version {
        language_info["version"] = json!(version);
    }
    json!({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": kernel_spec, "display_name": display_name, "language": "python"},
            "language_info": language_info,
        },
        "cells": cells,
    })
}

fn cell(entry: &HistoryEntry) -> Value {
    let ex = &entry.execution;
    let mut replpool = json!({"status": ex.status, "mode": ex.mode, "duration_ms": ex.duration_ms});
    // nbformat's `error` output has no metadata: a failed cell's category is the cell's.
    if let Some(category) = ex.category {
        replpool["category"] = json!(category);
    }
    json!({
        "cell_type": "code",
        // nbformat 4.5 wants an id per cell: 1-64 of [a-zA-Z0-9-_].
        "id": format!("cell-{}", ex.execution_count),
        "execution_count": ex.execution_count,
        "metadata": {"replpool": replpool},
        "source": lines(&entry.code),
        "outputs": outputs(ex),
    })
}

fn outputs(ex: &Execution) -> Vec<Value> {
    let mut outputs = Vec::new();
    for (name, text) in [("stdout", &ex.stdout), ("stderr", &ex.stderr)] {
        if !text.is_empty() {
            outputs.push(json!({"output_type": "stream", "name": name, "text": lines(text)}));
        }
    }
    for bundle in &ex.display {
        outputs.push(json!({
            "output_type": "display_data",
            "data": data(bundle),
            "metadata": {},
        }));
    }
    if let Some(result) = &ex.result {
        outputs.push(json!({
            "output_type": "execute_result",
            "execution_count": ex.execution_count,
            "data": data(result),
            "metadata": {},
        }));
    }
    if let Some(error) = &ex.error
        && ex.status != Status::Ok
    {
        outputs.push(json!({
            "output_type": "error",
            "ename": error.ename,
            "evalue": error.evalue,
            "traceback": error.traceback,
        }));
    }
    outputs
}

/// A MIME bundle in nbformat's shape: text as a list of lines, JSON as an object.
fn data(bundle: &MimeBundle) -> Value {
    let mut out = serde_json::Map::new();
    for (mime, value) in bundle {
        let converted = match (mime.as_str(), value) {
            ("application/json", Value::String(s)) => {
                serde_json::from_str(s).unwrap_or_else(|_| json!({"value": s}))
            }
            ("application/json", Value::Object(_)) => value.clone(),
            ("application/json", other) => json!({"value": other}),
            (m, Value::String(s)) if m.starts_with("text/") || m == "image/svg+xml" => lines(s),
            (_, Value::String(_)) => value.clone(),
            // nbformat takes any JSON value for `application/*+json` (a table's or a chart's
            // data): kept as the value it is, not its text.
            (m, _) if m.starts_with("application/") && m.ends_with("+json") => value.clone(),
            (_, other) => Value::String(other.to_string()),
        };
        out.insert(mime.clone(), converted);
    }
    Value::Object(out)
}

/// Text as nbformat keeps it: a list of lines, each with its newline but the last.
fn lines(text: &str) -> Value {
    Value::Array(
        text.split_inclusive('\n')
            .map(|l| Value::String(l.to_owned()))
            .collect(),
    )
}
