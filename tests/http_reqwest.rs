//! The reqwest transport against a real (wiremock) server, on the real clock.

#![cfg(feature = "reqwest")]

use std::time::{Duration, Instant};

use chatflow::http::{Header, HttpClient, HttpError, HttpRequest, Method, ReqwestClient};
use chatflow::{Engine, EventLog, Flow, Status};
use serde_json::{Value, json};
use wiremock::matchers::{body_bytes, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client() -> ReqwestClient {
    ReqwestClient::new().expect("reqwest client")
}

fn header_of(name: &str, value: &str) -> Header {
    Header::new(name, value)
}

/// Bytes that are not UTF-8, so nothing on the way may treat them as text.
const BINARY: &[u8] = b"\x00\x01raw \xff\xfe bytes\r\n{\"not\": json";

#[tokio::test]
async fn request_arrives_exactly_and_response_comes_back() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/v1/items/42"))
        .and(query_param("q", "a b&c"))
        .and(query_param("page", "2"))
        .and(header("x-trace", "abc-123"))
        .and(body_bytes(BINARY))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("X-Custom-Header", "Hello")
                .set_body_bytes(b"\xff\x00answer".to_vec()),
        )
        .expect(1)
        .mount(&server)
        .await;

    let mut request = HttpRequest::new(
        Method::Patch,
        format!("{}/v1/items/42?q=a%20b%26c&page=2", server.uri()),
    );
    request = request
        .with_header(header_of("X-Trace", "abc-123"))
        .with_header(header_of("X-Multi", "one"))
        .with_header(header_of("X-Multi", "two"))
        .with_header(Header::new("Authorization", "Bearer sk-secret-123").with_sensitive(true));
    request = request.with_body(BINARY.to_vec());
    let response = client().send(&request).await.expect("a response");

    assert_eq!(response.status(), 201);
    assert_eq!(response.body(), b"\xff\x00answer");
    assert_eq!(response.header("x-custom-header"), Some("Hello"));
    assert!(
        response
            .headers()
            .contains(&("x-custom-header".into(), "Hello".into())),
        "{:?}",
        response.headers()
    );
    assert!(
        response
            .headers()
            .iter()
            .all(|(name, _)| *name == name.to_ascii_lowercase()),
        "header names are lower case: {:?}",
        response.headers()
    );

    let received = server.received_requests().await.expect("recording is on");
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.method.as_str(), "PATCH");
    assert_eq!(got.url.path(), "/v1/items/42");
    assert_eq!(got.url.query(), Some("q=a%20b%26c&page=2"));
    assert_eq!(got.body, BINARY);
    assert_eq!(got.headers.get("x-trace").unwrap(), "abc-123");
    assert_eq!(got.headers.get("authorization").unwrap(), "Bearer sk-secret-123");
    let multi: Vec<_> = got
        .headers
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(multi, ["one", "two"], "repeated headers are all sent, in order");
}

#[tokio::test]
async fn get_without_body_sends_no_body() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ping"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"pong": true})))
        .mount(&server)
        .await;

    let request = HttpRequest::new(Method::Get, format!("{}/ping", server.uri()));
    let response = client().send(&request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body, json!({"pong": true}));

    let received = server.received_requests().await.unwrap();
    assert!(received[0].body.is_empty());
}

#[tokio::test]
async fn non_success_statuses_are_responses_not_errors() {
    let server = MockServer::start().await;
    for (status, route) in [(404, "/missing"), (429, "/busy"), (500, "/broken")] {
        Mock::given(path(route))
            .respond_with(ResponseTemplate::new(status).set_body_string(format!("status {status}")))
            .mount(&server)
            .await;
    }
    for (status, route) in [(404, "/missing"), (429, "/busy"), (500, "/broken")] {
        let request = HttpRequest::new(Method::Delete, format!("{}{route}", server.uri()));
        let response = client()
            .send(&request)
            .await
            .unwrap_or_else(|e| panic!("{route}: {e}"));
        assert_eq!(response.status(), status);
        assert!(!response.is_success());
        assert_eq!(response.body(), format!("status {status}").as_bytes());
    }
}

