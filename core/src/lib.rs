//! The core of replpool: per-session, preloaded Python workers, and everything that keeps them
//! (the pool, the template, sessions, the sandbox, the worker protocol).
//!
//! It knows nothing of HTTP: the server (`replpool`, with its `api`) is one front end over
//! [`SessionManager`], the Python package (`python/`) another.

pub mod binding;
pub mod cold;
pub mod config;
pub mod error;
pub mod execution;
pub mod files;
pub mod interpreter;
pub mod manager;
pub mod metrics;
pub mod node;
pub mod notebook;
pub mod packages;
pub mod pool;
pub mod preload_use;
pub mod process;
pub mod protocol;
pub mod reaper;
pub mod sandbox;
pub mod session;
pub mod session_dir;
pub mod state_dir;
pub mod template;
pub mod worker;

pub use config::Config;
pub use error::Error;
pub use execution::{ExecRequest, Execution};
pub use manager::SessionManager;
