//! Integration tests for `chatflow::mock`: real HTTP against the mock server.
#![cfg(all(feature = "mock", feature = "reqwest"))]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatflow::mock::{Endpoint, Fault, HANDOFF_REPLY, MockOpenAi, Reply, ReplyInput, demo_reply};
use serde_json::{Value, json};

/// A tiny OpenAI client: sends the right headers unless told otherwise.
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Api {
    fn new(mock: &MockOpenAi) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: mock.base_url(),
            key: mock.api_key().to_owned(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        key: Option<&str>,
        beta: bool,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        if beta {
            request = request.header("OpenAI-Beta", "assistants=v2");
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body);
        }
        let response = request.send().await.expect("request failed");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(body.to_string()), Some(&self.key), true)
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, Some(&self.key), true).await
    }

    async fn ok_post(&self, path: &str, body: Value) -> Value {
        let answer = self.post(path, body).await;
        assert_eq!(answer.status, 200, "POST {path}: {}", answer.body);
        answer.body
    }

    async fn ok_get(&self, path: &str) -> Value {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer.body
    }

    async fn new_thread(&self) -> String {
        let thread = self.ok_post("/threads", json!({})).await;
        str_of(&thread["id"])
    }

    async fn say(&self, thread: &str, text: &str) -> Value {
        self.ok_post(
            &format!("/threads/{thread}/messages"),
            json!({"role": "user", "content": text}),
        )
        .await
    }

    async fn run(&self, thread: &str) -> Value {
        self.ok_post(
            &format!("/threads/{thread}/runs"),
            json!({"assistant_id": "asst_mock"}),
        )
        .await
    }
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// The text of a message object (`content[0].text.value`).
fn message_text(message: &Value) -> String {
    str_of(&message["content"][0]["text"]["value"])
}

/// Asserts an OpenAI error body with all four keys, and returns its `error`.
fn assert_error(answer: &Answer, status: u16, code: Option<&str>) -> Value {
    assert_eq!(answer.status, status, "body: {}", answer.body);
    let error = answer.body["error"].clone();
    let keys: Vec<&String> = error.as_object().expect("error object").keys().collect();
    for key in ["message", "type", "param", "code"] {
        assert!(keys.iter().any(|k| k.as_str() == key), "missing {key}: {error}");
    }
    assert!(error["message"].is_string() && error["type"].is_string());
    assert_eq!(error["code"].as_str(), code, "error: {error}");
    error
}

/// Records every input the reply function saw.
fn recording_reply(
    seen: &Arc<Mutex<Vec<ReplyInput>>>,
) -> impl Fn(&ReplyInput) -> Reply + Send + Sync + 'static {
    let seen = Arc::clone(seen);
    move |input: &ReplyInput| {
        seen.lock().unwrap().push(input.clone());
        Reply::Text(format!("answer to: {}", input.user_text))
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn assistants_loop_sees_in_progress_then_the_answer() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mock = MockOpenAi::builder()
        .polls_until_complete(2)
        .reply_with(recording_reply(&seen))
        .start()
        .await;
    let api = Api::new(&mock);

    let thread = api.ok_post("/threads", json!({})).await;
    assert_eq!(thread["id"], "thread_1");
    assert_eq!(thread["object"], "thread");
    assert!(thread["created_at"].is_u64());
    assert_eq!(thread["metadata"], json!({}));
    assert_eq!(thread["tool_resources"], json!({}));

    let message = api.say("thread_1", "Where is my order?").await;
    assert_eq!(message["object"], "thread.message");
    assert_eq!(message["thread_id"], "thread_1");
    assert_eq!(message["role"], "user");
    assert_eq!(message["status"], "completed");
    assert_eq!(message["run_id"], Value::Null);
    assert_eq!(message["assistant_id"], Value::Null);
    assert_eq!(message["attachments"], json!([]));
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": {"value": "Where is my order?", "annotations": []}}])
    );

    let run = api
        .ok_post(
            "/threads/thread_1/runs",
            json!({
                "assistant_id": "asst_mock",
                "model": "gpt-test",
                "instructions": "Be brief.",
                "additional_instructions": "Sign as Ada.",
                "metadata": {"flow": "support"},
                "temperature": 0.2
            }),
        )
        .await;
    let run_id = str_of(&run["id"]);
    assert_eq!(run_id, "run_1");
    assert_eq!(run["object"], "thread.run");
    assert_eq!(run["status"], "queued");
    assert_eq!(run["thread_id"], "thread_1");
    assert_eq!(run["assistant_id"], "asst_mock");
    assert_eq!(run["last_error"], Value::Null);
    assert_eq!(run["model"], "gpt-test");
    assert_eq!(run["metadata"], json!({"flow": "support"}));

    // Poll 1 of 2: the run is in progress and its assistant message is empty.
    let list = api.ok_get("/threads/thread_1/messages").await;
    let newest = &list["data"][0];
    assert_eq!(newest["role"], "assistant");
    assert_eq!(newest["content"], json!([]));
    assert_eq!(newest["status"], "in_progress");
    assert_eq!(newest["run_id"], "run_1");
    assert_eq!(newest["assistant_id"], "asst_mock");
    assert_eq!(
        mock.thread_messages("thread_1"),
        pairs(&[("user", "Where is my order?"), ("assistant", "")])
    );

    // Poll 2 of 2: the run is completed.
    let run = api.ok_get("/threads/thread_1/runs/run_1").await;
    assert_eq!(run["status"], "completed");
    assert!(run["completed_at"].is_u64());
    assert!(run["usage"]["total_tokens"].is_u64());

    let list = api.ok_get("/threads/thread_1/messages").await;
    let newest = &list["data"][0];
    assert_eq!(newest["status"], "completed");
    assert_eq!(message_text(newest), "answer to: Where is my order?");
    assert_eq!(
        mock.thread_messages("thread_1"),
        pairs(&[
            ("user", "Where is my order?"),
            ("assistant", "answer to: Where is my order?")
        ])
    );

    // The reply function saw the thread, the joined instructions and the model.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].user_text, "Where is my order?");
    assert_eq!(seen[0].history, pairs(&[("user", "Where is my order?")]));
    assert_eq!(seen[0].instructions.as_deref(), Some("Be brief.\nSign as Ada."));
    assert_eq!(seen[0].model.as_deref(), Some("gpt-test"));
    assert_eq!(mock.threads_created(), 1);
    assert_eq!(mock.runs_created(), 1);
}

