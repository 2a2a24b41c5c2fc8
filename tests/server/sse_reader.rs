//! Reading a `text/event-stream` body event by event, through the router
//! (`oneshot`) or over HTTP, for the event stream tests.

use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tower::ServiceExt;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) data: Value,
}

type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// Reads a `text/event-stream` body event by event, counting keep-alive
/// comments.
pub(crate) struct EventReader {
    chunks: Chunks,
    buffer: String,
    pub(crate) comments: usize,
}

impl EventReader {
    /// A stream through the router, without a socket.
    pub(crate) async fn open(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, EventReader) {
        let response = app.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let chunks = response
            .into_body()
            .into_data_stream()
            .map(|chunk| chunk.map_err(|e| e.to_string()));
        (status, headers, EventReader::new(Box::pin(chunks)))
    }

    /// A stream over HTTP.
    pub(crate) async fn connect(url: &str) -> EventReader {
        let response = reqwest::Client::new().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let chunks = futures_util::stream::unfold(response, |mut response| async move {
            let chunk = response.chunk().await.map_err(|e| e.to_string()).transpose()?;
            Some((chunk, response))
        });
        EventReader::new(Box::pin(chunks))
    }

    fn new(chunks: Chunks) -> EventReader {
        EventReader {
            chunks,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` once the stream ended; fails after 5 s.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(Duration::from_secs(5), self.next_event())
            .await
            .expect("no event and no end within 5 s")
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                match parse(&frame) {
                    Some(event) => return Some(event),
                    None => self.comments += 1,
                }
            }
            match self.chunks.next().await {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(e)) => panic!("the stream failed: {e}"),
                None => {
                    assert_eq!(self.buffer, "", "a partial event at the end");
                    return None;
                }
            }
        }
    }

    /// Asserts that no event comes (keep-alive comments only) for `wait`.
    pub(crate) async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(got) = tokio::time::timeout(wait, self.next_event()).await {
            panic!("expected nothing, got {got:?}");
        }
    }
}

/// An event's fields; `None` for a comment.
fn parse(frame: &str) -> Option<SseEvent> {
    let (mut id, mut name, mut data) = (None, None, String::new());
    for line in frame.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_string()),
            "event" => name = Some(value.to_string()),
            "data" => data.push_str(value),
            other => panic!("unexpected field {other} in {frame:?}"),
        }
    }
    let id = id?;
    Some(SseEvent {
        id,
        name: name.expect("every event is named"),
        data: serde_json::from_str(&data).unwrap(),
    })
}
