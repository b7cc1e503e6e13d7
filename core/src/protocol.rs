//! The worker protocol: length-prefixed JSON frames between the server and
//! `bootstrap/worker.py`.
//!
//! A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON. The maximum frame
//! size is set explicitly (tokio-util's default is 8 MiB) so that a broken or hostile worker
//! can make the server reject a frame, never allocate for it.

use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use crate::execution::Category;

/// A MIME bundle as Jupyter has it: `{"text/plain": "...", "image/png": "<base64>", ...}`.
pub type MimeBundle = serde_json::Map<String, serde_json::Value>;

/// The frame codec, both directions.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// What the server asks of a worker. Every request gets exactly one `done` frame.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request<'a> {
    /// Run a cell. `count` names it in tracebacks (`<cell-3>`).
    Exec {
        id: u64,
        code: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        stdin: Option<&'a str>,
        count: u64,
        /// Send output as `stream` frames while the cell runs, rather than in `done`.
        stream: bool,
        max_output_bytes: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu_seconds: Option<u64>,
        /// The file name tracebacks give the code (default `<cell-N>`).
        #[serde(skip_serializing_if = "Option::is_none")]
        filename: Option<&'a str>,
        /// Add data to bundles: a DataFrame's or Series' table
        /// (`application/vnd.dataresource+json`), a figure's chart
        /// (`application/vnd.replpool.chart+json`).
        data: bool,
        /// Rows of a table, and points, bars, wedges or boxes of a chart, kept in that data.
        max_table_rows: usize,
        /// The session's package layer (a directory relative to the session directory), put
        /// first on `sys.path` before the cell runs; absent: none.
        #[serde(skip_serializing_if = "Option::is_none")]
        packages: Option<&'a str>,
    },
    /// Make `cwd` the worker's working directory and, with `user`, become that user: binds
    /// the worker to a session.
    Attach {
        id: u64,
        cwd: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<AttachUser>,
        /// A directory of the scratch area the session shares with the other one-shot
        /// executions of its request (the rest of the area is covered).
        #[serde(skip_serializing_if = "Option::is_none")]
        shared: Option<&'a str>,
    },
}

/// The user a worker becomes when it is attached (the server runs as root).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AttachUser {
    pub uid: u32,
    pub gid: u32,
    /// RLIMIT_NPROC to set before the change (a per-session uid without a pids cgroup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nproc: Option<u64>,
}

impl Request<'_> {
    pub fn id(&self) -> u64 {
        match self {
            Request::Exec { id, .. } | Request::Attach { id, .. } => *id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamName {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneStatus {
    Ok,
    Error,
}

/// An exception from user code, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

/// The end of one request's reply.
#[derive(Debug, Clone, Deserialize)]
pub struct Done {
    pub id: u64,
    pub status: DoneStatus,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub result: Option<MimeBundle>,
    #[serde(default)]
    pub display: Vec<MimeBundle>,
    #[serde(default)]
    pub error: Option<ErrorInfo>,
    #[serde(default)]
    pub truncated: bool,
    /// The worker's word for what kind of error it was (see [`Category`]): it alone knows
    /// whether the SyntaxError came from compiling the cell, or which errno an OSError had.
    #[serde(default)]
    pub category: Option<Category>,
    /// CPU time the cell used, as the worker measured it (its own and its waited-for
    /// children's rusage around the cell).
    #[serde(default)]
    pub cpu_ms: Option<f64>,
}

/// What a worker sends.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Frame {
    /// The preload is done; the worker takes requests from now on.
    Ready {
        pid: u32,
        python: String,
        preload_ms: f64,
    },
    /// The worker could not start (the preload raised); it exits after this.
    Fatal {
        error: ErrorInfo,
    },
    Stream {
        id: u64,
        name: StreamName,
        text: String,
    },
    Display {
        id: u64,
        data: MimeBundle,
    },
    Done(Done),
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use tokio_util::codec::Decoder;

    #[test]
    fn decodes_split_frames_and_refuses_oversized_ones() {
        let mut codec = codec(64);
        let body = br#"{"op":"ready","pid":1,"python":"3.11","preload_ms":1.5}"#;
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.put_slice(&body[..10]);
        assert!(codec.decode(&mut buf).expect("partial is fine").is_none());
        buf.put_slice(&body[10..]);
        let frame = codec.decode(&mut buf).expect("ok").expect("whole frame");
        let parsed: Frame = serde_json::from_slice(&frame).expect("valid frame");
        assert!(matches!(parsed, Frame::Ready { pid: 1, .. }));

        let mut big = BytesMut::new();
        big.put_u32(65);
        assert!(codec.decode(&mut big).is_err());
    }

    #[test]
    fn request_shape_is_what_the_worker_reads() {
        let req = Request::Exec {
            id: 7,
            code: "1+1",
            stdin: None,
            count: 2,
            stream: false,
            max_output_bytes: 10,
            cpu_seconds: None,
            filename: None,
            data: true,
            max_table_rows: 1000,
            packages: None,
        };
        let json = serde_json::to_value(&req).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"op": "exec", "id": 7, "code": "1+1", "count": 2,
                               "stream": false, "max_output_bytes": 10,
                               "data": true, "max_table_rows": 1000})
        );
    }
}
