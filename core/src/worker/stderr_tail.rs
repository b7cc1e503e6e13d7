//! A worker's own stderr: logged line by line, its last lines kept to explain its failure.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How many lines of a worker's own stderr are kept to explain its failure.
const STDERR_TAIL_LINES: usize = 30;

/// The last lines of a worker's own stderr, to explain its failure.
pub type StderrTail = Arc<Mutex<VecDeque<String>>>;

pub fn new_stderr_tail() -> StderrTail {
    Arc::new(Mutex::new(VecDeque::new()))
}

/// Logs a worker's own stderr line by line, keeping the last lines in `tail`.
pub async fn drain_stderr(pid: u32, stderr: impl AsyncRead + Unpin, tail: StderrTail) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(pid, "worker stderr: {line}");
        let mut tail = tail.lock();
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