#[tokio::test]
async fn run_status_goes_queued_in_progress_completed() {
    let mock = MockOpenAi::builder().polls_until_complete(3).start().await;
    let api = Api::new(&mock);
    let thread = api.new_thread().await;
    api.say(&thread, "hello").await;
    let run = api.run(&thread).await;
    assert_eq!(run["status"], "queued");
    let path = format!("/threads/{thread}/runs/{}", str_of(&run["id"]));
    let statuses = [
        api.ok_get(&path).await["status"].clone(),
        api.ok_get(&path).await["status"].clone(),
        api.ok_get(&path).await["status"].clone(),
        // Finished runs no longer change.
        api.ok_get(&path).await["status"].clone(),
    ];
    assert_eq!(
        statuses,
        [
            json!("in_progress"),
            json!("in_progress"),
            json!("completed"),
            json!("completed")
        ]
    );
}

#[tokio::test]
async fn list_messages_order_limit_cursors_and_run_filter() {
    let mock = MockOpenAi::builder()
        .reply_with(|input: &ReplyInput| Reply::text(format!("re: {}", input.user_text)))
        .start()
        .await;
    let api = Api::new(&mock);
    let thread = api
        .ok_post(
            "/threads",
            json!({"messages": [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": [{"type": "text", "text": "two"}]}
            ]}),
        )
        .await;
    let thread = str_of(&thread["id"]);
    api.say(&thread, "three").await;
    let run = api.run(&thread).await;
    let run_id = str_of(&run["id"]);
    let base = format!("/threads/{thread}/messages");

    let texts = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(message_text)
            .collect()
    };

    // Default: newest first (this first list is also the poll finishing the run).
    let desc = api.ok_get(&base).await;
    assert_eq!(desc["object"], "list");
    assert_eq!(texts(&desc), ["re: three", "three", "two", "one"]);
    assert_eq!(desc["first_id"], desc["data"][0]["id"]);
    assert_eq!(desc["last_id"], desc["data"][3]["id"]);
    assert_eq!(desc["has_more"], false);

    let asc = api.ok_get(&format!("{base}?order=asc")).await;
    assert_eq!(texts(&asc), ["one", "two", "three", "re: three"]);

    let page = api.ok_get(&format!("{base}?order=asc&limit=2")).await;
    assert_eq!(texts(&page), ["one", "two"]);
    assert_eq!(page["has_more"], true);
    let last_id = str_of(&page["last_id"]);
    let next = api
        .ok_get(&format!("{base}?order=asc&limit=2&after={last_id}"))
        .await;
    assert_eq!(texts(&next), ["three", "re: three"]);
    assert_eq!(next["has_more"], false);
    let first_of_next = str_of(&next["first_id"]);
    let back = api
        .ok_get(&format!("{base}?order=asc&limit=1&before={first_of_next}"))
        .await;
    assert_eq!(texts(&back), ["two"]);
    assert_eq!(back["has_more"], true);

    let only_run = api.ok_get(&format!("{base}?run_id={run_id}")).await;
    assert_eq!(texts(&only_run), ["re: three"]);
    assert_eq!(only_run["data"][0]["run_id"], run_id.as_str());
    let none = api.ok_get(&format!("{base}?run_id=run_999")).await;
    assert_eq!(none["data"], json!([]));
    assert_eq!(none["first_id"], Value::Null);

    for (query, param, code) in [
        ("limit=0", "limit", "integer_below_min_value"),
        ("limit=101", "limit", "integer_above_max_value"),
        ("limit=abc", "limit", "invalid_type"),
        ("limit=99999999999999999999999", "limit", "invalid_type"),
        ("order=up", "order", "invalid_value"),
    ] {
        let answer = api.get(&format!("{base}?{query}")).await;
        let error = assert_error(&answer, 400, Some(code));
        assert_eq!(error["param"], param, "{query}");
    }
}

