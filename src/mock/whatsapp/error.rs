//! The mock's errors: the Graph-API-shaped answers it sends (`GraphError`),
//! and the public [`WebhookError`] of its webhook side.

use serde_json::{Value, json};
use wiremock::ResponseTemplate;

/// An error answer in the Graph API's shape:
/// `{"error": {"message", "type", "code", "error_data": {"messaging_product",
/// "details"}, "fbtrace_id"}}`. The codes, types and HTTP statuses are the
/// ones Meta documents for the Cloud API.
#[derive(Debug, Clone)]
pub(crate) struct GraphError {
    pub status: u16,
    pub code: i64,
    pub kind: &'static str,
    pub message: String,
    pub details: String,
}

impl GraphError {
    fn new(status: u16, code: i64, kind: &'static str, message: String, details: String) -> Self {
        GraphError {
            status,
            code,
            kind,
            message,
            details,
        }
    }

    /// 400, code 100: the body breaks a rule; `what` says which.
    pub fn invalid(what: impl Into<String>) -> Self {
        let what = what.into();
        GraphError::new(400, 100, "OAuthException", format!("(#100) {what}"), what)
    }

    /// 401, code 190: a missing, malformed or wrong access token.
    pub fn bad_token(missing: bool) -> Self {
        let message = if missing {
            "An active access token must be used to query information about the current user."
        } else {
            "Invalid OAuth access token - Cannot parse access token"
        };
        GraphError::new(
            401,
            190,
            "OAuthException",
            message.to_owned(),
            "The access token is missing, expired or invalid.".to_owned(),
        )
    }

    /// 400, code 100, `GraphMethodException`: no such object (an unknown phone
    /// number id), or a method or path the mock does not serve.
    pub fn unsupported(method: &str, object: &str) -> Self {
        let message = format!(
            "Unsupported {} request. Object with ID '{object}' does not exist, cannot be loaded \
             due to missing permissions, or does not support this operation. Please read the \
             Graph API documentation at https://developers.facebook.com/docs/graph-api",
            method.to_ascii_lowercase()
        );
        GraphError::new(
            400,
            100,
            "GraphMethodException",
            message,
            format!("Unknown object or operation: {object}"),
        )
    }

    /// 400, code 131047: more than 24 hours since the user's last message.
    pub fn window_closed() -> Self {
        GraphError::new(
            400,
            131_047,
            "OAuthException",
            "(#131047) Re-engagement message".to_owned(),
            "Message failed to send because more than 24 hours have passed since the customer \
             last replied to this number."
                .to_owned(),
        )
    }

    /// 400, code 130429: the number's throughput limit.
    pub fn rate_limited() -> Self {
        GraphError::new(
            400,
            130_429,
            "OAuthException",
            "(#130429) Rate limit hit".to_owned(),
            "Cloud API message throughput has been reached.".to_owned(),
        )
    }

    /// 400, code 131056: too many messages to one user in a short time.
    pub fn pair_rate_limited() -> Self {
        GraphError::new(
            400,
            131_056,
            "OAuthException",
            "(#131056) (Business Account, Consumer Account) pair rate limit hit".to_owned(),
            "Message failed to send because there were too many messages sent from this phone \
             number to the same phone number in a short period of time."
                .to_owned(),
        )
    }

    /// 500, code 131000: a server-side failure.
    pub fn server_error() -> Self {
        GraphError::new(
            500,
            131_000,
            "OAuthException",
            "(#131000) Something went wrong".to_owned(),
            "Message failed to send due to an unknown error.".to_owned(),
        )
    }

    /// 400, code 131026: the recipient cannot receive the message.
    pub fn undeliverable() -> Self {
        GraphError::new(
            400,
            131_026,
            "OAuthException",
            "(#131026) Message Undeliverable".to_owned(),
            "Message failed to send because the recipient cannot receive it.".to_owned(),
        )
    }

    /// Any status and code, for a custom injected fault.
    pub fn custom(status: u16, code: i64, message: &str) -> Self {
        GraphError::new(
            safe_status(status),
            code,
            "OAuthException",
            format!("(#{code}) {message}"),
            message.to_owned(),
        )
    }

    /// The JSON error body, with a fresh `fbtrace_id`.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.code,
                "error_data": {
                    "messaging_product": "whatsapp",
                    "details": self.details,
                },
                "fbtrace_id": fbtrace_id(),
            }
        })
    }

    /// The wiremock answer for this error.
    pub fn to_template(&self) -> ResponseTemplate {
        let template = ResponseTemplate::new(self.status).set_body_json(self.body());
        if self.code == 190 {
            // What Graph adds to a 401, per RFC 6750.
            template.insert_header(
                "www-authenticate",
                "OAuth \"Facebook Platform\" \"invalid_token\" \"Invalid OAuth access token\"",
            )
        } else {
            template
        }
    }
}

/// A Graph trace id: 27 characters of `[A-Za-z0-9_-]`, random.
fn fbtrace_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    (0..27)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// wiremock panics on a status outside 100..=999, and 1xx answers cannot carry
/// a body: anything unusable becomes a 500 instead.
fn safe_status(status: u16) -> u16 {
    if (200..=999).contains(&status) {
        status
    } else {
        500
    }
}

/// A failure of the mock's webhook side ([`super::MockWhatsApp::post`] and
/// the `post_*` helpers). An answer from the server under test, whatever its
/// status, is not an error: it is in [`super::WebhookPost::status`].
///
/// ```
/// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig, WebhookError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// // Nothing was sent yet, so there is no status to report.
/// let error = mock.post_statuses("http://127.0.0.1:9/webhooks/whatsapp").await.unwrap_err();
/// assert!(matches!(error, WebhookError::NothingToReport));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The POST did not get an answer (connection refused, timeout, …).
    #[error("posting the webhook notification to {url} failed")]
    Http {
        /// Where it was posted.
        url: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("the mock's HTTP client could not be built")]
    Client(#[source] reqwest::Error),
    /// [`super::MockWhatsApp::redeliver`] named a notification this mock never built.
    #[error("no notification {id} was built by this mock")]
    UnknownNotification {
        /// The id asked for.
        id: String,
    },
    /// [`super::MockWhatsApp::post_statuses`] found no accepted send whose
    /// statuses were not posted yet.
    #[error("no accepted send is waiting for its statuses")]
    NothingToReport,
}
