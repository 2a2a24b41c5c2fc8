//! The Api step: building its request from templates, the retry policy's
//! verdict on each outcome, and what the conversation keeps of the final
//! one (the parts of the response that templates read, secrets masked).

use std::sync::Arc;

use serde_json::{Value, json};

use super::Interpreter;
use super::scope::ConversationScope;
use crate::conversation::Conversation;
use crate::error::RunError;
use crate::flow::{CompiledApi, CompiledStep};
use crate::http::{Header, HttpError, HttpRequest, HttpResponse, sse};
use crate::projection::{parse_projected, project};
use crate::template::{RenderError, Secrets, Segment};

/// A JSON body's `Content-Type`, unless the flow set one.
pub(crate) fn add_content_type(headers: &mut Vec<Header>) {
    if !headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-type"))
    {
        headers.push(Header {
            name: "Content-Type".into(),
            value: "application/json".into(),
            sensitive: false,
        });
    }
}

/// The request an Api step sends, rendered with the conversation's values.
pub(crate) fn build_request(
    interpreter: &Interpreter,
    step_index: usize,
    step: &CompiledStep,
    api: &CompiledApi,
    conversation: &Conversation,
) -> Result<HttpRequest, RunError> {
    let scope = ConversationScope {
        interpreter,
        conversation,
    };
    // Built only on failure: rendering runs for every call.
    let render_error = |field: String, source: RenderError| RunError::Render {
        step: step.name.to_string(),
        field,
        source,
    };
    let url = api
        .url
        .render_url(&scope, Secrets::Reveal)
        .map_err(|e| render_error("url".into(), e))?;
    let display_url = if api.url.uses_secret() {
        api.url
            .render_url(&scope, Secrets::Mask)
            .map_err(|e| render_error("url".into(), e))?
    } else {
        url.clone()
    };
    let headers = match interpreter.constant_headers.get(step_index) {
        Some(Some(headers)) => headers.clone(),
        _ => {
            let mut headers = Vec::with_capacity(api.headers.len() + 1);
            for (name, template) in &api.headers {
                let value = template
                    .render_header(&scope)
                    .map_err(|e| render_error(format!("headers.{name}"), e))?;
                headers.push(Header {
                    name: name.clone(),
                    value: value.into(),
                    sensitive: template.uses_secret(),
                });
            }
            if api.body.is_some() {
                add_content_type(&mut headers);
            }
            headers
        }
    };
    let body = api.body.as_ref().map(|b| b.render_json(&scope));
    let options = &interpreter.options;
    Ok(HttpRequest {
        method: api.method,
        url,
        display_url,
        headers,
        body,
        timeout: api.timeout.unwrap_or(options.api_timeout),
        max_response_bytes: api.max_response_bytes.unwrap_or(options.max_response_bytes),
        stream_until: api.stream_until.clone(),
        step: Some(step.name.clone()),
    })
}

/// Keeps the final outcome of an Api step's call in the conversation and
/// says where to go next: the step's `next` on success, its `on_error` on a
/// failure when it has one; otherwise the error that fails the conversation.
pub(crate) fn keep_outcome(
    interpreter: &Interpreter,
    (step, api): (&CompiledStep, &CompiledApi),
    step_index: usize,
    request: HttpRequest,
    attempts: u32,
    outcome: Result<HttpResponse, HttpError>,
    conversation: &mut Conversation,
) -> Result<Option<usize>, RunError> {
    // A streamed answer keeps the event it waited for; a failed stream
    // is a failed call (on_error applies), never retried.
    let outcome = outcome.and_then(|response| {
        let body = streamed_body(api, &response).map_err(HttpError::EventStream)?;
        Ok((response, body))
    });
    match outcome {
        Ok((response, body)) if response.is_success() => {
            let value = kept_response(interpreter, step_index, &response, body, None);
            conversation.steps.insert(step.name.clone(), Arc::new(value));
            Ok(step.next)
        }
        Ok((response, _)) => {
            let detail = error_detail(interpreter, &response);
            let message = match &detail {
                Some(detail) => format!("{} answered {}: {detail}", request.method, response.status),
                None => format!("{} answered {}", request.method, response.status),
            };
            let error = json!({"kind": "status", "message": message, "status": response.status});
            conversation.steps.insert(
                step.name.clone(),
                Arc::new(kept_response(
                    interpreter,
                    step_index,
                    &response,
                    None,
                    Some(error),
                )),
            );
            if let Some(target) = api.on_error {
                return Ok(Some(target));
            }
            Err(RunError::Status {
                step: step.name.to_string(),
                method: request.method,
                url: request.display_url,
                status: response.status,
                detail,
                hint: api.error_hints.get(&response.status).cloned(),
            })
        }
        Err(error) => {
            let message = interpreter.redactor.redact(&error.to_string());
            conversation.steps.insert(
                step.name.clone(),
                Arc::new(json!({"status": null, "error": {"kind": error.kind(), "message": message}})),
            );
            if let Some(target) = api.on_error {
                return Ok(Some(target));
            }
            Err(RunError::Transport {
                step: step.name.to_string(),
                method: request.method,
                url: request.display_url,
                attempts,
                source: interpreter.redactor.redact_http_error(error),
            })
        }
    }
}

