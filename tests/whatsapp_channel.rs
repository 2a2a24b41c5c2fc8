//! `WhatsAppChannel` against a fake Graph API that records every request
//! and answers from a script; time is a `VirtualClock`. Never the network.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use chatflow::channel::{Channel, Delivery, DeliveryOutcome};
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse, Method};
use chatflow::store::{Direction, MemoryStore, TranscriptEntry};
use chatflow::whatsapp::{WhatsAppChannel, WhatsAppSettings};
use chatflow::{Clock, Engine, Flow, QuestionOption, Runtime, VirtualClock};
use serde_json::{Value, json};

const TOKEN: &str = "EAAG-super-secret-token";
const TO: &str = "15551234567";
const CONVERSATION: &str = "whatsapp:15551234567";

/// The Graph API stand-in: answers from `script` (then 200 with a fresh
/// wamid), records what it was sent.
#[derive(Default)]
struct FakeGraph {
    script: Mutex<VecDeque<Result<HttpResponse, HttpError>>>,
    sent: Mutex<Vec<HttpRequest>>,
}

impl FakeGraph {
    fn answering(answers: impl IntoIterator<Item = Result<HttpResponse, HttpError>>) -> Arc<FakeGraph> {
        Arc::new(FakeGraph {
            script: Mutex::new(answers.into_iter().collect()),
            sent: Mutex::default(),
        })
    }

    fn bodies(&self) -> Vec<Value> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(r.body().unwrap()).unwrap())
            .collect()
    }
}

#[async_trait]
impl HttpClient for FakeGraph {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let n = {
            let mut sent = self.sent.lock().unwrap();
            sent.push(request.clone());
            sent.len()
        };
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(ok(&format!("wamid.OUT{n}"))))
    }
}

fn ok(wamid: &str) -> HttpResponse {
    HttpResponse::json(
        200,
        &json!({"messaging_product": "whatsapp", "contacts": [{"input": TO, "wa_id": TO}],
                "messages": [{"id": wamid}]}),
    )
}

fn graph_error(status: u16, code: i64, message: &str) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::json(
        status,
        &json!({"error": {"message": message, "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message}, "fbtrace_id": "Az"}}),
    ))
}

struct Setup {
    clock: Arc<VirtualClock>,
    graph: Arc<FakeGraph>,
    channel: WhatsAppChannel,
}

fn setup(graph: Arc<FakeGraph>) -> Setup {
    let clock = Arc::new(VirtualClock::new());
    let settings = WhatsAppSettings::new("verify", "app-secret", TOKEN, "PNID")
        .with_graph_url("http://graph.test/v23.0/");
    let channel = WhatsAppChannel::new(settings, graph.clone()).with_clock(clock.clone());
    Setup {
        clock,
        graph,
        channel,
    }
}

fn now_ms(clock: &VirtualClock) -> u64 {
    clock.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The user's message at seq 1, `age` before now.
fn inbound(clock: &VirtualClock, age: Duration) -> TranscriptEntry {
    let mut entry = TranscriptEntry::new(1, Direction::In, "hi", now_ms(clock) - age.as_millis() as u64);
    entry.message_id = Some("wamid.IN".into());
    entry
}

fn out(seq: u64, text: &str) -> TranscriptEntry {
    TranscriptEntry::new(seq, Direction::Out, text, 0)
}

fn delivery(setup: &Setup, entry: TranscriptEntry, age: Duration) -> Delivery {
    Delivery::new(CONVERSATION, entry).with_last_inbound(inbound(&setup.clock, age))
}

const FRESH: Duration = Duration::from_secs(60);
const STALE: Duration = Duration::from_secs(25 * 3600);

#[tokio::test]
async fn a_reply_marks_the_message_read_then_sends_the_text_with_the_bearer_token() {
    let s = setup(FakeGraph::answering([
        Ok(HttpResponse::json(200, &json!({"success": true}))),
        Ok(ok("wamid.HELLO")),
    ]));
    let outcome = s.channel.deliver(&delivery(&s, out(2, "Hello!"), FRESH)).await;
    assert_eq!(outcome, DeliveryOutcome::accepted("wamid.HELLO"));

    let sent = s.graph.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    for request in &sent {
        assert_eq!(request.method(), Method::Post);
        assert_eq!(request.url(), "http://graph.test/v23.0/PNID/messages");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let authorization = request
            .headers()
            .iter()
            .find(|h| h.name() == "Authorization")
            .unwrap();
        assert!(authorization.is_sensitive());
        assert!(!format!("{request:?}").contains(TOKEN));
    }
    assert_eq!(
        s.graph.bodies(),
        [
            json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"}),
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": TO,
                   "type": "text", "text": {"preview_url": false, "body": "Hello!"}}),
        ]
    );
}

