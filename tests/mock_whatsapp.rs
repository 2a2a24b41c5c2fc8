//! Integration tests for `chatflow::mock::whatsapp`: real HTTP against the
//! Graph side, a tiny axum receiver for the webhook side, and the bodies the
//! mock accepts or refuses checked against Meta's own OpenAPI description.
#![cfg(all(feature = "mock", feature = "reqwest"))]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chatflow::mock::whatsapp::{
    GraphRequest, MockWhatsApp, MockWhatsAppConfig, SendFault, SentKind, StatusKind, WebhookError,
};
use chatflow::{Clock, VirtualClock};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use yaml_rust2::{Yaml, YamlLoader};

const USER: &str = "15551234567";

// ---------------------------------------------------------------------------
// A small Graph client and sample bodies.

struct Answer {
    status: u16,
    body: Value,
}

thread_local! {
    /// One client per test thread (each test has its own thread and runtime):
    /// building a client loads the TLS roots, too slow to do per request.
    static CLIENT: reqwest::Client = reqwest::Client::new();
}

fn client() -> reqwest::Client {
    CLIENT.with(Clone::clone)
}

/// Posts `body` to the mock's messages URL with `token` (none if `None`).
async fn post_raw(url: &str, token: Option<&str>, body: Vec<u8>) -> Answer {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the mock answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

async fn send(mock: &MockWhatsApp, body: &Value) -> Answer {
    post_raw(
        &mock.messages_url(),
        Some(&mock.access_token()),
        body.to_string().into_bytes(),
    )
    .await
}

/// A mock on a virtual clock, and a user who wrote just now.
async fn mock_with_open_window() -> (MockWhatsApp, Arc<VirtualClock>) {
    let clock = Arc::new(VirtualClock::new());
    let mock = MockWhatsApp::start(MockWhatsAppConfig::new().clock(clock.clone())).await;
    mock.note_inbound(USER, clock.now());
    (mock, clock)
}

fn text(body: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": "text",
        "text": {"preview_url": false, "body": body},
    })
}

fn buttons(titles: &[&str]) -> Value {
    let buttons: Vec<Value> = titles
        .iter()
        .enumerate()
        .map(|(i, title)| json!({"type": "reply", "reply": {"id": format!("opt_{i}"), "title": title}}))
        .collect();
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "How can I help?"},
            "action": {"buttons": buttons},
        },
    })
}

/// A list of `rows` rows in one section.
fn list(rows: usize) -> Value {
    let rows: Vec<Value> = (0..rows)
        .map(|i| json!({"id": format!("row_{i}"), "title": format!("Row {i}"), "description": "A row"}))
        .collect();
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": "Pick one"},
            "action": {"button": "Options", "sections": [{"title": "All", "rows": rows}]},
        },
    })
}

fn template() -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": "template",
        "template": {
            "name": "order_update",
            "language": {"code": "en_US", "policy": "deterministic"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-1"}]}],
        },
    })
}

fn mark_read(message_id: &str) -> Value {
    json!({"messaging_product": "whatsapp", "status": "read", "message_id": message_id})
}

/// Sets the value at a JSON pointer (creating nothing), or removes it with `None`.
fn with(mut body: Value, pointer: &str, value: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    let target = body.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
    match (target, value) {
        (Value::Object(object), Some(value)) => {
            object.insert(key.to_owned(), value);
        }
        (Value::Object(object), None) => {
            object.remove(key);
        }
        (Value::Array(items), Some(value)) => items[key.parse::<usize>().expect("index")] = value,
        (Value::Array(items), None) => {
            items.remove(key.parse::<usize>().expect("index"));
        }
        (other, _) => panic!("{parent} is {other}"),
    }
    body
}

/// Asserts a Graph error of `status` and `code`, with every key Graph sends,
/// and returns its `error`.
fn assert_graph_error(answer: &Answer, status: u16, code: i64) -> Value {
    assert_eq!(answer.status, status, "body: {}", answer.body);
    let error = answer.body["error"].clone();
    assert_eq!(error["code"], code, "error: {error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
    assert!(error["type"].is_string(), "{error}");
    assert_eq!(error["error_data"]["messaging_product"], "whatsapp", "{error}");
    assert!(error["error_data"]["details"].is_string(), "{error}");
    assert!(
        error["fbtrace_id"].as_str().is_some_and(|t| !t.is_empty()),
        "{error}"
    );
    error
}

// ---------------------------------------------------------------------------
// The Graph side: credentials and routes.

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_code_190_and_the_token_is_never_recorded() {
    let (mock, _clock) = mock_with_open_window().await;
    let url = mock.messages_url();
    let body = text("hi").to_string().into_bytes();

    let missing = post_raw(&url, None, body.clone()).await;
    let error = assert_graph_error(&missing, 401, 190);
    assert_eq!(error["type"], "OAuthException");
    let wrong = post_raw(&url, Some("EAAwrong"), body.clone()).await;
    assert_eq!(assert_graph_error(&wrong, 401, 190)["type"], "OAuthException");
    // The right token passes.
    assert_eq!(post_raw(&url, Some(&mock.access_token()), body).await.status, 200);

    let requests = mock.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 200]);
    assert_eq!(requests[0].error_code, Some(190));
    assert_eq!(requests[1].header("authorization"), Some("Bearer <redacted>"));
    assert!(
        !format!("{requests:?}").contains(&mock.access_token()),
        "the token must not be recorded"
    );
    assert_eq!(mock.sent().len(), 1, "refused sends are not recorded as sent");
}

