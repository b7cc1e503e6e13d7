//! The kernel specs — one per interpreter — and what a kernel says of itself
//! (`kernel_info_reply`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use replpool_core::interpreter::kernel_spec_name;

use super::message::PROTOCOL_VERSION;

/// The default interpreter's spec: what front ends ask for by default.
pub use replpool_core::interpreter::KERNEL_SPEC as SPEC_NAME;

/// One interpreter as a kernel spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `python3` for the default interpreter, [`kernel_spec_name`] for the others.
    pub name: String,
    /// The `[[python.interpreters]]` entry's name: what a kernel's session is created on.
    pub interpreter: String,
    /// `3.11.7`, as the interpreter told it at start.
    version: String,
    preload: Vec<String>,
    /// The server has other interpreters: names and versions tell the specs apart.
    among_several: bool,
}

impl Spec {
    /// The specs of `interpreters` (name, version, preload), the default first.
    pub fn all(interpreters: &[(String, String, Vec<String>)]) -> Vec<Spec> {
        let among_several = interpreters.len() > 1;
        interpreters
            .iter()
            .enumerate()
            .map(|(i, (name, version, preload))| Spec {
                name: kernel_spec_name(name, i == 0),
                interpreter: name.clone(),
                version: version.clone(),
                preload: preload.clone(),
                among_several,
            })
            .collect()
    }

    /// What a front end shows in its launcher: that this is replpool, which Python, and what
    /// is imported already. A server with one interpreter says `Python 3` (as it always
    /// has); with several, each spec says its version and its interpreter's name.
    fn display_name(&self) -> String {
        if !self.among_several {
            return if self.preload.is_empty() {
                "Python 3 (replpool)".to_owned()
            } else {
                format!("Python 3 (replpool: {} preloaded)", self.preload.join(", "))
            };
        }
        let preload = if self.preload.is_empty() {
            "no preload".to_owned()
        } else {
            format!("{} preloaded", self.preload.join(", "))
        };
        format!(
            "Python {} (replpool: {}, {preload})",
            self.version, self.interpreter
        )
    }

    fn banner(&self) -> String {
        let mut banner = format!("Python {} on replpool", self.version);
        if self.among_several {
            banner.push_str(&format!(" (interpreter {})", self.interpreter));
        }
        if !self.preload.is_empty() {
            banner.push_str(&format!(", with {} preloaded", self.preload.join(", ")));
        }
        banner
    }

    pub fn entry(&self) -> KernelSpecEntry {
        KernelSpecEntry {
            name: self.name.clone(),
            spec: KernelSpec {
                argv: Vec::new(),
                display_name: self.display_name(),
                language: "python",
                interrupt_mode: "signal",
                env: json!({}),
                metadata: json!({}),
            },
            resources: json!({}),
        }
    }
}

/// `GET /api/kernelspecs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KernelSpecs {
    /// `python3`: the default interpreter's.
    #[schema(value_type = String)]
    default: &'static str,
    kernelspecs: BTreeMap<String, KernelSpecEntry>,
}

/// `GET /api/kernelspecs/{name}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KernelSpecEntry {
    /// `python3` (the default interpreter), or `python3-<interpreter name in lower case>`.
    name: String,
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
    /// Which Python (its version, with several interpreters) and its preload.
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

pub fn specs(specs: &[Spec]) -> KernelSpecs {
    KernelSpecs {
        default: SPEC_NAME,
        kernelspecs: specs
            .iter()
            .map(|spec| (spec.name.clone(), spec.entry()))
            .collect(),
    }
}

/// `kernel_info_reply`'s content, for a kernel on `spec`'s interpreter.
pub fn kernel_info(spec: &Spec) -> Value {
    json!({
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": "replpool",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "python",
            "version": spec.version,
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "pygments_lexer": "ipython3",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "nbconvert_exporter": "python",
        },
        "banner": spec.banner(),
        "help_links": [],
        "debugger": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interpreters(list: &[(&str, &str, &[&str])]) -> Vec<(String, String, Vec<String>)> {
        list.iter()
            .map(|(name, version, preload)| {
                (
                    (*name).to_owned(),
                    (*version).to_owned(),
                    preload.iter().map(|p| (*p).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn one_interpreter_is_python3_saying_replpool_and_the_preload() {
        let specs = Spec::all(&interpreters(&[(
            "default",
            "3.11.7",
            &["numpy as np", "pandas as pd"],
        )]));
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "python3");
        assert_eq!(
            specs[0].display_name(),
            "Python 3 (replpool: numpy as np, pandas as pd preloaded)"
        );
        assert_eq!(
            specs[0].banner(),
            "Python 3.11.7 on replpool, with numpy as np, pandas as pd preloaded"
        );
        let bare = Spec::all(&interpreters(&[("default", "3.11.7", &[])]));
        assert_eq!(bare[0].display_name(), "Python 3 (replpool)");
        assert_eq!(bare[0].banner(), "Python 3.11.7 on replpool");
    }

    #[test]
    fn several_interpreters_are_a_spec_each_with_its_version() {
        let specs = Spec::all(&interpreters(&[
            ("venv", "3.11.7", &["numpy as np"]),
            ("Debian", "3.11.2", &[]),
            ("3.12", "3.12.1", &[]),
        ]));
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["python3", "python3-debian", "python3-3.12"]);
        assert_eq!(specs[1].interpreter, "Debian");
        assert_eq!(
            specs[0].display_name(),
            "Python 3.11.7 (replpool: venv, numpy as np preloaded)"
        );
        assert_eq!(
            specs[1].display_name(),
            "Python 3.11.2 (replpool: Debian, no preload)"
        );
        assert_eq!(
            specs[1].banner(),
            "Python 3.11.2 on replpool (interpreter Debian)"
        );
    }
}