#[tokio::test]
async fn a_slow_server_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)))
        .mount(&server)
        .await;

    let mut request = HttpRequest::new(Method::Get, format!("{}/slow", server.uri()));
    request = request.with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let error = client().send(&request).await.unwrap_err();
    let elapsed = started.elapsed();

    assert_eq!(error, HttpError::Timeout(Duration::from_millis(200)));
    assert_eq!(error.kind(), "timeout");
    assert!(
        elapsed >= Duration::from_millis(190) && elapsed < Duration::from_millis(1000),
        "gave up after {elapsed:?}"
    );
}

const BIG: usize = 2000;

#[tokio::test]
async fn a_body_over_the_cap_is_refused_by_its_content_length() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; BIG]))
        .mount(&server)
        .await;

    let url = format!("{}/big", server.uri());
    // Control: with room to spare the body comes back whole, with its length.
    let response = client().send(&HttpRequest::new(Method::Get, &url)).await.unwrap();
    assert_eq!(response.header("content-length"), Some("2000"));
    assert_eq!(response.body().len(), BIG);

    let mut request = HttpRequest::new(Method::Get, &url);
    request = request.with_max_response_bytes(1000);
    let error = client().send(&request).await.unwrap_err();
    assert_eq!(error, HttpError::BodyTooLarge { limit: 1000 });
    assert_eq!(error.kind(), "body_too_large");

    // Exactly at the cap is fine.
    let mut request = HttpRequest::new(Method::Get, &url);
    request = request.with_max_response_bytes(BIG);
    assert_eq!(client().send(&request).await.unwrap().body().len(), BIG);
}

#[tokio::test]
async fn a_chunked_body_over_the_cap_is_refused_while_reading() {
    // With `transfer-encoding: chunked` set by hand, hyper sends the body
    // chunked and without a content-length: the cap must hold while streaming.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("transfer-encoding", "chunked")
                .set_body_bytes(vec![b'y'; BIG]),
        )
        .mount(&server)
        .await;

    let url = format!("{}/chunked", server.uri());
    // Control: the response really has no content-length.
    let response = client().send(&HttpRequest::new(Method::Get, &url)).await.unwrap();
    assert_eq!(
        response.header("content-length"),
        None,
        "{:?}",
        response.headers()
    );
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.body(), vec![b'y'; BIG]);

    let mut request = HttpRequest::new(Method::Get, &url);
    request = request.with_max_response_bytes(1000);
    let error = client().send(&request).await.unwrap_err();
    assert_eq!(error, HttpError::BodyTooLarge { limit: 1000 });
}

/// A port on which nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn connection_refused_is_a_connect_error_without_the_url_secret() {
    let port = closed_port();
    let mut request = HttpRequest::new(
        Method::Post,
        format!("http://127.0.0.1:{port}/v1/things?key=sk-secret-123"),
    );
    request = request.with_display_url(format!("http://127.0.0.1:{port}/v1/things?key=***"));
    request = request.with_body(b"{}".to_vec());
    let error = client().send(&request).await.unwrap_err();

    assert!(matches!(error, HttpError::Connect(_)), "{error:?}");
    assert_eq!(error.kind(), "connect");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("sk-secret-123"), "{shown}");
    assert!(!shown.contains("key="), "no URL at all: {shown}");
}

#[tokio::test]
async fn invalid_urls_are_invalid_requests() {
    for url in ["not a url", "/relative/path", "http://[::1/broken", ""] {
        let error = client()
            .send(&HttpRequest::new(Method::Get, url))
            .await
            .unwrap_err();
        assert!(
            matches!(error, HttpError::InvalidRequest(_)),
            "{url:?}: {error:?}"
        );
        assert_eq!(error.kind(), "invalid_request");
    }
}

#[tokio::test]
async fn invalid_url_errors_show_the_display_url_only() {
    // Unparsable, and a scheme reqwest refuses: neither message shows the secret.
    for (url, display) in [
        ("http://[bad?key=sk-secret-123", "http://[bad?key=***"),
        (
            "ftp://example.com/?key=sk-secret-123",
            "ftp://example.com/?key=***",
        ),
    ] {
        let mut request = HttpRequest::new(Method::Get, url);
        request = request.with_display_url(display);
        let error = client().send(&request).await.unwrap_err();
        assert!(matches!(error, HttpError::InvalidRequest(_)), "{url}: {error:?}");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("sk-secret-123"), "{shown}");
    }
}

