//! An execution's reply as MCP content: what a model reads (text) and sees (images).
//!
//! Text first (stdout, stderr, displayed text, the result's `text/plain`, the error with its
//! category and a trimmed traceback), then each figure: inline PNG image content up to
//! `mcp.max_inline_image_bytes`, a resource link above it. Bundles pass through as they are:
//! keys this module does not know (a table's or a chart's JSON) are left out of the text.

use base64::Engine;
use rmcp::model::{CallToolResult, ContentBlock, Resource};

use crate::execution::{Category, Execution, Status};
use crate::protocol::{ErrorInfo, MimeBundle};

/// A traceback keeps at most this many lines from its end (the frames nearest the error,
/// which are the user's), and its first line.
const TRACEBACK_TAIL_LINES: usize = 24;
/// ... and at most this many characters: a model needs the error, not a megabyte of frames.
const TRACEBACK_MAX_CHARS: usize = 4_000;

/// Where a figure too large to be inline can be read again: the cell (its execution count in
/// the session) and the figure's place among the cell's outputs (displays, then the result).
pub fn output_uri(session_id: &str, execution_count: u64, index: usize) -> String {
    format!("replpool://sessions/{session_id}/outputs/{execution_count}/{index}")
}

/// `replpool://sessions/{id}/outputs/{count}/{index}` taken apart; `None` for anything else.
pub fn parse_output_uri(uri: &str) -> Option<(&str, u64, usize)> {
    let rest = uri.strip_prefix("replpool://sessions/")?;
    let mut parts = rest.split('/');
    let id = parts.next().filter(|id| !id.is_empty())?;
    if parts.next()? != "outputs" {
        return None;
    }
    let count = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((id, count, index))
}

/// A cell's outputs in the order [`output_uri`] counts them: its displays, then its result.
pub fn outputs(execution: &Execution) -> impl Iterator<Item = &MimeBundle> {
    execution.display.iter().chain(execution.result.as_ref())
}

/// The PNG of a bundle, still base64, as the worker sent it.
pub fn png(bundle: &MimeBundle) -> Option<&str> {
    bundle.get("image/png").and_then(|v| v.as_str())
}

/// The size of base64 data once decoded, without decoding it.
fn decoded_len(b64: &str) -> usize {
    let padding = b64.bytes().rev().take_while(|&b| b == b'=').count();
    (b64.len() / 4 * 3).saturating_sub(padding)
}

/// How a figure over the inline limit is answered.
pub enum LargeFigures<'a> {
    /// As a link to the session's history.
    Link { session_id: &'a str },
    /// A one-shot keeps no history to link to: a note says what was left out.
    Omit,
}

/// The tool result for an execution. `isError` is set when the code did not run to its end
/// (an exception, a timeout, an interrupt): the model should know without parsing the text.
pub fn execution_result(
    execution: &Execution,
    max_inline_image_bytes: usize,
    large: &LargeFigures<'_>,
) -> CallToolResult {
    let mut text = String::new();
    let mut figures = Vec::new();
    if execution.session_reset {
        section(
            &mut text,
            "note",
            "the session's worker was replaced before this cell: variables from earlier cells are gone",
        );
    }
    if !execution.stdout.is_empty() {
        section(&mut text, "stdout", &execution.stdout);
    }
    if !execution.stderr.is_empty() {
        section(&mut text, "stderr", &execution.stderr);
    }
    for (index, bundle) in outputs(execution).enumerate() {
        let is_result = index == execution.display.len();
        if let Some(data) = png(bundle) {
            figures.push(figure(
                execution,
                index,
                data,
                max_inline_image_bytes,
                large,
                &mut text,
            ));
            continue;
        }
        if let Some(plain) = bundle.get("text/plain").and_then(|v| v.as_str()) {
            section(
                &mut text,
                if is_result { "result" } else { "display" },
                plain,
            );
        }
    }
    if let Some(error) = &execution.error {
        let category = execution
            .category
            .map_or("runtime", |category| category.as_str());
        section(
            &mut text,
            &format!("error ({category})"),
            &describe_error(error, execution.category),
        );
    } else if execution.status == Status::Timeout {
        section(
            &mut text,
            "error (timeout)",
            "the cell reached its deadline",
        );
    }
    if execution.truncated {
        section(
            &mut text,
            "note",
            "the output was cut at execution.max_output_bytes",
        );
    }
    if text.is_empty() {
        text.push_str(if figures.is_empty() {
            "(no output)"
        } else {
            "(no text output; the figures follow)"
        });
    }
    let mut content = vec![ContentBlock::text(text.trim_end().to_owned())];
    content.extend(figures.into_iter().flatten());
    if execution.status == Status::Ok {
        CallToolResult::success(content)
    } else {
        CallToolResult::error(content)
    }
}

