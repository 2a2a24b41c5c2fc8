//! The Assistants API v2: threads, messages and runs.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::error::ApiError;
use super::json::{
    self, ListParams, Object, body_object, invalid_value, list_body, metadata, missing, now, opt_array,
    opt_bool, opt_int_min, opt_number, opt_object, opt_str, reject_unknown, req_str,
};
use super::reply::{Reply, ReplyInput, call_reply};
use super::state::{Answer, Completion, State};

/// The model runs report when the request names none (the assistant's model).
const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// A run expires this long after creation if it never finishes (as the service).
const RUN_EXPIRY_SECS: u64 = 600;

/// The properties `POST /threads/{id}/runs` accepts (`additionalProperties: false`).
const RUN_KEYS: &[&str] = &[
    "assistant_id",
    "model",
    "reasoning_effort",
    "instructions",
    "additional_instructions",
    "additional_messages",
    "tools",
    "metadata",
    "temperature",
    "top_p",
    "stream",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];

pub(crate) struct Thread {
    id: String,
    created_at: u64,
    metadata: Object,
    tool_resources: Value,
    messages: Vec<Message>,
    runs: HashMap<String, Run>,
    /// The queued, in-progress or cancelling run that makes the thread busy.
    active_run: Option<String>,
}

struct Message {
    id: String,
    created_at: u64,
    role: String,
    /// Content parts in the response shape (`{"type": "text", "text": {"value", "annotations"}}`).
    content: Vec<Value>,
    status: &'static str,
    completed_at: Option<u64>,
    run_id: Option<String>,
    assistant_id: Option<String>,
    attachments: Value,
    metadata: Object,
}

/// A validated `CreateMessageRequest`.
struct NewMessage {
    role: String,
    content: Vec<Value>,
    attachments: Value,
    metadata: Object,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunStatus {
    Queued,
    InProgress,
    Cancelling,
    Completed,
    Failed,
    Cancelled,
    Expired,
    Incomplete,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::InProgress => "in_progress",
            RunStatus::Cancelling => "cancelling",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Expired => "expired",
            RunStatus::Incomplete => "incomplete",
        }
    }
}

struct Run {
    id: String,
    thread_id: String,
    assistant_id: String,
    created_at: u64,
    status: RunStatus,
    model: String,
    instructions: String,
    tools: Value,
    metadata: Object,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_prompt_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    truncation_strategy: Value,
    tool_choice: Value,
    response_format: Value,
    parallel_tool_calls: bool,
    /// Decided at creation by the reply function, applied at the final poll.
    outcome: Reply,
    polls: u32,
    /// When it was created, on the mock's clock (for a run duration).
    started: SystemTime,
    cancel_requested: bool,
    /// The empty assistant message the run fills in.
    placeholder: String,
    prompt_tokens: u64,
    started_at: Option<u64>,
    completed_at: Option<u64>,
    failed_at: Option<u64>,
    cancelled_at: Option<u64>,
    expires_at: Option<u64>,
    last_error: Option<(String, String)>,
    incomplete_reason: Option<&'static str>,
    completion_tokens: Option<u64>,
}

impl Message {
    fn new(id: String, new: NewMessage) -> Self {
        Message {
            id,
            created_at: now(),
            role: new.role,
            content: new.content,
            status: "completed",
            completed_at: None,
            run_id: None,
            assistant_id: None,
            attachments: new.attachments,
            metadata: new.metadata,
        }
    }