#[tokio::test]
async fn wrong_or_missing_api_key_is_401_without_echoing_the_key() {
    let mock = MockOpenAi::builder().api_key("sk-right-key-0000").start().await;
    let api = Api::new(&mock);
    assert_eq!(api.key, "sk-right-key-0000");

    let wrong_key = "sk-wrong-key-123456789";
    let answer = api
        .send("POST", "/threads", Some("{}".into()), Some(wrong_key), true)
        .await;
    let error = assert_error(&answer, 401, Some("invalid_api_key"));
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], Value::Null);
    let message = str_of(&error["message"]);
    assert!(message.starts_with("Incorrect API key provided: sk-***"));
    assert!(!message.contains(wrong_key), "{message}");
    assert!(!message.contains("sk-right-key"), "{message}");

    let answer = api
        .send("POST", "/responses", Some("{}".into()), None, false)
        .await;
    assert_error(&answer, 401, Some("invalid_api_key"));
    // Nothing was created by rejected requests.
    assert_eq!(mock.threads_created(), 0);
    assert_eq!(mock.responses_created(), 0);
}

#[tokio::test]
async fn assistants_endpoints_need_the_beta_header_and_responses_do_not() {
    let mock = MockOpenAi::start().await;
    let api = Api::new(&mock);
    let key = api.key.clone();

    let answer = api
        .send("POST", "/threads", Some("{}".into()), Some(&key), false)
        .await;
    let error = assert_error(&answer, 400, Some("invalid_beta"));
    assert!(str_of(&error["message"]).contains("OpenAI-Beta: assistants=v2"));
    assert_eq!(mock.threads_created(), 0);

    let answer = api
        .send("GET", "/threads/thread_1/messages", None, Some(&key), false)
        .await;
    assert_error(&answer, 400, Some("invalid_beta"));

    let answer = api
        .send("POST", "/conversations", Some("{}".into()), Some(&key), false)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = api
        .send(
            "POST",
            "/responses",
            Some(json!({"model": "gpt-test", "input": "hi"}).to_string()),
            Some(&key),
            false,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn unknown_thread_run_assistant_and_route_are_404() {
    let mock = MockOpenAi::start().await;
    let api = Api::new(&mock);

    let answer = api
        .post(
            "/threads/thread_404/messages",
            json!({"role": "user", "content": "hi"}),
        )
        .await;
    let error = assert_error(&answer, 404, None);
    assert_eq!(error["message"], "No thread found with id 'thread_404'.");
    assert_error(&api.get("/threads/thread_404/messages").await, 404, None);
    assert_error(
        &api.post("/threads/thread_404/runs", json!({"assistant_id": "asst_mock"}))
            .await,
        404,
        None,
    );

    let thread = api.new_thread().await;
    let answer = api
        .post(
            &format!("/threads/{thread}/runs"),
            json!({"assistant_id": "asst_other"}),
        )
        .await;
    let error = assert_error(&answer, 404, None);
    assert_eq!(error["message"], "No assistant found with id 'asst_other'.");
    assert_eq!(mock.runs_created(), 0);

    let error = assert_error(
        &api.get(&format!("/threads/{thread}/runs/run_9")).await,
        404,
        None,
    );
    assert_eq!(error["message"], "No run found with id 'run_9'.");

    let error = assert_error(&api.get("/models").await, 404, None);
    assert_eq!(error["message"], "Invalid URL (GET /v1/models)");
    assert_error(&api.get("/threads").await, 404, None);
    assert_error(&api.get("/threads/a//messages").await, 404, None);
}

#[tokio::test]
async fn invalid_bodies_are_400_with_param() {
    let mock = MockOpenAi::start().await;
    let api = Api::new(&mock);
    let thread = api.new_thread().await;
    let messages = format!("/threads/{thread}/messages");
    let runs = format!("/threads/{thread}/runs");

    let cases = [
        (
            messages.as_str(),
            json!({"role": "user", "content": "hi", "name": "x"}),
            "name",
            "unknown_parameter",
        ),
        (
            messages.as_str(),
            json!({"content": "hi"}),
            "role",
            "missing_required_parameter",
        ),
        (
            messages.as_str(),
            json!({"role": "user"}),
            "content",
            "missing_required_parameter",
        ),
        (
            messages.as_str(),
            json!({"role": "system", "content": "hi"}),
            "role",
            "invalid_value",
        ),
        (
            messages.as_str(),
            json!({"role": "user", "content": 42}),
            "content",
            "invalid_type",
        ),
        (
            messages.as_str(),
            json!({"role": "user", "content": [{"type": "text"}]}),
            "content[0].text",
            "missing_required_parameter",
        ),
        (
            runs.as_str(),
            json!({"assistant_id": "asst_mock", "foo": 1}),
            "foo",
            "unknown_parameter",
        ),
        (
            runs.as_str(),
            json!({}),
            "assistant_id",
            "missing_required_parameter",
        ),
        (
            runs.as_str(),
            json!({"assistant_id": 7}),
            "assistant_id",
            "invalid_type",
        ),
        (
            runs.as_str(),
            json!({"assistant_id": "asst_mock", "temperature": 3}),
            "temperature",
            "invalid_value",
        ),
        ("/threads", json!({"bogus": true}), "bogus", "unknown_parameter"),
        (
            "/responses",
            json!({"input": "hi"}),
            "model",
            "missing_required_parameter",
        ),
        (
            "/responses",
            json!({"model": "m", "input": "hi", "prompt_id": "p"}),
            "prompt_id",
            "unknown_parameter",
        ),
        (
            "/conversations",
            json!({"title": "x"}),
            "title",
            "unknown_parameter",
        ),
    ];
    for (path, body, param, code) in cases {
        let answer = api.post(path, body.clone()).await;
        let error = assert_error(&answer, 400, Some(code));
        assert_eq!(error["param"], param, "{path} {body}");
        assert_eq!(error["type"], "invalid_request_error");
    }

    // Not JSON at all, and JSON that is not an object.
    let key = api.key.clone();
    let answer = api
        .send("POST", &messages, Some("{role: user".into()), Some(&key), true)
        .await;
    let error = assert_error(&answer, 400, None);
    assert!(str_of(&error["message"]).contains("could not parse the JSON body"));
    let answer = api
        .send("POST", "/responses", Some("[1, 2]".into()), Some(&key), false)
        .await;
    assert_error(&answer, 400, Some("invalid_type"));

    // An empty body is fine where the body is optional.
    let answer = api.send("POST", "/threads", None, Some(&key), true).await;
    assert_eq!(answer.status, 200);
    // None of the rejected messages reached the thread.
    assert!(mock.thread_messages(&thread).is_empty());
}

#[tokio::test]
async fn busy_thread_rejects_messages_and_second_runs_until_the_run_ends() {
    let mock = MockOpenAi::builder().polls_until_complete(2).start().await;
    let api = Api::new(&mock);
    let thread = api.new_thread().await;
    api.say(&thread, "first").await;
    let run = api.run(&thread).await;
    let run_id = str_of(&run["id"]);

    let answer = api
        .post(
            &format!("/threads/{thread}/messages"),
            json!({"role": "user", "content": "second"}),
        )
        .await;
    let error = assert_error(&answer, 400, None);
    assert_eq!(
        error["message"],
        format!("Can't add messages to {thread} while a run {run_id} is active.")
    );
    let answer = api
        .post(
            &format!("/threads/{thread}/runs"),
            json!({"assistant_id": "asst_mock"}),
        )
        .await;
    let error = assert_error(&answer, 400, None);
    assert_eq!(
        error["message"],
        format!("Thread {thread} already has an active run {run_id}.")
    );

    // Still busy while in progress (poll 1 of 2) ...
    api.ok_get(&format!("/threads/{thread}/messages")).await;
    let answer = api
        .post(
            &format!("/threads/{thread}/messages"),
            json!({"role": "user", "content": "second"}),
        )
        .await;
    assert_eq!(answer.status, 400);
    // ... and free once the run completed (poll 2 of 2).
    let run = api.ok_get(&format!("/threads/{thread}/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
    api.say(&thread, "second").await;
    let second = api.run(&thread).await;
    assert_eq!(second["id"], "run_2");
    assert_eq!(mock.runs_created(), 2);
}

/// Decides the outcome from the user's text, to test every final state.
fn outcome_by_keyword(input: &ReplyInput) -> Reply {
    match input.user_text.as_str() {
        "fail" => Reply::fail("server_error", "Something broke."),
        "expire" => Reply::Expire,
        "cancel" => Reply::Cancel,
        "incomplete" => Reply::Incomplete,
        other => Reply::text(format!("ok: {other}")),
    }
}

#[tokio::test]
async fn failed_expired_cancelled_and_incomplete_runs_leave_no_answer() {
    let mock = MockOpenAi::builder().reply_with(outcome_by_keyword).start().await;
    let api = Api::new(&mock);
    for (word, status) in [
        ("fail", "failed"),
        ("expire", "expired"),
        ("cancel", "cancelled"),
        ("incomplete", "incomplete"),
    ] {
        let thread = api.new_thread().await;
        api.say(&thread, word).await;
        let run = api.run(&thread).await;
        let run = api
            .ok_get(&format!("/threads/{thread}/runs/{}", str_of(&run["id"])))
            .await;
        assert_eq!(run["status"], status, "{word}");
        if word == "fail" {
            assert_eq!(
                run["last_error"],
                json!({"code": "server_error", "message": "Something broke."})
            );
            assert!(run["failed_at"].is_u64());
        } else {
            assert_eq!(run["last_error"], Value::Null);
        }
        if word == "incomplete" {
            assert_eq!(run["incomplete_details"]["reason"], "max_completion_tokens");
        }
        // The placeholder assistant message is gone and the thread is usable again.
        assert_eq!(mock.thread_messages(&thread), pairs(&[("user", word)]));
        let list = api.ok_get(&format!("/threads/{thread}/messages")).await;
        assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
        api.say(&thread, "again").await;
    }
}

#[tokio::test]
async fn cancel_run_cancels_at_the_next_poll() {
    let mock = MockOpenAi::builder().polls_until_complete(5).start().await;
    let api = Api::new(&mock);
    let thread = api.new_thread().await;
    api.say(&thread, "hi").await;
    let run = api.run(&thread).await;
    let path = format!("/threads/{thread}/runs/{}", str_of(&run["id"]));
    let cancelling = api.ok_post(&format!("{path}/cancel"), json!({})).await;
    assert_eq!(cancelling["status"], "cancelling");
    let run = api.ok_get(&path).await;
    assert_eq!(run["status"], "cancelled");
    assert!(run["cancelled_at"].is_u64());
    let answer = api.post(&format!("{path}/cancel"), json!({})).await;
    let error = assert_error(&answer, 400, None);
    assert_eq!(error["message"], "Cannot cancel run with status 'cancelled'.");
    assert_eq!(mock.thread_messages(&thread), pairs(&[("user", "hi")]));
}

#[tokio::test]
async fn conversations_and_responses_keep_history_for_reply_with() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mock = MockOpenAi::builder()
        .reply_with(recording_reply(&seen))
        .start()
        .await;
    let api = Api::new(&mock);

    let conversation = api
        .ok_post(
            "/conversations",
            json!({
                "items": [{"type": "message", "role": "user", "content": "I ordered shoes."}],
                "metadata": {"customer": "42"}
            }),
        )
        .await;
    assert_eq!(conversation["id"], "conv_1");
    assert_eq!(conversation["object"], "conversation");
    assert_eq!(conversation["metadata"], json!({"customer": "42"}));
    assert!(conversation["created_at"].is_u64());

    let first = api
        .ok_post(
            "/responses",
            json!({
                "model": "gpt-test",
                "instructions": "Be kind.",
                "conversation": "conv_1",
                "input": "Where are they?"
            }),
        )
        .await;
    assert_eq!(first["id"], "resp_1");
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["model"], "gpt-test");
    assert_eq!(first["error"], Value::Null);
    assert_eq!(first["incomplete_details"], Value::Null);
    assert_eq!(first["conversation"], json!({"id": "conv_1"}));
    assert!(first.get("output_text").is_none());
    let output = &first["output"][0];
    assert_eq!(output["type"], "message");
    assert_eq!(output["role"], "assistant");
    assert_eq!(output["status"], "completed");
    assert!(str_of(&output["id"]).starts_with("msg_"));
    assert_eq!(
        output["content"],
        json!([{"type": "output_text", "text": "answer to: Where are they?", "annotations": []}])
    );

    let second = api
        .ok_post(
            "/responses",
            json!({
                "model": "gpt-test",
                "conversation": {"id": "conv_1"},
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "Thanks!"}]}]
            }),
        )
        .await;
    assert_eq!(second["output"][0]["content"][0]["text"], "answer to: Thanks!");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].instructions.as_deref(), Some("Be kind."));
    assert_eq!(seen[0].model.as_deref(), Some("gpt-test"));
    assert_eq!(
        seen[1].history,
        pairs(&[
            ("user", "I ordered shoes."),
            ("user", "Where are they?"),
            ("assistant", "answer to: Where are they?"),
            ("user", "Thanks!"),
        ])
    );
    assert_eq!(seen[1].user_text, "Thanks!");
    assert_eq!(mock.conversation_items("conv_1").len(), 5);

    // Items: newest first by default, with input_text / output_text parts.
    let items = api.ok_get("/conversations/conv_1/items?order=desc&limit=2").await;
    assert_eq!(items["object"], "list");
    assert_eq!(items["has_more"], true);
    assert_eq!(items["data"][0]["type"], "message");
    assert_eq!(items["data"][0]["role"], "assistant");
    assert_eq!(items["data"][0]["content"][0]["type"], "output_text");
    assert_eq!(
        items["data"][1]["content"],
        json!([{"type": "input_text", "text": "Thanks!"}])
    );
    assert_eq!(items["first_id"], items["data"][0]["id"]);
    let asc = api.ok_get("/conversations/conv_1/items?order=asc").await;
    assert_eq!(asc["data"][0]["content"][0]["text"], "I ordered shoes.");
    assert_eq!(asc["data"].as_array().map(Vec::len), Some(5));

    // GET returns the stored response again.
    assert_eq!(api.ok_get("/responses/resp_1").await, first);
    assert_error(&api.get("/responses/resp_404").await, 404, None);

    // Unknown conversation.
    let answer = api
        .post(
            "/responses",
            json!({"model": "m", "conversation": "conv_404", "input": "hi"}),
        )
        .await;
    let error = assert_error(&answer, 404, None);
    assert_eq!(error["message"], "Conversation with id 'conv_404' not found.");
    assert_error(&api.get("/conversations/conv_404/items").await, 404, None);
    assert_eq!(mock.conversations_created(), 1);
    assert_eq!(mock.responses_created(), 2);
}

