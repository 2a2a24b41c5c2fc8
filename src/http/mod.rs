//! The HTTP boundary: the [`HttpClient`] trait and the crate's own request
//! and response types, so the engine never depends on one HTTP library.
//!
//! The default transport is [`ReqwestClient`] (feature `reqwest`, on by
//! default). A host swaps in its own client — a proxy, request signing, a
//! recorder for tests — by implementing [`HttpClient`].
//!
//! Server-sent events ([`sse`]): a request may name the events its step
//! waits for ([`HttpRequest::stream_until`]), so that a transport can stop
//! reading a `text/event-stream` response as soon as one of them arrives.

#[cfg(feature = "reqwest")]
mod reqwest_client;
pub mod sse;

#[cfg(feature = "reqwest")]
pub use reqwest_client::ReqwestClient;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// Default cap on a response body: larger bodies are an error, not a memory blow-up.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// An HTTP method an Api step may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
}

impl Method {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
        }
    }

    /// Whether repeating the request has the same effect as sending it once
    /// (RFC 9110 §9.2.2), which decides whether it may be retried blindly.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request header. A `sensitive` header (one whose value came from a
/// secret) prints as `***` in `Debug` output.
///
/// Name and value are shared strings: an Api step whose headers read only
/// host values renders them once, and each of its requests shares them
/// instead of copying them.
///
/// ```
/// use chatflow::http::Header;
///
/// let header = Header::new("OpenAI-Beta", "assistants=v2");
/// assert_eq!(header.value(), "assistants=v2");
/// let key = Header::new("Authorization", "Bearer sk-1").with_sensitive(true);
/// assert_eq!(format!("{key:?}"), r#"Authorization: "***""#);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    pub(crate) name: Arc<str>,
    pub(crate) value: Arc<str>,
    pub(crate) sensitive: bool,
}

impl Header {
    /// A header that is not sensitive.
    pub fn new(name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
            sensitive: false,
        }
    }

    /// This header, marked as holding a secret (or not).
    pub fn with_sensitive(mut self, sensitive: bool) -> Self {
        self.sensitive = sensitive;
        self
    }

    /// Header name, as written in the flow.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Header value, fully rendered.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether the value holds a secret and must never be shown.
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value: &str = if self.sensitive { "***" } else { &self.value };
        write!(f, "{}: {:?}", self.name, value)
    }
}

/// A request an Api step sends through an [`HttpClient`]. Read it through
/// its getters; build one (in a test, say) with [`HttpRequest::new`] and the
/// `with_*` setters.
///
/// ```
/// use std::time::Duration;
/// use chatflow::http::{Header, HttpRequest, Method};
///
/// let request = HttpRequest::new(Method::Post, "https://api.example.com/v1/orders")
///     .with_header(Header::new("Content-Type", "application/json"))
///     .with_body(br#"{"id": 1}"#.to_vec())
///     .with_timeout(Duration::from_secs(5))
///     .with_step("Create order");
/// assert_eq!(request.header("content-type"), Some("application/json"));
/// assert_eq!(request.step(), Some("Create order"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpRequest {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) display_url: String,
    pub(crate) headers: Vec<Header>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) stream_until: Vec<String>,
    pub(crate) step: Option<Arc<str>>,
}

impl HttpRequest {
    /// A request with no headers or body, a 30 s timeout and the default body cap.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        let url = url.into();
        HttpRequest {
            method,
            display_url: url.clone(),
            url,
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            stream_until: Vec::new(),
            step: None,
        }
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The absolute URL, fully rendered (it may hold secrets: print
    /// [`HttpRequest::display_url`] instead).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with every secret replaced by `***`, for logs and errors.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Headers in the order the flow lists them.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The body bytes (JSON for Api steps), if any.
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// How long the whole exchange may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The largest response body the client may read; a larger one is
    /// [`HttpError::BodyTooLarge`].
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// The events the step waits for in a `text/event-stream` response (its
    /// `stream_until`); empty for a step that reads the whole body.
    ///
    /// A client may stop reading such a response once an event named here,
    /// or an `error` event, has arrived ([`sse::SseEvent::ends`]), and return
    /// what it read so far as the body: that is what gets a streamed answer
    /// to the user without waiting for the stream to close. A client that
    /// ignores this and returns the whole body works too: the engine picks
    /// the same event from it.
    pub fn stream_until(&self) -> &[String] {
        &self.stream_until
    }

    /// The name of the Api step that sends this request (`None` for a
    /// request built by hand): lets a test stub answers by step.
    pub fn step(&self) -> Option<&str> {
        self.step.as_deref()
    }

    /// This request with [`HttpRequest::stream_until`] set.
    ///
    /// ```
    /// use chatflow::http::{HttpRequest, Method};
    ///
    /// let request = HttpRequest::new(Method::Post, "https://api.example.com/v1/responses")
    ///     .with_stream_until(["response.completed"]);
    /// assert_eq!(request.stream_until(), ["response.completed"]);
    /// ```
    pub fn with_stream_until<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stream_until = events.into_iter().map(Into::into).collect();
        self
    }