#[tokio::test]
async fn an_unknown_phone_number_id_or_route_is_400_code_100() {
    let (mock, _clock) = mock_with_open_window().await;
    let token = mock.access_token();
    let body = text("hi").to_string().into_bytes();

    let unknown = format!("{}/999/messages", mock.uri());
    let error = assert_graph_error(&post_raw(&unknown, Some(&token), body.clone()).await, 400, 100);
    assert_eq!(error["type"], "GraphMethodException");
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains("'999'")),
        "{error}"
    );

    let other_version = mock.messages_url().replace("/v23.0/", "/v19.0/");
    assert_graph_error(
        &post_raw(&other_version, Some(&token), body.clone()).await,
        400,
        100,
    );

    let get = client()
        .get(mock.messages_url())
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    assert_eq!(get.status().as_u16(), 400);
    assert!(mock.sent().is_empty());
    assert_eq!(mock.requests().len(), 3);
}

// ---------------------------------------------------------------------------
// Shapes and limits.

/// Bodies the mock refuses with 400 / 100, and a word its message must contain.
fn refused_for_shape() -> Vec<(&'static str, Value, &'static str)> {
    let long = |n: usize| Value::String("x".repeat(n));
    vec![
        (
            "no messaging_product",
            with(text("hi"), "/messaging_product", None),
            "messaging_product",
        ),
        (
            "no recipient_type",
            with(text("hi"), "/recipient_type", None),
            "recipient_type",
        ),
        ("no to", with(text("hi"), "/to", None), "to"),
        ("no type", with(text("hi"), "/type", None), "type"),
        (
            "an unknown type",
            with(text("hi"), "/type", Some(json!("fax"))),
            "type",
        ),
        ("no text object", with(text("hi"), "/text", None), "text"),
        (
            "a text that is a string",
            with(text("hi"), "/text", Some(json!("hi"))),
            "text",
        ),
        (
            "an unknown key",
            with(text("hi"), "/colour", Some(json!("red"))),
            "colour",
        ),
        (
            "an unknown key in text",
            with(text("hi"), "/text/bold", Some(json!(true))),
            "bold",
        ),
        (
            "a preview_url that is a string",
            with(text("hi"), "/text/preview_url", Some(json!("no"))),
            "preview_url",
        ),
        (
            "to that is a number",
            with(text("hi"), "/to", Some(json!(15551234567_u64))),
            "to",
        ),
        ("4 reply buttons", buttons(&["a", "b", "c", "d"]), "buttons"),
        ("no reply buttons", buttons(&[]), "buttons"),
        (
            "a button title of 21",
            buttons(&["123456789012345678901"]),
            "title",
        ),
        (
            "a button id of 257",
            with(
                buttons(&["a"]),
                "/interactive/action/buttons/0/reply/id",
                Some(long(257)),
            ),
            "id",
        ),
        (
            "a button without a title",
            with(buttons(&["a"]), "/interactive/action/buttons/0/reply/title", None),
            "title",
        ),
        (
            "an interactive body of 1025",
            with(buttons(&["a"]), "/interactive/body/text", Some(long(1025))),
            "body",
        ),
        (
            "an interactive without an action",
            with(buttons(&["a"]), "/interactive/action", None),
            "action",
        ),
        ("11 rows in a section", list(11), "rows"),
        (
            "a row title of 25",
            with(
                list(1),
                "/interactive/action/sections/0/rows/0/title",
                Some(long(25)),
            ),
            "title",
        ),
        (
            "a row description of 73",
            with(
                list(1),
                "/interactive/action/sections/0/rows/0/description",
                Some(long(73)),
            ),
            "description",
        ),
        (
            "a menu label of 21",
            with(list(1), "/interactive/action/button", Some(long(21))),
            "button",
        ),
        (
            "a list without a menu label",
            with(list(1), "/interactive/action/button", None),
            "button",
        ),
        (
            "a list without sections",
            with(list(1), "/interactive/action/sections", Some(json!([]))),
            "sections",
        ),
        (
            "a template without a name",
            with(template(), "/template/name", None),
            "name",
        ),
        (
            "a template without a language",
            with(template(), "/template/language", None),
            "language",
        ),
        (
            "a template without a language code",
            with(template(), "/template/language/code", None),
            "code",
        ),
        (
            "a template without a language policy",
            with(template(), "/template/language/policy", None),
            "policy",
        ),
    ]
}

/// Bodies the mock refuses although Meta's schema cannot say so: limits and
/// rules only the API's documentation states.
fn refused_beyond_the_schema() -> Vec<(&'static str, Value, &'static str)> {
    let two_sections = |rows: usize| {
        let section = |s: usize| {
            let rows: Vec<Value> = (0..rows)
                .map(|r| json!({"id": format!("s{s}r{r}"), "title": format!("Row {r}")}))
                .collect();
            json!({"title": format!("Section {s}"), "rows": rows})
        };
        with(
            list(1),
            "/interactive/action/sections",
            Some(json!([section(0), section(1)])),
        )
    };
    vec![
        (
            "an interactive without a body",
            with(buttons(&["a"]), "/interactive/body", None),
            "body",
        ),
        ("a text of 4097", text(&"x".repeat(4097)), "4096"),
        ("an empty text", text(""), "body"),
        (
            "a text without a body",
            with(text("hi"), "/text/body", None),
            "body",
        ),
        ("11 rows over two sections", two_sections(6), "10 rows"),
        ("repeated button titles", buttons(&["Same", "Same"]), "unique"),
        (
            "messaging_product sms",
            with(text("hi"), "/messaging_product", Some(json!("sms"))),
            "whatsapp",
        ),
        (
            "recipient_type group",
            with(text("hi"), "/recipient_type", Some(json!("group"))),
            "individual",
        ),
        (
            "to with letters",
            with(text("hi"), "/to", Some(json!("call-me"))),
            "to",
        ),
    ]
}

