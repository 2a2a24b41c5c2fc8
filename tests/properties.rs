//! Property tests of templates and conditions, through the public API only:
//! every case builds a flow as JSON, runs it with a recording transport and
//! looks at the events and requests it produced.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use chatflow::{BuildError, Engine, EngineOptions, Event, EventLog, Flow, Operator, ReplyMode, Status};
use proptest::prelude::*;
use serde_json::{Value, json};

const SECRET: &str = "sk-secret";

/// Records every request and answers `200 {"ok": true}`.
#[derive(Clone, Default)]
struct Recorder {
    requests: Arc<Mutex<Vec<HttpRequest>>>,
}

impl Recorder {
    fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl HttpClient for Recorder {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.requests.lock().unwrap().push(request.clone());
        Ok(HttpResponse::json(200, &json!({"ok": true})))
    }
}

thread_local! {
    /// One runtime per test thread, reused by every case.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

fn flow(steps: Value) -> Result<Flow, chatflow::LoadError> {
    Flow::from_json(&json!({"name": "prop", "steps": steps}).to_string())
}

fn engine(flow: Flow, http: Recorder) -> Result<Engine, BuildError> {
    Engine::builder(flow)
        .http_client(http)
        .secret("K", SECRET)
        .var("name", "Ada")
        .build()
}

/// Placeholder syntax, path pieces and odd characters, glued in any order:
/// finds far more interesting templates than uniformly random text.
fn template_soup() -> impl Strategy<Value = String> {
    let placeholder = prop_oneof![
        Just("<<step.Q.response>>"),
        Just("{{step.Q.response}}"),
        Just("<< step.Q.response >>"),
        Just("<<step.Q.response.0>>"),
        Just("<<step.Q.response[0]>>"),
        Just("<<step.Q.response[type=x].y>>"),
        Just("<<step.Two words.status>>"),
        Just("<<step.M.error>>"),
        Just("<<contact.name>>"),
        Just("{{contact.name.first}}"),
        Just("<<contact.a[0][1]>>"),
        Just("<<conversation.id>>"),
        Just("<<var.name>>"),
        Just("<<var.other>>"),
        Just("<<secret.K>>"),
    ];
    let fragment = prop_oneof![
        Just("<<"),
        Just(">>"),
        Just("{{"),
        Just("}}"),
        Just("."),
        Just(".."),
        Just("["),
        Just("]"),
        Just("="),
        Just("[0]"),
        Just("[type=message]"),
        Just("step"),
        Just("step.Q"),
        Just("contact"),
        Just("var"),
        Just("secret"),
        Just("conversation"),
        Just("response"),
        Just("0"),
        Just("<"),
        Just(">"),
        Just("{"),
        Just("}"),
    ];
    let plain = prop_oneof![
        Just(" "),
        Just("hi"),
        Just("é"),
        Just("🦀"),
        Just("\u{0301}"),
        Just("\n"),
        Just("\\"),
        Just("\""),
    ];
    let token = prop_oneof![3 => placeholder, 1 => fragment, 3 => plain];
    prop::collection::vec(token, 0..16).prop_map(|tokens| tokens.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), template_soup(), "\\PC{0,40}"]
}

/// Replies a user might type, nasty ones included.
fn reply_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<String>(),
        Just("<<secret.K>>".to_string()),
        Just("{{secret.K}}".to_string()),
        Just("<<step.Q.response>>".to_string()),
        Just(SECRET.to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\\u0000".to_string()),
        Just("\u{0}\u{1}\u{1f}\u{7f}\r\n\t".to_string()),
        Just("\u{2028}\u{2029}\u{feff}".to_string()),
        Just("🦀é\u{0301}".to_string()),
        "[\\x00-\\x7f]{0,8}",
    ];
    prop::collection::vec(piece, 0..4).prop_map(|pieces| pieces.concat())
}

