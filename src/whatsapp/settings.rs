//! What connects chatflow to one WhatsApp number.

use std::fmt;

/// The Graph API the channel sends through unless told otherwise.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com/v23.0";

/// The settings of one WhatsApp Business number: the four from Meta's app
/// dashboard, and the Graph API's URL (tests point it at a mock). The
/// secrets never print.
///
/// ```
/// use chatflow::whatsapp::WhatsAppSettings;
///
/// let settings = WhatsAppSettings::new("verify-me", "app-secret", "EAAG-token", "1234567890")
///     .with_graph_url("http://127.0.0.1:9999/v23.0");
/// assert_eq!(settings.graph_url(), "http://127.0.0.1:9999/v23.0");
/// let shown = format!("{settings:?}");
/// assert!(!shown.contains("app-secret") && !shown.contains("EAAG-token"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct WhatsAppSettings {
    pub(crate) verify_token: String,
    pub(crate) app_secret: String,
    pub(crate) access_token: String,
    pub(crate) phone_number_id: String,
    pub(crate) graph_url: String,
}

impl WhatsAppSettings {
    /// Settings with the default Graph API URL ([`DEFAULT_GRAPH_URL`]).
    pub fn new(
        verify_token: impl Into<String>,
        app_secret: impl Into<String>,
        access_token: impl Into<String>,
        phone_number_id: impl Into<String>,
    ) -> WhatsAppSettings {
        WhatsAppSettings {
            verify_token: verify_token.into(),
            app_secret: app_secret.into(),
            access_token: access_token.into(),
            phone_number_id: phone_number_id.into(),
            graph_url: DEFAULT_GRAPH_URL.to_string(),
        }
    }

    /// Sets [`WhatsAppSettings::graph_url`] (a trailing `/` is dropped).
    pub fn with_graph_url(mut self, graph_url: impl Into<String>) -> WhatsAppSettings {
        self.graph_url = graph_url.into().trim_end_matches('/').to_string();
        self
    }

    /// The Graph API's base URL, with its version.
    pub fn graph_url(&self) -> &str {
        &self.graph_url
    }

    /// The phone number id sends go from.
    pub fn phone_number_id(&self) -> &str {
        &self.phone_number_id
    }

    /// Whether `token` is the verify token (the `hub.verify_token` of the
    /// verification handshake), compared in constant time.
    ///
    /// ```
    /// use chatflow::whatsapp::WhatsAppSettings;
    ///
    /// let settings = WhatsAppSettings::new("verify-me", "app-secret", "EAAG-token", "1234567890");
    /// assert!(settings.verify_token_matches("verify-me"));
    /// assert!(!settings.verify_token_matches("verify-m"));
    /// ```
    pub fn verify_token_matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        // Lengths differ → not equal; ct_eq of slices checks that first
        // (the length of a verify token is no secret worth hiding).
        bool::from(self.verify_token.as_bytes().ct_eq(token.as_bytes()))
    }

    /// Checks a notification's `X-Hub-Signature-256` header against its raw
    /// body with the app secret ([`super::verify_signature`]).
    ///
    /// ```
    /// use chatflow::whatsapp::{WhatsAppSettings, sign};
    ///
    /// let settings = WhatsAppSettings::new("verify-me", "app-secret", "EAAG-token", "1234567890");
    /// let body = b"{}";
    /// assert!(settings.verify_signature(body, Some(&sign("app-secret", body))).is_ok());
    /// assert!(settings.verify_signature(body, None).is_err());
    /// ```
    pub fn verify_signature(&self, body: &[u8], header: Option<&str>) -> Result<(), super::SignatureError> {
        super::verify_signature(&self.app_secret, body, header)
    }
}

impl fmt::Debug for WhatsAppSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhatsAppSettings")
            .field("verify_token", &"<redacted>")
            .field("app_secret", &"<redacted>")
            .field("access_token", &"<redacted>")
            .field("phone_number_id", &self.phone_number_id)
            .field("graph_url", &self.graph_url)
            .finish()
    }
}
