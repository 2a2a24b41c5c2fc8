//! The step loop: runs a conversation's steps until it must wait, performing
//! HTTP calls and sleeps through the engine's transport and clock.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

use super::{Engine, EngineInner, ReplyMode, emit_failed};
use crate::conversation::{Assignment, Conversation, Cursor, Status};
use crate::error::RunError;
use crate::event::{Event, EventSink};
use crate::flow::{CompiledApi, CompiledKind, CompiledStep};
use crate::http::{Header, HttpError, HttpRequest, HttpResponse, Method, sse};
use crate::projection::{parse_projected, project};
use crate::template::{RenderError, Root, Scope, Secrets, Segment, lookup};

/// Template values of one conversation: its own results and contact
/// attributes, and the engine's host values and secrets.
pub(crate) struct ConversationScope<'a> {
    pub(crate) engine: &'a EngineInner,
    pub(crate) conversation: &'a Conversation,
}

impl Scope for ConversationScope<'_> {
    fn resolve(&self, path: &crate::template::Path) -> Option<Cow<'_, Value>> {
        match &path.root {
            Root::Step(name) => {
                lookup(self.conversation.steps.get(name.as_str())?, &path.segments).map(Cow::Borrowed)
            }
            Root::Contact => keyed(&self.conversation.contact, path),
            Root::Conversation => Some(Cow::Owned(Value::String(self.conversation.id.clone()))),
            Root::Var | Root::Secret => resolve_host(&self.engine.vars, &self.engine.secrets, path),
        }
    }
}

/// The engine's host values and secrets alone: what a template that reads
/// nothing of a conversation renders from, once, when the engine is built.
pub(crate) struct HostScope<'a> {
    pub(crate) vars: &'a BTreeMap<String, Value>,
    pub(crate) secrets: &'a BTreeMap<String, super::Secret>,
}

impl Scope for HostScope<'_> {
    fn resolve(&self, path: &crate::template::Path) -> Option<Cow<'_, Value>> {
        resolve_host(self.vars, self.secrets, path)
    }
}

/// A `var.*` or `secret.*` path's value, borrowed; `None` for other roots.
fn resolve_host<'a>(
    vars: &'a BTreeMap<String, Value>,
    secrets: &'a BTreeMap<String, super::Secret>,
    path: &crate::template::Path,
) -> Option<Cow<'a, Value>> {
    match &path.root {
        Root::Var => keyed(vars, path),
        Root::Secret => {
            let secret = secrets.get(&path.segments.first()?.key)?;
            Some(Cow::Borrowed(secret.value()))
        }
        Root::Step(_) | Root::Contact | Root::Conversation => None,
    }
}

/// Whether a template renders the same for every conversation of an engine:
/// it reads only host values and secrets, which are fixed when the engine is
/// built.
fn host_only(template: &crate::template::Template) -> bool {
    template
        .paths()
        .all(|path| matches!(path.root, Root::Var | Root::Secret))
}

/// The headers of each step's requests, rendered once when the engine is
/// built, for the Api steps whose headers read only host values and
/// secrets (indexed like the program's steps; `None` for the others, and
/// for a header that does not render: each request then renders it and
/// reports the error as usual).
pub(crate) fn constant_headers(
    steps: &[CompiledStep],
    vars: &BTreeMap<String, Value>,
    secrets: &BTreeMap<String, super::Secret>,
) -> Vec<Option<Vec<Header>>> {
    let scope = HostScope { vars, secrets };
    steps
        .iter()
        .map(|step| {
            let CompiledKind::Api(api) = &step.kind else {
                return None;
            };
            if !api.headers.iter().all(|(_, template)| host_only(template)) {
                return None;
            }
            let mut headers = Vec::with_capacity(api.headers.len() + 1);
            for (name, template) in &api.headers {
                headers.push(Header {
                    name: name.clone(),
                    value: template.render_header(&scope).ok()?.into(),
                    sensitive: template.uses_secret(),
                });
            }
            if api.body.is_some() {
                add_content_type(&mut headers);
            }
            Some(headers)
        })
        .collect()
}

/// A JSON body's `Content-Type`, unless the flow set one.
fn add_content_type(headers: &mut Vec<Header>) {
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

/// Looks up `path` in a map keyed by its first segment.
fn keyed<'a>(map: &'a BTreeMap<String, Value>, path: &crate::template::Path) -> Option<Cow<'a, Value>> {
    let (first, rest) = path.segments.split_first()?;
    lookup(map.get(&first.key)?, rest).map(Cow::Borrowed)
}

