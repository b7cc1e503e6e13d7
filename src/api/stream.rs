//! `POST /v1/sessions/{id}/execute?stream=true`: the execution as Server-Sent Events.
//!
//! `stream` events carry output as it is written (`{"name", "text"}`), `display` events a MIME
//! bundle as soon as the code shows it, and one final `result` event the same object as the
//! non-streaming reply (or an `error` event with the service's error shape). The execution
//! runs in a task of its own: a client that goes away does not stop or disturb it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use super::ApiError;
use crate::execution::{ExecRequest, Execution};
use crate::worker;
use crate::{Error, SessionManager};

pub fn execute(
    manager: Arc<SessionManager>,
    id: String,
    request: ExecRequest,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let result = manager.execute(&id, &request, Some(&events_tx)).await;
        drop(events_tx); // ends the event stream before the result
        let _ = done_tx.send(result);
    });
    let stream = futures::stream::unfold(Some((events_rx, done_rx)), |state| async move {
        let (mut events, done) = state?;
        match events.recv().await {
            Some(event) => Some((Ok(worker_event(event)), Some((events, done)))),
            None => Some((Ok(final_event(done.await)), None)),
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn worker_event(event: worker::Event) -> Event {
    let built = match event {
        worker::Event::Stream { name, text } => Event::default()
            .event("stream")
            .json_data(serde_json::json!({ "name": name, "text": text })),
        worker::Event::Display(bundle) => Event::default().event("display").json_data(bundle),
    };
    built.unwrap_or_else(|e| error_event(&ApiError::from(Error::Internal(e.to_string()))))
}

fn final_event(done: Result<Result<Execution, Error>, oneshot::error::RecvError>) -> Event {
    match done {
        Ok(Ok(execution)) => Event::default()
            .event("result")
            .json_data(&execution)
            .unwrap_or_else(|e| error_event(&ApiError::from(Error::Internal(e.to_string())))),
        Ok(Err(e)) => error_event(&ApiError::from(e)),
        Err(_) => error_event(&ApiError::from(Error::Internal(
            "the execution task ended without a result".into(),
        ))),
    }
}

fn error_event(error: &ApiError) -> Event {
    Event::default()
        .event("error")
        .data(error.body().to_string())
}