    /// The text parts joined by newlines (images contribute nothing).
    fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| part.pointer("/text/value").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn to_json(&self, thread_id: &str) -> Value {
        json!({
            "id": self.id,
            "object": "thread.message",
            "created_at": self.created_at,
            "thread_id": thread_id,
            "status": self.status,
            "incomplete_details": null,
            "completed_at": self.completed_at,
            "incomplete_at": null,
            "role": self.role,
            "content": self.content,
            "assistant_id": self.assistant_id,
            "run_id": self.run_id,
            "attachments": self.attachments,
            "metadata": self.metadata,
        })
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": {"value": text, "annotations": []}})
}

impl Thread {
    /// `(role, text)` of every message, oldest first.
    pub fn history(&self) -> Vec<(String, String)> {
        self.messages.iter().map(|m| (m.role.clone(), m.text())).collect()
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "thread",
            "created_at": self.created_at,
            "metadata": self.metadata,
            "tool_resources": self.tool_resources,
        })
    }

    fn active_run_id(&self) -> Option<&str> {
        self.active_run.as_deref()
    }

    /// One observation of the thread: advances its active run, if any.
    fn poll(&mut self, completion: &Completion) {
        let Some(run_id) = self.active_run.clone() else {
            return;
        };
        let Some(run) = self.runs.get_mut(&run_id) else {
            self.active_run = None;
            return;
        };
        run.polls = run.polls.saturating_add(1);
        run.started_at.get_or_insert_with(now);
        if !run.cancel_requested && !completion.due(run.polls, run.started) {
            run.status = RunStatus::InProgress;
            return;
        }
        self.settle();
    }

    /// Gives the active run its final state (the decided outcome, or
    /// `cancelled` when a cancel was asked for) and frees the thread.
    fn settle(&mut self) {
        let Some(run_id) = self.active_run.take() else {
            return;
        };
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        let now = now();
        run.started_at.get_or_insert(now);
        let outcome = if run.cancel_requested {
            Reply::Cancel
        } else {
            run.outcome.clone()
        };
        run.expires_at = None;
        let keep_placeholder = match outcome {
            Reply::Text(text) => {
                run.status = RunStatus::Completed;
                run.completed_at = Some(now);
                run.completion_tokens = Some(json::tokens(&text));
                if let Some(message) = self.messages.iter_mut().find(|m| m.id == run.placeholder) {
                    message.content = vec![text_part(&text)];
                    message.status = "completed";
                    message.completed_at = Some(now);
                }
                true
            }
            Reply::Fail { code, message } => {
                run.status = RunStatus::Failed;
                run.failed_at = Some(now);
                run.last_error = Some((code, message));
                false
            }
            Reply::Expire => {
                run.status = RunStatus::Expired;
                false
            }
            Reply::Cancel => {
                run.status = RunStatus::Cancelled;
                run.cancelled_at = Some(now);
                false
            }
            Reply::Incomplete => {
                run.status = RunStatus::Incomplete;
                run.incomplete_reason = Some("max_completion_tokens");
                false
            }
        };
        if !keep_placeholder {
            let placeholder = run.placeholder.clone();
            self.messages.retain(|m| m.id != placeholder);
        }
    }

    /// The run as its stream tells it: created, queued, in progress, the
    /// answer message (created, in progress, deltas, completed) inside a
    /// message-creation step, then the final state and `done`. Settles the run.
    fn stream_run(&mut self, run_id: &str, step_id: String) -> Vec<(String, String)> {
        let mut events = Vec::new();
        let Some(run) = self.runs.get_mut(run_id) else {
            return events;
        };
        let queued = run.to_json();
        events.push(Answer::event("thread.run.created", &queued));
        events.push(Answer::event("thread.run.queued", &queued));
        run.status = RunStatus::InProgress;
        run.started_at = Some(now());
        events.push(Answer::event("thread.run.in_progress", &run.to_json()));
        let answer = match &run.outcome {
            Reply::Text(text) => Some(text.clone()),
            _ => None,
        };
        let placeholder = run.placeholder.clone();
        let step = |status: &str, completed_at: Option<u64>, usage: Value| {
            json!({
                "id": step_id, "object": "thread.run.step", "created_at": run.created_at,
                "run_id": run.id, "assistant_id": run.assistant_id, "thread_id": run.thread_id,
                "type": "message_creation", "status": status, "cancelled_at": null,
                "completed_at": completed_at, "expires_at": null, "failed_at": null, "last_error": null,
                "step_details": {"type": "message_creation", "message_creation": {"message_id": placeholder}},
                "usage": usage,
            })
        };
        let step_created = step("in_progress", None, Value::Null);
        if let Some(text) = &answer
            && let Some(message) = self.messages.iter().find(|m| m.id == placeholder)
        {
            events.push(Answer::event("thread.run.step.created", &step_created));
            events.push(Answer::event("thread.run.step.in_progress", &step_created));
            let created = message.to_json(&self.id);
            events.push(Answer::event("thread.message.created", &created));
            events.push(Answer::event("thread.message.in_progress", &created));
            for (i, piece) in pieces(text).into_iter().enumerate() {
                let mut part = json!({"index": 0, "type": "text", "text": {"value": piece}});
                if i == 0 {
                    part["text"]["annotations"] = json!([]);
                }
                let delta = json!({"id": placeholder, "object": "thread.message.delta", "delta": {"content": [part]}});
                events.push(Answer::event("thread.message.delta", &delta));
            }
        }
        self.settle();
        let Some(run) = self.runs.get(run_id) else {
            return events;
        };
        if answer.is_some()
            && let Some(message) = self.messages.iter().find(|m| m.id == placeholder)
        {
            events.push(Answer::event(
                "thread.message.completed",
                &message.to_json(&self.id),
            ));
            let mut step = step_created;
            step["status"] = json!("completed");
            step["completed_at"] = json!(run.completed_at);
            step["usage"] = run.to_json()["usage"].clone();
            events.push(Answer::event("thread.run.step.completed", &step));
        }
        let last = format!("thread.run.{}", run.status.as_str());
        events.push(Answer::event(&last, &run.to_json()));
        events.push(("done".to_owned(), "[DONE]".to_owned()));
        events
    }
}

