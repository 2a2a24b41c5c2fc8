//! The JSON bodies the routes read and write, and the checks on what a
//! client sends.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::Status;
use crate::runtime::Turn;
use crate::store::{Direction, TranscriptEntry};

/// `POST /chat`'s body.
#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    pub(crate) conversation_id: String,
    pub(crate) text: String,
    #[serde(default)]
    pub(crate) message_id: Option<String>,
}

/// Every error answer: `{"error": reason}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// An error answer with this status and reason.
pub(crate) fn error(status: StatusCode, reason: impl AsRef<str>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: reason.as_ref(),
        }),
    )
        .into_response()
}

/// 401, with the `WWW-Authenticate` header that names the scheme.
pub(crate) fn unauthorized() -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Conversation ids are path segments and log fields: keep them plain.
pub(crate) fn check_conversation_id(id: &str, max_bytes: usize) -> Result<(), String> {
    if id.is_empty() {
        return Err("conversation_id is empty".into());
    }
    if id.len() > max_bytes {
        return Err(format!("conversation_id is longer than {max_bytes} bytes"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
    {
        return Err("conversation_id may only hold letters, digits and . _ : @ -".into());
    }
    Ok(())
}

/// The body of a turn's answer, serialized straight from the turn (no
/// intermediate `serde_json::Value` tree), fields in alphabetical order.
#[derive(Serialize)]
struct TurnBody<'a> {
    conversation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handoff: Option<bool>,
    messages: Vec<&'a str>,
    /// The waiting Question's options, for buttons (left out when none).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    options: &'a [crate::QuestionOption],
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
    status: &'a Status,
}

/// A turn's answer: 200 with what the bot said, `{"duplicate": true,
/// "messages": []}` for a repeated message id, 502 when the conversation
/// failed (an API refused a call).
pub(crate) fn turn_response(turn: &Turn) -> Response {
    let mut body = TurnBody {
        conversation_id: &turn.conversation_id,
        duplicate: None,
        error: None,
        handoff: Some(turn.handed_off()),
        messages: Vec::new(),
        options: &turn.options,
        reply: Some(String::new()),
        status: &turn.status,
    };
    if turn.duplicate {
        body.duplicate = Some(true);
        return Json(body).into_response();
    }
    body.messages = turn
        .replies
        .iter()
        .filter(|entry| entry.direction == Direction::Out)
        .map(|entry| entry.text.as_str())
        .collect();
    if let Status::Failed { error } = &turn.status {
        // The error is secret-masked by the engine.
        body.error = Some(error);
        body.handoff = None;
        body.reply = None;
        return (StatusCode::BAD_GATEWAY, Json(body)).into_response();
    }
    body.reply = Some(body.messages.join("\n"));
    Json(body).into_response()
}

/// `GET /conversations/{id}`'s answer.
#[derive(Serialize)]
pub(crate) struct ConversationBody<'a> {
    pub(crate) conversation_id: &'a str,
    pub(crate) status: &'a Status,
    pub(crate) transcript: &'a [TranscriptEntry],
}
