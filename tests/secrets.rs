//! Secrets never leak: conversations that fail or misbehave in many ways,
//! with everything a host might print, log or store collected and searched
//! for the key. Tracing output is captured at TRACE level (and `log`
//! records, e.g. reqwest's, through tracing-log).

mod common;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatflow::http::{Header, HttpError, HttpRequest, HttpResponse, Method};
use chatflow::{Conversation, Engine, EngineOptions, Event, EventLog, Flow, RunError, Status, VirtualClock};
use common::{FakeHttp, with_header};
use serde_json::json;
use tracing_subscriber::util::SubscriberInitExt;

const KEY: &str = "sk-live-TOPSECRET-123";

/// Pieces of the key that must not show either (a truncated key is a leak).
const FRAGMENTS: [&str; 2] = [KEY, "TOPSECRET"];

// ---------------------------------------------------------------------------
// Capturing tracing output

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every tracing event and span, at every level, written as text to a
/// buffer for as long as the value lives (on this thread: the tests run on
/// a current-thread runtime, so the engine's tasks run here too).
struct Logs {
    buffer: Buffer,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    fn capture() -> Logs {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // `set_default` from SubscriberInitExt also routes `log` records here.
        let guard = subscriber.set_default();
        Logs {
            buffer,
            _guard: guard,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap()).into_owned()
    }
}

// ---------------------------------------------------------------------------
// Collecting everything a host might show

/// Texts a host might print, log or store, each with a label saying where it came from.
#[derive(Default)]
struct Exposed {
    items: Vec<(String, String)>,
}

impl Exposed {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.items.push((label.into(), text.into()));
    }

    fn error(&mut self, label: &str, error: &(dyn std::error::Error + 'static)) {
        self.add(format!("{label}: error Display"), error.to_string());
        self.add(format!("{label}: error Debug"), format!("{error:?}"));
        let mut source = error.source();
        while let Some(cause) = source {
            self.add(format!("{label}: error source"), format!("{cause} / {cause:?}"));
            source = cause.source();
        }
    }

    fn conversation(&mut self, label: &str, conversation: &Conversation) {
        self.add(
            format!("{label}: conversation Debug"),
            format!("{conversation:?}"),
        );
        self.add(
            format!("{label}: conversation JSON"),
            serde_json::to_string(conversation).unwrap(),
        );
        self.add(
            format!("{label}: status JSON"),
            serde_json::to_string(conversation.status()).unwrap(),
        );
    }

    fn events(&mut self, label: &str, events: &[Event]) {
        for (i, event) in events.iter().enumerate() {
            self.add(format!("{label}: event {i} Debug"), format!("{event:?}"));
            self.add(
                format!("{label}: event {i} JSON"),
                serde_json::to_string(event).unwrap(),
            );
        }
    }

    fn engine(&mut self, label: &str, engine: &Engine) {
        self.add(format!("{label}: engine Debug"), format!("{engine:?}"));
        self.add(format!("{label}: flow JSON"), engine.flow().to_json());
    }

    /// Asserts that no text holds the key or a piece of it.
    fn assert_clean(&self) {
        assert!(!self.items.is_empty());
        let leaks: Vec<String> = self
            .items
            .iter()
            .filter(|(_, text)| FRAGMENTS.iter().any(|f| text.contains(f)))
            .map(|(label, text)| format!("--- {label}:\n{text}"))
            .collect();
        assert!(
            leaks.is_empty(),
            "the key leaked in {} place(s):\n{}",
            leaks.len(),
            leaks.join("\n")
        );
    }
}