#[tokio::test]
async fn every_shape_rule_answers_400_code_100_naming_what_is_wrong() {
    let (mock, _clock) = mock_with_open_window().await;
    let cases: Vec<_> = refused_for_shape()
        .into_iter()
        .chain(refused_beyond_the_schema())
        .collect();
    for (name, body, word) in &cases {
        let answer = send(&mock, body).await;
        let error = assert_graph_error(&answer, 400, 100);
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("(#100) "), "{name}: {message}");
        assert!(
            message.contains(word),
            "{name}: {message:?} should mention {word:?}"
        );
        assert_eq!(
            error["error_data"]["details"].as_str(),
            message.strip_prefix("(#100) "),
            "{name}"
        );
    }
    assert!(mock.sent().is_empty(), "nothing refused is recorded as sent");
    assert_eq!(mock.requests().len(), cases.len());
    assert!(
        mock.requests()
            .iter()
            .all(|r| r.status == 400 && r.error_code == Some(100))
    );
}

#[tokio::test]
async fn malformed_bodies_get_a_graph_error_never_a_500() {
    let (mock, _clock) = mock_with_open_window().await;
    let url = mock.messages_url();
    let token = mock.access_token();
    let raw: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        b"[]".to_vec(),
        b"null".to_vec(),
        b"42".to_vec(),
        b"\"text\"".to_vec(),
    ];
    for body in raw {
        let answer = post_raw(&url, Some(&token), body.clone()).await;
        assert_graph_error(&answer, 400, 100);
    }
    // Every field with every wrong JSON type.
    let wrong_types = [
        json!(null),
        json!(1),
        json!(true),
        json!([]),
        json!({}),
        json!("s"),
    ];
    let samples = [
        text("hi"),
        buttons(&["a", "b"]),
        list(2),
        template(),
        mark_read("wamid.x"),
    ];
    let mut pointers = Vec::new();
    for sample in &samples {
        collect_pointers(sample, "", &mut pointers);
        for pointer in &pointers {
            for wrong in &wrong_types {
                let body = with(sample.clone(), pointer, Some(wrong.clone()));
                let answer = send(&mock, &body).await;
                assert!(
                    answer.status == 200 || (answer.status == 400 && answer.body["error"]["code"] == 100),
                    "{pointer} = {wrong}: {} {}",
                    answer.status,
                    answer.body
                );
            }
        }
        pointers.clear();
    }
    assert!(mock.requests().iter().all(|r| r.status < 500));
}

/// Every JSON pointer below `value`.
fn collect_pointers(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let pointer = format!("{at}/{key}");
                out.push(pointer.clone());
                collect_pointers(child, &pointer, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let pointer = format!("{at}/{i}");
                out.push(pointer.clone());
                collect_pointers(child, &pointer, out);
            }
        }
        _ => {}
    }
}

/// Bodies the mock accepts, each at the edge of a limit.
fn accepted() -> Vec<(&'static str, Value)> {
    let two_sections = {
        let section = |s: usize, rows: usize| {
            let rows: Vec<Value> = (0..rows)
                .map(|r| {
                    json!({
                        "id": format!("s{s}r{r}"),
                        "title": format!("{s}{r}{}", "t".repeat(22)),
                        "description": "d".repeat(72),
                    })
                })
                .collect();
            json!({"title": "s".repeat(24), "rows": rows})
        };
        with(
            list(1),
            "/interactive/action/sections",
            Some(json!([section(0, 4), section(1, 6)])),
        )
    };
    vec![
        ("a text of 4096", text(&"é".repeat(4096))),
        (
            "a reply to a message",
            with(text("ok"), "/context", Some(json!({"message_id": "wamid.in"}))),
        ),
        (
            "3 reply buttons of 20",
            buttons(&["12345678901234567890", "Talk to a person", "Track an order"]),
        ),
        (
            "a button id of 256",
            with(
                buttons(&["a"]),
                "/interactive/action/buttons/0/reply/id",
                Some(json!("i".repeat(256))),
            ),
        ),
        (
            "a body of 1024",
            with(
                buttons(&["a"]),
                "/interactive/body/text",
                Some(json!("b".repeat(1024))),
            ),
        ),
        (
            "a header and a footer",
            with(
                with(
                    buttons(&["a"]),
                    "/interactive/header",
                    Some(json!({"type": "text", "text": "Orders"})),
                ),
                "/interactive/footer",
                Some(json!({"text": "Reply with a tap"})),
            ),
        ),
        ("10 rows in one section", list(10)),
        ("10 rows over two sections", two_sections),
        (
            "a menu label of 20",
            with(list(1), "/interactive/action/button", Some(json!("m".repeat(20)))),
        ),
        ("a template", template()),
        (
            "a template without components",
            with(template(), "/template/components", None),
        ),
        (
            "an image by link",
            json!({
                "messaging_product": "whatsapp", "recipient_type": "individual", "to": USER,
                "type": "image", "image": {"link": "https://example.com/a.png", "caption": "A"},
            }),
        ),
        (
            "a document by id",
            json!({
                "messaging_product": "whatsapp", "recipient_type": "individual", "to": USER,
                "type": "document", "document": {"id": "1234", "filename": "a.pdf"},
            }),
        ),
        (
            "a reaction",
            json!({
                "messaging_product": "whatsapp", "recipient_type": "individual", "to": USER,
                "type": "reaction", "reaction": {"message_id": "wamid.in", "emoji": "👍"},
            }),
        ),
        (
            "a phone number with punctuation",
            with(text("hi"), "/to", Some(json!("+1 (555) 123-4567"))),
        ),
    ]
}