/// What running one step asks of the loop.
enum Next {
    /// Go on with the next step.
    Continue,
    /// Run this Api call, then go on.
    Call,
}

impl Engine {
    pub(crate) async fn drive(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
        inbox: Option<&mut UnboundedReceiver<String>>,
        park_at_delay: bool,
    ) -> Result<Status, RunError> {
        let span =
            tracing::debug_span!("conversation", id = %conversation.id, flow = %self.inner.flow.name());
        self.drive_in_span(conversation, events, inbox, park_at_delay)
            .instrument(span)
            .await
    }

    async fn drive_in_span(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
        mut inbox: Option<&mut UnboundedReceiver<String>>,
        park_at_delay: bool,
    ) -> Result<Status, RunError> {
        self.adopt(conversation, events)?;
        loop {
            if let Some(rx) = inbox.as_deref_mut() {
                while let Ok(text) = rx.try_recv() {
                    conversation.inbox.push_back(text);
                }
            }
            match self.advance_once(conversation, events).await? {
                None => {}
                Some(Status::AwaitingReply) if inbox.is_some() => {
                    match inbox.as_deref_mut().map(|rx| rx.recv()) {
                        Some(next) => match next.await {
                            Some(text) => conversation.inbox.push_back(text),
                            None => return Ok(Status::AwaitingReply),
                        },
                        None => return Ok(Status::AwaitingReply),
                    }
                }
                Some(Status::Sleeping { until }) if !park_at_delay => {
                    self.inner.clock.sleep_until(until).await;
                }
                Some(status) => return Ok(status),
            }
        }
    }

    /// One transition: applies a queued reply, ends a Delay that is over, or
    /// runs one step. `None` when it made progress; the status when the
    /// conversation must wait (for the user, for time) or has ended.
    pub(crate) async fn advance_once(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
    ) -> Result<Option<Status>, RunError> {
        match &conversation.status {
            Status::Finished | Status::HandedOff { .. } | Status::Failed { .. } => {
                Ok(Some(conversation.status.clone()))
            }
            Status::AwaitingReply => match self.take_reply(conversation) {
                Some(reply) => {
                    self.answer(conversation, reply, events);
                    Ok(None)
                }
                None => Ok(Some(Status::AwaitingReply)),
            },
            Status::Sleeping { until } => {
                if self.inner.clock.now() < *until {
                    return Ok(Some(conversation.status.clone()));
                }
                let next = self.current(conversation).and_then(|s| s.next);
                self.go_to(conversation, next, events);
                Ok(None)
            }
            Status::Running => match self.run_step(conversation, events).await {
                Ok(()) => Ok(None),
                Err(error) => {
                    self.fail(conversation, events, &error);
                    Err(error)
                }
            },
        }
    }

    /// The method of the Api call the conversation makes next, if that is
    /// what it does next.
    pub(crate) fn api_call_next(&self, conversation: &Conversation) -> Option<Method> {
        if conversation.status != Status::Running {
            return None;
        }
        match &self.current(conversation)?.kind {
            CompiledKind::Api(api) => Some(api.method),
            _ => None,
        }
    }

    /// Makes a loaded conversation this engine's: checks its flow and, after
    /// a flow edit, finds its step again by name; fails it when it cannot.
    pub(crate) fn adopt(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
    ) -> Result<(), RunError> {
        self.check_flow(conversation)
            .inspect_err(|e| self.fail(conversation, events, e))
    }

    /// Makes sure the conversation belongs to this flow; after a flow edit,
    /// finds its step again by name.
    fn check_flow(&self, conversation: &mut Conversation) -> Result<(), RunError> {
        let flow = &self.inner.flow;
        if conversation.flow.name != flow.name() {
            return Err(RunError::WrongFlow {
                expected: flow.name().to_string(),
                found: conversation.flow.name.clone(),
            });
        }
        if conversation.flow.hash == flow.hash() {
            return Ok(());
        }
        if let Some(cursor) = &mut conversation.cursor {
            let index = flow
                .program()
                .index_of(&cursor.name)
                .ok_or_else(|| RunError::StepGone {
                    flow: flow.name().to_string(),
                    step: cursor.name.to_string(),
                })?;
            tracing::info!(step = %cursor.name, "flow changed; continuing at the same step");
            cursor.index = index;
        }
        conversation.flow.hash = flow.hash().to_string();
        Ok(())
    }

    fn fail(&self, conversation: &mut Conversation, events: &dyn EventSink, error: &RunError) {
        let message = self.inner.redact(&error.to_string());
        tracing::warn!(error = %message, "conversation failed");
        emit_failed(events, conversation, &message);
        conversation.status = Status::Failed { error: message };
    }