#[tokio::test]
async fn only_the_first_entry_after_the_message_marks_it_read() {
    let s = setup(FakeGraph::answering([]));
    s.channel.deliver(&delivery(&s, out(3, "second"), FRESH)).await;
    let bodies = s.graph.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["type"], "text");
}

#[tokio::test]
async fn a_failed_read_receipt_does_not_fail_the_delivery() {
    let s = setup(FakeGraph::answering([
        graph_error(400, 100, "Invalid parameter"),
        Ok(ok("wamid.R")),
    ]));
    let outcome = s.channel.deliver(&delivery(&s, out(2, "Hello!"), FRESH)).await;
    assert_eq!(outcome, DeliveryOutcome::accepted("wamid.R"));
}

#[tokio::test]
async fn a_closed_window_without_a_template_is_refused() {
    let s = setup(FakeGraph::answering([]));
    let outcome = s
        .channel
        .deliver(&delivery(&s, out(2, "Late reply"), STALE))
        .await;
    let DeliveryOutcome::Refused { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("24-hour window"), "{reason}");
    assert!(s.graph.sent.lock().unwrap().is_empty());

    // No inbound message at all: the window never opened.
    let outcome = s
        .channel
        .deliver(&Delivery::new(CONVERSATION, out(1, "Hi")))
        .await;
    assert!(matches!(outcome, DeliveryOutcome::Refused { reason } if reason.contains("24-hour window")));
}

#[tokio::test]
async fn the_window_closes_24_hours_after_the_users_message_on_the_clock() {
    let s = setup(FakeGraph::answering([]));
    let entry = inbound(&s.clock, Duration::ZERO);
    let at = |seq| Delivery::new(CONVERSATION, out(seq, "x")).with_last_inbound(entry.clone());
    s.clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert!(matches!(
        s.channel.deliver(&at(2)).await,
        DeliveryOutcome::Accepted { .. }
    ));
    s.clock.advance(Duration::from_secs(1));
    assert!(matches!(
        s.channel.deliver(&at(3)).await,
        DeliveryOutcome::Refused { .. }
    ));
}

