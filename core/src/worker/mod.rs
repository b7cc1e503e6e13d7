//! A Python worker as the server sees it: how one is started ([`spawn`]), the handle that
//! drives it over its protocol pipes ([`handle`]), how it fails ([`error`]), the server's watch
//! on a cell's CPU time ([`cpu_watch`]) and the tail of its own stderr ([`stderr_tail`]).
//!
//! (The Python side, `bootstrap/worker.py`, is the worker itself.)

mod cpu_watch;
mod error;
mod handle;
mod spawn;
mod stderr_tail;

pub use error::WorkerError;
pub use handle::{Cell, CellOutcome, Event, EventSender, Interrupt, Worker};
pub use spawn::{PrivateTmp, WorkerSpec};
pub use stderr_tail::{StderrTail, drain_stderr, new_stderr_tail};