    fn current(&self, conversation: &Conversation) -> Option<&CompiledStep> {
        let cursor = conversation.cursor.as_ref()?;
        self.inner.flow.program().steps.get(cursor.index)
    }

    /// The reply for the waiting Question. Joined replies stay within
    /// `max_reply_bytes`: what does not fit waits for the next Question.
    fn take_reply(&self, conversation: &mut Conversation) -> Option<String> {
        let mut reply = conversation.inbox.pop_front()?;
        if self.inner.options.reply_mode == ReplyMode::Join {
            let limit = self.inner.options.max_reply_bytes;
            while let Some(next) = conversation.inbox.front() {
                if reply.len() + 1 + next.len() > limit {
                    break;
                }
                reply.push('\n');
                reply.push_str(next);
                conversation.inbox.pop_front();
            }
        }
        Some(reply)
    }

    /// The user answered the Question the conversation waits at.
    fn answer(&self, conversation: &mut Conversation, reply: String, events: &dyn EventSink) {
        let Some(step) = self.current(conversation) else {
            return;
        };
        conversation
            .steps
            .insert(step.name.clone(), Arc::new(json!({ "response": reply })));
        conversation.steps_since_reply = 0;
        conversation.visits.clear();
        let next = step.next;
        self.go_to(conversation, next, events);
    }

    /// Moves to step `target`, or ends the conversation when there is none.
    fn go_to(&self, conversation: &mut Conversation, target: Option<usize>, events: &dyn EventSink) {
        match target.and_then(|i| Some((i, self.inner.flow.program().steps.get(i)?))) {
            Some((index, step)) => {
                conversation.cursor = Some(Cursor {
                    index,
                    name: step.name.clone(),
                });
                conversation.status = Status::Running;
            }
            None => {
                conversation.cursor = None;
                conversation.status = Status::Finished;
                tracing::debug!("flow finished");
                events.emit(Event::Finished {
                    conversation_id: conversation.id.clone(),
                });
            }
        }
    }

    async fn run_step(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
    ) -> Result<(), RunError> {
        let Some(step) = self.current(conversation) else {
            self.go_to(conversation, None, events);
            return Ok(());
        };
        let limit = self.inner.options.max_steps_without_reply;
        if conversation.steps_since_reply >= limit {
            return Err(RunError::StepLimit {
                step: step.name.to_string(),
                limit,
            });
        }
        conversation.steps_since_reply += 1;
        self.inner
            .steps_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = tracing::debug_span!("step", step = %step.name, kind = step.kind.type_name());
        // Entered only for the synchronous part; the call carries the span across awaits.
        let next = span.in_scope(|| self.local_step(step, conversation, events))?;
        match next {
            Next::Continue => Ok(()),
            Next::Call => {
                let CompiledKind::Api(api) = &step.kind else {
                    return Ok(());
                };
                self.call(step, api, conversation, events).instrument(span).await
            }
        }
    }

