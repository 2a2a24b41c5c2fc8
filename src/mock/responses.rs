//! The Responses and Conversations APIs (the Assistants API's successor).

use serde_json::{Value, json};

use super::error::ApiError;
use super::json::{
    self, ListParams, Object, body_object, invalid_value, list_body, metadata, missing, now, opt_array,
    opt_bool, opt_int_min, opt_number, opt_str, reject_unknown, req_str,
};
use super::reply::{Reply, ReplyInput, call_reply};
use super::state::{Answer, State};

/// The properties `POST /responses` accepts: `CreateResponse` and the schemas it extends.
const RESPONSE_KEYS: &[&str] = &[
    // ModelResponseProperties / CreateModelResponseProperties
    "metadata",
    "top_logprobs",
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    // ResponseProperties
    "previous_response_id",
    "model",
    "background",
    "max_tool_calls",
    "text",
    "tools",
    "tool_choice",
    "prompt",
    // CreateResponse
    "service_tier",
    "truncation",
    "reasoning",
    "input",
    "include",
    "parallel_tool_calls",
    "store",
    "instructions",
    "moderation",
    "stream",
    "stream_options",
    "conversation",
    "context_management",
    "max_output_tokens",
];

const ROLES: &[&str] = &["user", "assistant", "system", "developer"];

pub(crate) struct Conversation {
    id: String,
    created_at: u64,
    metadata: Object,
    items: Vec<Item>,
}

/// A message item of a conversation or of a response's output.
#[derive(Clone)]
struct Item {
    id: String,
    role: String,
    /// Parts in the response shape (`input_text` / `output_text` / images as given).
    content: Vec<Value>,
}

impl Item {
    fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn to_json(&self) -> Value {
        json!({
            "type": "message",
            "id": self.id,
            "status": "completed",
            "role": self.role,
            "content": self.content,
        })
    }
}

impl Conversation {
    /// `(role, text)` of every item, oldest first.
    pub fn history(&self) -> Vec<(String, String)> {
        self.items
            .iter()
            .map(|item| (item.role.clone(), item.text()))
            .collect()
    }
}

/// A message from `input` or `items`, before it gets an id.
struct InputMessage {
    role: String,
    content: Vec<Value>,
}

pub(crate) struct StoredResponse {
    id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    conversation: Option<String>,
    previous_response_id: Option<String>,
    metadata: Object,
    store: bool,
    background: bool,
    temperature: f64,
    top_p: f64,
    max_output_tokens: Option<i64>,
    status: &'static str,
    /// Decided at creation, applied at once or (background) at the final poll.
    outcome: Reply,
    polls: u32,
    /// When it was created, on the mock's clock (for a run duration).
    started: std::time::SystemTime,
    /// This request's input messages, with ids, appended to the conversation on completion.
    input: Vec<Item>,
    output_id: String,
    output: Vec<Item>,
    error: Option<(String, String)>,
    incomplete_reason: Option<&'static str>,
    completed_at: Option<u64>,
    /// Everything the model saw (earlier turns and this input), for `previous_response_id`.
    context: Vec<(String, String)>,
    input_tokens: u64,
}

impl StoredResponse {
    fn is_pending(&self) -> bool {
        matches!(self.status, "queued" | "in_progress")
    }

    /// Applies the outcome and, when it produced an answer, extends the conversation.
    fn finish(&mut self, conversations: &mut std::collections::HashMap<String, Conversation>) {
        let now = now();
        match self.outcome.clone() {
            Reply::Text(text) => {
                self.status = "completed";
                self.completed_at = Some(now);
                self.output = vec![Item {
                    id: self.output_id.clone(),
                    role: "assistant".to_owned(),
                    content: vec![output_text(&text)],
                }];
                // Only a completed turn joins the conversation, so a retry
                // after a failure does not leave the user's message twice.
                if let Some(conversation) = self
                    .conversation
                    .as_ref()
                    .and_then(|id| conversations.get_mut(id))
                {
                    conversation.items.extend(self.input.iter().cloned());
                    conversation.items.extend(self.output.iter().cloned());
                }
            }
            Reply::Fail { code, message } => {
                self.status = "failed";
                self.error = Some((code, message));
            }
            Reply::Incomplete => {
                self.status = "incomplete";
                self.incomplete_reason = Some("max_output_tokens");
            }
            Reply::Expire | Reply::Cancel => self.status = "cancelled",
        }
    }