/// What a conversation keeps of an Api step's response: the parts of its
/// body and headers some template reads, plus its status and error.
/// Keeps parked conversations small; headers are only collected when read.
/// A server that echoes a secret back must not make the stored state
/// hold it: strings are masked after JSON parsing, so escaped forms
/// (`sk\/x`, `\u0073k`) are caught too, and so are headers.
fn kept_response(
    interpreter: &Interpreter,
    step_index: usize,
    response: &HttpResponse,
    streamed: Option<Value>,
    error: Option<Value>,
) -> Value {
    let paths = match interpreter.flow.program().retained.get(step_index) {
        // An empty path reads the whole result.
        Some(Some(paths)) if !paths.iter().any(Vec::is_empty) => Some(paths),
        _ => None,
    };
    // What the paths read below `key`; None reads all of it.
    let below = |key: &str| -> Option<Vec<&[Segment]>> {
        let below = paths?
            .iter()
            .filter_map(|path| path.split_first())
            .filter(|(first, _)| first.filter.is_none() && first.key == key)
            .map(|(_, rest)| rest);
        Some(below.collect())
    };
    let mut map = serde_json::Map::new();
    let body_paths = below("response");
    if body_paths.as_ref().is_none_or(|p| !p.is_empty()) {
        // A parsed body comes projected already; a streamed one does not.
        let was_streamed = streamed.is_some();
        let body = response_body(response, streamed, body_paths.as_deref());
        let body = match &body_paths {
            Some(paths) if was_streamed => project(body, paths),
            _ => body,
        };
        map.insert("response".into(), body);
    }
    let header_paths = below("headers");
    if header_paths.as_ref().is_none_or(|p| !p.is_empty()) {
        let headers = response_headers(interpreter, response);
        let headers = match &header_paths {
            Some(paths) => project(headers, paths),
            None => headers,
        };
        map.insert("headers".into(), headers);
    }
    map.insert("status".into(), response.status.into());
    if let Some(error) = error {
        map.insert("error".into(), error);
    }
    let mut value = Value::Object(map);
    interpreter.redactor.redact_value(&mut value);
    value
}

/// The data of the event a step with `stream_until` keeps from a
/// successful `text/event-stream` answer; `None` for every other answer
/// (read as usual). A client that stopped early and one that read the whole
/// stream give the same event.
fn streamed_body(api: &CompiledApi, response: &HttpResponse) -> Result<Option<Value>, String> {
    let streamed = !api.stream_until.is_empty()
        && response.is_success()
        && response.header("content-type").is_some_and(sse::is_event_stream);
    if !streamed {
        return Ok(None);
    }
    let events = sse::parse(&response.body);
    let selected = sse::select(&events, &api.stream_until).map_err(|e| e.to_string())?;
    tracing::debug!(event = %selected.name, events = events.len(), "kept a streamed event");
    Ok(Some(selected.data))
}

/// The body as JSON (only the parts `paths` reach, when given), or as text
/// when it is not JSON; for a stream, the kept event's data.
fn response_body(response: &HttpResponse, streamed: Option<Value>, paths: Option<&[&[Segment]]>) -> Value {
    let text = || Value::String(String::from_utf8_lossy(&response.body).into_owned());
    let parsed = match (streamed, paths) {
        (Some(data), _) => Ok(data),
        _ if response.body.is_empty() => return Value::Null,
        (None, Some(paths)) => parse_projected(&response.body, paths),
        (None, None) => serde_json::from_slice(&response.body),
    };
    match parsed {
        // The stored state nests a result a few levels deeper, and JSON
        // deeper than serde_json's limit would not load again: keep such a
        // body as text.
        Ok(value) if nesting(&value) <= MAX_KEPT_NESTING => value,
        _ => text(),
    }
}

/// The deepest nesting of a kept result, well below serde_json's parse limit
/// of 128 minus the levels the stored state adds around it.
const MAX_KEPT_NESTING: usize = 100;

/// How many arrays and objects deep `value` goes.
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// Headers by lower-case name; a repeated header (set-cookie) keeps all its
/// values, comma-joined. Secrets are masked by the caller.
fn response_headers(interpreter: &Interpreter, response: &HttpResponse) -> Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &response.headers {
        let value = interpreter.redactor.redact(value);
        match headers.get_mut(&name.to_ascii_lowercase()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.to_ascii_lowercase(), Value::String(value));
            }
        }
    }
    Value::Object(headers)
}

/// The server's own error message: OpenAI's `{"error": {"message"}}` or a
/// short text body. Redacted before it is cut, so no part of a secret survives.
fn error_detail(interpreter: &Interpreter, response: &HttpResponse) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<Value>(&response.body) {
        let message = value
            .pointer("/error/message")
            .or_else(|| value.pointer("/message"))
            .or_else(|| value.get("error").filter(|e| e.is_string()))?;
        return message
            .as_str()
            .map(|m| truncate(&interpreter.redactor.redact(m), 300));
    }
    let mut text = String::from_utf8_lossy(&response.body).into_owned();
    // An event stream's data is JSON, which may escape a secret (`\u0073k…`):
    // written back, its escapes are canonical and masking finds the secret.
    if response.header("content-type").is_some_and(sse::is_event_stream) {
        let events = sse::parse(&response.body);
        let data = events.iter().map(|event| {
            serde_json::from_str::<Value>(&event.data).map_or_else(|_| event.data.clone(), |v| v.to_string())
        });
        text = data.collect::<Vec<_>>().join("\n");
    }
    let text = text.trim();
    (!text.is_empty()).then(|| truncate(&interpreter.redactor.redact(text), 300))
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
