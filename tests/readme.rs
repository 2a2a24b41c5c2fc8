//! The README's Rust examples, run as tests.
//!
//! Keep them in sync: each module below holds one ```rust block of README.md
//! with identical code (a README `#[tokio::main] async fn main` is a
//! `#[tokio::test] async fn main` here), plus any tests of its own after it.
//! Lines of this file ending in `// not in README` are left out of the
//! comparison. `readme_blocks_are_mirrored_here` fails when a README block
//! and its copy drift apart.

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
        let expected = [
            "Hi! What's your order number? Type 'human' for a person.",
            "Connecting you with our support team.",
        ];
        assert_eq!(*shown.lock().unwrap(), expected);
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

/// README, "Run it durably: a `Runtime` behind axum".
mod order_bot {
    use std::error::Error;
    use std::sync::Arc;

    use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
    use chatflow::store::MemoryStore;
    use chatflow::{Engine, Flow, Runtime, RuntimeError};
    use serde::{Deserialize, Serialize};
    use tokio::net::TcpListener;

    const FLOW: &str = r#"{
      "name": "order_bot",
      "steps": [
        {"type": "question", "name": "Ask", "text": "Which order? Send its number, or 'human' for a person."},
        {"type": "condition", "name": "Human?",
         "any": [{"left": "<<step.Ask.response>>", "op": "contains", "right": "human", "ignore_case": true}],
         "then": "Connect"},
        {"type": "api", "name": "Look up", "method": "GET", "url": "<<var.shop_api>>/orders/<<step.Ask.response>>",
         "headers": {"Authorization": "Bearer <<secret.SHOP_TOKEN>>"}, "on_error": "Unknown"},
        {"type": "message", "name": "Status", "text": "Order <<step.Ask.response>> is <<step.Look up.response.state>>.",
         "next": "Ask"},
        {"type": "message", "name": "Unknown", "text": "I found no order <<step.Ask.response>>.", "next": "Ask"},
        {"type": "message", "name": "Connect", "text": "Connecting you with our order team."},
        {"type": "assign", "name": "Handoff", "team": "orders", "note": "<<step.Ask.response>>"}
      ]
    }"#;

    /// The engine and the store, kept for the life of the process.
    async fn order_bot(shop_api: &str, shop_token: &str) -> Result<Runtime, Box<dyn Error>> {
        let flow = Flow::from_json(FLOW)?;
        let engine = Engine::builder(flow)
            .var("shop_api", shop_api)
            .secret("SHOP_TOKEN", shop_token)
            .build()?;
        // MemoryStore forgets everything on restart. To keep conversations, use
        // `SqliteStore::connect("sqlite://orders.db").await?` (feature "sqlite", one host) or
        // `PostgresStore::connect("postgres://…").await?` (feature "postgres", several processes).
        let store = Arc::new(MemoryStore::new());
        Ok(Runtime::new(engine, store))
    }

    #[derive(Deserialize)]
    struct UserMessage {
        conversation_id: String,
        message_id: String,
        text: String,
    }

    #[derive(Serialize)]
    struct BotReplies {
        replies: Vec<String>,
        handed_off: bool,
        duplicate: bool,
    }

    async fn post_message(
        State(runtime): State<Runtime>,
        Json(message): Json<UserMessage>,
    ) -> Result<Json<BotReplies>, (StatusCode, String)> {
        // The turn runs on a task of its own: if the client hangs up, it still ends at a save point.
        let turn = tokio::spawn(async move {
            let (id, message_id) = (&message.conversation_id, &message.message_id);
            runtime.handle_message(id, Some(message_id), &message.text).await
        });
        let turn = turn
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let turn = turn.map_err(|e| match e {
            RuntimeError::Reply(_) => (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()), // over max_reply_bytes
            RuntimeError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()), // another runner has it
            _ => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),                   // the store failed
        })?;
        Ok(Json(BotReplies {
            replies: turn.texts().into_iter().map(String::from).collect(),
            handed_off: turn.handed_off(),
            duplicate: turn.duplicate, // a message id seen before: nothing ran
        }))
    }

    /// Serves the bot until `shutdown`, with the scheduler beside it.
    async fn serve(
        runtime: Runtime,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Box<dyn Error>> {
        // The scheduler resumes conversations whose Delay ended while no request waited for
        // them, and turns a crash or a restart cut off. It stops when `stop_scheduler` drops.
        let (stop_scheduler, stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = tokio::spawn({
            let runtime = runtime.clone();
            async move { runtime.run_scheduler(async { stopped.await.unwrap_or(()) }).await }
        });
        let app = Router::new()
            .route("/messages", post(post_message))
            .with_state(runtime);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        drop(stop_scheduler);
        scheduler.await?; // returns once its turns in flight have ended
        Ok(())
    }

    #[tokio::test]
    #[ignore = "serves on port 3000 until Ctrl-C; `serves_an_order_bot` runs the same code"] // not in README
    async fn main() -> Result<(), Box<dyn Error>> {
        let shop_api = std::env::var("SHOP_API").unwrap_or_else(|_| "http://127.0.0.1:4000".into());
        let shop_token = std::env::var("SHOP_TOKEN").unwrap_or_default();
        let runtime = order_bot(&shop_api, &shop_token).await?;
        let listener = TcpListener::bind("127.0.0.1:3000").await?;
        println!("POST http://{}/messages", listener.local_addr()?);
        serve(runtime, listener, async {
            tokio::signal::ctrl_c().await.unwrap_or(())
        })
        .await
    }

    /// The README's bot, served on a free port against a stand-in shop.
    #[tokio::test]
    async fn serves_an_order_bot() -> Result<(), Box<dyn Error>> {
        use serde_json::{Value, json};
        use wiremock::matchers::{header, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};

        // Order 1234 exists; any other answers 404.
        let shop = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/orders/1234"))
            .and(header("authorization", "Bearer shop-token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"state": "shipped"})))
            .mount(&shop)
            .await;

        let runtime = order_bot(&shop.uri(), "shop-token").await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/messages", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let client = async move {
            let http = reqwest::Client::new();
            let post = async |body: String| -> Result<(u16, Value), reqwest::Error> {
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status().as_u16();
                let body = response.bytes().await?;
                Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
            };
            let message = |id: &str, text: &str| {
                json!({"conversation_id": "c1", "message_id": id, "text": text}).to_string()
            };
            let answers = [
                post(message("m1", "1234")).await,
                post(message("m1", "1234")).await,
                post(message("m2", "999")).await,
                post(message("m3", "A HUMAN please")).await,
                post(r#"{"conversation_id": "c1"}"#.to_string()).await,
            ];
            let _ = stop.send(());
            answers
        };
        let (served, answers) = tokio::join!(
            serve(runtime, listener, async { stopped.await.unwrap_or(()) }),
            client
        );
        served?;
        let [first, repeated, unknown, human, malformed] = answers;
        let ask = "Which order? Send its number, or 'human' for a person.";
        assert_eq!(
            first?,
            (
                200,
                json!({"replies": [ask, "Order 1234 is shipped.", ask], "handed_off": false, "duplicate": false})
            )
        );
        assert_eq!(
            repeated?,
            (
                200,
                json!({"replies": [], "handed_off": false, "duplicate": true})
            )
        );
        assert_eq!(
            unknown?,
            (
                200,
                json!({"replies": ["I found no order 999.", ask], "handed_off": false, "duplicate": false})
            )
        );
        assert_eq!(
            human?,
            (
                200,
                json!({"replies": ["Connecting you with our order team."], "handed_off": true, "duplicate": false})
            )
        );
        let (status, _) = malformed?;
        assert_eq!(status, 422, "a body without `text` is refused");
        Ok(())
    }
}

/// README, "The server": the routes mounted in a host's app.
mod server_mount {
    use std::sync::Arc;

    use axum::{Router, routing::get};
    use chatflow::server::{ServerSettings, router};
    use chatflow::{Engine, Flow, Runtime, store::MemoryStore};

    fn app(flow: Flow) -> Result<(Router, Runtime), Box<dyn std::error::Error>> {
        let runtime = Runtime::new(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()));
        let bot = router(
            runtime.clone(),
            ServerSettings::new().with_api_token("token-from-your-vault"),
        );
        let app = Router::new()
            .route("/", get(|| async { "the host's own page" }))
            .nest("/bot", bot);
        Ok((app, runtime)) // serve `app`; run `runtime.run_scheduler(…)` beside it for Delays
    }

    #[tokio::test]
    async fn the_host_keeps_its_routes_and_the_bot_answers_under_its_prefix()
    -> Result<(), Box<dyn std::error::Error>> {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let flow = Flow::from_json(
            r#"{"name": "echo", "steps": [
              {"type": "question", "name": "Ask", "text": "Say something"},
              {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
            ]}"#,
        )?;
        let (app, _runtime) = app(flow)?;
        let chat = |token: Option<&str>| {
            let mut request = Request::post("/bot/chat").header("content-type", "application/json");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            request.body(Body::from(r#"{"conversation_id": "c1", "text": "hello"}"#))
        };

        let home = app
            .clone()
            .oneshot(Request::get("/").body(Body::empty())?)
            .await?;
        assert_eq!(home.status(), 200);
        let refused = app.clone().oneshot(chat(None)?).await?;
        assert_eq!(refused.status(), 401, "the bearer token guards /chat");
        let answered = app.oneshot(chat(Some("token-from-your-vault"))?).await?;
        assert_eq!(answered.status(), 200);
        let body = axum::body::to_bytes(answered.into_body(), usize::MAX).await?;
        let body: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(
            body["messages"],
            serde_json::json!(["Say something", "You said hello", "Say something"])
        );
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

/// Code with layout removed: no whitespace, no trailing commas, no lines
/// marked `// not in README`, and `#[tokio::main]` read as `#[tokio::test]`.
fn normalize(code: &str) -> String {
    let code: String = code
        .lines()
        .filter(|line| !line.trim_end().ends_with("// not in README"))
        .flat_map(|line| [line, "\n"])
        .collect();
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
    assert_eq!(blocks.len(), 4, "one module above per README Rust block");
    let here = normalize(include_str!("readme.rs"));
    for block in &blocks {
        assert!(
            here.contains(&normalize(block)),
            "this README block differs from its copy in tests/readme.rs:\n{block}"
        );
    }
}