    fn to_json(&self) -> Value {
        let output_tokens: u64 = self
            .output
            .iter()
            .map(|item| json::tokens(&item.text()))
            .fold(0, u64::saturating_add);
        let usage = (self.status == "completed").then(|| {
            json!({
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens.saturating_add(output_tokens),
            })
        });
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": self.background,
            "completed_at": self.completed_at,
            "error": self.error.as_ref().map(|(code, message)| json!({"code": code, "message": message})),
            "incomplete_details": self.incomplete_reason.map(|reason| json!({"reason": reason})),
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": self.output.iter().map(Item::to_json).collect::<Vec<_>>(),
            "parallel_tool_calls": true,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": null, "summary": null},
            "store": self.store,
            "temperature": self.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": self.top_p,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": self.metadata,
            "conversation": self.conversation.as_ref().map(|id| json!({"id": id})),
        })
    }
}

/// The events of a streamed response, from `response.created` to its final
/// event. The response must be settled already; the events before the last
/// show it in progress. The stream has no event for a cancelled response: it
/// ends with `response.failed`, whose response says `cancelled`.
fn stream_events(response: &StoredResponse) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let mut sequence = 0u64;
    let mut push = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        events.push(Answer::event(name, &data));
    };
    let mut in_progress = response.to_json();
    for (key, value) in [
        ("status", json!("in_progress")),
        ("completed_at", Value::Null),
        ("error", Value::Null),
        ("incomplete_details", Value::Null),
        ("output", json!([])),
        ("usage", Value::Null),
    ] {
        in_progress[key] = value;
    }
    push("response.created", json!({"response": in_progress}));
    push("response.in_progress", json!({"response": in_progress}));
    for (output_index, item) in response.output.iter().enumerate() {
        let text = item.text();
        let mut added = item.to_json();
        added["status"] = json!("in_progress");
        added["content"] = json!([]);
        push(
            "response.output_item.added",
            json!({"output_index": output_index, "item": added}),
        );
        let at = |extra: Value| {
            let mut data = json!({"item_id": item.id, "output_index": output_index, "content_index": 0});
            if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
                data.extend(extra);
            }
            data
        };
        push(
            "response.content_part.added",
            at(json!({"part": output_text("")})),
        );
        for piece in super::assistants::pieces(&text) {
            push(
                "response.output_text.delta",
                at(json!({"delta": piece, "logprobs": []})),
            );
        }
        push(
            "response.output_text.done",
            at(json!({"text": text, "logprobs": []})),
        );
        push(
            "response.content_part.done",
            at(json!({"part": output_text(&text)})),
        );
        push(
            "response.output_item.done",
            json!({"output_index": output_index, "item": item.to_json()}),
        );
    }
    let last = match response.status {
        "completed" => "response.completed",
        "incomplete" => "response.incomplete",
        _ => "response.failed",
    };
    push(last, json!({"response": response.to_json()}));
    events
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn input_text(text: &str) -> Value {
    json!({"type": "input_text", "text": text})
}

fn no_conversation(id: &str) -> ApiError {
    let mut error = ApiError::not_found(format!("Conversation with id '{id}' not found."));
    error.param = Some("conversation".to_owned());
    error
}

/// `input` (a string, or a list of messages) or a conversation's `items`.
fn parse_input(value: &Value, param: &str) -> Result<Vec<InputMessage>, ApiError> {
    match value {
        Value::String(text) => Ok(vec![InputMessage {
            role: "user".to_owned(),
            content: vec![input_text(text)],
        }]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_input_message(item, &format!("{param}[{i}]")))
            .collect(),
        other => Err(json::invalid_type(param, "a string or an array", other)),
    }
}