#[tokio::test]
async fn sends_at_every_limit_are_accepted_recorded_and_answered_with_unique_wamids() {
    let (mock, clock) = mock_with_open_window().await;
    let cases = accepted();
    let mut wamids = Vec::new();
    for (name, body) in &cases {
        let answer = send(&mock, body).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        assert_eq!(answer.body["messaging_product"], "whatsapp", "{name}");
        assert_eq!(answer.body["contacts"][0]["input"], body["to"], "{name}");
        assert_eq!(answer.body["contacts"][0]["wa_id"], USER, "{name}");
        let wamid = answer.body["messages"][0]["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        assert!(wamid.starts_with("wamid."), "{wamid}");
        wamids.push(wamid);
    }
    let mut unique = wamids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), wamids.len(), "wamids are unique");

    let sent = mock.sent();
    assert_eq!(sent.len(), cases.len());
    for ((name, body), record) in cases.iter().zip(&sent) {
        assert_eq!(&record.body, body, "{name}: the raw body is kept");
        assert_eq!(record.wa_id, USER, "{name}");
        assert_eq!(record.to, body["to"], "{name}");
        assert_eq!(record.at, clock.now(), "{name}");
    }
    assert_eq!(wamids, sent.iter().map(|s| s.wamid.clone()).collect::<Vec<_>>());

    let kinds: Vec<SentKind> = sent.iter().map(|s| s.kind).collect();
    assert_eq!(kinds[0], SentKind::Text);
    assert_eq!(kinds[2], SentKind::ReplyButtons);
    assert_eq!(kinds[6], SentKind::List);
    assert_eq!(kinds[9], SentKind::Template);
    assert_eq!(kinds[11], SentKind::Image);
    assert_eq!(kinds[12], SentKind::Document);
    assert_eq!(kinds[13], SentKind::Reaction);

    assert_eq!(sent[1].reply_to.as_deref(), Some("wamid.in"));
    assert_eq!(sent[1].text.as_deref(), Some("ok"));
    let titles: Vec<&str> = sent[2].options.iter().map(|o| o.title.as_str()).collect();
    assert_eq!(
        titles,
        ["12345678901234567890", "Talk to a person", "Track an order"]
    );
    assert_eq!(sent[2].text.as_deref(), Some("How can I help?"));
    assert_eq!(sent[6].options.len(), 10);
    assert_eq!(sent[6].menu_button.as_deref(), Some("Options"));
    assert_eq!(sent[6].options[3].id, "row_3");
    assert_eq!(sent[6].options[3].description.as_deref(), Some("A row"));
    assert_eq!(sent[7].options.len(), 10, "rows of every section, in order");
    assert_eq!(sent[7].options[4].id, "s1r0");
    let template = sent[9].template.as_ref().expect("a template");
    assert_eq!(
        (template.name.as_str(), template.language.as_str()),
        ("order_update", "en_US")
    );
    assert_eq!(sent[9].text, None);
    assert_eq!(sent[14].to, "+1 (555) 123-4567");

    assert_eq!(mock.sent_to(USER).len(), cases.len());
    assert!(mock.sent_to("15550000000").is_empty());
    let texts = mock.texts_to(USER);
    assert_eq!(texts[0], "é".repeat(4096));
    assert!(texts.contains(&"How can I help?".to_owned()));
    assert!(mock.reads().is_empty());
}

// ---------------------------------------------------------------------------
// Read receipts.

#[tokio::test]
async fn mark_as_read_is_accepted_and_recorded_apart_from_sends() {
    let (mock, _clock) = mock_with_open_window().await;
    let inbound = mock.notification().text(USER, "Hello").build();
    let wamid = inbound.message_ids()[0].clone();

    let answer = send(&mock, &mark_read(&wamid)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, json!({"success": true}));
    let typing = with(
        mark_read("wamid.other"),
        "/typing_indicator",
        Some(json!({"type": "text"})),
    );
    assert_eq!(send(&mock, &typing).await.status, 200);

    let reads = mock.reads();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0].message_id, wamid);
    assert!(reads[0].known && !reads[0].typing_indicator);
    assert!(!reads[1].known && reads[1].typing_indicator);
    assert!(mock.sent().is_empty(), "a read receipt is not a send");

    let bad_status = with(mark_read(&wamid), "/status", Some(json!("delivered")));
    assert!(
        assert_graph_error(&send(&mock, &bad_status).await, 400, 100)["message"]
            .as_str()
            .is_some_and(|m| m.contains("read"))
    );
    let no_id = with(mark_read(&wamid), "/message_id", None);
    assert_graph_error(&send(&mock, &no_id).await, 400, 100);
    assert_eq!(mock.reads().len(), 2);
}

// ---------------------------------------------------------------------------
// Fault injection.

#[tokio::test]
async fn injected_faults_hit_the_next_sends_in_order_and_spare_read_receipts() {
    let (mock, _clock) = mock_with_open_window().await;
    mock.fail_next(2, SendFault::RateLimited);
    mock.fail_next(1, SendFault::PairRateLimit);
    mock.fail_next(1, SendFault::WindowClosed);
    mock.fail_next(1, SendFault::ServerError);
    mock.fail_next(1, SendFault::Undeliverable);
    assert_eq!(mock.pending_faults(), 6);

    // A read receipt does not use a fault.
    assert_eq!(send(&mock, &mark_read("wamid.x")).await.status, 200);
    assert_eq!(mock.pending_faults(), 6);

    let expected = [
        (400, 130_429),
        (400, 130_429),
        (400, 131_056),
        (400, 131_047),
        (500, 131_000),
        (400, 131_026),
    ];
    for (status, code) in expected {
        assert_graph_error(&send(&mock, &text("hi")).await, status, code);
    }
    assert_eq!(mock.pending_faults(), 0);
    assert!(mock.sent().is_empty());
    assert_eq!(send(&mock, &text("hi")).await.status, 200, "faults are used up");
    assert_eq!(mock.sent().len(), 1);

    // A fault takes the place of the body's own checks, and a custom one
    // carries any status and code.
    mock.fail_next(1, SendFault::RateLimited);
    assert_graph_error(&send(&mock, &with(text("hi"), "/to", None)).await, 400, 130_429);
    mock.fail_next(
        1,
        SendFault::Custom {
            status: 429,
            code: 80_007,
            message: "Rate limit issues".to_owned(),
        },
    );
    let custom = assert_graph_error(&send(&mock, &text("hi")).await, 429, 80_007);
    assert_eq!(custom["message"], "(#80007) Rate limit issues");

    mock.fail_next(3, SendFault::ServerError);
    mock.clear_faults();
    assert_eq!(send(&mock, &text("hi")).await.status, 200);

    let codes: Vec<Option<i64>> = mock.requests().iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes.iter().filter(|c| c.is_some()).count(),
        8,
        "refused requests are logged: {codes:?}"
    );
}

