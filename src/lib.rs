//! replpool keeps Python warm: per-session, preloaded Python workers behind an HTTP API.
//!
//! The core (everything but [`api`]) knows nothing of HTTP, so that other front ends can sit
//! on the same [`SessionManager`].

pub mod api;
pub mod cold;
pub mod config;
pub mod error;
pub mod execution;
pub mod files;
pub mod manager;
pub mod notebook;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod reaper;
pub mod sandbox;
pub mod session;
pub mod template;
pub mod worker;

pub use config::Config;
pub use error::Error;
pub use execution::{ExecRequest, Execution};
pub use manager::SessionManager;
