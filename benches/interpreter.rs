//! How fast the interpreter runs steps that need no I/O: ContactUpdate,
//! Condition, Message and GoTo, all with templates.
//!
//! `cargo bench --bench interpreter` reports the time per step
//! (`interpreter/local_steps`, time per element).

use std::hint::black_box;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use chatflow::{Engine, EngineOptions, Event, Flow, Status};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Times the loop body runs: `max_visits` jumps back, plus the last pass
/// that takes the fallback.
const MAX_VISITS: u64 = 1000;
const LOOP_STEPS: u64 = 4;
/// Init, the loop, and End.
const STEPS_PER_RUN: u64 = 1 + (MAX_VISITS + 1) * LOOP_STEPS + 1;

fn flow() -> Flow {
    let json = format!(
        r#"{{
      "name": "local steps",
      "steps": [
        {{"type": "contact_update", "name": "Init",
          "set": {{"name": "Ada <<conversation.id>>", "plan": "<<var.plan>>", "count": 0}}}},
        {{"type": "contact_update", "name": "Update",
          "set": {{"last": "<<contact.name>> on <<contact.plan>>", "plan": "<<contact.plan>>",
                   "profile": {{"name": "<<contact.name>>", "tier": "<<var.tier>>"}}}}}},
        {{"type": "condition", "name": "Gold?",
          "any": [{{"left": "<<contact.plan>>", "op": "equals", "right": "<<var.plan>>"}},
                  {{"left": "<<contact.last>>", "op": "contains", "right": "ADA", "ignore_case": true}}],
          "then": "Say", "else": "End"}},
        {{"type": "message", "name": "Say",
          "text": "Hello <<contact.name>>, your <<contact.plan>> plan (<<contact.profile.tier>>) is active."}},
        {{"type": "goto", "name": "Again", "target": "Update", "max_visits": {MAX_VISITS}, "fallback": "End"}},
        {{"type": "message", "name": "End", "text": "Bye <<contact.name>>."}}
      ]
    }}"#
    );
    Flow::from_json(&json).expect("the bench flow loads")
}

/// The flow has no Api step: a call here is a bug in the bench.
struct NeverCalled;

#[async_trait]
impl HttpClient for NeverCalled {
    async fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        unreachable!("the benchmark flow makes no HTTP calls")
    }
}

fn engine() -> Engine {
    Engine::builder(flow())
        .http_client(NeverCalled)
        .var("plan", "gold")
        .var("tier", 3)
        .options(EngineOptions::default().with_max_steps_without_reply(u32::MAX))
        .build()
        .expect("the bench engine builds")
}

fn drop_events(event: Event) {
    black_box(event);
}

/// Checks once that a run takes the path the throughput figure assumes.
fn check(engine: &Engine, runtime: &tokio::runtime::Runtime) {
    let messages = std::sync::atomic::AtomicU64::new(0);
    let count = |event: Event| {
        if event.text().is_some() {
            messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let mut conversation = engine.start("bench");
    let status = runtime
        .block_on(engine.run(&mut conversation, &count))
        .expect("the bench flow runs");
    assert_eq!(status, Status::Finished);
    let state = serde_json::to_value(&conversation).unwrap();
    assert_eq!(state["steps_since_reply"], STEPS_PER_RUN, "steps per run");
    assert_eq!(messages.into_inner(), MAX_VISITS + 2, "one Say per pass, and End");
}

fn local_steps(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let engine = engine();
    check(&engine, &runtime);

    let mut group = c.benchmark_group("interpreter");
    group.throughput(Throughput::Elements(STEPS_PER_RUN));
    group.bench_function("local_steps", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let engine = engine.clone();
            async move {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let mut conversation = engine.start(format!("c{i}"));
                    let started = Instant::now();
                    let status = engine.run(&mut conversation, &drop_events).await;
                    total += started.elapsed();
                    black_box(status.expect("the bench flow runs"));
                    black_box(conversation);
                }
                total
            }
        });
    });
    group.finish();
}

criterion_group!(benches, local_steps);
criterion_main!(benches);