/// A text cut into the pieces a stream delivers it in: words with their spaces.
pub(crate) fn pieces(text: &str) -> Vec<&str> {
    let mut out: Vec<&str> = text.split_inclusive(' ').collect();
    if out.is_empty() {
        out.push("");
    }
    out
}

impl Run {
    fn to_json(&self) -> Value {
        let usage = self.completion_tokens.map(|completion| {
            json!({
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": self.prompt_tokens.saturating_add(completion),
            })
        });
        let last_error = self
            .last_error
            .as_ref()
            .map(|(code, message)| json!({"code": code, "message": message}));
        let incomplete_details = self.incomplete_reason.map(|reason| json!({"reason": reason}));
        json!({
            "id": self.id,
            "object": "thread.run",
            "created_at": self.created_at,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "status": self.status.as_str(),
            "required_action": null,
            "last_error": last_error,
            "expires_at": self.expires_at,
            "started_at": self.started_at,
            "cancelled_at": self.cancelled_at,
            "failed_at": self.failed_at,
            "completed_at": self.completed_at,
            "incomplete_details": incomplete_details,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "metadata": self.metadata,
            "usage": usage,
            "temperature": self.temperature.unwrap_or(1.0),
            "top_p": self.top_p.unwrap_or(1.0),
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "truncation_strategy": self.truncation_strategy,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": self.response_format,
        })
    }
}

fn no_thread(thread_id: &str) -> ApiError {
    ApiError::not_found(format!("No thread found with id '{thread_id}'."))
}

fn no_run(run_id: &str) -> ApiError {
    ApiError::not_found(format!("No run found with id '{run_id}'."))
}

