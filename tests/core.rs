//! The deterministic core, stepped directly: no transport, no clock. Each
//! test feeds the machine the time and the outcomes of its effects and
//! checks the effects it asks for.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chatflow::core::{Effect, Outbound, Wake};
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse, Method};
use chatflow::{Conversation, Engine, Flow, RunError, Status};
use serde_json::json;

/// Proves the core never sends anything itself.
struct NoTransport;

#[async_trait]
impl HttpClient for NoTransport {
    async fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        panic!("the core must not send requests")
    }
}

fn engine(flow: &str, jitter: f64) -> Engine {
    Engine::builder(Flow::from_json(flow).unwrap())
        .http_client(NoTransport)
        .jitter(move || jitter)
        .secret("key", "sk-secret-1")
        .build()
        .unwrap()
}

const T0: Duration = Duration::from_secs(1_767_225_600);

fn at(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs_f64(secs)
}

const LOOKUP: &str = r#"{"name": "lookup", "steps": [
  {"type": "api", "name": "Order", "method": "GET",
   "url": "https://shop.example/orders/1?key=<<secret.key>>"},
  {"type": "message", "name": "Say", "text": "Order is <<step.Order.response.state>>"}
]}"#;

fn sent_text(effect: Effect<'_>) -> String {
    match effect {
        Effect::Send(entry) => entry.text().unwrap_or_default().to_string(),
        other => panic!("expected a send, got {other:?}"),
    }
}

#[test]
fn a_question_waits_for_the_reply_then_the_flow_finishes() {
    let engine = engine(
        r#"{"name": "ask", "steps": [
          {"type": "question", "name": "Ask", "text": "Name?"},
          {"type": "contact_update", "name": "Save", "set": {"name": "<<step.Ask.response>>"}},
          {"type": "message", "name": "Hi", "text": "Hi <<contact.name>>"}
        ]}"#,
        0.0,
    );
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    match machine.poll(&mut c, at(0.0)) {
        Effect::Send(Outbound::Question { step, text, .. }) => assert_eq!((&*step, &*text), ("Ask", "Name?")),
        other => panic!("{other:?}"),
    }
    // Waiting is stable: polling again asks for the reply again.
    for _ in 0..2 {
        assert!(matches!(machine.poll(&mut c, at(1.0)), Effect::AwaitReply));
    }
    engine.receive(&mut c, "Ada").unwrap();
    assert_eq!(sent_text(machine.poll(&mut c, at(2.0))), "Hi Ada");
    assert!(matches!(machine.poll(&mut c, at(2.0)), Effect::Finish));
    assert!(matches!(machine.poll(&mut c, at(2.0)), Effect::Ended));
    assert_eq!(c.status(), &Status::Finished);
}

#[test]
fn an_api_step_asks_for_a_call_and_keeps_its_answer() {
    let engine = engine(LOOKUP, 0.0);
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    match machine.poll(&mut c, at(0.0)) {
        Effect::Http { request, attempt } => {
            assert_eq!(attempt, 1);
            assert_eq!(request.method(), Method::Get);
            assert_eq!(request.url(), "https://shop.example/orders/1?key=sk-secret-1");
            assert_eq!(request.display_url(), "https://shop.example/orders/1?key=***");
        }
        other => panic!("{other:?}"),
    }
    // Asked again until the outcome comes: the same call, not a second one.
    assert!(matches!(
        machine.poll(&mut c, at(0.0)),
        Effect::Http { attempt: 1, .. }
    ));
    assert!(machine.calling());
    machine.http_done(
        &mut c,
        Ok(HttpResponse::json(200, &json!({"state": "shipped"}))),
        at(0.2),
    );
    assert!(!machine.calling());
    assert_eq!(sent_text(machine.poll(&mut c, at(0.2))), "Order is shipped");
    assert!(matches!(machine.poll(&mut c, at(0.2)), Effect::Finish));
}

#[test]
fn a_retry_backs_off_by_the_injected_jitter_then_calls_again() {
    for (jitter, backoff) in [(0.0, 0.5), (1.0, 0.375)] {
        let engine = engine(LOOKUP, jitter);
        let mut c = engine.start("c1");
        let mut machine = engine.machine(&mut c);
        assert!(matches!(
            machine.poll(&mut c, at(0.0)),
            Effect::Http { attempt: 1, .. }
        ));
        machine.http_done(&mut c, Ok(HttpResponse::new(503, "busy")), at(1.0));
        let until = at(1.0 + backoff);
        let retry = Effect::Sleep {
            until,
            wake: Wake::Retry { attempt: 2 },
        };
        // Before the time has come, the same sleep; the state has not moved.
        for now in [1.0, 1.0 + backoff / 2.0] {
            let effect = machine.poll(&mut c, at(now));
            assert_eq!(format!("{effect:?}"), format!("{retry:?}"));
        }
        assert_eq!(c.step_result("Order"), None);
        assert!(matches!(
            machine.poll(&mut c, until),
            Effect::Http { attempt: 2, .. }
        ));
        machine.http_done(
            &mut c,
            Ok(HttpResponse::json(200, &json!({"state": "late"}))),
            until,
        );
        assert_eq!(sent_text(machine.poll(&mut c, until)), "Order is late");
    }
}

