//! Conversation tests from YAML files (feature `testing`): what the user
//! says, what the bot must answer, the API answers to pretend, in virtual
//! time. Adding a case is adding a file.
//!
//! Call the runner from your own tests:
//!
//! ```no_run
//! #[test]
//! fn conversations() -> Result<(), chatflow::testing::TestError> {
//!     chatflow::testing::run_dir("tests/conversations")?;
//!     Ok(())
//! }
//! ```
//!
//! A failure names the file and the turn and shows expected against got as
//! a diff:
//!
//! ```text
//! tests/conversations/orders.yaml, turn 2: unexpected bot messages
//! --- expected
//! +++ got
//! @@ -1 +1 @@
//! -"Order 42 is shipped."
//! +"Order 42 is lost."
//! ```
//!
//! Each file runs one conversation through the public [`Engine`](crate::Engine)
//! API: a stub [`HttpClient`](crate::http::HttpClient) answers the flow's
//! Api steps from the file, and a [`VirtualClock`](crate::VirtualClock)
//! makes Delays, retries and slow answers pass at once. A request no stub
//! answers fails the test, naming the step and the URL (secrets masked).
//!
//! ```
//! let report = chatflow::testing::run_yaml(r#"
//! name: an order's status
//! flow:
//!   name: orders
//!   steps:
//!     - {type: question, name: Ask order, text: "Your order number?"}
//!     - type: api
//!       name: Look up order
//!       method: GET
//!       url: "<<var.shop>>/orders/<<step.Ask order.response>>"
//!       headers: {Authorization: "Bearer <<secret.SHOP_KEY>>"}
//!     - {type: delay, name: Pause, seconds: 2}
//!     - type: message
//!       name: Tell
//!       text: "Order <<step.Ask order.response>> is <<step.Look up order.response.state>>."
//! vars: {shop: "https://shop.example"}
//! secrets: {SHOP_KEY: sk-test}
//! stubs:
//!   - step: Look up order
//!     responses:
//!       - {status: 503, headers: {retry-after: "1"}}
//!       - {body: {state: shipped}}
//! turns:
//!   - bot: Your order number?
//!   - user: "42"
//!     bot: Order 42 is shipped.
//!     calls: [Look up order, Look up order]
//!     elapsed: 3s
//! expect:
//!   status: finished
//! "#, ".")?;
//! assert_eq!(report.turns, 2);
//! assert_eq!(report.api_calls, 2);
//! # Ok::<(), chatflow::testing::TestError>(())
//! ```
//!
//! # The file, field by field
//!
//! Every map refuses keys it does not know, so a misspelt key is an error
//! with its line and column.
//!
//! - `name` (optional): what the test shows, for reports.
//! - `flow`: the path of the flow's JSON file, relative to the test file
//!   (`../../flows/openai_assistant.json`), or the flow written inline as YAML.
//! - `conversation_id` (default `test`): the conversation's id.
//! - `vars`, `secrets` (optional maps): the host values and secrets the
//!   engine is built with, as [`EngineBuilder::var`](crate::EngineBuilder::var)
//!   and [`EngineBuilder::secret`](crate::EngineBuilder::secret). Secrets are
//!   masked (`***`) in URLs, errors and notes, as in production.
//! - `stubs`: the answers to the flow's requests. Each request takes the
//!   first stub that matches it:
//!   - `step`: the Api step that sent it (see [`HttpRequest::step`](crate::http::HttpRequest::step));
//!   - `method`: `GET`, `POST`, …;
//!   - `url`: the URL with secrets as `***`, whole, or its ending when it
//!     starts with `/` (`/threads/thread_1/runs`);
//!
//!   at least one of them; optionally
//!   - `request_body`: what the JSON body of every request it answers must
//!     hold (objects may have more keys than given; arrays and other values
//!     compare whole); a request without it fails the turn, with a diff;
//!
//!   and the answer:
//!   - `response`: the answer to every matching request, or
//!   - `responses`: a list, one answer per request in order, the last one
//!     repeating (a polling loop: "not yet", "not yet", "done").
//!
//!   An answer has:
//!   - `status` (default 200) and `headers` (a map; `retry-after` is honoured
//!     by the engine's retries, in virtual time);
//!   - a body: `body` (any YAML value, sent as JSON), `text` (sent as is) or
//!     `sse` (a list of `{event, data}`, sent as a `text/event-stream` for a
//!     step with `stream_until`; a `data` that is not a string is sent as
//!     JSON); no body is an empty one;
//!   - `delay` (a duration): how long the server takes, in virtual time; as
//!     long as the request's timeout or longer, the call times out;
//!   - `error`: `connect`, `timeout` or `transport`, for an exchange that
//!     gets no response at all (the engine retries as it would in production).
//! - `turns`: the conversation, in order. Each turn:
//!   - `wait` (a duration, optional): virtual time that passes first;
//!   - `user` (optional): what the user says; a turn without it runs the
//!     flow as it stands (the first turn, for a flow that speaks first);
//!   - `bot`: the messages the bot sends during the turn, exactly and in
//!     order, one text or a list (none when absent);
//!   - `status` (optional): how the conversation stands after the turn:
//!     `awaiting_reply`, `handed_off`, `finished` or `failed`. Every turn but
//!     the last must end `awaiting_reply` unless it says otherwise; the last
//!     one defaults to what `expect` implies;
//!   - `elapsed` (a duration, optional): the virtual time the turn took
//!     (Delays, retry waits, stub delays). A retry's backoff has random
//!     jitter unless the answer sends `retry-after`: give one when a turn
//!     that retries checks `elapsed`;
//!   - `calls` (optional): the requests the turn sent, by step name (method
//!     and URL for a request without one), retries included.
//! - `expect` (optional): how the conversation ends:
//!   - `status`, as above;
//!   - `handoff`: `team`, `agent`, `note` of the Assign step (the ones given
//!     are checked; implies `status: handed_off`);
//!   - `error`: words the failure message holds (implies `status: failed`);
//!   - `contact`: attributes that must hold these values (others may exist).
//!
//! Durations are written `30s`, `250ms`, `1.5s`, `2m`, `1h`, or as a
//! number of seconds. YAML reads JSON too: a `.yaml` file may be written in
//! JSON syntax.
//!
//! The virtual clock starts at 2026-01-01T00:00:00Z; the engine runs with
//! its default [`EngineOptions`](crate::EngineOptions).