fn parse_input_message(value: &Value, prefix: &str) -> Result<InputMessage, ApiError> {
    let Value::Object(obj) = value else {
        return Err(json::invalid_type(prefix, "an object", value));
    };
    // Items other than messages (tool calls, item references, …) are beyond this mock.
    if let Some(kind) = opt_str(obj, "type", prefix)?
        && kind != "message"
    {
        return Err(invalid_value(&json::param(prefix, "type"), &kind, &["message"]));
    }
    let role = req_str(obj, "role", prefix)?;
    if !ROLES.contains(&role.as_str()) {
        return Err(invalid_value(&json::param(prefix, "role"), &role, ROLES));
    }
    let content_param = json::param(prefix, "content");
    let content = match obj.get("content") {
        None | Some(Value::Null) => return Err(missing(&content_param)),
        Some(Value::String(text)) if role == "assistant" => vec![output_text(text)],
        Some(Value::String(text)) => vec![input_text(text)],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| parse_input_part(part, &format!("{content_param}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(json::invalid_type(&content_param, "a string or an array", other));
        }
    };
    Ok(InputMessage { role, content })
}

fn parse_input_part(part: &Value, prefix: &str) -> Result<Value, ApiError> {
    let Value::Object(obj) = part else {
        return Err(json::invalid_type(prefix, "an object", part));
    };
    let kind = req_str(obj, "type", prefix)?;
    match kind.as_str() {
        "input_text" => Ok(input_text(&req_str(obj, "text", prefix)?)),
        "output_text" => Ok(output_text(&req_str(obj, "text", prefix)?)),
        "refusal" | "input_image" | "input_file" => Ok(part.clone()),
        other => Err(invalid_value(
            &json::param(prefix, "type"),
            other,
            &[
                "input_text",
                "output_text",
                "refusal",
                "input_image",
                "input_file",
            ],
        )),
    }
}

fn with_ids(state: &mut State, messages: Vec<InputMessage>) -> Vec<Item> {
    messages
        .into_iter()
        .map(|m| Item {
            id: state.ids.next("msg"),
            role: m.role,
            content: m.content,
        })
        .collect()
}

/// `POST /conversations`
pub(crate) fn create_conversation(state: &mut State, body: &[u8]) -> Result<Value, ApiError> {
    let obj = body_object(body)?;
    reject_unknown(&obj, &["items", "metadata"], "")?;
    let metadata = metadata(&obj, "")?;
    let items = match opt_array(&obj, "items", "")? {
        Some(items) if items.len() > 20 => {
            return Err(ApiError::invalid(
                format!(
                    "Invalid 'items': array too long. Expected an array with maximum length 20, but got an array with length {} instead.",
                    items.len()
                ),
                Some("items"),
                Some("array_above_max_length"),
            ));
        }
        Some(items) => parse_input(&Value::Array(items.clone()), "items")?,
        None => Vec::new(),
    };
    let id = state.ids.next("conv");
    let items = with_ids(state, items);
    let conversation = Conversation {
        id: id.clone(),
        created_at: now(),
        metadata,
        items,
    };
    let body = json!({
        "id": conversation.id,
        "object": "conversation",
        "created_at": conversation.created_at,
        "metadata": conversation.metadata,
    });
    state.conversations.insert(id, conversation);
    Ok(body)
}

/// `GET /conversations/{conversation_id}/items`
pub(crate) fn list_items(
    state: &mut State,
    conversation_id: &str,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let params = ListParams::parse(query)?;
    let conversation = state
        .conversations
        .get(conversation_id)
        .ok_or_else(|| no_conversation(conversation_id))?;
    let items: Vec<&Item> = conversation.items.iter().collect();
    let (page, has_more) = params.page(items, |item| item.id.as_str());
    Ok(list_body(
        page.iter().map(|item| item.to_json()).collect(),
        has_more,
    ))
}

/// `POST /responses`: synchronous, queued with `"background": true`, or
/// streamed with `"stream": true` (settled at once, answered with its events).
pub(crate) fn create_response(state: &mut State, body: &[u8]) -> Result<Answer, ApiError> {
    let obj = body_object(body)?;
    reject_unknown(&obj, RESPONSE_KEYS, "")?;
    let model = req_str(&obj, "model", "")?;
    let input = match obj.get("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => parse_input(value, "input")?,
    };
    let instructions = opt_str(&obj, "instructions", "")?;
    let conversation = match obj.get("conversation") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(inner)) => Some(req_str(inner, "id", "conversation")?),
        Some(other) => {
            return Err(json::invalid_type("conversation", "a string or an object", other));
        }
    };
    let previous_response_id = opt_str(&obj, "previous_response_id", "")?;
    let store = opt_bool(&obj, "store", "")?.unwrap_or(true);
    let background = opt_bool(&obj, "background", "")?.unwrap_or(false);
    let stream = opt_bool(&obj, "stream", "")?.unwrap_or(false);
    let metadata = metadata(&obj, "")?;
    let temperature = opt_number(&obj, "temperature", 0.0, 2.0)?;
    let top_p = opt_number(&obj, "top_p", 0.0, 1.0)?;
    let max_output_tokens = opt_int_min(&obj, "max_output_tokens", 16)?;
    if background && !store {
        return Err(ApiError::invalid(
            "Background mode requires 'store' to be true.",
            Some("background"),
            Some("invalid_value"),
        ));
    }
    if conversation.is_some() && previous_response_id.is_some() {
        return Err(ApiError::invalid(
            "Mutually exclusive parameters: Ensure you are only providing one of: \
             'previous_response_id' or 'conversation'.",
            None,
            Some("mutually_exclusive_parameters"),
        ));
    }

    // What the model sees: the earlier turns, then this input.
    let mut context = if let Some(id) = &conversation {
        state
            .conversations
            .get(id)
            .ok_or_else(|| no_conversation(id))?
            .history()
    } else if let Some(id) = &previous_response_id {
        let previous = state.responses.get(id).ok_or_else(|| {
            let mut error = ApiError::not_found(format!("Previous response with id '{id}' not found."));
            error.param = Some("previous_response_id".to_owned());
            error
        })?;
        let mut context = previous.context.clone();
        context.extend(
            previous
                .output
                .iter()
                .map(|item| (item.role.clone(), item.text())),
        );
        context
    } else {
        Vec::new()
    };
    let input = with_ids(state, input);
    context.extend(input.iter().map(|item| (item.role.clone(), item.text())));
    let input_tokens = context
        .iter()
        .map(|(_, text)| json::tokens(text))
        .chain(instructions.as_deref().map(json::tokens))
        .fold(0u64, u64::saturating_add);
    let reply_input = ReplyInput::from_history(context.clone(), instructions.clone(), Some(model.clone()));
    let outcome = call_reply(&state.config.reply, &reply_input);

    let mut response = StoredResponse {
        id: state.ids.next("resp"),
        created_at: now(),
        model,
        instructions,
        conversation,
        previous_response_id,
        metadata,
        store,
        background,
        temperature: temperature.unwrap_or(1.0),
        top_p: top_p.unwrap_or(1.0),
        max_output_tokens,
        status: "queued",
        outcome,
        polls: 0,
        started: state.config.clock.now(),
        input,
        output_id: state.ids.next("msg"),
        output: Vec::new(),
        error: None,
        incomplete_reason: None,
        completed_at: None,
        context,
        input_tokens,
    };
    if !background || stream {
        response.finish(&mut state.conversations);
    }
    state.responses_created += 1;
    let body = if stream {
        Answer::Events(stream_events(&response))
    } else {
        Answer::Json(response.to_json())
    };
    // `store: false` responses cannot be fetched again, as with the service.
    if store {
        state.responses.insert(response.id.clone(), response);
    }
    Ok(body)
}

/// `GET /responses/{response_id}` (one poll of a pending background response).
pub(crate) fn get_response(state: &mut State, id: &str) -> Result<Value, ApiError> {
    let completion = state.config.completion();
    let response = state
        .responses
        .get_mut(id)
        .ok_or_else(|| ApiError::not_found(format!("Response with id '{id}' not found.")))?;
    if response.is_pending() {
        response.polls = response.polls.saturating_add(1);
        if completion.due(response.polls, response.started) {
            response.finish(&mut state.conversations);
        } else {
            response.status = "in_progress";
        }
    }
    Ok(response.to_json())
}