/// Starts a conversation, queues the replies and runs it; records the
/// engine, the conversation, the result and every event.
async fn converse(
    exposed: &mut Exposed,
    label: &str,
    engine: &Engine,
    replies: &[&str],
) -> (Conversation, Result<Status, RunError>, Vec<Event>) {
    let log = EventLog::new();
    let mut conversation = engine.start(label);
    for reply in replies {
        engine.receive(&mut conversation, *reply).unwrap();
    }
    let result = engine.run(&mut conversation, &log).await;
    exposed.engine(label, engine);
    exposed.conversation(label, &conversation);
    match &result {
        Ok(status) => exposed.add(format!("{label}: status Debug"), format!("{status:?}")),
        Err(error) => exposed.error(label, error),
    }
    exposed.add(format!("{label}: event log Debug"), format!("{log:?}"));
    let events = log.take();
    exposed.events(label, &events);
    (conversation, result, events)
}

fn engine_for(flow: &str, http: FakeHttp) -> Engine {
    Engine::builder(Flow::from_json(flow).unwrap())
        .http_client(http)
        .shared_clock(Arc::new(VirtualClock::new()))
        .secret("K", KEY)
        .build()
        .unwrap()
}

/// Asks, then calls an API with the key in the query, two headers and the
/// body, then shows the answer.
const CALL: &str = r#"{
  "name": "leaky",
  "steps": [
    {"type": "question", "name": "Ask", "text": "What's up?"},
    {"type": "api", "name": "Call GPT", "method": "POST",
     "url": "http://api.test/v1/chat?key=<<secret.K>>&user=<<conversation.id>>",
     "headers": {"Authorization": "Bearer <<secret.K>>", "X-Api-Key": "<<secret.K>>"},
     "body": {"model": "gpt", "input": "<<step.Ask.response>>", "key": "<<secret.K>>"}},
    {"type": "message", "name": "Answer", "text": "<<step.Call GPT.response.output>>"}
  ]
}"#;

/// Like [`CALL`], but a GET (retried on 5xx and transport errors) with an
/// `on_error` step that shows the stored failure to the user.
const CALL_WITH_ON_ERROR: &str = r#"{
  "name": "leaky with on_error",
  "steps": [
    {"type": "api", "name": "Fetch", "method": "GET",
     "url": "http://api.test/v1/models?key=<<secret.K>>",
     "headers": {"Authorization": "Bearer <<secret.K>>"},
     "on_error": "Sorry"},
    {"type": "message", "name": "Fine", "text": "fine"},
    {"type": "message", "name": "Sorry",
     "text": "failed: <<step.Fetch.status>> <<step.Fetch.error>> <<step.Fetch.response>> <<step.Fetch.headers>>"}
  ]
}"#;

/// Every request's `Debug` and display URL, as a transport might log them.
fn debug_requests(exposed: &mut Exposed, seen: &Mutex<Vec<HttpRequest>>) {
    for request in seen.lock().unwrap().iter() {
        exposed.add("request Debug", format!("{request:?}"));
        exposed.add("request display_url", request.display_url().to_string());
    }
}

fn recording(
    outcome: impl Fn(&HttpRequest) -> Result<HttpResponse, HttpError> + Send + Sync + 'static,
) -> (FakeHttp, Arc<Mutex<Vec<HttpRequest>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let http = FakeHttp::new(move |request| {
        log.lock().unwrap().push(request.clone());
        outcome(request)
    });
    (http, seen)
}

// ---------------------------------------------------------------------------
// Failures