#[tokio::test]
async fn faults_come_after_the_token_check() {
    let (mock, _clock) = mock_with_open_window().await;
    mock.fail_next(1, SendFault::ServerError);
    let answer = post_raw(
        &mock.messages_url(),
        Some("wrong"),
        text("hi").to_string().into_bytes(),
    )
    .await;
    assert_graph_error(&answer, 401, 190);
    assert_eq!(
        mock.pending_faults(),
        1,
        "a request refused before the send keeps the fault"
    );
}

// ---------------------------------------------------------------------------
// The 24-hour window.

#[tokio::test]
async fn the_window_opens_with_each_inbound_message_and_closes_24_hours_later() {
    let clock = Arc::new(VirtualClock::new());
    let mock = MockWhatsApp::start(MockWhatsAppConfig::new().clock(clock.clone())).await;

    // Never wrote: only a template may go out.
    assert!(!mock.window_open(USER));
    assert_graph_error(&send(&mock, &text("hi")).await, 400, 131_047);
    assert_graph_error(&send(&mock, &buttons(&["a"])).await, 400, 131_047);
    assert_eq!(send(&mock, &template()).await.status, 200);

    // The user writes (a notification the mock builds notes it).
    let written = clock.now();
    mock.notification().text(USER, "Hi").build();
    assert_eq!(mock.last_inbound(USER), Some(written));
    assert!(mock.window_open(USER));
    clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert_eq!(send(&mock, &text("still inside")).await.status, 200);
    assert_eq!(send(&mock, &list(3)).await.status, 200);

    clock.advance(Duration::from_secs(1));
    assert!(!mock.window_open(USER), "closed exactly 24 h after the message");
    let closed = assert_graph_error(&send(&mock, &text("too late")).await, 400, 131_047);
    assert!(
        closed["error_data"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("24 hours"))
    );
    assert_eq!(
        send(&mock, &template()).await.status,
        200,
        "templates pass a closed window"
    );

    // note_inbound keeps the latest time; an older one does not reopen.
    mock.note_inbound(USER, written);
    assert_graph_error(&send(&mock, &text("too late")).await, 400, 131_047);
    mock.note_inbound(USER, clock.now());
    assert_eq!(send(&mock, &text("welcome back")).await.status, 200);

    // Each user has their own window.
    assert!(!mock.window_open("15550000000"));
    let texts = mock.texts_to(USER);
    assert_eq!(texts, ["still inside", "Pick one", "welcome back"]);
    assert_eq!(mock.sent_to(USER).len(), 5);
}

#[tokio::test]
async fn a_notification_timestamp_in_the_past_counts_from_then() {
    let clock = Arc::new(VirtualClock::new());
    let mock = MockWhatsApp::start(MockWhatsAppConfig::new().clock(clock.clone())).await;
    let two_days_ago = clock.now() - Duration::from_secs(48 * 3600);
    let notification = mock.notification().at(two_days_ago).text(USER, "old").build();
    let message = &notification.json()["entry"][0]["changes"][0]["value"]["messages"][0];
    let seconds = two_days_ago
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(message["timestamp"], seconds.to_string());
    assert_graph_error(&send(&mock, &text("hi")).await, 400, 131_047);
}

// ---------------------------------------------------------------------------
// The webhook side, against a tiny receiver.

/// What the receiver got: headers and raw bytes of each POST.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// Starts an axum receiver answering `status` to `POST /hook`; returns its URL.
async fn receiver(status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State((received, status)): State<(Received, StatusCode)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    received.lock().expect("lock").push((headers, body));
                    status
                },
            ),
        )
        .with_state((received.clone(), status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/hook"), received)
}

/// Checks the signature header as a server must: HMAC-SHA256 over the raw bytes.
fn assert_signed(headers: &HeaderMap, body: &[u8], secret: &str) {
    let header = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .expect("a signature header");
    let digits = header.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let expected = hex::decode(digits).expect("hex digits");
    mac.verify_slice(&expected)
        .expect("the signature matches the raw bytes");
}

#[tokio::test]
async fn a_text_notification_is_signed_and_shaped_as_meta_sends_it() {
    let clock = Arc::new(VirtualClock::new());
    let mock = MockWhatsApp::start(
        MockWhatsAppConfig::new()
            .clock(clock.clone())
            .app_secret("the-app-secret")
            .phone_number_id("555000111"),
    )
    .await;
    let (url, received) = receiver(StatusCode::OK).await;

    let posted = mock
        .post_text(&url, USER, "Ana Souza", "Où est ma commande ? 📦")
        .await
        .expect("posted");
    assert_eq!(posted.status, 200);
    assert_eq!(posted.message_ids.len(), 1);

    let (headers, body) = received.lock().expect("lock")[0].clone();
    assert_signed(&headers, &body, "the-app-secret");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    // Not signed with another secret.
    let mut other = Hmac::<Sha256>::new_from_slice(b"another").expect("key");
    other.update(&body);
    assert_ne!(
        format!("sha256={}", hex::encode(other.finalize().into_bytes())),
        headers["x-hub-signature-256"].to_str().expect("ascii")
    );

    let payload: Value = serde_json::from_slice(&body).expect("JSON");
    let seconds = clock
        .now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(
        payload,
        json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": "102290129340398",
                "changes": [{
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "555000111"},
                        "contacts": [{"profile": {"name": "Ana Souza"}, "wa_id": USER}],
                        "messages": [{
                            "from": USER,
                            "id": posted.message_ids[0],
                            "timestamp": seconds.to_string(),
                            "type": "text",
                            "text": {"body": "Où est ma commande ? 📦"},
                        }],
                    },
                }],
            }],
        })
    );
    assert!(posted.message_ids[0].starts_with("wamid."));
    assert_eq!(mock.last_inbound(USER), Some(clock.now()));
}