/// One figure: inline, a link, or (a one-shot's, too large) a note in `text`.
fn figure(
    execution: &Execution,
    index: usize,
    data: &str,
    max_inline_image_bytes: usize,
    large: &LargeFigures<'_>,
    text: &mut String,
) -> Option<ContentBlock> {
    let size = decoded_len(data);
    if size <= max_inline_image_bytes {
        return Some(ContentBlock::image(data.to_owned(), "image/png"));
    }
    match large {
        LargeFigures::Link { session_id } => {
            let uri = output_uri(session_id, execution.execution_count, index);
            let resource = Resource::new(
                uri,
                format!("figure {index} of cell {}", execution.execution_count),
            )
            .with_description(format!(
                "a PNG of {size} bytes, above mcp.max_inline_image_bytes ({max_inline_image_bytes}): read it with resources/read"
            ))
            .with_mime_type("image/png")
            .with_size(size as u64);
            Some(ContentBlock::resource_link(resource))
        }
        LargeFigures::Omit => {
            section(
                text,
                "note",
                &format!(
                    "a figure of {size} bytes was left out (above mcp.max_inline_image_bytes, {max_inline_image_bytes}); a one-shot keeps no history to link it from: run the code in a session (create_session) to get a link"
                ),
            );
            None
        }
    }
}

fn section(text: &mut String, title: &str, body: &str) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(title);
    text.push_str(":\n");
    text.push_str(body);
    if !body.ends_with('\n') {
        text.push('\n');
    }
}

/// The error's one line (`ename: evalue`, or what a deadline or an interrupt means), then
/// its traceback without the worker's own frames, its head line and its last lines kept.
fn describe_error(error: &ErrorInfo, category: Option<Category>) -> String {
    let headline = match category {
        Some(Category::Timeout) => "the cell reached its deadline and was interrupted".to_owned(),
        Some(Category::Interrupted) => "the cell was interrupted".to_owned(),
        _ if error.evalue.is_empty() => error.ename.clone(),
        _ => format!("{}: {}", error.ename, error.evalue),
    };
    let lines = user_frames(&error.traceback);
    if lines.is_empty() {
        return headline;
    }
    let mut trace = if lines.len() > TRACEBACK_TAIL_LINES + 1 {
        let cut = lines.len() - TRACEBACK_TAIL_LINES;
        let mut kept = vec![lines[0].to_owned(), format!("  [... {cut} lines ...]")];
        kept.extend(lines[cut..].iter().map(|l| (*l).to_owned()));
        kept.join("\n")
    } else {
        lines.join("\n")
    };
    if trace.len() > TRACEBACK_MAX_CHARS {
        let mut start = trace.len() - TRACEBACK_MAX_CHARS;
        while !trace.is_char_boundary(start) {
            start += 1;
        }
        trace = format!("[...]{}", &trace[start..]);
    }
    format!("{headline}\n{trace}")
}

/// The traceback's lines, less the frames of the worker itself (`worker.py`: where a
/// deadline's interrupt is raised), which say nothing about the user's code.
fn user_frames(traceback: &[String]) -> Vec<&str> {
    let mut kept = Vec::new();
    let mut in_worker_frame = false;
    for line in traceback.iter().flat_map(|entry| entry.lines()) {
        if line.starts_with("  File ") {
            in_worker_frame = line.contains("worker.py\"");
        } else if !line.starts_with("    ") {
            in_worker_frame = false;
        }
        if !in_worker_frame {
            kept.push(line);
        }
    }
    kept
}

/// Base64 of raw bytes (files read back, figures read as resources).
pub fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Bytes from base64 (files uploaded as such).
pub fn decode(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(data.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_uris_round_trip_and_nothing_else_parses() {
        let uri = output_uri("local.abc", 3, 1);
        assert_eq!(parse_output_uri(&uri), Some(("local.abc", 3, 1)));
        for bad in [
            "replpool://sessions//outputs/1/0",
            "replpool://sessions/a/outputs/x/0",
            "replpool://sessions/a/outputs/1/0/2",
            "replpool://sessions/a/files/1/0",
            "file:///etc/passwd",
        ] {
            assert_eq!(parse_output_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn tracebacks_lose_the_workers_frames_and_keep_the_users() {
        let error = ErrorInfo {
            ename: "KeyboardInterrupt".into(),
            evalue: String::new(),
            traceback: [
                "Traceback (most recent call last):",
                "  File \"<cell-5>\", line 2, in <module>\n    time.sleep(30)",
                "  File \"/tmp/replpool-x/worker.py\", line 411, in on_sigint",
                "    raise KeyboardInterrupt",
                "KeyboardInterrupt",
            ]
            .map(String::from)
            .to_vec(),
        };
        assert_eq!(
            describe_error(&error, Some(Category::Timeout)),
            "the cell reached its deadline and was interrupted\nTraceback (most recent call last):\n  File \"<cell-5>\", line 2, in <module>\n    time.sleep(30)\nKeyboardInterrupt"
        );
        let long = ErrorInfo {
            ename: "RecursionError".into(),
            evalue: "too deep".into(),
            traceback: (0..100).map(|i| format!("line {i}")).collect(),
        };
        let described = describe_error(&long, Some(Category::Runtime));
        assert!(
            described
                .starts_with("RecursionError: too deep\nline 0\n  [... 76 lines ...]\nline 76\n"),
            "{described}"
        );
        assert!(described.ends_with("line 99"), "{described}");
    }

    #[test]
    fn decoded_length_counts_padding() {
        assert_eq!(decoded_len(&encode(b"abcd")), 4);
        assert_eq!(decoded_len(&encode(b"abcde")), 5);
        assert_eq!(decoded_len(&encode(b"abcdef")), 6);
    }
}