    /// Runs every kind of step that needs no I/O.
    fn local_step(
        &self,
        step: &CompiledStep,
        conversation: &mut Conversation,
        events: &dyn EventSink,
    ) -> Result<Next, RunError> {
        let inner = &*self.inner;
        let scope = ConversationScope {
            engine: inner,
            conversation,
        };
        match &step.kind {
            CompiledKind::Question { text } => {
                let text = text.render(&scope, Secrets::Reveal);
                self.send(conversation, step, text, true, events);
                conversation.status = Status::AwaitingReply;
            }
            CompiledKind::Message { text } => {
                let text = text.render(&scope, Secrets::Reveal);
                self.send(conversation, step, text, false, events);
                self.go_to(conversation, step.next, events);
            }
            CompiledKind::ContactUpdate { set } => {
                // Every value is computed from the state before the step;
                // a few are held on the stack rather than in a vector.
                let mut inline: [Value; 8] = Default::default();
                let mut spilled = Vec::new();
                let values: &mut [Value] = match inline.get_mut(..set.len()) {
                    Some(values) => values,
                    None => {
                        spilled.resize(set.len(), Value::Null);
                        &mut spilled
                    }
                };
                for (value, (_, template)) in values.iter_mut().zip(set) {
                    *value = template.render(&scope);
                }
                for ((key, _), value) in set.iter().zip(values) {
                    let value = std::mem::take(value);
                    // An attribute set before keeps its key.
                    match conversation.contact.get_mut(key) {
                        Some(slot) => *slot = value,
                        None => {
                            conversation.contact.insert(key.clone(), value);
                        }
                    }
                }
                self.go_to(conversation, step.next, events);
            }
            CompiledKind::Condition {
                any,
                rules,
                then,
                otherwise,
            } => {
                let holds = if *any {
                    rules.iter().any(|r| r.evaluate(&scope))
                } else {
                    rules.iter().all(|r| r.evaluate(&scope))
                };
                tracing::debug!(step = %step.name, holds, "condition");
                let target = if holds { then } else { otherwise };
                self.go_to(conversation, target.or(step.next), events);
            }
            CompiledKind::Delay { durations } => {
                let duration = if durations.len() == 1 {
                    durations[0]
                } else {
                    let visits = conversation.visits.entry(step.name.clone()).or_insert(0);
                    *visits = visits.saturating_add(1);
                    let nth = (*visits as usize).saturating_sub(1).min(durations.len() - 1);
                    durations[nth]
                };
                let until = inner.clock.now() + duration;
                conversation.status = Status::Sleeping { until };
            }
            CompiledKind::GoTo {
                target,
                max_visits,
                fallback,
            } => {
                let visits = conversation.visits.entry(step.name.clone()).or_insert(0);
                *visits = visits.saturating_add(1);
                let spent = max_visits.is_some_and(|max| *visits > max);
                let target = if spent { *fallback } else { Some(*target) };
                if spent {
                    tracing::info!(step = %step.name, "GoTo bound reached; taking the fallback");
                }
                self.go_to(conversation, target, events);
            }
            CompiledKind::Assign { team, agent, note } => {
                let render = |t: &Option<crate::template::Template>| {
                    t.as_ref().map(|t| t.render(&scope, Secrets::Mask))
                };
                let assignment = Assignment {
                    step: step.name.to_string(),
                    team: render(team),
                    agent: render(agent),
                    note: render(note),
                };
                tracing::info!(step = %step.name, "handed off");
                events.emit(Event::Handoff {
                    conversation_id: conversation.id.clone(),
                    assignment: assignment.clone(),
                    contact: BTreeMap::clone(&conversation.contact),
                });
                conversation.cursor = None;
                conversation.status = Status::HandedOff { assignment };
            }
            CompiledKind::Api(_) => return Ok(Next::Call),
        }
        Ok(Next::Continue)
    }

    fn send(
        &self,
        conversation: &Conversation,
        step: &CompiledStep,
        text: String,
        question: bool,
        events: &dyn EventSink,
    ) {
        events.emit(Event::Message {
            conversation_id: conversation.id.clone(),
            step: step.name.to_string(),
            text,
            question,
        });
    }

