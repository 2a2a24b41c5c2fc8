//! The default transport, on reqwest (rustls).

use async_trait::async_trait;

use super::sse::{self, SseParser};
use super::{HttpClient, HttpError, HttpRequest, HttpResponse, Method};

/// An [`HttpClient`] on reqwest. Holds one connection pool: build it once
/// and share it (the engine does).
///
/// For a request with [`HttpRequest::stream_until`], a `text/event-stream`
/// response is parsed as it arrives, and the client returns as soon as an
/// awaited (or `error`) event is complete, without waiting for the server to
/// close the stream. The body returned is what was read up to then.
#[derive(Debug, Clone)]
pub struct ReqwestClient {
    client: reqwest::Client,
}

impl ReqwestClient {
    /// A client with reqwest's defaults (rustls, connection pooling).
    pub fn new() -> Result<Self, HttpError> {
        reqwest::Client::builder()
            .build()
            .map(Self::from_client)
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))
    }

    /// Wraps a reqwest client you configured (proxy, TLS roots, …).
    pub fn from_client(client: reqwest::Client) -> Self {
        ReqwestClient { client }
    }
}

fn method(method: Method) -> reqwest::Method {
    match method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
        Method::Head => reqwest::Method::HEAD,
    }
}

/// Sorts a reqwest error into the kinds the retry policy tells apart. The
/// URL is stripped from the message: it may hold a secret.
fn classify(error: reqwest::Error, request: &HttpRequest) -> HttpError {
    let (timeout, connect, builder) = (error.is_timeout(), error.is_connect(), error.is_builder());
    let error = error.without_url();
    let chain = error_chain(&error.to_string(), &error);
    if timeout {
        HttpError::Timeout(request.timeout)
    } else if connect {
        HttpError::Connect(chain)
    } else if builder {
        HttpError::InvalidRequest(chain)
    } else {
        HttpError::Transport(chain)
    }
}

fn error_chain(first: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = first.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[async_trait]
impl HttpClient for ReqwestClient {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidRequest(format!("bad URL {}: {e}", request.display_url)))?;
        // The deadline is the tokio timeout around the whole exchange below:
        // a second timer inside reqwest would only cost.
        let mut builder = self.client.request(method(request.method), url);
        for header in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name `{}`", header.name)))?;
            let mut value = reqwest::header::HeaderValue::from_str(&header.value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header `{}`", header.name)))?;
            value.set_sensitive(header.sensitive);
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let limit = request.max_response_bytes;
        // One deadline for the whole exchange, body included.
        let exchange = async {
            let mut response = builder.send().await.map_err(|e| classify(e, request))?;
            if response.content_length().is_some_and(|len| len > limit as u64) {
                return Err(HttpError::BodyTooLarge { limit });
            }
            let status = response.status().as_u16();
            let streaming = !request.stream_until.is_empty()
                && response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(sse::is_event_stream);
            let mut parser = streaming.then(SseParser::new);
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    // Visible ASCII (nearly every value) is copied as it is;
                    // only other bytes go through the lossy UTF-8 decoding.
                    let value = match v.to_str() {
                        Ok(text) => text.to_owned(),
                        Err(_) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    };
                    (k.as_str().to_string(), value)
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, request))? {
                if body.len() + chunk.len() > limit {
                    return Err(HttpError::BodyTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
                if let Some(parser) = &mut parser
                    && parser
                        .push(&chunk)
                        .iter()
                        .any(|event| event.ends(&request.stream_until))
                {
                    tracing::debug!(url = %request.display_url, "awaited event arrived; stopped reading the stream");
                    break;
                }
            }
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(request.timeout, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout(request.timeout)))
    }
}
