//! The README's Rust examples, run as tests.
//!
//! Keep them in sync: each module below holds one ```rust block of README.md
//! with identical code (a README `#[tokio::main] async fn main` is a
//! `#[tokio::test] async fn main` here). `readme_blocks_are_mirrored_here`
//! fails when a README block and its copy drift apart.

/// README, "Embed it".
mod embed_it {
    use std::sync::Mutex;

    use chatflow::{Conversation, Engine, Event, Flow, Status};

    const FLOW: &str = r#"{
      "name": "orders",
      "steps": [
        {"type": "question", "name": "Welcome", "text": "Hi! What's your order number? Type 'human' for a person."},
        {"type": "contact_update", "name": "Save", "set": {"request": "<<step.Welcome.response>>"}},
        {"type": "condition", "name": "Wants a human?",
         "any": [{"left": "<<contact.request>>", "op": "contains", "right": "human", "ignore_case": true}],
         "then": "Handoff"},
        {"type": "api", "name": "Look up order", "method": "GET",
         "url": "<<var.shop_api>>/orders/<<contact.request>>",
         "headers": {"Authorization": "Bearer <<secret.SHOP_TOKEN>>"},
         "on_error": "Handoff"},
        {"type": "message", "name": "Status", "text": "Order <<contact.request>> is <<step.Look up order.response.state>>.",
         "next": "Welcome"},
        {"type": "message", "name": "Handoff", "text": "Connecting you with our support team."},
        {"type": "assign", "name": "Assign", "team": "support", "note": "<<contact.request>>"}
      ]
    }"#;

    #[tokio::test]
    async fn main() -> Result<(), Box<dyn std::error::Error>> {
        // Load and check the flow once (Flow::from_path reads a file); one engine serves all conversations.
        let engine = Engine::builder(Flow::from_json(FLOW)?)
            .var("shop_api", "https://shop.example.com/api") // <<var.shop_api>>
            .secret("SHOP_TOKEN", "token-from-your-vault") // <<secret.SHOP_TOKEN>>, never printed
            .build()?; // fails, naming them, if the flow needs a var or secret not given

        // Events arrive the moment they happen: show messages, route handoffs.
        let shown = Mutex::new(Vec::new());
        let sink = |event: Event| match event {
            Event::Message { text, .. } => shown.lock().unwrap().push(text),
            Event::Handoff { assignment, .. } => println!("assign to {:?}", assignment.team),
            _ => {}
        };

        // A new conversation runs until it needs the user: here, after the welcome question.
        let mut conversation = engine.start("user-42");
        assert_eq!(engine.run(&mut conversation, &sink).await?, Status::AwaitingReply);

        // Park it between messages: it is plain data, without secrets; store it anywhere.
        let parked: String = serde_json::to_string(&conversation)?;

        // Later, in any process running the same flow: resume, queue the reply, run.
        let mut conversation: Conversation = serde_json::from_str(&parked)?;
        engine.receive(&mut conversation, "I'd like to talk to a human")?;
        let status = engine.run(&mut conversation, &sink).await?;

        assert!(matches!(status, Status::HandedOff { .. }));
        assert_eq!(
            *shown.lock().unwrap(),
            [
                "Hi! What's your order number? Type 'human' for a person.",
                "Connecting you with our support team."
            ]
        );
        Ok(())
    }
}

/// README, "Test your own flow with the mock OpenAI".
mod mock_openai {
    use std::sync::Arc;
    use std::time::Duration;

    use chatflow::mock::{Endpoint, Fault, MockOpenAi, Reply};
    use chatflow::{Engine, EventLog, Flow, Status, VirtualClock};
    use serde_json::json;