#[tokio::test]
async fn failed_and_incomplete_responses_do_not_extend_the_conversation() {
    let mock = MockOpenAi::builder().reply_with(outcome_by_keyword).start().await;
    let api = Api::new(&mock);
    api.ok_post("/conversations", json!({})).await;
    let body = |input: &str| json!({"model": "m", "conversation": "conv_1", "input": input});

    let failed = api.ok_post("/responses", body("fail")).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["error"],
        json!({"code": "server_error", "message": "Something broke."})
    );
    assert_eq!(failed["output"], json!([]));
    let incomplete = api.ok_post("/responses", body("incomplete")).await;
    assert_eq!(incomplete["status"], "incomplete");
    assert_eq!(
        incomplete["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    let cancelled = api.ok_post("/responses", body("expire")).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(mock.conversation_items("conv_1").is_empty());

    api.ok_post("/responses", body("hello")).await;
    assert_eq!(
        mock.conversation_items("conv_1"),
        pairs(&[("user", "hello"), ("assistant", "ok: hello")])
    );
}

#[tokio::test]
async fn background_responses_complete_by_polling() {
    let mock = MockOpenAi::builder().polls_until_complete(2).start().await;
    let api = Api::new(&mock);
    let created = api
        .ok_post(
            "/responses",
            json!({"model": "m", "input": "hello there", "background": true}),
        )
        .await;
    assert_eq!(created["status"], "queued");
    assert_eq!(created["output"], json!([]));
    let path = format!("/responses/{}", str_of(&created["id"]));
    assert_eq!(api.ok_get(&path).await["status"], "in_progress");
    let done = api.ok_get(&path).await;
    assert_eq!(done["status"], "completed");
    assert!(
        str_of(&done["output"][0]["content"][0]["text"]).contains("hello there"),
        "{done}"
    );
}

#[tokio::test]
async fn rate_limit_fault_sends_retry_after_then_service_resumes() {
    let mock = MockOpenAi::start().await;
    let api = Api::new(&mock);
    mock.push_fault(Endpoint::CreateThread, Fault::RateLimited { retry_after_secs: 7 });
    mock.push_fault(Endpoint::CreateThread, Fault::Overloaded);

    let answer = api.post("/threads", json!({})).await;
    let error = assert_error(&answer, 429, Some("rate_limit_exceeded"));
    assert!(error["message"].as_str().is_some());
    assert_eq!(answer.headers["retry-after"], "7");
    assert_eq!(answer.headers["retry-after-ms"], "7000");

    // FIFO: the second fault comes next, then normal service.
    let answer = api.post("/threads", json!({})).await;
    assert_error(&answer, 503, None);
    let thread = api.ok_post("/threads", json!({})).await;
    assert_eq!(thread["id"], "thread_1");
    assert_eq!(mock.threads_created(), 1);

    // Faults are per endpoint and a fault wins over normal handling, even auth.
    mock.push_fault(Endpoint::CreateResponse, Fault::ServerError);
    mock.push_fault(Endpoint::GetRun, Fault::Status(409));
    api.ok_post("/threads", json!({})).await;
    let answer = api
        .send("POST", "/responses", Some("{}".into()), Some("sk-wrong"), false)
        .await;
    let error = assert_error(&answer, 500, None);
    assert_eq!(error["type"], "server_error");
    let answer = api.get("/threads/thread_1/runs/run_1").await;
    assert_error(&answer, 409, None);
    // The fault was consumed: now the normal 404.
    assert_error(&api.get("/threads/thread_1/runs/run_1").await, 404, None);
}

#[tokio::test]
async fn delay_fault_answers_normally_after_the_delay() {
    let mock = MockOpenAi::start().await;
    let api = Api::new(&mock);
    let delay = Duration::from_millis(150);
    mock.push_fault(Endpoint::CreateConversation, Fault::Delay(delay));

    let started = Instant::now();
    let conversation = api.ok_post("/conversations", json!({})).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(conversation["id"], "conv_1");
    assert_eq!(mock.conversations_created(), 1);
}

#[tokio::test]
async fn request_log_records_everything_in_order() {
    let mock = MockOpenAi::start().await;
    let api = Api::new(&mock);
    let thread = api.new_thread().await;
    api.say(&thread, "log me").await;
    api.get(&format!("/threads/{thread}/messages?order=asc&limit=5"))
        .await;
    let key = api.key.clone();
    // Rejected requests are recorded too.
    api.send("POST", "/threads", Some("not json".into()), Some(&key), true)
        .await;
    api.send("GET", "/nowhere", None, None, false).await;

    let log = mock.requests();
    assert_eq!(log.len(), 5);
    let summary: Vec<(&str, &str, Option<Endpoint>)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.endpoint))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", "/v1/threads", Some(Endpoint::CreateThread)),
            (
                "POST",
                "/v1/threads/thread_1/messages",
                Some(Endpoint::CreateMessage)
            ),
            (
                "GET",
                "/v1/threads/thread_1/messages",
                Some(Endpoint::ListMessages)
            ),
            ("POST", "/v1/threads", Some(Endpoint::CreateThread)),
            ("GET", "/v1/nowhere", None),
        ]
    );
    let message = &log[1];
    assert_eq!(message.body, Some(json!({"role": "user", "content": "log me"})));
    assert_eq!(message.header("authorization"), Some("Bearer sk-mock-key"));
    assert_eq!(message.header("OpenAI-Beta"), Some("assistants=v2"));
    assert!(
        message
            .headers
            .iter()
            .all(|(name, _)| *name == name.to_lowercase())
    );
    assert!(message.headers.iter().any(|(name, _)| name == "openai-beta"));
    assert_eq!(log[2].query, pairs(&[("order", "asc"), ("limit", "5")]));
    assert_eq!(log[2].body, None);
    assert_eq!(log[3].body, None);
    assert_eq!(log[3].body_text, "not json");
    assert_eq!(log[4].header("authorization"), None);
}

