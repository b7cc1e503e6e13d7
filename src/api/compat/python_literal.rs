//! JSON values as Python source: the one way the adapters put a value into the code they
//! generate.
//!
//! A JSON string is a Python string literal as it is: JSON escapes `"`, `\` and the control
//! characters with escapes Python reads the same way (`\n`, `\t`, `\u001b`, …), and writes
//! everything else as itself (Python source is UTF-8). A lone surrogate cannot get here:
//! `serde_json` refuses `"\ud800"` when it reads a body, and a Rust string cannot hold one.
//! Only `null`, `true` and `false` are spelled differently.

use serde_json::Value;

/// `value` as a Python literal that evaluates to the same value.
pub fn python_literal(value: &Value) -> String {
    let mut out = String::new();
    write_literal(value, &mut out);
    out
}

/// `s` as a Python string literal.
pub fn python_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn write_literal(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        // JSON's number syntax is a subset of Python's.
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&python_str(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_literal(item, out);
            }
            out.push(']');
        }
        Value::Object(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&python_str(key));
                out.push_str(": ");
                write_literal(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AWKWARD: [&str; 8] = [
        "plain",
        "it's \"quoted\"",
        r"back\slash \n not a newline",
        "new\nline\r\ttab",
        "nul \0 escape \x1b del \x7f",
        "non-ASCII: é ü 漢字 🐍",
        "line separators \u{2028} \u{2029}",
        "",
    ];

    #[test]
    fn spelling() {
        assert_eq!(python_literal(&json!(null)), "None");
        assert_eq!(python_literal(&json!([true, false])), "[True, False]");
        assert_eq!(
            python_literal(&json!({"a": [1, 2.5]})),
            r#"{"a": [1, 2.5]}"#
        );
        assert_eq!(python_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(python_str("a\nb"), r#""a\nb""#);
        assert_eq!(python_str("é"), "\"é\"");
    }

    #[test]
    fn lone_surrogates_never_reach_it() {
        assert!(serde_json::from_str::<Value>(r#""\ud800""#).is_err());
        assert!(serde_json::from_str::<Value>(r#""\udc00x""#).is_err());
        // A pair is one character, and comes out as itself.
        let pair: Value = serde_json::from_str(r#""\ud83d\udc0d""#).expect("a pair");
        assert_eq!(python_literal(&pair), "\"🐍\"");
    }

    /// What Python itself makes of the literals: each evaluates to the value it was made of.
    #[test]
    fn python_reads_them_back() {
        use std::io::Write;
        let python = std::env::var_os("REPLPOOL_TEST_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
            });
        let value = json!({
            "strings": AWKWARD,
            "numbers": [0, -1, 1.5, 1e300, u64::MAX],
            "nested": {"k\"ey": [null, true, false, {"": []}]},
        });
        let source = format!(
            "import json, sys\nsys.stdout.write(json.dumps({}))\n",
            python_literal(&value)
        );
        let mut child = std::process::Command::new(&python)
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run the test interpreter");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(source.as_bytes())
            .expect("write the program");
        let output = child.wait_with_output().expect("python ran");
        assert!(output.status.success(), "python refused:\n{source}");
        let back: Value = serde_json::from_slice(&output.stdout).expect("JSON from python");
        assert_eq!(back, value);
    }
}
