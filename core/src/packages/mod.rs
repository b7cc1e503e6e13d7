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
    /// What was asked is allowed, but brings in (as a dependency, or through an extra) a
    /// package the lists keep out.
    #[error("package `{package}`, which {by} needs, is not allowed here: {why}")]
    DependencyNotAllowed {
        package: String,
        by: String,
        why: &'static str,
    },
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
/// lines at the top level of a cell (not indented, not inside a string, a bracket or a
/// continued line): what they ask for, and the cell with each such line made `pass` (so line
/// numbers stay). `Err` names a `%pip` line that is not an install, or installs nothing.
pub fn pip_lines(code: &str) -> Result<Option<(Vec<String>, String)>, String> {
    // Every cell passes here: most have no `pip` at all, and cost one substring search.
    if !code.contains("pip") {
        return Ok(None);
    }
    let mut wanted = Vec::new();
    let mut found = false;
    let mut rest = String::with_capacity(code.len());
    let mut lexer = Lexer::default();
    for line in code.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let command = lexer
            .at_statement_start()
            .then(|| body.strip_prefix('%').or_else(|| body.strip_prefix('!')))
            .flatten();
        let words = command.map(shell_words).unwrap_or_default();
        let args = match words.as_slice() {
            [pip, args @ ..] if pip == "pip" || pip == "pip3" => args,
            [python, m, pip, args @ ..]
                if (python == "python" || python == "python3") && m == "-m" && pip == "pip" =>
            {
                args
            }
            _ => {
                lexer.feed(line);
                rest.push_str(line);
                continue;
            }
        };
        found = true;
        match args {
            [install, packages @ ..] if install == "install" => {
                let before = wanted.len();
                for package in packages {
                    // `-q`/`--quiet`/`-U` are what notebooks write by habit; other options
                    // are refused by the requirement check with its own words.
                    if matches!(package.as_str(), "-q" | "--quiet" | "-U" | "--upgrade") {
                        continue;
                    }
                    wanted.push(package.clone());
                }
                if wanted.len() == before {
                    return Err(format!("`{}` names no package to install", body.trim()));
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

/// A `%pip` line's words as a shell would split them: quotes group (`"humanize>=4"`), an
/// unquoted `#` at a word's start begins a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            None if c == '#' && word.is_none() => break,
            None if c.is_whitespace() => words.extend(word.take()),
            None => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Just enough of Python's tokenizer to tell whether a line starts a statement: whether the
/// lines before it left a string, a bracket or a `\` continuation open.
#[derive(Default)]
struct Lexer {
    /// The open string's quote, and whether it is a triple one.
    string: Option<(char, bool)>,
    brackets: usize,
    continued: bool,
}

impl Lexer {
    fn at_statement_start(&self) -> bool {
        self.string.is_none() && self.brackets == 0 && !self.continued
    }

    fn feed(&mut self, line: &str) {
        self.continued = false;
        let chars: Vec<char> = line.chars().collect();
        let tripled =
            |i: usize, q: char| chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q);
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match self.string {
                Some(_) if c == '\\' => i += 1, // the escaped character is skipped
                Some((quote, false)) if c == quote || c == '\n' => self.string = None,
                Some((quote, true)) if c == quote && tripled(i, quote) => {
                    self.string = None;
                    i += 2;
                }
                Some(_) => {}
                None => match c {
                    '#' => break,
                    '\'' | '"' => {
                        let triple = tripled(i, c);
                        self.string = Some((c, triple));
                        if triple {
                            i += 2;
                        }
                    }
                    '(' | '[' | '{' => self.brackets += 1,
                    ')' | ']' | '}' => self.brackets = self.brackets.saturating_sub(1),
                    '\\' if chars[i + 1..].iter().all(|c| matches!(c, '\n' | '\r')) => {
                        self.continued = true;
                    }
                    _ => {}
                },
            }
            i += 1;
        }
    }
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
    fn pip_lines_inside_strings_brackets_or_continuations_are_code() {
        let cell = "doc = \"\"\"Setup:\n!pip install x\n\"\"\"\nitems = [\n%pip install y\n]\ns = 'a' \\\n!pip install z\n";
        assert_eq!(pip_lines(cell), Ok(None));
        let cell = "a = '''x'''\n%pip install after\nb = \"it's\"\n!pip install two\n";
        let (wanted, _) = pip_lines(cell).expect("ok").expect("found");
        assert_eq!(wanted, ["after", "two"]);
    }

    #[test]
    fn pip_words_are_split_as_a_shell_would() {
        let cell = "%pip install \"humanize>=4\" 'tabulate==0.9.0' -q # for tables";
        let (wanted, _) = pip_lines(cell).expect("ok").expect("found");
        assert_eq!(wanted, ["humanize>=4", "tabulate==0.9.0"]);
        let error = pip_lines("%pip install -q").expect_err("nothing to install");
        assert!(error.contains("names no package"), "{error}");
    }

    #[test]
    fn other_pip_commands_are_an_error() {
        let error = pip_lines("%pip list").expect_err("refused");
        assert!(error.contains("%pip list"), "{error}");
        assert!(pip_lines("!pip uninstall -y numpy").is_err());
    }
}