mod error;
mod format;
mod report;
mod runner;
mod stub;

pub use error::TestError;
pub use report::Report;

use std::future::Future;
use std::path::{Path, PathBuf};

use format::TestFile;

/// Runs one conversation test file. Blocks until it is done; callable from
/// a plain `#[test]` as well as from inside a tokio runtime.
pub fn run_file(path: impl AsRef<Path>) -> Result<Report, TestError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| TestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    run_text(&text, path, base_dir)
}

/// Runs a conversation test written inline; a relative `flow` path is read
/// from `base_dir`. Errors name the file `<yaml>`.
pub fn run_yaml(yaml: &str, base_dir: impl AsRef<Path>) -> Result<Report, TestError> {
    run_text(yaml, Path::new("<yaml>"), base_dir.as_ref())
}

/// Runs every `*.yaml` and `*.yml` file of `dir` (not its subfolders), in
/// name order. Every file runs; if any fails, the error is
/// [`TestError::Failed`] with each failure. A folder without test files is
/// an error too, so a mistyped path cannot pass.
pub fn run_dir(dir: impl AsRef<Path>) -> Result<Vec<Report>, TestError> {
    let files = test_files(dir)?;
    let total = files.len();
    let mut reports = Vec::with_capacity(total);
    let mut failures = Vec::new();
    for file in files {
        match run_file(&file) {
            Ok(report) => reports.push(report),
            Err(error) => failures.push(error),
        }
    }
    if failures.is_empty() {
        Ok(reports)
    } else {
        Err(TestError::Failed { failures, total })
    }
}

/// The conversation test files of `dir` (`*.yaml`, `*.yml`), in name order;
/// an error when there are none.
pub fn test_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, TestError> {
    let dir = dir.as_ref();
    let io = |source| TestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(TestError::Invalid {
            path: dir.to_path_buf(),
            message: "no conversation test files (*.yaml, *.yml) here".into(),
        });
    }
    files.sort();
    Ok(files)
}

fn run_text(text: &str, path: &Path, base_dir: &Path) -> Result<Report, TestError> {
    let test = parse(text, path)?;
    block_on(path, runner::run(test, path, base_dir))
}

fn parse(text: &str, path: &Path) -> Result<TestFile, TestError> {
    serde_saphyr::from_str(text).map_err(|error| {
        let location = error.location();
        TestError::Yaml {
            path: path.to_path_buf(),
            line: location.map_or(0, |l| l.line()),
            column: location.map_or(0, |l| l.column()),
            // The parser's excerpt names the file `<input>`: name it.
            message: error
                .to_string()
                .replace("--> <input>:", &format!("--> {}:", path.display())),
        }
    })
}

/// Runs `future` to completion on a runtime of its own, on a thread of its
/// own: a caller already inside a tokio runtime cannot start another on its
/// thread.
fn block_on<F>(path: &Path, future: F) -> Result<Report, TestError>
where
    F: Future<Output = Result<Report, TestError>> + Send,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|source| TestError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            runtime.block_on(future)
        });
        match thread.join() {
            Ok(result) => result,
            // Not ours to swallow: a panic in the engine is a bug to see.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
