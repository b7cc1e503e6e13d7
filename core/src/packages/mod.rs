//! Per-session packages: requirements checked against the operator's lists, resolved and
//! installed by `uv` from a shared cache into a staging directory of the server's, then
//! copied into a layer directory of the session's own that its workers put first on
//! `sys.path` (see `Session::install_packages`).

mod installer;
mod requirement;

pub use installer::{Installer, Staged};
pub use requirement::{Policy, Requirement, normalize};

/// Where a session's layers live, relative to its directory; each install makes a new
/// `packages-<random>` in it and the previous one is removed once the worker was told.
pub const LAYER_PARENT: &str = ".replpool";

/// Most requirements one session may hold.
pub const MAX_REQUIREMENTS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("invalid requirement {requirement:?}: {why}")]
    InvalidRequirement {
        requirement: String,
        why: &'static str,
    },
    #[error("package `{package}` is not allowed here: {why}")]
    NotAllowed { package: String, why: &'static str },
    #[error("too many requirements: a session holds at most {max}")]
    TooMany { max: usize },
    #[error("per-session package installs are disabled here (packages.enabled = false)")]
    Disabled,
    /// The installer ran and refused: an unknown package or version, no wheel, a conflict.
    #[error("the install failed: {message}")]
    Failed { message: String },
    #[error("the install did not finish within {timeout_ms} ms (packages.timeout_ms)")]
    Timeout { timeout_ms: u64 },
    #[error(
        "the install takes {bytes} bytes, more than the {free} bytes the session's disk quota has free"
    )]
    OverQuota { bytes: u64, free: u64 },
    /// The installer could not be run at all (a server's configuration).
    #[error("the installer is not available: {0}")]
    Installer(String),
    #[error("internal error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl PackageError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PackageError {
        let context = context.into();
        move |source| PackageError::Io { context, source }
    }
}

/// The operator's rules for per-session installs, and the installer.
pub struct Packages {
    pub enabled: bool,
    pub policy: Policy,
    pub installer: Installer,
}

impl Packages {
    /// Checks requirement strings (syntax, then the allow and deny lists), before anything
    /// touches the network.
    pub fn check(&self, texts: &[String]) -> Result<Vec<Requirement>, PackageError> {
        if !self.enabled {
            return Err(PackageError::Disabled);
        }
        if texts.len() > MAX_REQUIREMENTS {
            return Err(PackageError::TooMany {
                max: MAX_REQUIREMENTS,
            });
        }
        let requirements = texts
            .iter()
            .map(|t| Requirement::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        for requirement in &requirements {
            self.policy.check(requirement)?;
        }
        Ok(requirements)
    }
}

/// Installs `python.extra_packages` into the default interpreter's own environment, with uv, before
/// any worker starts (the template imports from it). What is satisfied already is left as it
/// is, so a restart costs one quick check.
pub async fn install_extra_packages(config: &crate::Config) -> Result<(), PackageError> {
    let wanted = &config.python.extra_packages;
    if wanted.is_empty() {
        return Ok(());
    }
    let requirements = wanted
        .iter()
        .map(|t| Requirement::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(
        packages = ?wanted,
        "installing python.extra_packages into the base environment"
    );
    // Nothing is staged for the base: the installer writes into the environment itself.
    // The default interpreter's only: the others are often a system's Python, not ours to
    // change (their entries' preload says what they need).
    let installer = Installer::new(&config.packages, std::env::temp_dir());
    let default = config.interpreters().swap_remove(0);
    let output = installer
        .install_into_base(&default.executable, &requirements)
        .await?;
    tracing::info!(output = %output.trim(), "python.extra_packages are installed");
    Ok(())
}

/// `%pip install a b` / `!pip install a b` (and `pip3`, `python -m pip`, `python3 -m pip`)
/// lines at the top level of a cell: what they ask for, and the cell with each such line made
/// `pass` (so line numbers stay). `Err` names a `%pip` line that is not an install.
pub fn pip_lines(code: &str) -> Result<Option<(Vec<String>, String)>, String> {
    // Every cell passes here: most have no `pip` at all, and cost one substring search.
    if !code.contains("pip") {
        return Ok(None);
    }
    let mut wanted = Vec::new();
    let mut found = false;
    let mut rest = String::with_capacity(code.len());
    for line in code.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let Some(command) = body.strip_prefix('%').or_else(|| body.strip_prefix('!')) else {
            rest.push_str(line);
            continue;
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        let args = match words.as_slice() {
            ["pip" | "pip3", args @ ..] => args,
            ["python" | "python3", "-m", "pip", args @ ..] => args,
            _ => {
                rest.push_str(line);
                continue;
            }
        };
        found = true;
        match args {
            ["install", packages @ ..] => {
                for package in packages {
                    // `-q`/`--quiet`/`-U` are what notebooks write by habit; other options
                    // are refused by the requirement check with its own words.
                    if matches!(*package, "-q" | "--quiet" | "-U" | "--upgrade") {
                        continue;
                    }
                    wanted.push((*package).to_owned());
                }
            }
            _ => {
                return Err(format!(
                    "`{}`: only `pip install <requirements>` runs in a cell here (it installs into this session's own packages); other pip commands are not available",
                    body.trim()
                ));
            }
        }
        rest.push_str("pass");
        rest.push_str(ending);
    }
    Ok(found.then_some((wanted, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_lines_are_taken_out_of_a_cell() {
        let cell = "%pip install tabulate==0.9.0 -q\n!pip3 install humanize\nimport tabulate\n";
        let (wanted, rest) = pip_lines(cell).expect("ok").expect("found");
        assert_eq!(wanted, ["tabulate==0.9.0", "humanize"]);
        assert_eq!(rest, "pass\npass\nimport tabulate\n");
        let (wanted, _) = pip_lines("!python -m pip install x")
            .expect("ok")
            .expect("found");
        assert_eq!(wanted, ["x"]);
    }

    #[test]
    fn cells_without_pip_are_left_alone() {
        assert_eq!(
            pip_lines("print('%pip install x')\n  %pip install y"),
            Ok(None)
        );
        assert_eq!(pip_lines("!ls -l\n%time 1"), Ok(None));
    }

    #[test]
    fn other_pip_commands_are_an_error() {
        let error = pip_lines("%pip list").expect_err("refused");
        assert!(error.contains("%pip list"), "{error}");
        assert!(pip_lines("!pip uninstall -y numpy").is_err());
    }
}