#[tokio::test]
async fn invalid_headers_are_invalid_requests() {
    let server = MockServer::start().await;
    for bad in [header_of("bad name", "v"), header_of("X-Ok", "line\r\nbreak")] {
        let request = HttpRequest::new(Method::Get, server.uri()).with_header(bad.clone());
        let error = client().send(&request).await.unwrap_err();
        assert!(
            matches!(error, HttpError::InvalidRequest(_)),
            "{bad:?}: {error:?}"
        );
    }
    let received = server.received_requests().await.unwrap();
    assert!(received.is_empty(), "nothing was sent");
}

#[test]
fn debug_of_a_request_masks_sensitive_headers_and_the_url() {
    let mut request = HttpRequest::new(Method::Post, "https://api.test/v1?key=sk-secret-123");
    request = request.with_display_url("https://api.test/v1?key=***");
    request = request
        .with_header(Header::new("Authorization", "Bearer sk-secret-123").with_sensitive(true))
        .with_header(header_of("X-Visible", "plain-value"));
    request = request.with_body(b"{\"token\": \"sk-secret-123\"}".to_vec());

    let debug = format!("{request:?}");
    assert!(!debug.contains("sk-secret-123"), "{debug}");
    assert!(debug.contains(r#"Authorization: "***""#), "{debug}");
    assert!(debug.contains(r#"X-Visible: "plain-value""#), "{debug}");
    assert!(debug.contains("https://api.test/v1?key=***"), "{debug}");
    let pretty = format!("{request:#?}");
    assert!(!pretty.contains("sk-secret-123"), "{pretty}");
}

#[tokio::test]
async fn engine_with_the_default_client_posts_replies_verbatim() {
    const SECRET: &str = "sk-e2e-secret-987";
    const FLOW: &str = r#"{
      "name": "e2e",
      "steps": [
        {"type": "question", "name": "Ask", "text": "What is the problem?"},
        {"type": "api", "name": "Report", "method": "POST", "url": "<<var.base>>/v1/reports?source=chat",
         "headers": {"Authorization": "Bearer <<secret.KEY>>"},
         "body": {"text": "<<step.Ask.response>>", "quoted": "user said: <<step.Ask.response>>"},
         "timeout_seconds": 5},
        {"type": "message", "name": "Done", "text": "Report <<step.Report.response.id>> filed (<<step.Report.status>>)"}
      ]
    }"#;
    let reply =
        "He said \"hi\" \\ and C:\\path\\n\nsecond line 🎉👍🏽 <<secret.KEY>> {{secret.KEY}} <<var.base>>";

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/reports"))
        .and(query_param("source", "chat"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "r-1"})))
        .expect(1)
        .mount(&server)
        .await;

    let engine = Engine::builder(Flow::from_json(FLOW).unwrap())
        .var("base", server.uri())
        .secret("KEY", SECRET)
        .build()
        .unwrap();
    let events = EventLog::new();
    let mut conversation = engine.start("c1");
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    engine.receive(&mut conversation, reply).unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    assert_eq!(events.texts(), ["What is the problem?", "Report r-1 filed (201)"]);

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        body,
        json!({"text": reply, "quoted": format!("user said: {reply}")}),
        "the reply is sent as text, never evaluated"
    );
    assert_eq!(body["text"].as_str(), Some(reply));
    let raw = String::from_utf8(got.body.clone()).unwrap();
    assert!(!raw.contains(SECRET), "{raw}");
    assert_eq!(
        got.headers.get("authorization").unwrap(),
        &format!("Bearer {SECRET}")
    );
    assert_eq!(got.headers.get("content-type").unwrap(), "application/json");
    // Nothing the host keeps shows the secret.
    let kept = format!(
        "{} {conversation:?} {:?} {engine:?}",
        serde_json::to_string(&conversation).unwrap(),
        events.events()
    );
    assert!(!kept.contains(SECRET), "{kept}");
}

#[tokio::test]
async fn head_is_not_refused_for_the_length_of_a_body_it_does_not_get() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; BIG]))
        .mount(&server)
        .await;
    let mut request = HttpRequest::new(Method::Head, format!("{}/big", server.uri()));
    request = request.with_max_response_bytes(1000);
    let response = client().send(&request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.body().is_empty());
}
