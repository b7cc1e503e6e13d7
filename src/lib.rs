//! replpool keeps Python warm: per-session, preloaded Python workers behind an HTTP API.
//!
//! This crate is the server: [`api`] over the core ([`replpool_core`]), whose modules are
//! re-exported here so that the server's code names them as its own.

pub mod api;
pub mod mcp;
pub mod memory;
pub mod metrics;

pub use replpool_core::{
    Config, Error, ExecRequest, Execution, SessionManager, cold, config, error, execution, files,
    interpreter, manager, node, notebook, packages, pool, process, protocol, reaper, sandbox,
    session, template, worker,
};
