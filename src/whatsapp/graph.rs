//! The Graph API client: `POST {graph}/{phone-number-id}/messages` with the
//! bearer token, and what its answer means for the delivery — the message
//! id, try again later, or never.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::WhatsAppSettings;
use crate::channel::DeliveryOutcome;
use crate::http::{Header, HttpClient, HttpError, HttpRequest, HttpResponse, Method};

/// How long a send may take before it counts as failed (and is retried).
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// The wait before a retry when the API gives no Retry-After: a short one
/// for a busy server or the number's throughput limit, …
const SHORT_RETRY: Duration = Duration::from_secs(1);
/// … a long one when one user got too many messages (131056) or the app
/// hit its call limits.
const LONG_RETRY: Duration = Duration::from_secs(30);
/// A Retry-After beyond this is taken as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why the Graph API did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// Not now: rate limited, the API is down, the network failed.
    #[error("{reason} (retry after {delay:?})")]
    Retry { delay: Duration, reason: String },
    /// Never (the 24-hour window has closed, a bad token or parameter).
    #[error("{reason}")]
    Refused { reason: String },
}

impl From<SendError> for DeliveryOutcome {
    fn from(error: SendError) -> DeliveryOutcome {
        match error {
            SendError::Retry { delay, reason } => DeliveryOutcome::retry_after(delay, reason),
            SendError::Refused { reason } => DeliveryOutcome::refused(reason),
        }
    }
}

/// Sends message bodies for one phone number.
pub(crate) struct GraphClient {
    http: Arc<dyn HttpClient>,
    url: String,
    authorization: Header,
    /// Redacted from every error message the API sends back.
    access_token: String,
}

impl GraphClient {
    pub(crate) fn new(settings: &WhatsAppSettings, http: Arc<dyn HttpClient>) -> GraphClient {
        GraphClient {
            http,
            url: format!("{}/{}/messages", settings.graph_url(), settings.phone_number_id()),
            authorization: Header::new("Authorization", format!("Bearer {}", settings.access_token))
                .with_sensitive(true),
            access_token: settings.access_token.clone(),
        }
    }

    /// Posts one body; `Ok` with the sent message's `wamid` (`None` for a
    /// read receipt, which has none). `now` dates a Retry-After given as a
    /// date.
    pub(crate) async fn post(
        &self,
        body: &impl Serialize,
        now: SystemTime,
    ) -> Result<Option<String>, SendError> {
        let body = serde_json::to_vec(body).map_err(|e| SendError::Refused {
            reason: format!("the message could not be written as JSON: {e}"),
        })?;
        let request = HttpRequest::new(Method::Post, &self.url)
            .with_header(self.authorization.clone())
            .with_header(Header::new("Content-Type", "application/json"))
            .with_body(body)
            .with_timeout(SEND_TIMEOUT);
        let answer = self.http.send(&request).await;
        classify(answer, now).map_err(|error| self.redacted(error))
    }

    /// The error with the access token masked, wherever the API or the
    /// transport echoed it.
    fn redacted(&self, error: SendError) -> SendError {
        let mask = |reason: String| {
            if self.access_token.is_empty() {
                reason
            } else {
                reason.replace(&self.access_token, "***")
            }
        };
        match error {
            SendError::Retry { delay, reason } => SendError::Retry {
                delay,
                reason: mask(reason),
            },
            SendError::Refused { reason } => SendError::Refused { reason: mask(reason) },
        }
    }
}

/// Error codes worth trying again: throughput (130429), too many messages
/// to one user (131056), and Meta's own transient failures (1, 2 unknown /
/// service errors, 4 and 80007 app rate limits, 131000 something went
/// wrong, 133004 server temporarily unavailable).
fn retry_delay(code: i64) -> Option<Duration> {
    match code {
        130429 | 1 | 2 | 131000 | 133004 => Some(SHORT_RETRY),
        131056 | 4 | 80007 => Some(LONG_RETRY),
        _ => None,
    }
}