#[tokio::test]
async fn replies_to_buttons_and_lists_point_at_the_interactive_message() {
    let (mock, _clock) = mock_with_open_window().await;
    let (url, received) = receiver(StatusCode::OK).await;
    let answer = send(&mock, &buttons(&["Track an order", "Talk to a person"])).await;
    let interactive = answer.body["messages"][0]["id"].as_str().expect("id").to_owned();

    mock.post_text(&url, USER, "Ana", "hi").await.expect("posted");
    mock.post_button_reply(&url, USER, "opt_1", "Talk to a person")
        .await
        .expect("posted");
    mock.post_list_reply(&url, USER, "row_2", "Row 2", Some("A row"))
        .await
        .expect("posted");

    let bodies: Vec<Value> = received
        .lock()
        .expect("lock")
        .iter()
        .map(|(headers, body)| {
            assert_signed(headers, body, &mock.app_secret());
            serde_json::from_slice(body).expect("JSON")
        })
        .collect();
    let value = &bodies[1]["entry"][0]["changes"][0]["value"];
    assert_eq!(
        value["contacts"][0]["profile"]["name"], "Ana",
        "the name is remembered"
    );
    let message = &value["messages"][0];
    assert_eq!(message["type"], "interactive");
    assert_eq!(
        message["interactive"],
        json!({"type": "button_reply", "button_reply": {"id": "opt_1", "title": "Talk to a person"}})
    );
    assert_eq!(
        message["context"],
        json!({"from": "15550783881", "id": interactive})
    );
    let list_reply = &bodies[2]["entry"][0]["changes"][0]["value"]["messages"][0]["interactive"];
    assert_eq!(
        *list_reply,
        json!({"type": "list_reply", "list_reply": {"id": "row_2", "title": "Row 2", "description": "A row"}})
    );
}

#[tokio::test]
async fn statuses_follow_the_recorded_sends_and_a_failure_carries_its_code() {
    let (mock, _clock) = mock_with_open_window().await;
    let (url, received) = receiver(StatusCode::OK).await;
    assert!(matches!(
        mock.post_statuses(&url).await,
        Err(WebhookError::NothingToReport)
    ));

    send(&mock, &text("one")).await;
    send(&mock, &text("two")).await;
    let wamids: Vec<String> = mock.sent().iter().map(|s| s.wamid.clone()).collect();
    // A post that got no answer leaves the statuses to report.
    assert!(matches!(
        mock.post_statuses("http://127.0.0.1:9/hook").await,
        Err(WebhookError::Http { .. })
    ));
    let posted = mock.post_statuses(&url).await.expect("posted");
    assert_eq!(posted.status, 200);
    assert!(posted.message_ids.is_empty());
    assert!(
        matches!(mock.post_statuses(&url).await, Err(WebhookError::NothingToReport)),
        "each send once"
    );

    mock.post_failed(&url, &wamids[1], 131_047).await.expect("posted");
    // A status built by hand.
    let delivered = mock
        .notification()
        .status(&wamids[0], StatusKind::Delivered)
        .build();
    mock.post(&url, &delivered).await.expect("posted");

    let bodies: Vec<Value> = received
        .lock()
        .expect("lock")
        .iter()
        .map(|(headers, body)| {
            assert_signed(headers, body, &mock.app_secret());
            serde_json::from_slice(body).expect("JSON")
        })
        .collect();
    let change = &bodies[0]["entry"][0]["changes"][0];
    assert_eq!(change["field"], "messages");
    assert!(change["value"].get("messages").is_none() && change["value"].get("contacts").is_none());
    let statuses = change["value"]["statuses"].as_array().expect("statuses");
    let pairs: Vec<(&str, &str)> = statuses
        .iter()
        .map(|s| (s["id"].as_str().unwrap_or(""), s["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        pairs,
        [
            (wamids[0].as_str(), "sent"),
            (wamids[0].as_str(), "delivered"),
            (wamids[0].as_str(), "read"),
            (wamids[1].as_str(), "sent"),
            (wamids[1].as_str(), "delivered"),
            (wamids[1].as_str(), "read"),
        ]
    );
    assert!(
        statuses
            .iter()
            .all(|s| s["recipient_id"] == USER && s["timestamp"].is_string())
    );

    let failed = &bodies[1]["entry"][0]["changes"][0]["value"]["statuses"][0];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["id"], wamids[1].as_str());
    assert_eq!(failed["errors"][0]["code"], 131_047);
    assert_eq!(failed["errors"][0]["title"], "Re-engagement message");
    assert!(failed["errors"][0]["error_data"]["details"].is_string());
    assert_eq!(
        bodies[2]["entry"][0]["changes"][0]["value"]["statuses"][0]["status"],
        "delivered"
    );
}

#[tokio::test]
async fn a_redelivery_posts_the_same_bytes_and_the_answer_status_is_reported() {
    let (mock, _clock) = mock_with_open_window().await;
    let (url, received) = receiver(StatusCode::UNAUTHORIZED).await;
    let first = mock.post_text(&url, USER, "Ana", "hi").await.expect("posted");
    assert_eq!(first.status, 401, "the receiver's answer, whatever it is");
    let again = mock
        .redeliver(&url, &first.notification_id)
        .await
        .expect("posted");
    assert_eq!(again.message_ids, first.message_ids);
    assert_eq!(again.notification_id, first.notification_id);

    let received = received.lock().expect("lock").clone();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].1, received[1].1, "the same bytes");
    assert_eq!(
        received[0].0["x-hub-signature-256"],
        received[1].0["x-hub-signature-256"]
    );

    assert!(matches!(
        mock.redeliver(&url, "notification-unknown").await,
        Err(WebhookError::UnknownNotification { .. })
    ));
    // Nobody listening: an error, not a panic.
    let closed = "http://127.0.0.1:9/hook";
    assert!(matches!(
        mock.post_text(closed, USER, "Ana", "hi").await,
        Err(WebhookError::Http { .. })
    ));
}

