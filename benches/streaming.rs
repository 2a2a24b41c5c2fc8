//! How soon a streamed answer reaches the user after the run completes.
//!
//! Runs `flows/openai_assistant_streaming.json` against the mock OpenAI,
//! whose runs take `RUN_MS` (real time; the mock sends the run's event
//! stream then), over the real reqwest transport on loopback. For each turn
//! it reports the time from the run's completion (the mock's scheduled send
//! of the stream: when it received `POST …/runs`, plus the run's duration)
//! to the answer being shown (the "Answer" message event) and to
//! `Engine::run` returning. The target is ≤ 50 ms.
//!
//! ```text
//! cargo bench --bench streaming              # 30 turns, runs of 200 ms
//! cargo test --bench streaming               # a smoke run: 3 turns of 20 ms
//! cargo bench --bench streaming -- 50 500    # 50 turns, runs of 500 ms
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatflow::mock::{Endpoint, MockOpenAi, Reply};
use chatflow::{Engine, Event, Flow, Status};

const TARGET: Duration = Duration::from_millis(50);

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours. Without `--bench`
    // (`cargo test --benches`, as CI runs it) a quick smoke run.
    let args: Vec<String> = std::env::args().collect();
    let measuring = args.iter().any(|a| a == "--bench");
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (default_turns, default_run_ms) = if measuring { (30, 200) } else { (3, 20) };
    let turns = numbers.first().copied().unwrap_or(default_turns).max(1);
    let run = Duration::from_millis(numbers.get(1).copied().unwrap_or(default_run_ms));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench(turns, run));
}

async fn bench(turns: u64, run: Duration) {
    let mock = MockOpenAi::builder()
        .run_duration(run)
        .reply_with(|input| Reply::text(format!("Answer to: {}", input.user_text)))
        .start()
        .await;
    let flow = Flow::from_path(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/flows/openai_assistant_streaming.json"
    ))
    .expect("the streaming flow loads");
    let engine = Engine::builder(flow)
        .secret("OPENAI_API_KEY", mock.api_key())
        .var("openai_base_url", mock.base_url())
        .var("assistant_id", mock.assistant_id())
        .build()
        .expect("the engine builds");

    let shown: Arc<Mutex<Option<Instant>>> = Arc::default();
    let at = Arc::clone(&shown);
    let sink = move |event: Event| {
        if let Event::Message { step, .. } = &event
            && step == "Answer"
        {
            *at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    };

    let mut to_shown = Vec::new();
    let mut to_returned = Vec::new();
    for turn in 0..turns {
        let mut conversation = engine.start(format!("bench-{turn}"));
        engine
            .receive(&mut conversation, "Where is my order?")
            .expect("a reply is queued");
        let status = engine.run(&mut conversation, &sink).await.expect("the turn runs");
        let returned = Instant::now();
        assert_eq!(status, Status::AwaitingReply, "the answer is a question");
        let Some(shown_at) = shown.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            panic!("turn {turn}: no answer shown");
        };
        let created = mock
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.endpoint == Some(Endpoint::CreateRun))
            .expect("a run was created");
        let completed = created.received_at + run;
        to_shown.push(shown_at.saturating_duration_since(completed));
        to_returned.push(returned.saturating_duration_since(completed));
    }
    assert!(
        mock.requests().iter().all(|r| r.method == "POST"),
        "the streaming flow never polls"
    );

    println!(
        "streaming: {turns} turns of flows/openai_assistant_streaming.json, runs of {run:?} (mock OpenAI, reqwest, loopback)"
    );
    println!("from run completion to…   mean       median     p95        max");
    for (label, times) in [
        ("answer shown", &mut to_shown),
        ("Engine::run returned", &mut to_returned),
    ] {
        times.sort_unstable();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "  {label:<22} {:>9.3?} {:>9.3?} {:>9.3?} {:>9.3?}",
            mean,
            at(0.5),
            at(0.95),
            times[times.len() - 1]
        );
    }
    let worst = to_returned.last().copied().unwrap_or_default();
    println!(
        "target ≤ {TARGET:?}: {}",
        if worst <= TARGET { "met (max)" } else { "MISSED" }
    );
}