    #[tokio::test]
    async fn answers_then_hands_off() -> Result<(), Box<dyn std::error::Error>> {
        // A local, stateful OpenAI: runs finish at the second poll; the assistant is scripted.
        let mock = MockOpenAi::builder()
            .polls_until_complete(2)
            .reply_with(|input| {
                if input.user_text.contains("human") {
                    Reply::text("HANDOFF")
                } else {
                    Reply::text(format!("You asked: {}", input.user_text))
                }
            })
            .start()
            .await;
        // The first attempt to start a run is rate limited: the engine waits 2 s and retries.
        mock.push_fault(Endpoint::CreateRun, Fault::RateLimited { retry_after_secs: 2 });

        // Virtual time: the flow's Delays and the retry wait take no real time.
        let clock = Arc::new(VirtualClock::new());
        let engine = Engine::builder(Flow::from_path("flows/openai_assistant.json")?)
            .shared_clock(clock.clone())
            .var("openai_base_url", mock.base_url())
            .var("assistant_id", mock.assistant_id())
            .secret("OPENAI_API_KEY", mock.api_key())
            .build()?;

        let events = EventLog::new();
        let mut conversation = engine.start("test-user");
        engine.receive(&mut conversation, "Where is my order?")?;
        assert_eq!(
            engine.run(&mut conversation, &events).await?,
            Status::AwaitingReply
        );
        assert_eq!(events.texts()[1], "You asked: Where is my order?");
        assert_eq!(clock.elapsed(), Duration::from_millis(2250)); // 2 s retry-after + one Delay (the backoff's 0.25 s)

        engine.receive(&mut conversation, "I want a human")?;
        let status = engine.run(&mut conversation, &events).await?;
        assert!(matches!(status, Status::HandedOff { .. }));

        // What the flow sent, as OpenAI would have received it.
        let requests = mock.requests();
        let messages: Vec<_> = requests
            .iter()
            .filter(|r| r.endpoint == Some(Endpoint::CreateMessage))
            .collect();
        assert_eq!(
            messages[0].body,
            Some(json!({"role": "user", "content": "Where is my order?"}))
        );
        assert!(
            requests
                .iter()
                .all(|r| r.header("authorization") == Some("Bearer sk-mock-key"))
        );
        assert_eq!((mock.threads_created(), mock.runs_created()), (1, 2));
        Ok(())
    }
}

/// The ```rust blocks of README.md.
fn readme_rust_blocks() -> Vec<String> {
    let readme = include_str!("../README.md");
    let mut blocks = Vec::new();
    // `Some(code)` inside a Rust block; `in_other` inside any other fence.
    let mut rust: Option<String> = None;
    let mut in_other = false;
    for line in readme.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut rust, fence) {
            (Some(code), Some(_)) => {
                blocks.push(std::mem::take(code));
                rust = None;
            }
            (Some(code), None) => {
                code.push_str(line);
                code.push('\n');
            }
            (None, Some(_)) if in_other => in_other = false,
            (None, Some(info)) if info.starts_with("rust") => {
                assert_eq!(
                    info.trim(),
                    "rust",
                    "README Rust blocks are complete examples mirrored here: no `{info}`"
                );
                rust = Some(String::new());
            }
            (None, Some(_)) => in_other = true,
            (None, None) => {}
        }
    }
    blocks
}

/// Code with layout removed: no whitespace, no trailing commas, and
/// `#[tokio::main]` read as `#[tokio::test]`.
fn normalize(code: &str) -> String {
    let code = code.replace("#[tokio::main]", "#[tokio::test]");
    let mut out: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    for close in [")", "]", "}"] {
        out = out.replace(&format!(",{close}"), close);
    }
    out
}

#[test]
fn readme_blocks_are_mirrored_here() {
    let blocks = readme_rust_blocks();
    assert_eq!(blocks.len(), 2, "one module above per README Rust block");
    let here = normalize(include_str!("readme.rs"));
    for block in &blocks {
        assert!(
            here.contains(&normalize(block)),
            "this README block differs from its copy in tests/readme.rs:\n{block}"
        );
    }
}