#[test]
fn the_last_failed_attempt_fails_the_conversation_naming_the_step() {
    let engine = engine(LOOKUP, 0.0);
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    let mut now = 0.0;
    for attempt in 1..=3 {
        assert!(matches!(machine.poll(&mut c, at(now)), Effect::Http { attempt: a, .. } if a == attempt));
        machine.http_done(
            &mut c,
            Err(HttpError::Connect("refused sk-secret-1".into())),
            at(now),
        );
        if attempt < 3 {
            let Effect::Sleep { until, .. } = machine.poll(&mut c, at(now)) else {
                panic!("attempt {attempt} should be retried");
            };
            now = until.duration_since(at(0.0)).unwrap().as_secs_f64();
        }
    }
    match machine.poll(&mut c, at(now)) {
        Effect::Fail(RunError::Transport { step, attempts, .. }) => {
            assert_eq!((&*step, attempts), ("Order", 3))
        }
        other => panic!("{other:?}"),
    }
    let Status::Failed { error } = c.status() else {
        panic!("{:?}", c.status())
    };
    assert!(
        error.contains("Order") && !error.contains("sk-secret-1"),
        "{error}"
    );
    assert!(matches!(machine.poll(&mut c, at(now)), Effect::Ended));
}

#[test]
fn a_dropped_machine_makes_the_call_again_from_the_first_attempt() {
    let engine = engine(LOOKUP, 0.0);
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    assert!(matches!(
        machine.poll(&mut c, at(0.0)),
        Effect::Http { attempt: 1, .. }
    ));
    machine.http_done(&mut c, Ok(HttpResponse::new(500, "")), at(0.0));
    drop(machine);
    // What a crash leaves: the conversation, parked and loaded again.
    let mut c: Conversation = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(c.status(), &Status::Running);
    assert_eq!(c.current_step(), Some("Order"));
    let mut machine = engine.machine(&mut c);
    assert!(matches!(
        machine.poll(&mut c, at(5.0)),
        Effect::Http { attempt: 1, .. }
    ));
}

#[test]
fn a_delay_sleeps_until_its_end_and_may_be_parked() {
    let engine = engine(
        r#"{"name": "wait", "steps": [
          {"type": "delay", "name": "Wait", "seconds": 10},
          {"type": "message", "name": "Done", "text": "done"}
        ]}"#,
        0.0,
    );
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    let sleep = |effect: Effect<'_>| match effect {
        Effect::Sleep {
            until,
            wake: Wake::Delay,
        } => until,
        other => panic!("{other:?}"),
    };
    assert_eq!(sleep(machine.poll(&mut c, at(0.0))), at(10.0));
    assert_eq!(c.status(), &Status::Sleeping { until: at(10.0) });
    assert_eq!(sleep(machine.poll(&mut c, at(9.9))), at(10.0));
    // A new machine (a parked conversation resumed) wakes it just the same.
    let mut machine = engine.machine(&mut c);
    assert_eq!(sent_text(machine.poll(&mut c, at(10.0))), "done");
}

#[test]
fn a_handoff_is_a_notice_then_the_end_of_the_bots_part() {
    let engine = engine(
        r#"{"name": "handoff", "steps": [
          {"type": "contact_update", "name": "Save", "set": {"topic": "refund"}},
          {"type": "assign", "name": "Assign", "team": "billing", "note": "about <<contact.topic>>"}
        ]}"#,
        0.0,
    );
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    match machine.poll(&mut c, at(0.0)) {
        Effect::Send(Outbound::Handoff(assignment)) => {
            assert_eq!(assignment.team.as_deref(), Some("billing"));
            assert_eq!(assignment.note.as_deref(), Some("about refund"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(machine.poll(&mut c, at(0.0)), Effect::HandOff));
    assert!(matches!(machine.poll(&mut c, at(0.0)), Effect::Ended));
    assert!(c.status().is_ended());
}

#[test]
fn a_conversation_of_another_flow_fails_at_the_first_poll() {
    let engine = engine(LOOKUP, 0.0);
    let other = self::engine(
        r#"{"name": "other", "steps": [{"type": "message", "name": "M", "text": "m"}]}"#,
        0.0,
    );
    let mut c = other.start("c1");
    let mut machine = engine.machine(&mut c);
    assert!(matches!(
        machine.poll(&mut c, at(0.0)),
        Effect::Fail(RunError::WrongFlow { .. })
    ));
}

#[test]
fn a_loop_without_replies_hits_the_step_limit() {
    let engine = engine(
        r#"{"name": "loop", "steps": [
          {"type": "contact_update", "name": "A", "set": {"x": 1}},
          {"type": "goto", "name": "Back", "target": "A", "max_visits": 100000, "fallback": "End"},
          {"type": "message", "name": "End", "text": "never"}
        ]}"#,
        0.0,
    );
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    match machine.poll(&mut c, at(0.0)) {
        Effect::Fail(RunError::StepLimit { limit, .. }) => assert_eq!(limit, 1000),
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.steps_run(), 1000);
}

