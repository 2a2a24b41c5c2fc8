//! OpenAI-shaped error answers: `{"error": {"message", "type", "param", "code"}}`.

use serde_json::{Value, json};
use wiremock::ResponseTemplate;

/// An error answer, rendered with all four keys the real service always sends.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>, code: Option<&str>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            code: code.map(str::to_owned),
            headers: Vec::new(),
        }
    }

    /// A 404 for an unknown object (`param` and `code` null, as the service does).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: 404,
            ..ApiError::invalid(message, None, None)
        }
    }

    /// An arbitrary status with a body whose `type` fits the status class.
    pub fn with_status(status: u16, message: impl Into<String>) -> Self {
        let (kind, code) = match status {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            429 => ("requests", Some("rate_limit_exceeded")),
            500..=599 => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: code.map(str::to_owned),
            headers: Vec::new(),
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The wiremock answer for this error.
    pub fn into_template(self) -> ResponseTemplate {
        let mut template = ResponseTemplate::new(safe_status(self.status)).set_body_json(self.body());
        for (name, value) in &self.headers {
            template = template.insert_header(*name, value.as_str());
        }
        template
    }
}

/// wiremock panics on a status outside 100..=999, and 1xx answers cannot carry
/// a body: anything unusable becomes a 500 instead.
pub(crate) fn safe_status(status: u16) -> u16 {
    if (200..=999).contains(&status) {
        status
    } else {
        500
    }
}