/// Runs one conversation to its end (or first wait) and returns its events.
fn run(engine: &Engine, replies: &[&str]) -> (Status, Vec<Event>) {
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    for reply in replies {
        engine.receive(&mut conversation, *reply).unwrap();
    }
    let status = match block_on(engine.run(&mut conversation, &events)) {
        Ok(status) => status,
        Err(_) => conversation.status().clone(),
    };
    (status, events.take())
}

fn texts(events: &[Event]) -> Vec<&str> {
    events.iter().filter_map(Event::text).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text as a Message: loading answers Ok or Err, and a flow that
    /// loads runs without panicking.
    #[test]
    fn template_parser_never_panics(text in any_text()) {
        let steps = json!([
            {"type": "question", "name": "Q", "text": "?"},
            {"type": "message", "name": "Two words", "text": "x"},
            {"type": "message", "name": "M", "text": text},
        ]);
        let Ok(flow) = flow(steps) else { return Ok(()) };
        let http = Recorder::default();
        match engine(flow, http) {
            Ok(engine) => {
                let (status, events) = run(&engine, &["hi"]);
                prop_assert_eq!(status, Status::Finished);
                prop_assert_eq!(texts(&events).len(), 3);
            }
            // Only a host value or secret the flow names and we did not give.
            Err(e) => prop_assert!(matches!(e, BuildError::Missing { .. }), "{e}"),
        }
    }

    /// Text without a placeholder opener renders as itself.
    #[test]
    fn plain_text_renders_as_itself(
        text in any_text().prop_filter("no opener", |t| !t.contains("<<") && !t.contains("{{"))
    ) {
        let steps = json!([{"type": "message", "name": "M", "text": text}]);
        let flow = flow(steps).unwrap();
        let engine = engine(flow, Recorder::default()).unwrap();
        let (status, events) = run(&engine, &[]);
        prop_assert_eq!(status, Status::Finished);
        prop_assert_eq!(texts(&events), vec![text.as_str()]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A reply is inserted verbatim into a message and never read as a template.
    #[test]
    fn replies_are_never_evaluated_in_messages(reply in reply_text()) {
        let steps = json!([
            {"type": "question", "name": "Q", "text": "?"},
            {"type": "message", "name": "M", "text": "You said: <<step.Q.response>>"},
        ]);
        let engine = engine(flow(steps).unwrap(), Recorder::default()).unwrap();
        let (status, events) = run(&engine, &[&reply]);
        prop_assert_eq!(status, Status::Finished);
        let said = format!("You said: {reply}");
        prop_assert_eq!(texts(&events), vec!["?", said.as_str()]);
    }

    /// A reply reaches an Api body as exactly its own JSON string, alone or
    /// mixed with text, and never pulls the secret in.
    #[test]
    fn replies_round_trip_through_json_bodies(reply in reply_text()) {
        let steps = json!([
            {"type": "question", "name": "Q", "text": "?"},
            {"type": "api", "name": "Send", "method": "POST", "url": "http://api.test/echo",
             "headers": {"Authorization": "Bearer <<secret.K>>"},
             "body": {"content": "<<step.Q.response>>", "mixed": "x <<step.Q.response>> y"}},
        ]);
        let http = Recorder::default();
        let engine = engine(flow(steps).unwrap(), http.clone()).unwrap();
        let (status, _) = run(&engine, &[&reply]);
        prop_assert_eq!(status, Status::Finished);
        let requests = http.requests();
        prop_assert_eq!(requests.len(), 1);
        let request = &requests[0];
        // The secret is in play, in the header where the flow put it...
        prop_assert_eq!(request.header("authorization"), Some("Bearer sk-secret"));
        // ...and the body holds exactly the reply.
        let bytes = request.body().unwrap();
        let body: Value = serde_json::from_slice(bytes).unwrap();
        let mixed = format!("x {reply} y");
        prop_assert_eq!(body, json!({"content": reply.as_str(), "mixed": mixed}));
        if !reply.contains(SECRET) {
            let raw = String::from_utf8_lossy(bytes);
            prop_assert!(!raw.contains(SECRET), "{raw}");
        }
    }
}

const OPERATORS: [Operator; 12] = [
    Operator::Equals,
    Operator::NotEquals,
    Operator::Contains,
    Operator::NotContains,
    Operator::StartsWith,
    Operator::EndsWith,
    Operator::IsEmpty,
    Operator::IsNotEmpty,
    Operator::GreaterThan,
    Operator::GreaterOrEqual,
    Operator::LessThan,
    Operator::LessOrEqual,
];

/// One engine per operator and `ignore_case`: the rule compares the replies
/// to two Questions and branches to a "yes" or a "no" Message.
struct Conditions {
    engines: Vec<((Operator, bool), Engine)>,
}

impl Conditions {
    fn new() -> Self {
        let mut engines = Vec::new();
        for op in OPERATORS {
            for ignore_case in [false, true] {
                let steps = json!([
                    {"type": "question", "name": "L", "text": "left?"},
                    {"type": "question", "name": "R", "text": "right?"},
                    {"type": "condition", "name": "C",
                     "all": [{"left": "<<step.L.response>>", "op": op.as_str(),
                              "right": "<<step.R.response>>", "ignore_case": ignore_case}],
                     "then": "Yes", "else": "No"},
                    {"type": "message", "name": "Yes", "text": "yes", "next": "Done"},
                    {"type": "message", "name": "No", "text": "no"},
                    {"type": "message", "name": "Done", "text": "done"},
                ]);
                let engine = Engine::builder(flow(steps).unwrap())
                    .http_client(Recorder::default())
                    .options(EngineOptions::default().with_reply_mode(ReplyMode::OnePerQuestion))
                    .build()
                    .unwrap();
                engines.push(((op, ignore_case), engine));
            }
        }
        Conditions { engines }
    }

    /// Whether `left op right` holds, as the engine decided it.
    fn holds(&self, op: Operator, ignore_case: bool, left: &str, right: &str) -> bool {
        let (_, engine) = self
            .engines
            .iter()
            .find(|(key, _)| *key == (op, ignore_case))
            .unwrap();
        let (status, events) = run(engine, &[left, right]);
        assert_eq!(status, Status::Finished);
        match texts(&events)[..] {
            ["left?", "right?", "yes", "done"] => true,
            ["left?", "right?", "no", "done"] => false,
            ref other => panic!("unexpected messages {other:?}"),
        }
    }

    /// Every operator, both ways of case: never panics.
    fn all(&self, left: &str, right: &str) -> Vec<((Operator, bool), bool)> {
        self.engines
            .iter()
            .map(|(key, _)| (*key, self.holds(key.0, key.1, left, right)))
            .collect()
    }
}

/// Operand text: arbitrary, numeric-looking and placeholder-looking.
fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,12}",
        "[ \t]?-?[0-9]{1,4}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?[ \t]?",
        Just(String::new()),
        Just(" ".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("-infinity".to_string()),
        Just("1e400".to_string()),
        Just("<<step.L.response>>".to_string()),
        Just("ΑΣ".to_string()),
        Just("İ".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Negated operators take the other branch; the order operators agree.
    #[test]
    fn condition_laws(left in operand(), right in operand()) {
        let c = conditions();
        let results = c.all(&left, &right);
        let get = |op: Operator, ic: bool| {
            results.iter().find(|(key, _)| *key == (op, ic)).unwrap().1
        };
        for ic in [false, true] {
            prop_assert_ne!(get(Operator::Equals, ic), get(Operator::NotEquals, ic));
            prop_assert_ne!(get(Operator::Contains, ic), get(Operator::NotContains, ic));
            prop_assert_ne!(get(Operator::IsEmpty, ic), get(Operator::IsNotEmpty, ic));
            let (gt, ge) = (get(Operator::GreaterThan, ic), get(Operator::GreaterOrEqual, ic));
            let (lt, le) = (get(Operator::LessThan, ic), get(Operator::LessOrEqual, ic));
            prop_assert!(!(gt && le), "gt {} but le {}", gt, le);
            prop_assert!(!(lt && ge), "lt {} but ge {}", lt, ge);
            prop_assert!(!gt || ge);
            prop_assert!(!lt || le);
            if ge && le {
                prop_assert!(get(Operator::Equals, ic), "numerically equal but not equals");
            }
            // Case is irrelevant to the empty tests and to numbers.
            prop_assert_eq!(get(Operator::IsEmpty, ic), get(Operator::IsEmpty, !ic));
            prop_assert_eq!(gt, get(Operator::GreaterThan, !ic));
            prop_assert_eq!(le, get(Operator::LessOrEqual, !ic));
        }
        // Case-sensitive equality implies case-insensitive equality.
        if get(Operator::Equals, false) {
            prop_assert!(get(Operator::Equals, true));
        }
        prop_assert_eq!(get(Operator::IsEmpty, false), left.trim().is_empty());
    }

    /// A value equals, contains, starts and ends with itself.
    #[test]
    fn a_value_equals_itself(s in operand()) {
        let c = conditions();
        for ic in [false, true] {
            for op in [Operator::Equals, Operator::Contains, Operator::StartsWith, Operator::EndsWith] {
                prop_assert!(c.holds(op, ic, &s, &s), "{op:?} ignore_case={ic} {s:?}");
            }
            prop_assert!(!c.holds(Operator::NotEquals, ic, &s, &s));
        }
    }

    /// A case-sensitive prefix and suffix are found as such.
    #[test]
    fn prefixes_and_suffixes(s in operand(), cut in any::<prop::sample::Index>()) {
        let c = conditions();
        let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        let at = bounds[cut.index(bounds.len())];
        prop_assert!(c.holds(Operator::StartsWith, false, &s, &s[..at]));
        prop_assert!(c.holds(Operator::EndsWith, false, &s, &s[at..]));
        prop_assert!(c.holds(Operator::Contains, false, &s, &s[at..]));
    }

    /// ASCII text equals its upper-case form when case is ignored.
    #[test]
    fn ignore_case_equals_for_ascii(s in "[\\x00-\\x7f]{0,24}") {
        let c = conditions();
        let upper = s.to_uppercase();
        prop_assert!(c.holds(Operator::Equals, true, &s, &upper));
        prop_assert!(c.holds(Operator::Equals, true, &upper, &s));
        prop_assert!(c.holds(Operator::Contains, true, &upper, &s));
        prop_assert!(c.holds(Operator::StartsWith, true, &upper, &s));
        prop_assert!(c.holds(Operator::EndsWith, true, &upper, &s));
        if s.chars().any(|ch| ch.is_ascii_alphabetic()) && !s.trim().parse::<f64>().is_ok_and(f64::is_finite) {
            prop_assert_eq!(c.holds(Operator::Equals, false, &s, &upper), s == upper);
        }
    }

    /// Numbers compare as numbers, whatever the spelling.
    #[test]
    fn numbers_compare_numerically(a in -1.0e6f64..1.0e6, b in -1.0e6f64..1.0e6, pad in "[ \t]{0,2}") {
        let c = conditions();
        let (left, right) = (format!("{pad}{a}"), format!("{b}{pad}"));
        prop_assert_eq!(c.holds(Operator::GreaterThan, false, &left, &right), a > b);
        prop_assert_eq!(c.holds(Operator::GreaterOrEqual, false, &left, &right), a >= b);
        prop_assert_eq!(c.holds(Operator::LessThan, false, &left, &right), a < b);
        prop_assert_eq!(c.holds(Operator::LessOrEqual, false, &left, &right), a <= b);
        prop_assert_eq!(c.holds(Operator::Equals, false, &left, &right), a == b);
        let (plain, exponent) = (a.to_string(), format!("{a:e}"));
        prop_assert!(c.holds(Operator::Equals, false, &plain, &exponent), "{} {}", plain, exponent);
    }
}

/// The compiled condition engines, shared by all cases of a test.
fn conditions() -> &'static Conditions {
    static CONDITIONS: std::sync::OnceLock<Conditions> = std::sync::OnceLock::new();
    CONDITIONS.get_or_init(Conditions::new)
}