/// Validates a `CreateMessageRequest` found at `prefix` (`""` for a whole body).
fn parse_message(value: &Value, prefix: &str) -> Result<NewMessage, ApiError> {
    let Value::Object(obj) = value else {
        return Err(json::invalid_type(prefix, "an object", value));
    };
    reject_unknown(obj, &["role", "content", "attachments", "metadata"], prefix)?;
    let role_param = json::param(prefix, "role");
    let role = req_str(obj, "role", prefix)?;
    if role != "user" && role != "assistant" {
        return Err(invalid_value(&role_param, &role, &["user", "assistant"]));
    }
    let content_param = json::param(prefix, "content");
    let content = match obj.get("content") {
        None | Some(Value::Null) => return Err(missing(&content_param)),
        Some(Value::String(text)) if text.is_empty() => {
            return Err(ApiError::invalid(
                format!(
                    "Invalid '{content_param}': string too short. Expected a string with minimum length 1, but got an empty string instead."
                ),
                Some(&content_param),
                Some("string_below_min_length"),
            ));
        }
        Some(Value::String(text)) => vec![text_part(text)],
        Some(Value::Array(parts)) if parts.is_empty() => {
            return Err(ApiError::invalid(
                format!(
                    "Invalid '{content_param}': empty array. Expected an array with minimum length 1, but got an empty array instead."
                ),
                Some(&content_param),
                Some("empty_array"),
            ));
        }
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| parse_content_part(part, &format!("{content_param}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(json::invalid_type(&content_param, "a string or an array", other));
        }
    };
    let attachments = match opt_array(obj, "attachments", prefix)? {
        Some(items) => Value::Array(items.clone()),
        None => Value::Array(Vec::new()),
    };
    Ok(NewMessage {
        role,
        content,
        attachments,
        metadata: metadata(obj, prefix)?,
    })
}

/// One request content part, converted to the response shape.
fn parse_content_part(part: &Value, prefix: &str) -> Result<Value, ApiError> {
    let Value::Object(obj) = part else {
        return Err(json::invalid_type(prefix, "an object", part));
    };
    let kind = req_str(obj, "type", prefix)?;
    match kind.as_str() {
        "text" => Ok(text_part(&req_str(obj, "text", prefix)?)),
        "image_url" | "image_file" => {
            let Some(inner) = opt_object(obj, &kind, prefix)? else {
                return Err(missing(&json::param(prefix, &kind)));
            };
            let mut inner = inner.clone();
            inner
                .entry("detail")
                .or_insert_with(|| Value::String("auto".to_owned()));
            Ok(json!({"type": kind, kind.as_str(): inner}))
        }
        other => Err(invalid_value(
            &json::param(prefix, "type"),
            other,
            &["text", "image_url", "image_file"],
        )),
    }
}

/// `POST /threads`
pub(crate) fn create_thread(state: &mut State, body: &[u8]) -> Result<Value, ApiError> {
    let obj = body_object(body)?;
    reject_unknown(&obj, &["messages", "tool_resources", "metadata"], "")?;
    let messages = match opt_array(&obj, "messages", "")? {
        Some(items) => items
            .iter()
            .enumerate()
            .map(|(i, m)| parse_message(m, &format!("messages[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let tool_resources = opt_object(&obj, "tool_resources", "")?
        .map(|o| Value::Object(o.clone()))
        .unwrap_or_else(|| json!({}));
    let metadata = metadata(&obj, "")?;
    let id = state.ids.next("thread");
    let messages = messages
        .into_iter()
        .map(|m| Message::new(state.ids.next("msg"), m))
        .collect();
    let thread = Thread {
        id: id.clone(),
        created_at: now(),
        metadata,
        tool_resources,
        messages,
        runs: HashMap::new(),
        active_run: None,
    };
    let body = thread.to_json();
    state.threads.insert(id, thread);
    Ok(body)
}

/// `POST /threads/{thread_id}/messages`
pub(crate) fn create_message(state: &mut State, thread_id: &str, body: &[u8]) -> Result<Value, ApiError> {
    let obj = body_object(body)?;
    let new = parse_message(&Value::Object(obj), "")?;
    let thread = state
        .threads
        .get_mut(thread_id)
        .ok_or_else(|| no_thread(thread_id))?;
    if let Some(run_id) = thread.active_run_id() {
        return Err(ApiError::invalid(
            format!("Can't add messages to {thread_id} while a run {run_id} is active."),
            None,
            None,
        ));
    }
    let message = Message::new(state.ids.next("msg"), new);
    let body = message.to_json(&thread.id);
    thread.messages.push(message);
    Ok(body)
}

/// `GET /threads/{thread_id}/messages` (one poll of the thread's active run).
pub(crate) fn list_messages(
    state: &mut State,
    thread_id: &str,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let params = ListParams::parse(query)?;
    let completion = state.config.completion();
    let thread = state
        .threads
        .get_mut(thread_id)
        .ok_or_else(|| no_thread(thread_id))?;
    thread.poll(&completion);
    let selected: Vec<&Message> = thread
        .messages
        .iter()
        .filter(|m| {
            params
                .run_id
                .as_ref()
                .is_none_or(|run_id| m.run_id.as_ref() == Some(run_id))
        })
        .collect();
    let (page, has_more) = params.page(selected, |m| m.id.as_str());
    let data = page.iter().map(|m| m.to_json(&thread.id)).collect();
    Ok(list_body(data, has_more))
}

/// `POST /threads/{thread_id}/runs`: decides the outcome now, applies it at
/// the final poll; with `"stream": true`, at once, answering with the run's
/// event stream.
pub(crate) fn create_run(state: &mut State, thread_id: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let obj = body_object(body)?;
    reject_unknown(&obj, RUN_KEYS, "")?;
    let assistant_id = req_str(&obj, "assistant_id", "")?;
    let model = opt_str(&obj, "model", "")?;
    let instructions = opt_str(&obj, "instructions", "")?;
    let additional_instructions = opt_str(&obj, "additional_instructions", "")?;
    let additional_messages = match opt_array(&obj, "additional_messages", "")? {
        Some(items) => items
            .iter()
            .enumerate()
            .map(|(i, m)| parse_message(m, &format!("additional_messages[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let tools = opt_array(&obj, "tools", "")?.cloned().unwrap_or_default();
    if tools.len() > 20 {
        return Err(ApiError::invalid(
            format!(
                "Invalid 'tools': array too long. Expected an array with maximum length 20, but got an array with length {} instead.",
                tools.len()
            ),
            Some("tools"),
            Some("array_above_max_length"),
        ));
    }
    let metadata = metadata(&obj, "")?;
    let temperature = opt_number(&obj, "temperature", 0.0, 2.0)?;
    let top_p = opt_number(&obj, "top_p", 0.0, 1.0)?;
    let stream = opt_bool(&obj, "stream", "")?;
    let max_prompt_tokens = opt_int_min(&obj, "max_prompt_tokens", 256)?;
    let max_completion_tokens = opt_int_min(&obj, "max_completion_tokens", 256)?;
    let parallel_tool_calls = opt_bool(&obj, "parallel_tool_calls", "")?.unwrap_or(true);
    // Echoed as given; the mock has no use for them.
    let given = |key: &str, default: Value| match obj.get(key) {
        None | Some(Value::Null) => default,
        Some(v) => v.clone(),
    };
    let truncation_strategy = given(
        "truncation_strategy",
        json!({"type": "auto", "last_messages": null}),
    );
    let tool_choice = given("tool_choice", json!("auto"));
    let response_format = given("response_format", json!("auto"));
    let stream = stream == Some(true);
    let started = state.config.clock.now();

    let thread = state
        .threads
        .get_mut(thread_id)
        .ok_or_else(|| no_thread(thread_id))?;
    if assistant_id != state.config.assistant_id {
        return Err(ApiError::not_found(format!(
            "No assistant found with id '{assistant_id}'."
        )));
    }
    if let Some(active) = thread.active_run_id() {
        return Err(ApiError::invalid(
            format!("Thread {thread_id} already has an active run {active}."),
            None,
            None,
        ));
    }

    for new in additional_messages {
        thread.messages.push(Message::new(state.ids.next("msg"), new));
    }
    let history = thread.history();
    let joined_instructions = match (&instructions, additional_instructions) {
        (Some(base), Some(extra)) => Some(format!("{base}\n{extra}")),
        (None, Some(extra)) => Some(extra),
        (base, None) => base.clone(),
    };
    let prompt_tokens = history
        .iter()
        .map(|(_, text)| json::tokens(text))
        .chain(joined_instructions.as_deref().map(json::tokens))
        .fold(0u64, u64::saturating_add);
    let input = ReplyInput::from_history(history, joined_instructions.clone(), model.clone());
    let outcome = call_reply(&state.config.reply, &input);

    let run_id = state.ids.next("run");
    let placeholder = state.ids.next("msg");
    let created_at = now();
    thread.messages.push(Message {
        id: placeholder.clone(),
        created_at,
        role: "assistant".to_owned(),
        content: Vec::new(),
        status: "in_progress",
        completed_at: None,
        run_id: Some(run_id.clone()),
        assistant_id: Some(assistant_id.clone()),
        attachments: json!([]),
        metadata: Object::new(),
    });
    let run = Run {
        id: run_id.clone(),
        thread_id: thread.id.clone(),
        assistant_id,
        created_at,
        status: RunStatus::Queued,
        model: model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
        instructions: joined_instructions.unwrap_or_default(),
        tools: Value::Array(tools),
        metadata,
        temperature,
        top_p,
        max_prompt_tokens,
        max_completion_tokens,
        truncation_strategy,
        tool_choice,
        response_format,
        parallel_tool_calls,
        outcome,
        polls: 0,
        started,
        cancel_requested: false,
        placeholder,
        prompt_tokens,
        started_at: None,
        completed_at: None,
        failed_at: None,
        cancelled_at: None,
        expires_at: Some(created_at.saturating_add(RUN_EXPIRY_SECS)),
        last_error: None,
        incomplete_reason: None,
        completion_tokens: None,
    };
    let body = run.to_json();
    thread.runs.insert(run_id.clone(), run);
    thread.active_run = Some(run_id.clone());
    state.runs_created += 1;
    if stream {
        let step_id = state.ids.next("step");
        let thread = state
            .threads
            .get_mut(thread_id)
            .ok_or_else(|| no_thread(thread_id))?;
        return Ok(Answer::Events(thread.stream_run(&run_id, step_id)));
    }
    Ok(Answer::Json(body))
}

/// `GET /threads/{thread_id}/runs/{run_id}` (one poll if this run is the active one).
pub(crate) fn get_run(state: &mut State, thread_id: &str, run_id: &str) -> Result<Value, ApiError> {
    let completion = state.config.completion();
    let thread = state
        .threads
        .get_mut(thread_id)
        .ok_or_else(|| no_thread(thread_id))?;
    if !thread.runs.contains_key(run_id) {
        return Err(no_run(run_id));
    }
    if thread.active_run.as_deref() == Some(run_id) {
        thread.poll(&completion);
    }
    thread
        .runs
        .get(run_id)
        .map(Run::to_json)
        .ok_or_else(|| no_run(run_id))
}

/// `POST /threads/{thread_id}/runs/{run_id}/cancel`: `cancelling` now, `cancelled` at the next poll.
pub(crate) fn cancel_run(state: &mut State, thread_id: &str, run_id: &str) -> Result<Value, ApiError> {
    let thread = state
        .threads
        .get_mut(thread_id)
        .ok_or_else(|| no_thread(thread_id))?;
    let run = thread.runs.get_mut(run_id).ok_or_else(|| no_run(run_id))?;
    if !matches!(run.status, RunStatus::Queued | RunStatus::InProgress) {
        return Err(ApiError::invalid(
            format!("Cannot cancel run with status '{}'.", run.status.as_str()),
            None,
            None,
        ));
    }
    run.cancel_requested = true;
    run.status = RunStatus::Cancelling;
    Ok(run.to_json())
}
