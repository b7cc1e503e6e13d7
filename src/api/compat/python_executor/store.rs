//! The executions this surface knows: each one's result as python-executor reports it, from
//! `pending` to finished, kept `executor.keep_secs` after it finished and then pruned.
//!
//! Every way an execution ends goes through [`Record::finish`] (or [`Record::kill`]), so no
//! record is left `pending` or `running` for good, and every record is pruned in the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

use super::reply::{ExecutionResult, now};
use crate::execution::Category;

pub struct Executions {
    /// This node's name, in every execution id.
    node: String,
    records: DashMap<String, Entry>,
    ttl: Duration,
    /// `execution.max_timeout_ms`: the longest deadline a program gets.
    max_timeout: Duration,
}

struct Entry {
    /// The caller that started it: only they may see or kill it.
    owner: Option<String>,
    record: Arc<Mutex<Record>>,
}

pub struct Record {
    pub result: ExecutionResult,
    /// The session running it, while there is one.
    session: Option<String>,
    finished: Option<Instant>,
}

impl Record {
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// It runs in `session` from now on.
    pub fn start(&mut self, session: String) {
        self.session = Some(session);
        self.result.status = "running";
        self.result.started_at = Some(now());
    }

    /// It has ended, as `result` now says; its session is no longer its own.
    pub fn finish(&mut self) {
        self.session = None;
        self.finished = Some(Instant::now());
        self.result.finished_at = Some(now());
    }

    /// It ended without a result: `failed`, saying why and what kind of failure it was.
    pub fn fail(&mut self, reason: impl Into<String>, category: Category) {
        self.result.status = "failed";
        self.result.error = Some(reason.into());
        self.result.category = Some(category);
        self.finish();
    }

    /// Killed on request (if it had not ended): the session to end, if it has one.
    pub fn kill(&mut self) -> Option<String> {
        if !self.is_finished() {
            self.result.status = "killed";
            self.result.exit_code = 137;
            self.result.error = Some("killed on request".into());
            self.result.category = Some(Category::Interrupted);
            let session = self.session.take();
            self.finish();
            return session;
        }
        None
    }

    fn expired(&self, ttl: Duration) -> bool {
        self.finished.is_some_and(|f| f.elapsed() >= ttl)
    }
}

impl Executions {
    pub fn new(node: &str, ttl: Duration, max_timeout: Duration) -> Executions {
        Executions {
            node: node.to_owned(),
            records: DashMap::new(),
            ttl,
            max_timeout,
        }
    }

    pub fn from_config(config: &crate::Config) -> Executions {
        Executions::new(
            &config.server.node,
            Duration::from_secs(config.executor.keep_secs),
            Duration::from_millis(config.execution.max_timeout_ms),
        )
    }

    pub fn max_timeout(&self) -> Duration {
        self.max_timeout
    }

    /// A new `pending` execution of `owner`'s. Expired records are pruned on the way.
    pub fn insert(&self, owner: Option<&str>) -> Arc<Mutex<Record>> {
        let ttl = self.ttl;
        self.records.retain(|_, e| !e.record.lock().expired(ttl));
        let result = ExecutionResult::pending(&self.node);
        let id = result.execution_id.clone();
        let record = Arc::new(Mutex::new(Record {
            result,
            session: None,
            finished: None,
        }));
        self.records.insert(
            id,
            Entry {
                owner: owner.map(str::to_owned),
                record: Arc::clone(&record),
            },
        );
        record
    }

    /// The execution `id`, if `owner` started it and it has not expired.
    pub fn get(&self, id: &str, owner: Option<&str>) -> Option<Arc<Mutex<Record>>> {
        let record = self
            .records
            .get(id)
            .filter(|e| e.owner.as_deref() == owner)
            .map(|e| Arc::clone(&e.record))?;
        if record.lock().expired(self.ttl) {
            self.records.remove(id);
            return None;
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_records_expire_and_owners_see_only_their_own() {
        let store = Executions::new("node-a", Duration::ZERO, Duration::from_secs(1));
        let record = store.insert(Some("token-0"));
        let id = record.lock().result.execution_id.clone();
        assert!(store.get(&id, Some("token-1")).is_none());
        assert!(store.get(&id, None).is_none());
        assert!(store.get(&id, Some("token-0")).is_some(), "pending stays");
        record
            .lock()
            .fail("the session limit (1) is reached", Category::Unavailable);
        {
            let r = record.lock();
            assert_eq!(r.result.status, "failed");
            assert!(r.result.finished_at.is_some());
        }
        assert!(store.get(&id, Some("token-0")).is_none(), "pruned");
        assert!(store.records.is_empty());
    }

    #[test]
    fn a_kill_ends_once() {
        let store = Executions::new("node-a", Duration::from_secs(60), Duration::from_secs(1));
        let record = store.insert(None);
        record.lock().start("s1".into());
        assert_eq!(record.lock().kill().as_deref(), Some("s1"));
        assert_eq!(record.lock().kill(), None);
        assert_eq!(record.lock().result.status, "killed");
    }
}