#[test]
fn a_failed_call_with_on_error_keeps_the_error_and_goes_there() {
    let engine = engine(
        r#"{"name": "lookup", "steps": [
          {"type": "api", "name": "Order", "method": "POST", "url": "https://shop.example/orders",
           "body": {"id": 1}, "on_error": "Sorry"},
          {"type": "message", "name": "Ok", "text": "ok"},
          {"type": "message", "name": "Sorry", "text": "Sorry: <<step.Order.error.kind>> <<step.Order.status>>"}
        ]}"#,
        0.0,
    );
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    match machine.poll(&mut c, at(0.0)) {
        Effect::Http { request, attempt: 1 } => {
            assert_eq!(request.step(), Some("Order"));
            assert_eq!(request.header("content-type"), Some("application/json"));
        }
        other => panic!("{other:?}"),
    }
    // A POST that may have been processed is not retried.
    machine.http_done(&mut c, Ok(HttpResponse::new(500, "down")), at(0.0));
    assert_eq!(sent_text(machine.poll(&mut c, at(0.0))), "Sorry: status 500");
}

#[test]
fn replies_queued_during_a_call_join_into_the_next_answer() {
    let engine = engine(
        r#"{"name": "ask", "steps": [
          {"type": "api", "name": "Warm", "method": "GET", "url": "https://shop.example/warm"},
          {"type": "question", "name": "Ask", "text": "Yes?"},
          {"type": "message", "name": "Echo", "text": "<<step.Ask.response>>"}
        ]}"#,
        0.0,
    );
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    assert!(matches!(machine.poll(&mut c, at(0.0)), Effect::Http { .. }));
    // The user writes twice while the call is in flight.
    engine.receive(&mut c, "one").unwrap();
    engine.receive(&mut c, "two").unwrap();
    machine.http_done(&mut c, Ok(HttpResponse::json(200, &json!({}))), at(0.1));
    assert_eq!(sent_text(machine.poll(&mut c, at(0.1))), "Yes?");
    assert_eq!(sent_text(machine.poll(&mut c, at(0.1))), "one\ntwo");
}

const MENU: &str = r#"{"name": "menu", "steps": [
  {"type": "question", "name": "Ask", "text": "How can I help?", "options": [
    {"id": "track", "title": "Track an order", "description": "Where is my parcel"},
    "Talk to a person"
  ]},
  {"type": "condition", "name": "Picked?", "all": [{"left": "<<step.Ask.option>>", "op": "is_empty"}],
   "then": "Ask"},
  {"type": "message", "name": "Said", "text": "<<step.Ask.option>> (you wrote <<step.Ask.response>>)"}
]}"#;

#[test]
fn a_question_sends_its_options_and_the_answer_names_the_option() {
    let engine = engine(MENU, 0.0);
    let expected = vec![
        chatflow::QuestionOption::new("track", "Track an order").with_description("Where is my parcel"),
        chatflow::QuestionOption::new("Talk to a person", "Talk to a person"),
    ];
    for (answer, said) in [
        ("track", "track (you wrote track)"),
        ("  TRACK AN ORDER ", "track (you wrote   TRACK AN ORDER )"),
        ("2", "Talk to a person (you wrote 2)"),
        (
            "talk to a person",
            "Talk to a person (you wrote talk to a person)",
        ),
    ] {
        let mut c = engine.start("c1");
        let mut machine = engine.machine(&mut c);
        match machine.poll(&mut c, at(0.0)) {
            Effect::Send(Outbound::Question { options, .. }) => assert_eq!(options, expected),
            other => panic!("{other:?}"),
        }
        engine.receive(&mut c, answer).unwrap();
        assert_eq!(
            sent_text(machine.poll(&mut c, at(1.0))),
            said,
            "answer {answer:?}"
        );
    }
}

#[test]
fn an_answer_that_matches_no_option_is_free_text_without_an_option() {
    let engine = engine(MENU, 0.0);
    let mut c = engine.start("c1");
    let mut machine = engine.machine(&mut c);
    assert!(matches!(
        machine.poll(&mut c, at(0.0)),
        Effect::Send(Outbound::Question { .. })
    ));
    engine.receive(&mut c, "3").unwrap();
    // No option: the flow's condition asks again, with the same options.
    match machine.poll(&mut c, at(1.0)) {
        Effect::Send(Outbound::Question { step, options, .. }) => {
            assert_eq!(&*step, "Ask");
            assert_eq!(options.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    engine.receive(&mut c, "where is my parcel").unwrap();
    assert!(matches!(
        machine.poll(&mut c, at(2.0)),
        Effect::Send(Outbound::Question { .. })
    ));
    engine.receive(&mut c, "1").unwrap();
    assert_eq!(sent_text(machine.poll(&mut c, at(3.0))), "track (you wrote 1)");
}
