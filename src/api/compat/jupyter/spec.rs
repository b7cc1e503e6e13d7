//! The one kernel spec, and what a kernel says of itself (`kernel_info_reply`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::message::PROTOCOL_VERSION;

/// The spec's name: what front ends ask for by default.
pub const SPEC_NAME: &str = "python3";

/// `GET /api/kernelspecs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KernelSpecs {
    #[schema(value_type = String)]
    default: &'static str,
    kernelspecs: BTreeMap<String, KernelSpecEntry>,
}

/// `GET /api/kernelspecs/{name}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KernelSpecEntry {
    #[schema(value_type = String)]
    name: &'static str,
    spec: KernelSpec,
    /// Logos and the like: none.
    #[schema(value_type = Object)]
    resources: Value,
}

/// A kernel.json, as jupyter_server serves one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KernelSpec {
    /// How to start it: nothing here (replpool starts its workers itself).
    argv: Vec<String>,
    display_name: String,
    #[schema(value_type = String)]
    language: &'static str,
    /// `signal`: an interrupt is the session's SIGINT, asked for over REST or the control
    /// channel.
    #[schema(value_type = String)]
    interrupt_mode: &'static str,
    #[schema(value_type = Object)]
    env: Value,
    #[schema(value_type = Object)]
    metadata: Value,
}

pub fn specs(preload: &[String]) -> KernelSpecs {
    KernelSpecs {
        default: SPEC_NAME,
        kernelspecs: BTreeMap::from([(SPEC_NAME.to_owned(), entry(preload))]),
    }
}

pub fn entry(preload: &[String]) -> KernelSpecEntry {
    KernelSpecEntry {
        name: SPEC_NAME,
        spec: KernelSpec {
            argv: Vec::new(),
            display_name: display_name(preload),
            language: "python",
            interrupt_mode: "signal",
            env: json!({}),
            metadata: json!({}),
        },
        resources: json!({}),
    }
}

/// What a front end shows in its launcher: that this is replpool, and what is imported already.
fn display_name(preload: &[String]) -> String {
    if preload.is_empty() {
        "Python 3 (replpool)".to_owned()
    } else {
        format!("Python 3 (replpool: {} preloaded)", preload.join(", "))
    }
}

fn banner(version: &str, preload: &[String]) -> String {
    if preload.is_empty() {
        format!("Python {version} on replpool")
    } else {
        format!(
            "Python {version} on replpool, with {} preloaded",
            preload.join(", ")
        )
    }
}

/// `kernel_info_reply`'s content.
pub fn kernel_info(python_version: Option<&str>, preload: &[String]) -> Value {
    let version = python_version.unwrap_or("3");
    json!({
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": "replpool",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "python",
            "version": version,
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "pygments_lexer": "ipython3",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "nbconvert_exporter": "python",
        },
        "banner": banner(version, preload),
        "help_links": [],
        "debugger": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_display_name_says_replpool_and_the_preload() {
        let preload = vec!["numpy as np".to_owned(), "pandas as pd".to_owned()];
        assert_eq!(
            display_name(&preload),
            "Python 3 (replpool: numpy as np, pandas as pd preloaded)"
        );
        assert_eq!(display_name(&[]), "Python 3 (replpool)");
    }
}