#[tokio::test]
async fn a_built_notification_can_carry_several_messages_and_be_posted_by_hand() {
    let (mock, _clock) = mock_with_open_window().await;
    let notification = mock
        .notification()
        .contact(USER, "Ana")
        .contact("15557654321", "Bo")
        .text(USER, "one")
        .text("15557654321", "two")
        .message(
            USER,
            json!({"type": "image", "image": {"id": "media-1", "mime_type": "image/jpeg", "sha256": "abc"}}),
        )
        .status("wamid.unknown", StatusKind::Read)
        .build();
    assert_eq!(notification.message_ids().len(), 3);
    assert_eq!(mock.sign(notification.body()), notification.signature());
    assert_eq!(mock.built(notification.id()), Some(notification.clone()));

    let payload = notification.json();
    let changes = payload["entry"][0]["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2, "messages and statuses in separate changes");
    let contacts = &changes[0]["value"]["contacts"];
    assert_eq!(
        *contacts,
        json!([
            {"profile": {"name": "Ana"}, "wa_id": USER},
            {"profile": {"name": "Bo"}, "wa_id": "15557654321"},
        ])
    );
    assert_eq!(changes[0]["value"]["messages"][2]["image"]["id"], "media-1");
    assert_eq!(changes[1]["value"]["statuses"][0]["recipient_id"], "");
    assert!(
        mock.window_open("15557654321"),
        "building notes the inbound message"
    );

    // Posted by hand with a wrong signature, the receiver can refuse it.
    let (url, received) = receiver(StatusCode::OK).await;
    let response = client()
        .post(&url)
        .header("x-hub-signature-256", "sha256=00")
        .body(notification.body().to_vec())
        .send()
        .await
        .expect("posted");
    assert_eq!(response.status().as_u16(), 200);
    let (headers, body) = received.lock().expect("lock")[0].clone();
    let mut mac = Hmac::<Sha256>::new_from_slice(mock.app_secret().as_bytes()).expect("key");
    mac.update(&body);
    assert!(mac.verify_slice(&[0]).is_err());
    assert_eq!(headers["x-hub-signature-256"], "sha256=00");
}

// ---------------------------------------------------------------------------
// Agreement with Meta's OpenAPI description.

/// Meta's description of the Cloud API, in `shared/` beside the repository
/// (or in `$CHATFLOW_SHARED_DIR`, for a checkout elsewhere, e.g. a worktree).
fn spec_path() -> std::path::PathBuf {
    let shared = std::env::var_os("CHATFLOW_SHARED_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        std::path::PathBuf::from,
    );
    shared.join("whatsapp/business-messaging-api_v23.0.yaml")
}

/// The spec's `components`, or `None` outside CI when the file is absent.
fn components() -> Option<&'static Value> {
    static COMPONENTS: OnceLock<Option<Value>> = OnceLock::new();
    COMPONENTS
        .get_or_init(|| {
            let path = spec_path();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) => {
                    let on_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
                    assert!(
                        !on_ci,
                        "{}: {error}; CI must have shared/ beside the repository",
                        path.display()
                    );
                    eprintln!(
                        "skipping the contract checks: {} not readable ({error})",
                        path.display()
                    );
                    return None;
                }
            };
            let mut documents = YamlLoader::load_from_str(&text).expect("valid YAML");
            let mut document = to_json(documents.remove(0));
            Some(document["components"].take())
        })
        .as_ref()
}

fn to_json(yaml: Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Yaml::Integer(integer) => integer.into(),
        Yaml::String(text) => text.into(),
        Yaml::Boolean(boolean) => boolean.into(),
        Yaml::Array(items) => items.into_iter().map(to_json).collect(),
        Yaml::Hash(entries) => entries
            .into_iter()
            .map(|(key, value)| {
                let key = match to_json(key) {
                    Value::String(key) => key,
                    other => other.to_string(),
                };
                (key, to_json(value))
            })
            .collect(),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

/// Meta writes a message as `allOf: [BaseMessageProperties, {additionalProperties:
/// false, ...}]`, meaning "no keys beyond those declared in all the parts" (as
/// Prism reads it). In JSON Schema 2020-12 that is `unevaluatedProperties:
/// false` on the `allOf` itself; a literal reading would refuse every message.
fn allof_closed_as_unevaluated(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            let mut closed = false;
            if let Some(Value::Array(parts)) = object.get_mut("allOf") {
                for part in parts.iter_mut() {
                    if let Some(part) = part.as_object_mut()
                        && part.get("additionalProperties") == Some(&Value::Bool(false))
                    {
                        part.remove("additionalProperties");
                        closed = true;
                    }
                }
            }
            if closed {
                object.insert("unevaluatedProperties".to_owned(), Value::Bool(false));
            }
            for value in object.values_mut() {
                allof_closed_as_unevaluated(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(allof_closed_as_unevaluated),
        _ => {}
    }
}

fn validator(schema_name: &str) -> Option<jsonschema::Validator> {
    let mut components = components()?.clone();
    allof_closed_as_unevaluated(&mut components);
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{schema_name}"),
        "components": components,
    });
    Some(jsonschema::draft202012::new(&schema).expect("the spec's schemas compile"))
}

