//! How long the polling flow leaves an answer waiting: the guide's fixed
//! 10 s Delay against the shipped backoff (0.25, 0.5, 1, 2, 4, then 8 s).
//!
//! Runs `flows/openai_assistant.json`, and a copy with the guide's
//! `"seconds": 10` Wait, against the mock OpenAI whose runs complete a given
//! time after they start, on the engine's virtual clock (so the whole bench
//! takes about a second of real time). For runs of about 1 s, 3 s and 10 s
//! (each in 21 variants spread over ±10 %, since real runs vary) it reports
//! the mean time from the run's completion to the answer being shown, and
//! the mean number of polls (message lists) per turn.
//!
//! ```text
//! cargo bench --bench poll_latency
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chatflow::mock::{Endpoint, MockOpenAi, Reply};
use chatflow::{Clock, Engine, Event, Flow, Status, VirtualClock};
use serde_json::{Value, json};

const SAMPLES: u32 = 21;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench());
}

fn shipped() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/flows/openai_assistant.json"
    ))
    .expect("the shipped flow is readable");
    serde_json::from_str(&text).expect("the shipped flow is JSON")
}

/// The shipped flow with the guide's fixed Wait and its 30 jumps back.
fn fixed_10s() -> Flow {
    let mut flow = shipped();
    let steps = flow["steps"].as_array_mut().expect("steps");
    for step in steps.iter_mut() {
        match step["name"].as_str() {
            Some("Wait") => step["seconds"] = json!(10),
            Some("Check again") => step["max_visits"] = json!(30),
            _ => {}
        }
    }
    Flow::from_json(&flow.to_string()).expect("the fixed-delay variant loads")
}

/// One turn against a run of `run`: (wait after completion, polls).
async fn turn(flow: Flow, run: Duration) -> (Duration, usize) {
    let clock = Arc::new(VirtualClock::new());
    let mock = MockOpenAi::builder()
        .run_duration(run)
        .clock(clock.clone())
        .reply_with(|input| Reply::text(format!("Answer to: {}", input.user_text)))
        .start()
        .await;
    let engine = Engine::builder(flow)
        .shared_clock(clock.clone())
        .secret("OPENAI_API_KEY", mock.api_key())
        .var("openai_base_url", mock.base_url())
        .var("assistant_id", mock.assistant_id())
        .build()
        .expect("the engine builds");
    let shown: Arc<Mutex<Option<SystemTime>>> = Arc::default();
    let (at, time) = (Arc::clone(&shown), clock.clone());
    let sink = move |event: Event| {
        if let Event::Message { step, .. } = &event
            && step == "Answer"
        {
            *at.lock().unwrap_or_else(|e| e.into_inner()) = Some(time.now());
        }
    };
    // No Delay runs before the run is created: it starts at the turn's start.
    let started = clock.now();
    let mut conversation = engine.start("bench");
    engine
        .receive(&mut conversation, "Where is my order?")
        .expect("a reply is queued");
    let status = engine.run(&mut conversation, &sink).await.expect("the turn runs");
    assert_eq!(status, Status::AwaitingReply, "answered within the budget");
    let shown = shown
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .expect("an answer was shown");
    let wait = shown
        .duration_since(started + run)
        .expect("never shown before the run completes");
    let polls = mock
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::ListMessages))
        .count();
    (wait, polls)
}

async fn bench() {
    let backoff = Flow::from_json(&shipped().to_string()).expect("the shipped flow loads");
    let fixed = fixed_10s();
    println!("poll_latency: flows/openai_assistant.json, mean wait from run completion to the answer shown");
    println!("({SAMPLES} runs each, durations spread over ±10 %, virtual time)");
    println!();
    println!("| run takes | fixed 10 s Delay: wait | polls | backoff [0.25 … 8] s: wait | polls |");
    println!("|---|---|---|---|---|");
    for seconds in [1.0, 3.0, 10.0] {
        let mut rows = Vec::new();
        for flow in [&fixed, &backoff] {
            let mut total = Duration::ZERO;
            let mut polls = 0;
            for i in 0..SAMPLES {
                let spread = 0.9 + 0.2 * f64::from(i) / f64::from(SAMPLES - 1);
                let run = Duration::from_secs_f64(seconds * spread);
                let (wait, n) = turn(flow.clone(), run).await;
                total += wait;
                polls += n;
            }
            rows.push((total / SAMPLES, polls as f64 / f64::from(SAMPLES)));
        }
        println!(
            "| ≈ {seconds} s | {:.2} s | {:.1} | {:.2} s | {:.1} |",
            rows[0].0.as_secs_f64(),
            rows[0].1,
            rows[1].0.as_secs_f64(),
            rows[1].1
        );
    }
}
