//! What a client may ask to install: one requirement a line (`name`, `name[extra]`,
//! `name==1.2`, `name>=1,<2`), the package's name normalized as PEP 503 has it, and the
//! operator's allow and deny lists over those names.
//!
//! Only names and version specifiers get through: an option (`-e`, `--index-url`), a URL or
//! a path would let a client choose where code comes from, and an environment marker is
//! refused rather than parsed (the server resolves for one known interpreter).

use super::PackageError;

/// The longest requirement accepted, bytes.
const MAX_LEN: usize = 200;

/// One requirement, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// PEP 503: lower case, runs of `-`, `_`, `.` as one `-`.
    pub name: String,
    /// The requirement as the installer gets it (trimmed).
    pub text: String,
}

impl Requirement {
    /// Checks one requirement string.
    pub fn parse(text: &str) -> Result<Requirement, PackageError> {
        let text = text.trim();
        let bad = |why: &'static str| PackageError::InvalidRequirement {
            requirement: text.chars().take(MAX_LEN).collect(),
            why,
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.len() > MAX_LEN {
            return Err(bad("it is longer than 200 bytes"));
        }
        // A line break or a look-alike space inside would reach the installer as two lines,
        // or as something other than it looks.
        if text.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(bad("it holds a control or non-ASCII character"));
        }
        if text.starts_with('-') {
            return Err(bad(
                "installer options are not accepted, only package names and versions",
            ));
        }
        if text.contains("://") || text.contains('@') || text.contains('/') || text.contains('\\') {
            return Err(bad(
                "URLs and paths are not accepted, only package names and versions",
            ));
        }
        if text.contains(';') {
            return Err(bad("environment markers are not accepted"));
        }
        let name_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(text.len());
        let (name, rest) = text.split_at(name_end);
        if name.is_empty()
            || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(bad("it does not start with a package name"));
        }
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(extras) => {
                let (extras, after) = extras
                    .split_once(']')
                    .ok_or_else(|| bad("its extras are not closed with `]`"))?;
                let extra_ok = |e: &str| {
                    let e = e.trim();
                    !e.is_empty()
                        && e.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                };
                if !extras.split(',').all(extra_ok) {
                    return Err(bad("an extra is not a name"));
                }
                after
            }
            None => rest,
        };
        let specifier_ok = rest.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '<' | '>' | '=' | '!' | '~' | ',' | '.' | '*' | '+' | ' ')
        });
        if !specifier_ok {
            return Err(bad("what follows the name is not a version specifier"));
        }
        let rest = rest.trim();
        if !rest.is_empty() && !rest.starts_with(['<', '>', '=', '!', '~']) {
            return Err(bad("what follows the name is not a version specifier"));
        }
        Ok(Requirement {
            name: normalize(name),
            text: text.to_owned(),
        })
    }

    /// The pinned version, when the requirement is exactly `name==version` (no wildcard):
    /// what the cache alone can serve without asking the index what is newest.
    pub fn is_pinned(&self) -> bool {
        let rest = self.text[self
            .text
            .find(['=', '<', '>', '!', '~'])
            .unwrap_or(self.text.len())..]
            .trim();
        rest.strip_prefix("==").is_some_and(|version| {
            !version.is_empty() && !version.contains([',', '*', '<', '>', '!', '~', '='])
        })
    }
}

/// PEP 503's normalized form of a project name.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator = false;
        }
    }
    out
}

/// `packages.allow` and `packages.deny`: globs (`*`, `?`) over normalized names. A name must
/// match an allow pattern and no deny pattern.
#[derive(Debug, Clone)]
pub struct Policy {
    allow: Vec<String>,
    deny: Vec<String>,
}

impl Policy {
    pub fn new(allow: &[String], deny: &[String]) -> Policy {
        let patterns = |list: &[String]| list.iter().map(|p| normalize(p.trim())).collect();
        Policy {
            allow: patterns(allow),
            deny: patterns(deny),
        }
    }

    /// Refuses a requirement whose package the lists keep out, naming it.
    pub fn check(&self, requirement: &Requirement) -> Result<(), PackageError> {
        let name = &requirement.name;
        let denied = self.deny.iter().any(|p| glob(p, name));
        if denied || !self.allow.iter().any(|p| glob(p, name)) {
            return Err(PackageError::NotAllowed {
                package: name.clone(),
                why: if denied {
                    "it is on packages.deny"
                } else {
                    "it is not on packages.allow"
                },
            });
        }
        Ok(())
    }
}

/// Whether `name` matches `pattern` (`*`: any run, `?`: any one character).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_specifiers_pass_and_are_normalized() {
        for (text, name) in [
            ("tabulate", "tabulate"),
            ("tabulate==0.9.0", "tabulate"),
            ("Scikit_Learn>=1.3,<2", "scikit-learn"),
            ("requests[socks, security] ~= 2.31", "requests"),
            ("zope.interface!=5.0", "zope-interface"),
            ("  humanize  ", "humanize"),
        ] {
            let requirement = Requirement::parse(text).expect(text);
            assert_eq!(requirement.name, name, "{text}");
            assert_eq!(requirement.text, text.trim());
        }
    }

    #[test]
    fn options_urls_paths_and_markers_are_refused() {
        for text in [
            "",
            "-e .",
            "--index-url=https://evil.example/simple tabulate",
            "tabulate @ https://evil.example/t.whl",
            "git+https://github.com/x/y",
            "./local/dir",
            "/abs/wheel.whl",
            "tabulate; python_version < '3.8'",
            "tabulate==0.9.0 --hash=sha256:00",
            "_bad",
            "tab ulate",
            "tabulate[",
            "tabulate$(rm -rf /)",
        ] {
            assert!(
                matches!(
                    Requirement::parse(text),
                    Err(PackageError::InvalidRequirement { .. })
                ),
                "{text:?} was accepted"
            );
        }
        assert!(Requirement::parse(&"a".repeat(201)).is_err());
    }

    #[test]
    fn only_an_exact_version_is_pinned() {
        for (text, pinned) in [
            ("tabulate==0.9.0", true),
            ("tabulate == 0.9.0", true),
            ("tabulate", false),
            ("tabulate>=0.9", false),
            ("tabulate==0.9.*", false),
            ("tabulate===0.9.0", false),
            ("tabulate==0.9,<1", false),
        ] {
            assert_eq!(
                Requirement::parse(text).expect(text).is_pinned(),
                pinned,
                "{text}"
            );
        }
    }

    #[test]
    fn deny_wins_over_allow_and_globs_match_normalized_names() {
        let policy = Policy::new(&["*".into()], &["torch*".into(), "Evil_Pkg".into()]);
        let check = |text: &str| policy.check(&Requirement::parse(text).expect(text));
        assert!(check("tabulate==0.9.0").is_ok());
        assert!(
            matches!(check("torchvision"), Err(PackageError::NotAllowed { package, .. }) if package == "torchvision")
        );
        assert!(check("evil.pkg").is_err(), "normalized before matching");
        let only = Policy::new(&["tab?late".into(), "numpy".into()], &[]);
        assert!(
            only.check(&Requirement::parse("tabulate").expect("parse"))
                .is_ok()
        );
        assert!(
            only.check(&Requirement::parse("humanize").expect("parse"))
                .is_err()
        );
        let none = Policy::new(&[], &[]);
        assert!(
            none.check(&Requirement::parse("tabulate").expect("parse"))
                .is_err()
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b", "aXXc"));
        assert!(glob("*-plugin", "pytest-plugin"));
        assert!(!glob("?", "ab"));
    }
}