#[tokio::test]
async fn error_statuses_that_echo_the_key_do_not_leak_it() {
    let logs = Logs::capture();
    let mut exposed = Exposed::default();

    type Outcome = fn() -> Result<HttpResponse, HttpError>;
    let cases: [(&str, Outcome); 4] = [
        ("401 echoing the key", || {
            Ok(HttpResponse::json(
                401,
                &json!({"error": {"message": format!("Incorrect API key provided: {KEY}"),
                                  "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ))
        }),
        ("500 echoing it in a header and the body", || {
            let response = HttpResponse::json(500, &json!({"error": format!("upstream rejected {KEY}")}));
            Ok(with_header(response, "x-echo-key", KEY))
        }),
        ("502 with a text body", || {
            Ok(with_header(
                HttpResponse::new(502, format!("Bad gateway\nAuthorization: Bearer {KEY}\n")),
                "www-authenticate",
                &format!("Bearer realm=\"{KEY}\""),
            ))
        }),
        ("400 echoing it JSON-escaped", || {
            Ok(HttpResponse::new(
                400,
                r#"{"message": "bad key \u0073k-live-TOPSECRET-123 or sk-live-TOPSECRET\u002d123"}"#,
            ))
        }),
    ];
    for (label, outcome) in cases {
        let (http, seen) = recording(move |_| outcome());
        let engine = engine_for(CALL, http.clone());
        let (conversation, result, events) = converse(&mut exposed, label, &engine, &["hello"]).await;
        let error = result.expect_err(label);
        assert!(matches!(error, RunError::Status { .. }), "{label}: {error}");
        assert!(error.to_string().contains("?key=***"), "{error}");
        assert!(matches!(conversation.status(), Status::Failed { .. }));
        assert!(matches!(events.last(), Some(Event::Failed { .. })));
        // The key did go where the flow put it.
        let sent = http.seen();
        assert_eq!(sent.len(), 1, "{label}: POST is not retried");
        assert!(sent[0].url.contains(KEY));
        assert_eq!(sent[0].body.as_ref().unwrap()["key"], KEY);
        debug_requests(&mut exposed, &seen);
    }

    // The same through `spawn`, and a GET with retries and `on_error`.
    let (http, _) = recording(|_| {
        Ok(HttpResponse::json(
            401,
            &json!({"error": {"message": format!("bad key {KEY}")}}),
        ))
    });
    let engine = engine_for(CALL, http);
    let handle = engine.spawn(engine.start("spawned"), |_| {});
    handle.send("hi").unwrap();
    exposed.add("handle Debug", format!("{handle:?}"));
    let (conversation, result) = handle.finish().await.unwrap();
    exposed.conversation("spawned", &conversation);
    exposed.error("spawned", &result.unwrap_err());

    let (http, seen) = recording(|_| {
        let response = HttpResponse::json(
            503,
            &json!({"error": {"message": format!("overloaded, key {KEY}")}}),
        );
        Ok(with_header(response, "x-key", KEY))
    });
    let engine = engine_for(CALL_WITH_ON_ERROR, http.clone());
    let (conversation, result, events) = converse(&mut exposed, "503 on_error", &engine, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(http.seen().len(), 3, "a GET is retried");
    assert_eq!(
        conversation.step_result("Fetch").unwrap()["headers"]["x-key"],
        "***"
    );
    let shown = events[0].text().unwrap();
    assert!(shown.starts_with("failed: 503 "), "{shown}");
    debug_requests(&mut exposed, &seen);

    let logs = logs.text();
    assert!(logs.contains("api call"), "{logs}");
    assert!(
        logs.contains("Call GPT") && logs.contains("conversation failed"),
        "{logs}"
    );
    assert!(logs.contains("retrying api call"), "{logs}");
    assert!(logs.contains("?key=***"), "{logs}");
    exposed.add("tracing output", logs);
    exposed.assert_clean();
}

#[tokio::test]
async fn transport_errors_naming_the_key_do_not_leak_it() {
    let logs = Logs::capture();
    let mut exposed = Exposed::default();

    type Outcome = fn() -> HttpError;
    let cases: [(&str, Outcome, u32); 4] = [
        (
            "connect",
            || HttpError::Connect(format!("dns failed for {KEY}")),
            3,
        ),
        (
            "transport",
            || HttpError::Transport(format!("reset while sending Bearer {KEY}")),
            1,
        ),
        (
            "invalid request",
            || HttpError::InvalidRequest(format!("bad header value {KEY}")),
            1,
        ),
        ("timeout", || HttpError::Timeout(Duration::from_secs(30)), 1),
    ];
    for (label, outcome, attempts) in cases {
        let (http, seen) = recording(move |_| Err(outcome()));
        let engine = engine_for(CALL, http.clone());
        let (conversation, result, _) = converse(&mut exposed, label, &engine, &["hello"]).await;
        let error = result.expect_err(label);
        assert!(
            matches!(error, RunError::Transport { attempts: a, .. } if a == attempts),
            "{label}: {error:?}"
        );
        assert!(matches!(conversation.status(), Status::Failed { .. }));
        let stored = &conversation.step_result("Call GPT").unwrap()["error"]["message"];
        assert!(stored.is_string(), "{stored}");
        assert_eq!(http.seen().len() as u32, attempts);
        debug_requests(&mut exposed, &seen);
    }

    // With `on_error`: the stored error reaches a Message, still masked.
    let (http, _) = recording(|_| Err(HttpError::Transport(format!("TLS alert for key={KEY}"))));
    let engine = engine_for(CALL_WITH_ON_ERROR, http);
    let (_, result, events) = converse(&mut exposed, "transport on_error", &engine, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    let shown = events[0].text().unwrap();
    assert!(shown.contains("TLS alert for key=***"), "{shown}");

    let logs = logs.text();
    assert!(
        logs.contains("api call") && logs.contains("conversation failed"),
        "{logs}"
    );
    exposed.add("tracing output", logs);
    exposed.assert_clean();
}

/// The default reqwest transport against a real server that echoes the key,
/// and against a closed port.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_reqwest_transport_does_not_leak_the_key() {
    use wiremock::matchers::{method, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let logs = Logs::capture();
    let mut exposed = Exposed::default();
    let flow = CALL.replace("http://api.test", "<<var.base>>");
    let build = |base: String| {
        Engine::builder(Flow::from_json(&flow).unwrap())
            .shared_clock(Arc::new(VirtualClock::new()))
            .var("base", base)
            .secret("K", KEY)
            .build()
            .unwrap()
    };

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(query_param("key", KEY))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("x-echo", KEY)
                .set_body_json(json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let engine = build(server.uri());
    let (_, result, _) = converse(&mut exposed, "reqwest 401", &engine, &["hello"]).await;
    let error = result.unwrap_err();
    assert!(matches!(error, RunError::Status { status: 401, .. }), "{error}");
    assert!(
        error.to_string().contains("Incorrect API key provided: ***"),
        "{error}"
    );

    // A port nobody listens on: reqwest's connect error, retried.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let engine = build(format!("http://127.0.0.1:{port}"));
    let (_, result, _) = converse(&mut exposed, "reqwest refused", &engine, &["hello"]).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, RunError::Transport { attempts: 3, .. }),
        "{error}"
    );

    let logs = logs.text();
    assert!(logs.contains("api call") && logs.contains("Call GPT"), "{logs}");
    exposed.add("tracing output", logs);
    exposed.assert_clean();
}

#[tokio::test]
async fn the_step_limit_error_does_not_leak_the_key() {
    let logs = Logs::capture();
    let mut exposed = Exposed::default();
    const FLOW: &str = r#"{
      "name": "poll forever",
      "steps": [
        {"type": "api", "name": "Poll", "method": "GET", "url": "http://api.test/run?key=<<secret.K>>",
         "headers": {"Authorization": "Bearer <<secret.K>>"}},
        {"type": "delay", "name": "Wait", "seconds": 1},
        {"type": "goto", "name": "Again", "target": "Poll"}
      ]
    }"#;
    let (http, seen) = recording(|_| {
        Ok(HttpResponse::json(
            200,
            &json!({"status": "in_progress", "echo": KEY}),
        ))
    });
    let engine = Engine::builder(Flow::from_json(FLOW).unwrap())
        .http_client(http)
        .shared_clock(Arc::new(VirtualClock::new()))
        .secret("K", KEY)
        .options(EngineOptions::default().with_max_steps_without_reply(7))
        .build()
        .unwrap();
    let (conversation, result, _) = converse(&mut exposed, "step limit", &engine, &[]).await;
    let error = result.unwrap_err();
    assert!(matches!(error, RunError::StepLimit { limit: 7, .. }), "{error}");
    // No template reads the echo, so it is not even kept.
    assert_eq!(conversation.step_result("Poll").unwrap(), &json!({"status": 200}));
    debug_requests(&mut exposed, &seen);

    let logs = logs.text();
    assert!(logs.contains("Poll") && logs.contains("seems to loop"), "{logs}");
    exposed.add("tracing output", logs);
    exposed.assert_clean();
}

// ---------------------------------------------------------------------------
// Success, handoff, requests

#[tokio::test]
async fn a_response_echoing_the_key_is_stored_masked() {
    let logs = Logs::capture();
    let mut exposed = Exposed::default();
    let (http, seen) = recording(|_| {
        let body = r#"{"output": "your key is sk-live-TOPSECRET-123",
                       "escaped": "\u0073k-live-TOPSECRET\u002d123",
                       "sk-live-TOPSECRET-123": {"nested": ["sk-live-TOPSECRET-123"]}}"#;
        let response = with_header(HttpResponse::new(200, body), "set-cookie", &format!("k={KEY}"));
        Ok(with_header(response, "set-cookie", "other=1"))
    });
    // A flow that keeps the whole response and its headers (a template reads them).
    let keeping = CALL.replace(
        r#"{"type": "message", "name": "Answer""#,
        r#"{"type": "contact_update", "name": "Keep", "set": {"all": "<<step.Call GPT.response>>", "headers": "<<step.Call GPT.headers>>"}},
    {"type": "message", "name": "Answer""#,
    );
    let engine = engine_for(&keeping, http);
    let (conversation, result, events) = converse(&mut exposed, "echo", &engine, &["hello"]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    let stored = conversation.step_result("Call GPT").unwrap();
    assert_eq!(stored["response"]["output"], "your key is ***");
    assert_eq!(stored["response"]["escaped"], "***");
    assert_eq!(stored["response"]["***"]["nested"][0], "***");
    assert_eq!(stored["headers"]["set-cookie"], "k=***, other=1");
    assert_eq!(events[1].text(), Some("your key is ***"));
    debug_requests(&mut exposed, &seen);

    // A conversation parked and resumed stays clean.
    let parked = serde_json::to_string(&conversation).unwrap();
    let resumed: Conversation = serde_json::from_str(&parked).unwrap();
    exposed.conversation("resumed", &resumed);

    let logs = logs.text();
    assert!(
        logs.contains("api call") && logs.contains("flow finished"),
        "{logs}"
    );
    exposed.add("tracing output", logs);
    exposed.assert_clean();
}

/// An Assign note built from a response that echoed the key gets the
/// stored, masked value.
#[tokio::test]
async fn an_assign_note_never_shows_the_key() {
    let logs = Logs::capture();
    let mut exposed = Exposed::default();
    let flow = CALL.replace(
        r#"{"type": "message", "name": "Answer", "text": "<<step.Call GPT.response.output>>"}"#,
        r#"{"type": "assign", "name": "To a human", "team": "<<step.Call GPT.response.team>>",
            "note": "user said <<step.Ask.response>>; GPT said <<step.Call GPT.response.output>>"}"#,
    );
    let (http, _) = recording(|_| {
        Ok(HttpResponse::json(
            200,
            &json!({"output": format!("use {KEY}"), "team": KEY}),
        ))
    });
    let engine = engine_for(&flow, http);
    let (conversation, result, events) = converse(&mut exposed, "assign", &engine, &["help"]).await;
    let Ok(Status::HandedOff { assignment }) = result else {
        panic!("{result:?}")
    };
    assert_eq!(
        assignment.note.as_deref(),
        Some("user said help; GPT said use ***")
    );
    assert_eq!(assignment.team.as_deref(), Some("***"));
    assert!(matches!(conversation.status(), Status::HandedOff { .. }));
    assert!(matches!(&events[1], Event::Handoff { assignment: a, .. } if *a == assignment));

    let logs = logs.text();
    assert!(
        logs.contains("handed off") && logs.contains("To a human"),
        "{logs}"
    );
    exposed.add("tracing output", logs);
    exposed.assert_clean();
}

#[test]
fn request_debug_hides_sensitive_headers() {
    let request = HttpRequest::new(Method::Post, format!("http://api.test/v1/chat?key={KEY}"))
        .with_display_url("http://api.test/v1/chat?key=***")
        .with_header(Header::new("Authorization", format!("Bearer {KEY}")).with_sensitive(true))
        .with_header(Header::new("X-Trace", "abc-123"))
        .with_body(format!(r#"{{"key": "{KEY}"}}"#).into_bytes());
    let debug = format!("{request:?}");
    assert!(debug.contains("Authorization: \"***\""), "{debug}");
    assert!(debug.contains("X-Trace: \"abc-123\""), "{debug}");
    assert!(debug.contains("key=***"), "{debug}");
    let mut exposed = Exposed::default();
    exposed.add("request Debug", debug);
    exposed.add("header Debug", format!("{:?}", request.headers()[0]));
    exposed.assert_clean();
}

// ---------------------------------------------------------------------------
// A flow that would put the key where the user sees it

/// A secret outside an Api step's url, headers or body would reach the
/// user, the stored state or a log: such a flow does not load. (So an
/// Assign step's masking of `<<secret.*>>` can no longer be reached.)
#[test]
fn a_flow_cannot_show_the_key_outside_api_steps() {
    let mut exposed = Exposed::default();
    let steps = [
        r#"{"type": "message", "name": "Show", "text": "Your key is <<secret.K>>"}"#,
        r#"{"type": "message", "name": "Show", "text": "{{secret.K}}"}"#,
        r#"{"type": "question", "name": "Show", "text": "Key <<secret.K>>?"}"#,
        r#"{"type": "assign", "name": "Show", "note": "key <<secret.K>>"}"#,
        r#"{"type": "assign", "name": "Show", "team": "<<secret.K>>"}"#,
        r#"{"type": "contact_update", "name": "Show", "set": {"key": "<<secret.K>>"}}"#,
        r#"{"type": "contact_update", "name": "Show", "set": {"auth": "Bearer <<secret.K>>"}}"#,
        r#"{"type": "condition", "name": "Show", "all": [{"left": "<<secret.K>>", "op": "is_empty"}]}"#,
        r#"{"type": "condition", "name": "Show", "any": [{"left": "x", "op": "equals", "right": "<<secret.K>>"}]}"#,
    ];
    for step in steps {
        let flow = format!(
            r#"{{"name": "shows the key", "steps": [{step}, {{"type": "message", "name": "End", "text": "end"}}]}}"#
        );
        let error = Flow::from_json(&flow).expect_err(step);
        assert!(
            error.to_string().contains("may only be used in an Api step"),
            "{step}: {error}"
        );
        exposed.error(step, &error);
    }
    exposed.assert_clean();
}

// ---------------------------------------------------------------------------
// Leaks found once: a key cut in half by truncation, and a key percent-encoded in a URL.

/// A long server message is cut at 300 characters before the key is
/// masked, so a key that straddles the cut survives in part.
#[tokio::test]
async fn a_truncated_error_message_does_not_keep_part_of_the_key() {
    let logs = Logs::capture();
    let mut exposed = Exposed::default();
    let (http, _) = recording(|_| {
        // 282 + 18 = 300: the cut falls after "sk-live-TOPSECRET-".
        let message = format!("{}{KEY} is not a valid key", "x".repeat(282));
        Ok(HttpResponse::json(401, &json!({"error": {"message": message}})))
    });
    let engine = engine_for(CALL, http);
    let (_, result, _) = converse(&mut exposed, "truncated", &engine, &["hello"]).await;
    assert!(
        matches!(result, Err(RunError::Status { status: 401, .. })),
        "{result:?}"
    );
    let engine = engine_for(&CALL_WITH_ON_ERROR.replace("\"GET\"", "\"POST\""), {
        let (http, _) = recording(|_| {
            let message = format!("{}{KEY}", "y".repeat(282));
            Ok(HttpResponse::json(400, &json!({"message": message})))
        });
        http
    });
    let (_, result, _) = converse(&mut exposed, "truncated on_error", &engine, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    exposed.add("tracing output", logs.text());
    exposed.assert_clean();
}

/// A transport error quoting the request URL holds the key
/// percent-encoded when it has characters outside RFC 3986's unreserved
/// set; redaction looks for the raw key only.
#[tokio::test]
async fn a_transport_error_quoting_the_url_does_not_leak_an_encoded_key() {
    let logs = Logs::capture();
    let mut exposed = Exposed::default();
    let key = "sk/live+TOPSECRET=123";
    let (http, _) = recording(|request| Err(HttpError::Connect(format!("cannot reach {}", request.url()))));
    let engine = Engine::builder(Flow::from_json(CALL).unwrap())
        .http_client(http)
        .shared_clock(Arc::new(VirtualClock::new()))
        .secret("K", key)
        .build()
        .unwrap();
    let (_, result, _) = converse(&mut exposed, "encoded", &engine, &["hello"]).await;
    assert!(
        matches!(result, Err(RunError::Transport { attempts: 3, .. })),
        "{result:?}"
    );
    let (http, _) = recording(|request| Err(HttpError::Transport(format!("reset by {}", request.url()))));
    let engine = Engine::builder(Flow::from_json(CALL_WITH_ON_ERROR).unwrap())
        .http_client(http)
        .shared_clock(Arc::new(VirtualClock::new()))
        .secret("K", key)
        .build()
        .unwrap();
    let (_, result, _) = converse(&mut exposed, "encoded on_error", &engine, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    exposed.add("tracing output", logs.text());
    exposed.assert_clean();
}

/// A numeric secret (an account PIN) that a server echoes as a JSON number
/// is masked too; other numbers stay numbers.
#[tokio::test]
async fn a_numeric_secret_echoed_as_a_number_is_masked() {
    // Every test here that runs a flow captures its logs: tracing caches
    // whether a log line is wanted the first time it is reached, so one
    // run without a subscriber could hide lines from a test that has one.
    let logs = Logs::capture();
    let flow = Flow::from_json(
        r#"{"name": "pin", "steps": [
          {"type": "api", "name": "Check", "method": "POST", "url": "http://api.test/check",
           "body": {"pin": "<<secret.PIN>>"}},
          {"type": "message", "name": "Show", "text": "<<step.Check.response>>"}
        ]}"#,
    )
    .unwrap();
    let http = FakeHttp::new(|_| {
        Ok(HttpResponse::json(
            200,
            &json!({"pin": 987654321, "account": [1987654321, 42], "tries": 3}),
        ))
    });
    let engine = Engine::builder(flow)
        .http_client(http)
        .secret("PIN", "987654321")
        .build()
        .unwrap();
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    let kept = &conversation.step_result("Check").unwrap()["response"];
    assert_eq!(kept, &json!({"pin": "***", "account": ["1***", 42], "tries": 3}));
    let state = serde_json::to_string(&conversation).unwrap();
    assert!(!state.contains("987654321"), "{state}");
    assert!(!events.texts().concat().contains("987654321"));
    let logs = logs.text();
    assert!(logs.contains("api call") && !logs.contains("987654321"), "{logs}");
}