#[tokio::test]
async fn a_closed_window_sends_the_entrys_template() {
    let s = setup(FakeGraph::answering([Ok(ok("wamid.T"))]));
    let mut entry = out(2, "Your order has shipped");
    entry.details = Some(
        json!({"whatsapp_template": {"name": "order_update", "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-1"}]}]}}),
    );
    let outcome = s.channel.deliver(&delivery(&s, entry.clone(), STALE)).await;
    assert_eq!(outcome, DeliveryOutcome::accepted("wamid.T"));
    assert_eq!(
        s.graph.bodies(),
        [
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "template",
            "template": {"name": "order_update", "language": {"policy": "deterministic", "code": "en_US"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-1"}]}]}})
        ]
    );

    // Inside the window the same entry goes as its text.
    let s = setup(FakeGraph::answering([]));
    s.channel.deliver(&delivery(&s, entry, FRESH)).await;
    assert_eq!(
        s.graph.bodies().last().unwrap()["text"]["body"],
        "Your order has shipped"
    );

    // A template without a language is refused, saying why.
    let s = setup(FakeGraph::answering([]));
    let mut entry = out(2, "x");
    entry.details = Some(json!({"whatsapp_template": {"name": "order_update"}}));
    let outcome = s.channel.deliver(&delivery(&s, entry, STALE)).await;
    assert!(matches!(outcome, DeliveryOutcome::Refused { reason } if reason.contains("language")));
}

#[tokio::test]
async fn a_question_with_options_goes_as_buttons_or_a_list() {
    let s = setup(FakeGraph::answering([]));
    let mut entry = out(3, "How can I help?");
    entry.options = vec![
        QuestionOption::new("track", "Track an order"),
        QuestionOption::new("human", "Talk to a person"),
    ];
    s.channel.deliver(&delivery(&s, entry.clone(), FRESH)).await;
    entry.options = (1..=5)
        .map(|i| QuestionOption::new(format!("o{i}"), format!("Option {i}")))
        .collect();
    s.channel.deliver(&delivery(&s, entry, FRESH)).await;
    let bodies = s.graph.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["interactive"]["type"], "button");
    assert_eq!(
        bodies[0]["interactive"]["action"]["buttons"][1]["reply"]["id"],
        "human"
    );
    assert_eq!(bodies[1]["interactive"]["type"], "list");
    assert_eq!(
        bodies[1]["interactive"]["action"]["sections"][0]["rows"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(bodies[1]["interactive"]["action"]["button"], "Options");
}

#[tokio::test]
async fn a_handoff_sends_the_configured_notice() {
    let s = setup(FakeGraph::answering([]));
    let channel = s.channel.with_handoff_text("An agent is on the way.");
    let entry = TranscriptEntry::new(3, Direction::Handoff, "team billing", 0);
    let delivery = Delivery::new(CONVERSATION, entry).with_last_inbound(inbound(&s.clock, FRESH));
    assert!(matches!(
        channel.deliver(&delivery).await,
        DeliveryOutcome::Accepted { .. }
    ));
    assert_eq!(s.graph.bodies()[0]["text"]["body"], "An agent is on the way.");
}

#[tokio::test]
async fn a_long_text_goes_in_order_and_a_retry_resends_every_part() {
    let text = format!(
        "{}\n{}",
        "first ".repeat(600).trim_end(),
        "second ".repeat(500).trim_end()
    );
    let s = setup(FakeGraph::answering([
        Ok(ok("wamid.P1")),
        graph_error(400, 130429, "Rate limit hit"),
    ]));
    let entry = out(3, &text);
    let outcome = s.channel.deliver(&delivery(&s, entry.clone(), FRESH)).await;
    assert_eq!(
        outcome,
        DeliveryOutcome::retry_after(Duration::from_secs(1), "130429 Rate limit hit")
    );
    let outcome = s
        .channel
        .deliver(&delivery(&s, entry, FRESH).with_attempt(2))
        .await;
    assert_eq!(outcome, DeliveryOutcome::accepted("wamid.OUT4"));
    let parts: Vec<String> = s
        .graph
        .bodies()
        .iter()
        .map(|b| b["text"]["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0], "first ".repeat(600).trim_end());
    assert_eq!(parts[1], "second ".repeat(500).trim_end());
    assert_eq!(parts[2..], parts[..2]);
}

#[tokio::test]
async fn errors_are_retried_or_refused_as_the_api_says() {
    let cases: Vec<(Result<HttpResponse, HttpError>, DeliveryOutcome)> = vec![
        (
            graph_error(400, 131056, "Pair rate limit hit"),
            DeliveryOutcome::retry_after(Duration::from_secs(30), "131056 Pair rate limit hit"),
        ),
        (
            Ok(HttpResponse::new(502, "bad gateway").with_header("Retry-After", "5")),
            DeliveryOutcome::retry_after(Duration::from_secs(5), "HTTP 502"),
        ),
        (
            Err(HttpError::Connect("connection refused".into())),
            DeliveryOutcome::retry_after(
                Duration::from_secs(1),
                "Graph API unreachable: could not connect: connection refused",
            ),
        ),
        (
            graph_error(400, 131047, "Re-engagement message"),
            DeliveryOutcome::refused("the 24-hour window has closed (131047 Re-engagement message)"),
        ),
        (
            graph_error(400, 131026, "Message undeliverable"),
            DeliveryOutcome::refused("131026 Message undeliverable"),
        ),
        (
            graph_error(400, 100, "Invalid parameter"),
            DeliveryOutcome::refused("100 Invalid parameter"),
        ),
    ];
    for (answer, expected) in cases {
        let s = setup(FakeGraph::answering([answer]));
        let outcome = s.channel.deliver(&delivery(&s, out(5, "x"), FRESH)).await;
        assert_eq!(outcome, expected);
    }
}

#[tokio::test]
async fn the_token_never_shows_even_when_the_api_echoes_it() {
    let s = setup(FakeGraph::answering([graph_error(
        401,
        190,
        &format!("Error validating access token {TOKEN}: Session has expired"),
    )]));
    let outcome = s.channel.deliver(&delivery(&s, out(5, "x"), FRESH)).await;
    let DeliveryOutcome::Refused { reason } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.starts_with("190 Error validating access token"),
        "{reason}"
    );
    assert!(!reason.contains(TOKEN));
    assert!(!format!("{:?}", s.channel).contains(TOKEN));
}

#[tokio::test]
async fn an_empty_entry_is_refused_without_a_request() {
    let s = setup(FakeGraph::answering([]));
    let outcome = s.channel.deliver(&delivery(&s, out(2, " \n "), FRESH)).await;
    assert!(matches!(outcome, DeliveryOutcome::Refused { .. }));
    assert!(s.graph.sent.lock().unwrap().is_empty());
}

/// Through a Runtime: a WhatsApp conversation's replies go out through the
/// channel, the first one with the read receipt, and the Question's
/// options as buttons.
#[tokio::test]
async fn a_runtime_delivers_a_conversation_through_the_channel() {
    let flow = Flow::from_json(
        r#"{"name": "wa", "start": "start_flow", "steps": [
          {"type": "message", "name": "Hi", "text": "Hello!"},
          {"type": "question", "name": "Menu", "text": "How can I help?",
           "options": [{"id": "track", "title": "Track an order"}, {"id": "human", "title": "Talk to a person"}]},
          {"type": "message", "name": "Done", "text": "You chose <<step.Menu.response>>."}
        ]}"#,
    )
    .unwrap();
    chatflow::whatsapp::check_flow(&flow).unwrap();
    let engine = Engine::builder(flow).clock(VirtualClock::new()).build().unwrap();
    let graph = FakeGraph::answering([]);
    let settings = WhatsAppSettings::new("verify", "app-secret", TOKEN, "PNID");
    let channel = WhatsAppChannel::new(settings, graph.clone()).with_clock(engine.clock());
    let runtime = Runtime::builder(engine, Arc::new(MemoryStore::new()))
        .channel("whatsapp", Arc::new(channel))
        .build();

    runtime
        .handle_message(CONVERSATION, Some("wamid.IN1"), "hi")
        .await
        .unwrap();
    let report = runtime.deliver_due().await.unwrap();
    assert_eq!(report.accepted, 2);
    runtime
        .handle_message(CONVERSATION, Some("wamid.IN2"), "track")
        .await
        .unwrap();
    runtime.deliver_due().await.unwrap();

    let bodies = graph.bodies();
    let kinds: Vec<String> = bodies
        .iter()
        .map(|b| {
            b.get("type")
                .or(b.get("status"))
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["read", "text", "interactive", "read", "text"]);
    assert_eq!(bodies[0]["message_id"], "wamid.IN1");
    assert_eq!(
        bodies[2]["interactive"]["action"]["buttons"][0]["reply"]["id"],
        "track"
    );
    assert_eq!(bodies[3]["message_id"], "wamid.IN2");
    assert_eq!(bodies[4]["text"]["body"], "You chose track.");
}
