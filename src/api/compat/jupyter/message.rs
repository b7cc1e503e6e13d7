//! Jupyter messages in the websocket's default JSON framing (messaging protocol 5.3): one
//! text frame per message, `{"header", "parent_header", "metadata", "content", "channel",
//! "buffers"}`.

use std::time::SystemTime;

use serde_json::{Value, json};

/// The messaging protocol version this surface speaks.
pub const PROTOCOL_VERSION: &str = "5.3";

/// A message a client sent, as much of it as the kernel reads.
#[derive(Debug)]
pub struct Request {
    /// Its header as sent: every reply carries it as `parent_header`.
    pub header: Value,
    pub msg_type: String,
    /// `shell` when the client named none (jupyter_server's default too).
    pub channel: String,
    pub content: Value,
}

impl Request {
    /// Reads a text frame; `None` for what is not a message (it is logged and dropped, as
    /// jupyter_server does).
    pub fn parse(text: &str) -> Option<Request> {
        let value: Value = serde_json::from_str(text).ok()?;
        let header = value.get("header")?.clone();
        let msg_type = header.get("msg_type")?.as_str()?.to_owned();
        let channel = value
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or("shell")
            .to_owned();
        let content = value.get("content").cloned().unwrap_or_else(|| json!({}));
        Some(Request {
            header,
            msg_type,
            channel,
            content,
        })
    }

    /// A reply to this request on its own channel (`<type>_reply`).
    pub fn reply(&self, session: &str, content: Value) -> String {
        let msg_type = reply_type(&self.msg_type);
        message(session, &msg_type, &self.channel, &self.header, content)
    }

    /// A message on iopub caused by this request.
    pub fn iopub(&self, session: &str, msg_type: &str, content: Value) -> String {
        message(session, msg_type, "iopub", &self.header, content)
    }

    pub fn content_str(&self, key: &str) -> Option<&str> {
        self.content.get(key).and_then(Value::as_str)
    }

    pub fn content_bool(&self, key: &str) -> Option<bool> {
        self.content.get(key).and_then(Value::as_bool)
    }
}

fn reply_type(request_type: &str) -> String {
    match request_type.strip_suffix("_request") {
        Some(base) => format!("{base}_reply"),
        None => format!("{request_type}_reply"),
    }
}

/// One message, serialized.
pub fn message(
    session: &str,
    msg_type: &str,
    channel: &str,
    parent_header: &Value,
    content: Value,
) -> String {
    let msg_id = new_id();
    json!({
        "header": {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "replpool",
            "session": session,
            "date": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            "version": PROTOCOL_VERSION,
        },
        "msg_id": msg_id,
        "msg_type": msg_type,
        "parent_header": parent_header,
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    })
    .to_string()
}

/// A message or session id: 128 random bits in a UUID's form (what Jupyter's own are).
pub fn new_id() -> String {
    let bits = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &bits[..8],
        &bits[8..12],
        &bits[12..16],
        &bits[16..20],
        &bits[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_names_its_request_as_parent() {
        let request = Request::parse(
            r#"{"header": {"msg_id": "m1", "msg_type": "kernel_info_request", "session": "s",
                "username": "u", "date": "", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "content": {}, "channel": "control"}"#,
        )
        .expect("a message");
        let reply: Value =
            serde_json::from_str(&request.reply("k", json!({"status": "ok"}))).expect("JSON");
        assert_eq!(reply["header"]["msg_type"], "kernel_info_reply");
        assert_eq!(reply["parent_header"]["msg_id"], "m1");
        assert_eq!(reply["channel"], "control");
        assert_eq!(reply["header"]["version"], PROTOCOL_VERSION);
        assert_eq!(reply["content"]["status"], "ok");
    }

    #[test]
    fn what_is_not_a_message_is_none() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"header": {}}"#,
            r#"{"header": {"msg_type": 1}}"#,
        ] {
            assert!(Request::parse(bad).is_none(), "{bad}");
        }
    }
}