/// What an answer of `POST /messages` means.
pub(crate) fn classify(
    answer: Result<HttpResponse, HttpError>,
    now: SystemTime,
) -> Result<Option<String>, SendError> {
    let response = match answer {
        Ok(response) => response,
        Err(HttpError::InvalidRequest(reason)) => {
            return Err(SendError::Refused {
                reason: format!(
                    "the request to the Graph API is invalid (check WHATSAPP_GRAPH_URL): {reason}"
                ),
            });
        }
        // Connect, timeout, a reset connection, …: the message may or may
        // not have gone; sending it again is the at-least-once promise.
        Err(error) => {
            return Err(SendError::Retry {
                delay: SHORT_RETRY,
                reason: format!("Graph API unreachable: {error}"),
            });
        }
    };
    let body: Option<Value> = serde_json::from_slice(response.body()).ok();
    if response.is_success() {
        let id = body
            .as_ref()
            .and_then(|b| b.pointer("/messages/0/id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Ok(id);
    }
    let error = body.as_ref().and_then(|b| b.get("error"));
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_i64);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    let described = match code {
        Some(code) if message.is_empty() => code.to_string(),
        Some(code) => format!("{code} {message}"),
        None => format!("HTTP {}", response.status()),
    };
    let retry_after = retry_after(&response, now);
    if code == Some(131047) {
        return Err(SendError::Refused {
            reason: format!("the 24-hour window has closed ({described})"),
        });
    }
    let delay = code
        .and_then(retry_delay)
        .or_else(|| (response.status() == 429 || response.status() >= 500).then_some(SHORT_RETRY));
    match delay {
        Some(delay) => Err(SendError::Retry {
            delay: retry_after.unwrap_or(delay),
            reason: described,
        }),
        None => Err(SendError::Refused { reason: described }),
    }
}

/// A `Retry-After` header: seconds, or an HTTP date.
fn retry_after(response: &HttpResponse, now: SystemTime) -> Option<Duration> {
    let value = response.header("retry-after")?.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn error(status: u16, code: i64, message: &str) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse::json(
            status,
            &json!({"error": {"message": message, "type": "OAuthException", "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": "d"}, "fbtrace_id": "T"}}),
        ))
    }

    fn retry(delay: u64, reason: &str) -> Result<Option<String>, SendError> {
        Err(SendError::Retry {
            delay: Duration::from_secs(delay),
            reason: reason.into(),
        })
    }

    fn refused(reason: &str) -> Result<Option<String>, SendError> {
        Err(SendError::Refused {
            reason: reason.into(),
        })
    }

    #[test]
    fn success_gives_the_wamid() {
        let ok = HttpResponse::json(
            200,
            &json!({"messaging_product": "whatsapp", "contacts": [{"input": "1", "wa_id": "1"}],
                    "messages": [{"id": "wamid.OUT"}]}),
        );
        assert_eq!(classify(Ok(ok), now()), Ok(Some("wamid.OUT".into())));
        let read = HttpResponse::json(200, &json!({"success": true}));
        assert_eq!(classify(Ok(read), now()), Ok(None));
    }

    #[test]
    fn rate_limits_are_retried() {
        assert_eq!(
            classify(error(400, 130429, "Rate limit hit"), now()),
            retry(1, "130429 Rate limit hit")
        );
        assert_eq!(
            classify(error(400, 131056, "Pair rate limit hit"), now()),
            retry(30, "131056 Pair rate limit hit")
        );
        assert_eq!(
            classify(error(400, 4, "Too many calls"), now()),
            retry(30, "4 Too many calls")
        );
        assert_eq!(
            classify(error(500, 131000, "Something went wrong"), now()),
            retry(1, "131000 Something went wrong")
        );
    }

    #[test]
    fn server_errors_and_429_are_retried() {
        assert_eq!(
            classify(Ok(HttpResponse::new(503, "down")), now()),
            retry(1, "HTTP 503")
        );
        assert_eq!(
            classify(Ok(HttpResponse::new(429, "")), now()),
            retry(1, "HTTP 429")
        );
        assert_eq!(classify(error(500, 999, "Oops"), now()), retry(1, "999 Oops"));
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_or_as_a_date() {
        let with = |value: &str| {
            Ok(HttpResponse::json(
                400,
                &json!({"error": {"code": 130429, "message": "Rate limit hit"}}),
            )
            .with_header("Retry-After", value))
        };
        assert_eq!(classify(with("7"), now()), retry(7, "130429 Rate limit hit"));
        let in_a_minute = httpdate::fmt_http_date(now() + Duration::from_secs(60));
        assert_eq!(
            classify(with(&in_a_minute), now()),
            retry(60, "130429 Rate limit hit")
        );
        assert_eq!(
            classify(with("999999"), now()),
            retry(3600, "130429 Rate limit hit")
        );
        assert_eq!(classify(with("soon"), now()), retry(1, "130429 Rate limit hit"));
    }

    #[test]
    fn transport_errors_are_retried() {
        for failure in [
            HttpError::Connect("refused".into()),
            HttpError::Timeout(Duration::from_secs(20)),
            HttpError::Transport("reset".into()),
        ] {
            let reason = format!("Graph API unreachable: {failure}");
            assert_eq!(classify(Err(failure), now()), retry(1, &reason));
        }
        assert!(matches!(
            classify(Err(HttpError::InvalidRequest("bad url".into())), now()),
            Err(SendError::Refused { .. })
        ));
    }

    #[test]
    fn the_closed_window_is_refused() {
        assert_eq!(
            classify(error(400, 131047, "Re-engagement message"), now()),
            refused("the 24-hour window has closed (131047 Re-engagement message)")
        );
    }

    #[test]
    fn other_errors_are_refused_with_code_and_message() {
        assert_eq!(
            classify(error(401, 190, "Error validating access token"), now()),
            refused("190 Error validating access token")
        );
        assert_eq!(
            classify(error(400, 100, "Invalid parameter"), now()),
            refused("100 Invalid parameter")
        );
        assert_eq!(
            classify(error(400, 131026, "Message undeliverable"), now()),
            refused("131026 Message undeliverable")
        );
        assert_eq!(classify(error(400, 131009, ""), now()), refused("131009"));
        assert_eq!(
            classify(Ok(HttpResponse::new(404, "<html>")), now()),
            refused("HTTP 404")
        );
    }

    #[test]
    fn outcomes_map_onto_the_channel_trait() {
        let outcome: DeliveryOutcome = SendError::Refused { reason: "r".into() }.into();
        assert_eq!(outcome, DeliveryOutcome::refused("r"));
        let outcome: DeliveryOutcome = SendError::Retry {
            delay: Duration::from_secs(2),
            reason: "r".into(),
        }
        .into();
        assert_eq!(outcome, DeliveryOutcome::retry_after(Duration::from_secs(2), "r"));
    }
}
