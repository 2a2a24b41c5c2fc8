//! Heap allocations per local step (ContactUpdate, Condition, GoTo, Message
//! with templates), counted by a counting global allocator.
//!
//! The allocator counts only on the thread that asked for it, so tests
//! running in parallel in this binary do not disturb each other. Each figure
//! is a difference between two runs of the same flow that loop a different
//! number of times, so one-off costs (starting the conversation, the first
//! insert of a contact attribute or a visit count) cancel out.
//!
//! `cargo test --test allocations -- --nocapture` prints the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use chatflow::{Engine, EngineOptions, Event, Flow, Status};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; counting
// touches only const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    /// A growing buffer counts as another allocation.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) `f` makes on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

/// The flows make no HTTP calls.
struct NeverCalled;

#[async_trait::async_trait]
impl HttpClient for NeverCalled {
    async fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        Err(HttpError::Connect(
            "the allocation flows make no HTTP calls".into(),
        ))
    }
}

fn drop_events(event: Event) {
    black_box(event);
}

/// `Init` (sets `name`, `plan`, `note`), then `body` (steps ending in a
/// GoTo "Again" back to the loop's first step, `passes` times), then `End`.
fn flow(body: &str, first: &str, passes: u32) -> Flow {
    let json = format!(
        r#"{{
      "name": "allocations",
      "steps": [
        {{"type": "contact_update", "name": "Init",
          "set": {{"name": "Ada <<conversation.id>>", "plan": "<<var.plan>>", "note": "x",
                   "last": "", "copy": "", "profile": {{}}}}}},
        {body}
        {{"type": "goto", "name": "Again", "target": "{first}", "max_visits": {passes}, "fallback": "End"}},
        {{"type": "message", "name": "End", "text": "Bye."}}
      ]
    }}"#
    );
    Flow::from_json(&json).expect("the allocation flow loads")
}

/// Allocations of one run of the flow, and the steps it ran.
fn run_once(flow: Flow) -> (u64, u64) {
    let engine = Engine::builder(flow)
        .http_client(NeverCalled)
        .var("plan", "gold")
        .var("tier", 3)
        .options(EngineOptions::default().with_max_steps_without_reply(u32::MAX))
        .build()
        .expect("the allocation engine builds");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let mut conversation = engine.start("c-1");
    let before = engine.steps_run();
    let (status, allocations) = allocations(|| runtime.block_on(engine.run(&mut conversation, &drop_events)));
    assert_eq!(status.expect("the flow runs"), Status::Finished);
    (allocations, engine.steps_run() - before)
}

/// Allocations per pass of the loop (`body` plus the GoTo).
fn per_pass(body: &str, first: &str) -> f64 {
    let (short, short_steps) = run_once(flow(body, first, 100));
    let (long, long_steps) = run_once(flow(body, first, 300));
    let steps_per_pass = (long_steps - short_steps) as f64 / 200.0;
    assert_eq!(
        steps_per_pass,
        (body.matches("\"type\"").count() + 1) as f64,
        "steps per pass"
    );
    (long as f64 - short as f64) / 200.0
}

/// A GoTo alone: no allocation.
const GOTO: &str = r#"{"type": "goto", "name": "Spin", "target": "Again"},"#;

fn goto_allocations() -> f64 {
    // Two GoTos per pass: Spin, then Again.
    per_pass(GOTO, "Spin") / 2.0
}

#[test]
fn goto_allocates_nothing() {
    let goto = goto_allocations();
    eprintln!("GoTo: {goto} allocations per step");
    assert_eq!(goto, 0.0);
}

#[test]
fn condition_allocates_nothing() {
    let body = r#"{"type": "condition", "name": "Check",
        "all": [{"left": "<<contact.plan>>", "op": "equals", "right": "<<var.plan>>"},
                {"left": "<<contact.plan>>", "op": "equals", "right": "gold"},
                {"left": "<<contact.name>>", "op": "contains", "right": "ADA", "ignore_case": true},
                {"left": "<<contact.name>>", "op": "starts_with", "right": "ada", "ignore_case": true},
                {"left": "<<contact.name>>", "op": "ends_with", "right": "C-1", "ignore_case": true},
                {"left": "<<contact.note>>", "op": "is_not_empty"},
                {"left": "<<contact.nope>>", "op": "is_empty"}],
        "then": "Again", "else": "End"},"#;
    let condition = per_pass(body, "Check") - goto_allocations();
    eprintln!("Condition (7 rules): {condition} allocations per step");
    assert_eq!(condition, 0.0);
}

#[test]
fn message_allocates_its_event() {
    let body = r#"{"type": "message", "name": "Say",
        "text": "Hello <<contact.name>>, your <<contact.plan>> plan (<<var.tier>>) is active."},"#;
    let message = per_pass(body, "Say") - goto_allocations();
    eprintln!("Message: {message} allocations per step");
    // The event: its text, and its owned conversation id and step name.
    assert_eq!(message, 3.0);
}

#[test]
fn contact_update_allocates_its_values() {
    let body = r#"{"type": "contact_update", "name": "Update",
        "set": {"last": "<<contact.name>> on <<contact.plan>>", "copy": "<<contact.name>>", "count": 1}},"#;
    let update = per_pass(body, "Update") - goto_allocations();
    eprintln!("ContactUpdate (2 strings, 1 number): {update} allocations per step");
    // One allocation per string value.
    assert_eq!(update, 2.0);
}

/// The interpreter benchmark's loop (benches/interpreter.rs).
#[test]
fn benchmark_loop_allocates_only_its_values() {
    let body = r#"{"type": "contact_update", "name": "Update",
          "set": {"last": "<<contact.name>> on <<contact.plan>>", "plan": "<<contact.plan>>",
                  "profile": {"name": "<<contact.name>>", "tier": "<<var.tier>>"}}},
        {"type": "condition", "name": "Gold?",
          "any": [{"left": "<<contact.plan>>", "op": "equals", "right": "<<var.plan>>"},
                  {"left": "<<contact.last>>", "op": "contains", "right": "ADA", "ignore_case": true}],
          "then": "Say", "else": "End"},
        {"type": "message", "name": "Say",
          "text": "Hello <<contact.name>>, your <<contact.plan>> plan (<<contact.profile.tier>>) is active."},"#;
    let pass = per_pass(body, "Update");
    eprintln!("interpreter benchmark loop: {pass} allocations per pass of 4 steps");
    // ContactUpdate: `last` 1, `plan` 1, `profile` 4 (the map's node, its
    // two keys, the name); Message 3 (see above); Condition and GoTo 0.
    assert_eq!(pass, 9.0);
}