fn schema_errors(validator: &jsonschema::Validator, body: &Value) -> Vec<String> {
    validator
        .iter_errors(body)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn what_the_mock_accepts_meta_s_schema_accepts_and_shape_refusals_it_refuses() {
    let Some(validator) = validator("Message") else {
        return;
    };
    for (name, body) in accepted() {
        let errors = schema_errors(&validator, &body);
        assert!(
            errors.is_empty(),
            "accepted {name}, the schema refuses it: {errors:?}"
        );
    }
    let schema_accepts: Vec<&str> = refused_for_shape()
        .into_iter()
        .filter(|(_, body, _)| validator.is_valid(body))
        .map(|(name, _, _)| name)
        .collect();
    assert!(
        schema_accepts.is_empty(),
        "refused for their shape, but the schema accepts them: {schema_accepts:?}"
    );
    // What only the documentation states, the schema lets through: these
    // refusals are the API's, beyond the contract.
    let schema_refuses: Vec<(&str, Vec<String>)> = refused_beyond_the_schema()
        .into_iter()
        .filter(|(_, body, _)| !validator.is_valid(body))
        .map(|(name, body, _)| (name, schema_errors(&validator, &body)))
        .collect();
    assert!(schema_refuses.is_empty(), "now in the schema? {schema_refuses:?}");
    // The request examples Meta ships for the endpoint are valid too.
    let example = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+16505551234",
        "type": "text",
        "text": {"preview_url": true, "body": "As requested, here's the link to our latest product: https://www.meta.com/quest/quest-3/"},
    });
    assert!(validator.is_valid(&example));
}

#[test]
fn a_mark_as_read_body_matches_meta_s_schema() {
    let Some(validator) = validator("MarkMessageRequestPayload") else {
        return;
    };
    assert!(validator.is_valid(&mark_read("wamid.abc")));
    assert!(!validator.is_valid(&with(mark_read("wamid.abc"), "/message_id", None)));
}

#[test]
fn requests_and_sent_messages_are_plain_data() {
    fn assert_traits<T: Clone + std::fmt::Debug + PartialEq + Send + Sync>() {}
    assert_traits::<GraphRequest>();
    assert_traits::<chatflow::mock::whatsapp::SentMessage>();
    assert_traits::<chatflow::mock::whatsapp::ReadReceipt>();
    assert_traits::<chatflow::mock::whatsapp::Notification>();
}

#[tokio::test]
async fn the_verification_handshake_sends_meta_s_query_and_checks_the_echo() {
    use axum::extract::Query;
    use axum::routing::get;
    use std::collections::HashMap;

    let app = Router::new().route(
        "/hook",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            let right = query.get("hub.mode").map(String::as_str) == Some("subscribe")
                && query.get("hub.verify_token").map(String::as_str) == Some("let me in");
            match query.get("hub.challenge") {
                Some(challenge) if right => (StatusCode::OK, challenge.clone()),
                _ => (StatusCode::FORBIDDEN, String::new()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    let accepted = mock.verify_webhook(&url, "let me in").await.expect("answered");
    assert!(accepted.accepted(), "{accepted:?}");
    assert!(accepted.challenge.parse::<u32>().is_ok());
    let refused = mock.verify_webhook(&url, "wrong").await.expect("answered");
    assert_eq!(refused.status, 403);
    assert!(!refused.accepted());
    assert!(matches!(
        mock.verify_webhook("not a url", "x").await,
        Err(WebhookError::Http { .. })
    ));
}

#[tokio::test]
async fn a_status_can_reach_the_server_before_the_send_is_answered() {
    let (url, received) = receiver(StatusCode::OK).await;
    let clock = Arc::new(VirtualClock::new());
    let mock = MockWhatsApp::start(
        MockWhatsAppConfig::new()
            .clock(clock.clone())
            .statuses_before_answers(url.clone()),
    )
    .await;
    mock.note_inbound(USER, clock.now());

    let answer = send(&mock, &text("hi")).await;
    assert_eq!(answer.status, 200);
    let wamid = answer.body["messages"][0]["id"].as_str().expect("id").to_owned();
    // The status was posted, and answered, before the send's own answer.
    let (headers, body) = {
        let received = received.lock().expect("lock");
        assert_eq!(received.len(), 1, "the status is already there");
        received[0].clone()
    };
    assert_signed(&headers, &body, &mock.app_secret());
    let payload: Value = serde_json::from_slice(&body).expect("JSON");
    let status = &payload["entry"][0]["changes"][0]["value"]["statuses"][0];
    assert_eq!(status["id"], wamid.as_str());
    assert_eq!(status["status"], "sent");
    assert_eq!(status["recipient_id"], USER);

    // Refused sends post nothing.
    send(&mock, &with(text("hi"), "/to", None)).await;
    assert_eq!(received.lock().expect("lock").len(), 1);
}
