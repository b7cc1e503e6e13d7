//! The native half of the `replpool` Python package: the core's [`SessionManager`] running
//! inside the calling Python process, on a tokio runtime of its own.
//!
//! Every call hands its work to the runtime and waits for the answer with the GIL released,
//! so other Python threads run meanwhile. The work runs on the runtime's threads, never on
//! the caller's: a worker's death signal is tied to the thread that started it, and a Python
//! thread may end long before the worker should.
//!
//! Replies cross as the JSON the HTTP API sends, so that the package builds the same
//! `Execution` from a pool and from a server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use replpool_core::{Config, Error, ExecRequest, SessionManager};

create_exception!(
    _native,
    ReplpoolError,
    PyException,
    "Base of replpool's errors."
);
create_exception!(
    _native,
    SessionNotFound,
    ReplpoolError,
    "The session does not exist (it ended, or never did)."
);
create_exception!(
    _native,
    ServerError,
    ReplpoolError,
    "The service refused or failed a request (not an error of the code it ran)."
);
create_exception!(
    _native,
    Timeout,
    ReplpoolError,
    "An execution reached its deadline (raised only when the caller asked for it)."
);

/// How long `close` gives the runtime's tasks to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn to_py(error: Error) -> PyErr {
    match error {
        Error::SessionNotFound(id) => {
            SessionNotFound::new_err(format!("no session with id `{id}`"))
        }
        other => ServerError::new_err(other.to_string()),
    }
}

/// An in-process replpool: sessions with preloaded workers, without a server.
#[pyclass(frozen, module = "replpool._native")]
struct NativePool {
    manager: Arc<SessionManager>,
    handle: tokio::runtime::Handle,
    /// Taken by `close`; dropping it ends the runtime's threads.
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    closed: AtomicBool,
}

impl NativePool {
    /// Runs `work` on the runtime and waits for it with the GIL released.
    fn run<T: Send + 'static>(
        &self,
        py: Python<'_>,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> PyResult<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ReplpoolError::new_err("the pool is closed"));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        // A dropped sender (the runtime shut down meanwhile) is an error, not a hang.
        let outcome = py.detach(move || rx.recv());
        match outcome {
            Ok(result) => result.map_err(to_py),
            Err(_) => Err(ReplpoolError::new_err(
                "the pool was closed during the call",
            )),
        }
    }

    fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.manager.shutdown();
        let runtime = self.runtime.lock().ok().and_then(|mut r| r.take());
        if let Some(runtime) = runtime {
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
        }
    }
}

#[pymethods]
impl NativePool {
    /// `config_json`: the server's configuration as JSON (sections and fields as in
    /// `config.toml`; every field has a default).
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<NativePool> {
        let config: Config = serde_json::from_str(config_json)
            .map_err(|e| ReplpoolError::new_err(format!("invalid pool settings: {e}")))?;
        config
            .validate()
            .map_err(|e| ReplpoolError::new_err(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("replpool")
            .enable_all()
            .build()
            .map_err(|e| ReplpoolError::new_err(format!("cannot start the runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let _ = tx.send(SessionManager::start(&config));
        });
        let manager = py
            .detach(move || rx.recv())
            .map_err(|_| ReplpoolError::new_err("the runtime stopped while starting"))?
            .map_err(to_py)?;
        Ok(NativePool {
            manager,
            handle,
            runtime: std::sync::Mutex::new(Some(runtime)),
            closed: AtomicBool::new(false),
        })
    }

    /// Creates a session; returns its id.
    fn create_session(&self, py: Python<'_>) -> PyResult<String> {
        let manager = Arc::clone(&self.manager);
        self.run(py, async move { manager.create().await })
            .map(|info| info.session_id)
    }

    /// Runs code in a session; returns the reply as JSON.
    #[pyo3(signature = (session, code, stdin=None, timeout_ms=None))]
    fn execute(
        &self,
        py: Python<'_>,
        session: String,
        code: String,
        stdin: Option<String>,
        timeout_ms: Option<u64>,
    ) -> PyResult<String> {
        let manager = Arc::clone(&self.manager);
        let request = ExecRequest {
            code,
            stdin,
            timeout: timeout_ms.map(Duration::from_millis),
            filename: None,
            data: true,
            // Cells, as through the server's API.
            pip_magic: true,
        };
        let execution = self.run(py, async move {
            manager.execute(&session, &request, None).await
        })?;
        serde_json::to_string(&execution)
            .map_err(|e| ServerError::new_err(format!("cannot encode the reply: {e}")))
    }

    /// A session's info (as `GET /v1/sessions/{id}` gives it: its usage among it) as JSON.
    fn session_info(&self, py: Python<'_>, session: String) -> PyResult<String> {
        let manager = Arc::clone(&self.manager);
        let info = self.run(py, async move { manager.get(&session).await })?;
        serde_json::to_string(&info)
            .map_err(|e| ServerError::new_err(format!("cannot encode the info: {e}")))
    }

    /// Interrupts the running execution; returns whether one was running.
    fn interrupt(&self, session: &str) -> PyResult<bool> {
        self.manager.interrupt(session).map_err(to_py)
    }

    /// A fresh namespace on a fresh worker.
    fn reset(&self, py: Python<'_>, session: String) -> PyResult<()> {
        let manager = Arc::clone(&self.manager);
        self.run(py, async move { manager.reset(&session).await.map(|_| ()) })
    }

    /// Ends a session; its worker is killed on the runtime, where the core expects it.
    fn delete_session(&self, py: Python<'_>, session: String) -> PyResult<()> {
        let manager = Arc::clone(&self.manager);
        self.run(py, async move { manager.delete(&session) })
    }

    fn put_file(&self, py: Python<'_>, session: String, path: String, data: &[u8]) -> PyResult<()> {
        let manager = Arc::clone(&self.manager);
        let data = bytes::Bytes::copy_from_slice(data);
        self.run(
            py,
            async move { manager.put_file(&session, &path, data).await },
        )
    }

    fn get_file<'py>(
        &self,
        py: Python<'py>,
        session: String,
        path: String,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let manager = Arc::clone(&self.manager);
        let data = self.run(py, async move { manager.get_file(&session, &path).await })?;
        Ok(PyBytes::new(py, &data))
    }

    /// Ends every session and worker, and the runtime. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.shutdown());
    }
}

impl Drop for NativePool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativePool>()?;
    let py = m.py();
    m.add("ReplpoolError", py.get_type::<ReplpoolError>())?;
    m.add("SessionNotFound", py.get_type::<SessionNotFound>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    Ok(())
}