    /// Runs an Api step: request, retries, result, and where to go next.
    async fn call(
        &self,
        step: &CompiledStep,
        api: &CompiledApi,
        conversation: &mut Conversation,
        events: &dyn EventSink,
    ) -> Result<(), RunError> {
        let inner = &*self.inner;
        let step_index = conversation.cursor.as_ref().map_or(0, |c| c.index);
        let request = self.build_request(step_index, step, api, conversation)?;
        let policy = inner.options.retry.with(&api.retry);
        let started = inner.clock.now();
        let mut attempt = 1;
        let outcome = loop {
            let outcome = inner.http.send(&request).await;
            tracing::debug!(
                step = %step.name,
                method = %request.method,
                url = %request.display_url,
                attempt,
                status = outcome.as_ref().map(|r| r.status).ok(),
                "api call"
            );
            if attempt < policy.max_attempts && policy.is_retryable(request.method, &outcome) {
                let now = inner.clock.now();
                let wait = policy.delay(attempt, outcome.as_ref().ok(), now);
                let elapsed = now.duration_since(started).unwrap_or_default();
                if elapsed + wait <= policy.max_elapsed {
                    tracing::info!(step = %step.name, attempt, ?wait, "retrying api call");
                    inner.clock.sleep_until(now + wait).await;
                    attempt += 1;
                    continue;
                }
            }
            break outcome;
        };
        // A streamed answer keeps the event it waited for; a failed stream
        // is a failed call (on_error applies), never retried.
        let outcome = outcome.and_then(|response| {
            let body = streamed_body(api, &response).map_err(HttpError::EventStream)?;
            Ok((response, body))
        });
        match outcome {
            Ok((response, body)) if response.is_success() => {
                let value = self.kept_response(step_index, &response, body, None);
                conversation.steps.insert(step.name.clone(), Arc::new(value));
                self.go_to(conversation, step.next, events);
                Ok(())
            }
            Ok((response, _)) => {
                let detail = error_detail(inner, &response);
                let message = match &detail {
                    Some(detail) => format!("{} answered {}: {detail}", request.method, response.status),
                    None => format!("{} answered {}", request.method, response.status),
                };
                let error = json!({"kind": "status", "message": message, "status": response.status});
                conversation.steps.insert(
                    step.name.clone(),
                    Arc::new(self.kept_response(step_index, &response, None, Some(error))),
                );
                if let Some(target) = api.on_error {
                    self.go_to(conversation, Some(target), events);
                    return Ok(());
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
                let message = inner.redact(&error.to_string());
                conversation.steps.insert(
                    step.name.clone(),
                    Arc::new(json!({"status": null, "error": {"kind": error.kind(), "message": message}})),
                );
                if let Some(target) = api.on_error {
                    self.go_to(conversation, Some(target), events);
                    return Ok(());
                }
                Err(RunError::Transport {
                    step: step.name.to_string(),
                    method: request.method,
                    url: request.display_url,
                    attempts: attempt,
                    source: redact_http_error(inner, error),
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
        &self,
        step_index: usize,
        response: &HttpResponse,
        streamed: Option<Value>,
        error: Option<Value>,
    ) -> Value {
        let inner = &*self.inner;
        let paths = match inner.flow.program().retained.get(step_index) {
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
            let headers = response_headers(inner, response);
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
        inner.redact_value(&mut value);
        value
    }

    fn build_request(
        &self,
        step_index: usize,
        step: &CompiledStep,
        api: &CompiledApi,
        conversation: &Conversation,
    ) -> Result<HttpRequest, RunError> {
        let inner = &*self.inner;
        let scope = ConversationScope {
            engine: inner,
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
        let headers = match inner.constant_headers.get(step_index) {
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
        Ok(HttpRequest {
            method: api.method,
            url,
            display_url,
            headers,
            body,
            timeout: api.timeout.unwrap_or(inner.options.api_timeout),
            max_response_bytes: api.max_response_bytes.unwrap_or(inner.options.max_response_bytes),
            stream_until: api.stream_until.clone(),
            step: Some(step.name.clone()),
        })
    }
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
fn response_headers(inner: &EngineInner, response: &HttpResponse) -> Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &response.headers {
        let value = inner.redact(value);
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
fn error_detail(inner: &EngineInner, response: &HttpResponse) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<Value>(&response.body) {
        let message = value
            .pointer("/error/message")
            .or_else(|| value.pointer("/message"))
            .or_else(|| value.get("error").filter(|e| e.is_string()))?;
        return message.as_str().map(|m| truncate(&inner.redact(m), 300));
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
    (!text.is_empty()).then(|| truncate(&inner.redact(text), 300))
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn redact_http_error(inner: &EngineInner, error: HttpError) -> HttpError {
    match error {
        HttpError::Connect(m) => HttpError::Connect(inner.redact(&m)),
        HttpError::InvalidRequest(m) => HttpError::InvalidRequest(inner.redact(&m)),
        HttpError::Transport(m) => HttpError::Transport(inner.redact(&m)),
        HttpError::EventStream(m) => HttpError::EventStream(inner.redact(&m)),
        other => other,
    }
}

impl EngineInner {
    /// `text` with every secret value replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.redact_cow(Cow::Borrowed(text)).into_owned()
    }

    /// Redacts every string (and key) inside a JSON value.
    pub(crate) fn redact_value(&self, value: &mut Value) {
        if self.secret_forms.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(redacted) = self.redact_cow(Cow::Borrowed(s.as_str())) {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                if map
                    .keys()
                    .any(|k| matches!(self.redact_cow(Cow::Borrowed(k)), Cow::Owned(_)))
                {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(k, v)| (self.redact(&k), v))
                        .collect();
                }
                map.values_mut().for_each(|v| self.redact_value(v));
            }
            // A numeric secret (a PIN, an account number) echoed as a number.
            Value::Number(n) if self.secret_forms.numeric() => {
                let text = n.to_string();
                if let Cow::Owned(redacted) = self.redact_cow(Cow::Borrowed(&text)) {
                    *value = Value::String(redacted);
                }
            }
            _ => {}
        }
    }

    /// Like [`EngineInner::redact`], copying only when a secret is present.
    /// Catches secrets as sent in a URL (percent-encoded) too.
    pub(crate) fn redact_cow<'a>(&self, mut text: Cow<'a, str>) -> Cow<'a, str> {
        if self.secret_forms.too_short(&text) {
            return text;
        }
        for (form, finder) in self.secret_forms.iter() {
            if finder.find(text.as_bytes()).is_some() {
                text = Cow::Owned(text.replace(form, "***"));
            }
        }
        text
    }
}
