//! The webhook routes: Meta's verification handshake, and its signed
//! notifications made durable before the 200.
//!
//! `POST /webhooks/whatsapp` answers, in order:
//!
//! - **401** when `X-Hub-Signature-256` is missing or is not the HMAC of the
//!   raw bytes under the app secret: nothing is read or recorded;
//! - **413** for a body over [`MAX_NOTIFICATION_BYTES`];
//! - **400** when the signed body is not a notification (malformed JSON);
//! - **500** when the store fails: Meta sends the notification again, and
//!   the messages already recorded are then duplicates, changing nothing;
//! - **200** otherwise, once every message is recorded in its conversation's
//!   inbox and every status on its entry. The turns run after the response
//!   ([`Runtime::accept`] spawns them), and the replies go out through the
//!   runtime's `whatsapp` channel.
//!
//! The 200's body counts what happened (`{"messages", "duplicates",
//! "statuses", "skipped"}`), for logs and tests; Meta ignores it.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::{SIGNATURE_HEADER, WhatsAppSettings, parse_notification};
use crate::{Runtime, RuntimeError};

/// The callback URL's path, to give Meta as `https://<your host>/webhooks/whatsapp`.
pub(crate) const CALLBACK_PATH: &str = "/webhooks/whatsapp";

/// The largest notification body taken (4 MiB): Meta's payloads stay under
/// 3 MB. A larger body is answered 413.
pub(crate) const MAX_NOTIFICATION_BYTES: usize = 4 * 1024 * 1024;

/// The longest challenge echoed back (Meta's is a number).
const MAX_CHALLENGE_BYTES: usize = 1024;

struct Webhooks {
    runtime: Runtime,
    settings: WhatsAppSettings,
}

/// `GET /webhooks/whatsapp` (the verification handshake) and
/// `POST /webhooks/whatsapp` (signed notifications), to merge into a
/// server's router. The runtime should have the WhatsApp channel registered
/// as `"whatsapp"` (its conversations are `whatsapp:<wa_id>`), and a
/// delivery worker running ([`Runtime::run_deliveries`]) for the replies to
/// go out.
///
/// ```
/// use std::sync::Arc;
/// use axum::{body::Body, http::Request};
/// use chatflow::whatsapp::{WhatsAppSettings, router};
/// use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
/// use tower::ServiceExt; // for `oneshot`
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let flow = Flow::from_json(r#"{"name": "hi", "steps": [{"type": "message", "name": "Hi", "text": "Hi!"}]}"#)?;
/// let runtime = Runtime::new(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()));
/// let settings = WhatsAppSettings::new("verify-me", "app-secret", "EAAG-token", "1234567890");
/// let app = router(runtime, settings);
///
/// // Meta's verification handshake.
/// let response = app
///     .oneshot(
///         Request::get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444")
///             .body(Body::empty())?,
///     )
///     .await?;
/// assert_eq!(response.status(), 200);
/// let body = axum::body::to_bytes(response.into_body(), 64).await?;
/// assert_eq!(&body[..], b"1158201444");
/// # Ok(())
/// # }
/// ```
pub fn router(runtime: Runtime, settings: WhatsAppSettings) -> Router {
    let state = Arc::new(Webhooks { runtime, settings });
    Router::new()
        .route(
            CALLBACK_PATH,
            get(verify)
                .post(notify)
                .layer(DefaultBodyLimit::max(MAX_NOTIFICATION_BYTES)),
        )
        .with_state(state)
}

/// The handshake's query: `hub.mode`, `hub.verify_token`, `hub.challenge`.
#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// `GET`: 200 with the challenge as plain text for `hub.mode=subscribe` and
/// the configured verify token; 403 otherwise (a malformed query included).
/// No signature applies: Meta sends none with it.
async fn verify(
    State(state): State<Arc<Webhooks>>,
    query: Result<Query<Handshake>, QueryRejection>,
) -> Response {
    let Ok(Query(handshake)) = query else {
        return forbidden();
    };
    let token_matches = handshake
        .verify_token
        .as_deref()
        .is_some_and(|given| state.settings.verify_token_matches(given));
    match handshake.challenge {
        Some(challenge)
            if handshake.mode.as_deref() == Some("subscribe")
                && token_matches
                && challenge.len() <= MAX_CHALLENGE_BYTES =>
        {
            tracing::info!("WhatsApp webhook verified");
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                challenge,
            )
                .into_response()
        }
        _ => {
            tracing::warn!("WhatsApp webhook verification refused (wrong mode or verify token)");
            forbidden()
        }
    }
}

/// What one notification led to: the 200's body.
#[derive(Debug, Default, Serialize)]
struct Applied {
    /// Messages recorded for the first time.
    messages: u64,
    /// Messages seen before (a redelivery), changing nothing.
    duplicates: u64,
    /// Statuses recorded.
    statuses: u64,
    /// Parts of the notification not taken (unknown change fields, …).
    skipped: u64,
}

/// `POST`: the signature over the raw bytes, then the notification's
/// messages into their inboxes and its statuses onto their entries.
async fn notify(State(state): State<Arc<Webhooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    if let Err(e) = state.settings.verify_signature(&body, signature) {
        tracing::warn!(error = %e, "WhatsApp notification refused: bad signature");
        return error(StatusCode::UNAUTHORIZED, "missing or invalid X-Hub-Signature-256");
    }
    let notification = match parse_notification(&body) {
        Ok(notification) => notification,
        Err(e) => {
            tracing::warn!(error = %e, "WhatsApp notification refused: malformed");
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let runtime = &state.runtime;
    let mut applied = Applied::default();
    for reason in &notification.skipped {
        tracing::info!(reason = %reason, "WhatsApp notification part skipped");
        applied.skipped += 1;
    }
    // In the notification's order: one conversation's messages join its
    // inbox in the order Meta listed them.
    for message in &notification.messages {
        let conversation_id = message.conversation_id();
        match runtime.accept(&conversation_id, message.as_inbound()).await {
            Ok(Some(_)) => applied.messages += 1,
            Ok(None) => {
                tracing::debug!(
                    conversation = %conversation_id,
                    message_id = %message.message_id,
                    "WhatsApp message redelivered; already recorded"
                );
                applied.duplicates += 1;
            }
            Err(e) => return store_failed(&e),
        }
    }
    for status in &notification.statuses {
        match runtime.record_receipt(&status.message_id, &status.receipt).await {
            Ok(found) => {
                if found.is_none() {
                    // Kept by the store until the send's own record names it.
                    tracing::debug!(message_id = %status.message_id, "status for a send not recorded yet");
                }
                applied.statuses += 1;
            }
            Err(e) => return store_failed(&e),
        }
    }
    tracing::debug!(
        messages = applied.messages,
        duplicates = applied.duplicates,
        statuses = applied.statuses,
        skipped = applied.skipped,
        "WhatsApp notification applied"
    );
    (StatusCode::OK, axum::Json(applied)).into_response()
}

/// A 500: Meta sends the notification again later, and what was recorded
/// before the failure is then a duplicate.
fn store_failed(e: &RuntimeError) -> Response {
    tracing::error!(error = %e, "WhatsApp notification not recorded; Meta will send it again");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the notification could not be recorded",
    )
}

fn forbidden() -> Response {
    error(StatusCode::FORBIDDEN, "verification refused")
}

/// `{"error": reason}` with `status`.
fn error(status: StatusCode, reason: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": reason }))).into_response()
}