#[test]
fn demo_reply_detects_handoff_requests() {
    for text in [
        "Can I talk to a HUMAN please?",
        "get me an agent",
        "I want a real person",
        "handoff",
    ] {
        assert_eq!(
            demo_reply(&ReplyInput::new(text)),
            Reply::text(HANDOFF_REPLY),
            "{text}"
        );
    }
    let Reply::Text(answer) = demo_reply(&ReplyInput::new("What are your opening hours?")) else {
        panic!("demo_reply should answer with text");
    };
    assert!(!answer.starts_with("HANDOFF"));
    assert!(answer.contains("\"What are your opening hours?\""), "{answer}");
    assert!(answer.contains("OPENAI_API_KEY"));
}

#[tokio::test]
async fn default_mock_uses_the_demo_assistant() {
    let mock = MockOpenAi::start().await;
    let api = Api::new(&mock);
    let thread = api.new_thread().await;
    api.say(&thread, "I need a human").await;
    api.run(&thread).await;
    let list = api.ok_get(&format!("/threads/{thread}/messages")).await;
    assert_eq!(message_text(&list["data"][0]), HANDOFF_REPLY);
}

#[tokio::test]
async fn a_panicking_reply_function_fails_the_run() {
    let mock = MockOpenAi::builder()
        .reply_with(|_: &ReplyInput| -> Reply { panic!("boom in test reply") })
        .start()
        .await;
    let api = Api::new(&mock);
    let thread = api.new_thread().await;
    api.say(&thread, "hi").await;
    let run = api.run(&thread).await;
    let run = api
        .ok_get(&format!("/threads/{thread}/runs/{}", str_of(&run["id"])))
        .await;
    assert_eq!(run["status"], "failed");
    assert!(str_of(&run["last_error"]["message"]).contains("boom in test reply"));
    // The mock keeps serving.
    api.new_thread().await;
}