    /// This request with the name of the Api step that sends it.
    pub fn with_step(mut self, step: impl Into<Arc<str>>) -> Self {
        self.step = Some(step.into());
        self
    }

    /// This request with the URL shown in logs and errors instead of the
    /// real one (which may hold a secret).
    pub fn with_display_url(mut self, display_url: impl Into<String>) -> Self {
        self.display_url = display_url.into();
        self
    }

    /// This request with one more header.
    pub fn with_header(mut self, header: Header) -> Self {
        self.headers.push(header);
        self
    }

    /// This request with a body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// This request with a timeout for the whole exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This request with a cap on the response body.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// The value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| &*h.value)
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("step", &self.step)
            .field("method", &self.method)
            .field("url", &self.display_url)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("stream_until", &self.stream_until)
            .finish()
    }
}

/// What a server answered.
///
/// ```
/// use chatflow::http::HttpResponse;
///
/// let response = HttpResponse::new(429, "slow down").with_header("Retry-After", "2");
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.header("retry-after"), Some("2"));
/// assert_eq!(response.body(), b"slow down");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// A response with this status and body and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A response with this status whose body is this JSON value.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        HttpResponse::new(status, value.to_string()).with_header("content-type", "application/json")
    }

    /// This response with one more header; the name is kept in lower case.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.headers.push((name, value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Response headers, names in lower case, in the order received.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taken out of the response.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why an exchange produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The server could not be reached; the request was certainly not processed.
    #[error("could not connect: {0}")]
    Connect(String),
    /// No complete response within the request's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The response body exceeded the request's cap.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// The request could not be built (bad URL, invalid header).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Any other transport failure (connection reset mid-response, TLS, …).
    #[error("transport error: {0}")]
    Transport(String),
    /// A `text/event-stream` response gave the step no response: it sent an
    /// `error` event, the awaited event's data was not JSON, or no event
    /// carried JSON. Not retried: the server processed the request.
    #[error("event stream: {0}")]
    EventStream(String),
}

impl HttpError {
    /// A short, stable name for the kind of failure (`"timeout"`, `"connect"`, …),
    /// exposed to flows as `step.<name>.error.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Connect(_) => "connect",
            HttpError::Timeout(_) => "timeout",
            HttpError::BodyTooLarge { .. } => "body_too_large",
            HttpError::InvalidRequest(_) => "invalid_request",
            HttpError::Transport(_) => "transport",
            HttpError::EventStream(_) => "event_stream",
        }
    }
}

/// Sends HTTP requests for Api steps.
///
/// Implementations must honour [`HttpRequest::timeout`] and
/// [`HttpRequest::max_response_bytes`], and may honour
/// [`HttpRequest::stream_until`]. The engine holds the client as
/// `Arc<dyn HttpClient>` and calls it from many conversations at once.
///
/// ```
/// use async_trait::async_trait;
/// use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
///
/// /// Answers every request with `{"ok": true}`: handy in tests.
/// struct AlwaysOk;
///
/// #[async_trait]
/// impl HttpClient for AlwaysOk {
///     async fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, HttpError> {
///         Ok(HttpResponse::json(200, &serde_json::json!({"ok": true})))
///     }
/// }
/// ```
#[async_trait]
pub trait HttpClient: Send + Sync {
    /// Sends one request and returns the whole response. The request is
    /// borrowed: the engine sends the same one again when it retries.
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError>;
}

#[async_trait]
impl<T: HttpClient + ?Sized> HttpClient for std::sync::Arc<T> {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        (**self).send(request).await
    }
}

// The engine stores clients as trait objects: keep the trait object safe.
fn _assert_object_safe(_: &dyn HttpClient) {}