#[tokio::test]
async fn dropping_the_mock_stops_the_server() {
    let mock = MockOpenAi::start().await;
    let api = Api::new(&mock);
    api.new_thread().await;
    drop(mock);
    // Shutdown is signalled to the server's own thread, so allow it a moment.
    let client = reqwest::Client::new();
    let mut stopped = false;
    for _ in 0..100 {
        if client.post(format!("{}/threads", api.base)).send().await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stopped, "the server still answers after the mock was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_threads_do_not_cross_talk() {
    let mock = MockOpenAi::builder()
        .polls_until_complete(2)
        .reply_with(|input: &ReplyInput| Reply::text(format!("echo {}", input.user_text)))
        .start()
        .await;
    let api = Arc::new(Api::new(&mock));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let thread = api.new_thread().await;
                let question = format!("question {i}");
                api.say(&thread, &question).await;
                let run = api.run(&thread).await;
                let path = format!("/threads/{thread}/runs/{}", str_of(&run["id"]));
                while api.ok_get(&path).await["status"] != "completed" {}
                let list = api.ok_get(&format!("/threads/{thread}/messages")).await;
                assert_eq!(message_text(&list["data"][0]), format!("echo {question}"));
                (thread, question)
            })
        })
        .collect();
    let mut threads = Vec::new();
    for task in tasks {
        threads.push(task.await.expect("task panicked"));
    }
    assert_eq!(mock.threads_created(), 200);
    assert_eq!(mock.runs_created(), 200);
    let mut ids: Vec<&String> = threads.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "thread ids must be unique");
    for (thread, question) in &threads {
        assert_eq!(
            mock.thread_messages(thread),
            pairs(&[("user", question), ("assistant", &format!("echo {question}"))])
        );
    }
}

#[tokio::test]
async fn run_additional_messages_join_the_thread_before_the_reply() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mock = MockOpenAi::builder()
        .reply_with(recording_reply(&seen))
        .start()
        .await;
    let api = Api::new(&mock);
    let thread = api.new_thread().await;
    api.ok_post(
        &format!("/threads/{thread}/runs"),
        json!({
            "assistant_id": "asst_mock",
            "additional_messages": [{"role": "user", "content": "from the run"}]
        }),
    )
    .await;
    api.ok_get(&format!("/threads/{thread}/messages")).await;
    assert_eq!(seen.lock().unwrap()[0].user_text, "from the run");
    assert_eq!(
        mock.thread_messages(&thread),
        pairs(&[("user", "from the run"), ("assistant", "answer to: from the run")])
    );
    // An invalid additional message is rejected with its path as `param`.
    let answer = api
        .post(
            &format!("/threads/{thread}/runs"),
            json!({"assistant_id": "asst_mock", "additional_messages": [{"role": "user"}]}),
        )
        .await;
    let error = assert_error(&answer, 400, Some("missing_required_parameter"));
    assert_eq!(error["param"], "additional_messages[0].content");
}
