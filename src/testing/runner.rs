//! Runs one parsed test file through the public `Engine` API: a stub
//! transport, a virtual clock, one conversation driven turn by turn, each
//! turn checked as soon as it ends so a failure names the first turn that
//! went wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::error::TestError;
use super::format::{Expect, StatusName, Stub, StubResponse, TestFile, TurnSpec};
use super::report::Report;
use super::stub::{Call, StubHttp};
use crate::{Engine, Event, EventLog, Flow, Status, VirtualClock};

/// Runs `test`, read from `path`; relative flow paths are read from `base_dir`.
pub(crate) async fn run(test: TestFile, path: &Path, base_dir: &Path) -> Result<Report, TestError> {
    let TestFile {
        name,
        flow,
        conversation_id,
        vars,
        secrets,
        stubs,
        turns,
        expect,
    } = test;
    let invalid = |message: String| TestError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if turns.is_empty() {
        return Err(invalid("`turns` is empty: a test needs at least one turn".into()));
    }
    let flow = load_flow(&flow, path, base_dir)?;
    let armed = arm(stubs, &flow).map_err(invalid)?;

    let clock = Arc::new(VirtualClock::new());
    let http = StubHttp::new(armed, clock.clone());
    let mut builder = Engine::builder(flow)
        .http_client(http.clone())
        .shared_clock(clock.clone());
    for (name, value) in vars {
        builder = builder.var(name, value);
    }
    for (name, value) in &secrets {
        builder = builder.secret(name, value);
    }
    let secrets: Vec<String> = secrets.into_values().filter(|s| !s.is_empty()).collect();
    let engine = builder.build().map_err(|source| TestError::Build {
        path: path.to_path_buf(),
        source,
    })?;

    let events = EventLog::new();
    let mut conversation = engine.start(conversation_id);
    let mut api_calls = 0;
    let last = turns.len();
    for (i, turn) in turns.iter().enumerate() {
        let number = i + 1;
        if let Some(wait) = turn.wait {
            clock.advance(wait);
        }
        if let Some(text) = &turn.user {
            engine
                .receive(&mut conversation, text.as_str())
                .map_err(|source| TestError::Reply {
                    path: path.to_path_buf(),
                    turn: number,
                    source,
                })?;
        }
        let started = clock.elapsed();
        // A failed run leaves the conversation Failed with the (masked)
        // error: the status check below reports it.
        let _ = engine.run(&mut conversation, &events).await;
        let elapsed = clock.elapsed().saturating_sub(started);
        let (calls, unstubbed) = http.take();
        api_calls += calls.len();
        if let Some(call) = unstubbed.into_iter().next() {
            return Err(TestError::Unstubbed {
                path: path.to_path_buf(),
                turn: number,
                step: call.step,
                method: call.method.to_string(),
                url: call.url,
            });
        }
        let said: Vec<String> = events
            .take()
            .iter()
            .filter_map(|e| match e {
                Event::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        let default = if number == last { expect.status() } else { None };
        let outcome = TurnOutcome {
            said,
            calls,
            elapsed,
            expected_status: turn.status.or(default).unwrap_or(StatusName::AwaitingReply),
            status: conversation.status(),
        };
        let check = TurnCheck {
            path,
            turn: number,
            secrets: &secrets,
        };
        check.all(turn, &outcome)?;
    }
    check_end(&expect, path, &conversation)?;
    Ok(Report {
        path: path.to_path_buf(),
        name: name.unwrap_or_else(|| path.display().to_string()),
        turns: last,
        api_calls,
        elapsed: clock.elapsed(),
        status: conversation.status().clone(),
    })
}

/// Pairs each stub with its answers, refusing a stub that matches nothing
/// or everything, has no answer, or names a step the flow does not have.
fn arm(stubs: Vec<Stub>, flow: &Flow) -> Result<Vec<(Stub, Vec<StubResponse>)>, String> {
    let mut armed = Vec::with_capacity(stubs.len());
    for (i, mut stub) in stubs.into_iter().enumerate() {
        if stub.step.is_none() && stub.url.is_none() && stub.method.is_none() {
            return Err(format!(
                "stubs[{i}]: say what it answers: `step`, `method` or `url`"
            ));
        }
        let answers: Vec<StubResponse> = match (stub.response.take(), stub.responses.take()) {
            (Some(one), None) => vec![one],
            (None, Some(many)) if !many.is_empty() => many,
            _ => {
                return Err(format!(
                    "stubs[{i}]: give either `response` or a non-empty `responses` list"
                ));
            }
        };
        if let Some(step) = &stub.step
            && flow.program().index_of(step).is_none()
        {
            return Err(format!("stubs[{i}]: the flow has no step \"{step}\""));
        }
        armed.push((stub, answers));
    }
    Ok(armed)
}

/// The flow named by the file's `flow`: a path, or the flow inline.
fn load_flow(flow: &Value, path: &Path, base_dir: &Path) -> Result<Flow, TestError> {
    let loaded = match flow {
        Value::String(relative) => Flow::from_path(base_dir.join(relative)),
        Value::Object(_) => Flow::from_json(&flow.to_string()),
        _ => {
            return Err(TestError::Invalid {
                path: path.to_path_buf(),
                message: "`flow` is the path of a flow file or a flow written inline".into(),
            });
        }
    };
    loaded.map_err(|source| TestError::Flow {
        path: path.to_path_buf(),
        source,
    })
}

/// What one turn did.
struct TurnOutcome<'a> {
    /// The bot's messages.
    said: Vec<String>,
    /// The requests answered by stubs.
    calls: Vec<Call>,
    /// The virtual time it took.
    elapsed: Duration,
    /// The status the file expects after it (said or implied).
    expected_status: StatusName,
    /// The status after it.
    status: &'a Status,
}

/// Compares one turn's outcome with the file.
struct TurnCheck<'a> {
    path: &'a Path,
    turn: usize,
    /// The file's secret values, masked in what a failure shows.
    secrets: &'a [String],
}

impl TurnCheck<'_> {
    /// Every check of a turn, the most telling first.
    fn all(&self, turn: &TurnSpec, outcome: &TurnOutcome<'_>) -> Result<(), TestError> {
        for call in &outcome.calls {
            if let Some((got, expected)) = &call.body_check
                && !holds(got, expected)
            {
                return Err(self.mismatch(
                    &format!("request body of {}", call.label()),
                    pretty(expected),
                    masked(&pretty(got), self.secrets),
                ));
            }
        }
        // An unexpected failure first: its error explains the rest.
        if matches!(outcome.status, Status::Failed { .. }) {
            self.status(outcome.expected_status, outcome.status)?;
        }
        self.lines("bot messages", &turn.bot.0, &outcome.said)?;
        self.status(outcome.expected_status, outcome.status)?;
        self.elapsed(turn, outcome.elapsed)?;
        if let Some(expected) = &turn.calls {
            let made: Vec<String> = outcome.calls.iter().map(Call::label).collect();
            self.lines("API calls", expected, &made)?;
        }
        Ok(())
    }

    fn mismatch(&self, what: &str, expected: String, got: String) -> TestError {
        TestError::Mismatch {
            path: self.path.to_path_buf(),
            turn: Some(self.turn),
            what: what.to_string(),
            expected,
            got,
        }
    }

    fn lines(&self, what: &str, expected: &[String], got: &[String]) -> Result<(), TestError> {
        if expected == got {
            return Ok(());
        }
        Err(self.mismatch(what, quoted(expected), quoted(got)))
    }

    fn status(&self, expected: StatusName, got: &Status) -> Result<(), TestError> {
        if StatusName::of(got) == Some(expected) {
            return Ok(());
        }
        Err(self.mismatch("status", expected.to_string(), describe(got)))
    }

    fn elapsed(&self, turn: &TurnSpec, got: Duration) -> Result<(), TestError> {
        match turn.elapsed {
            Some(expected) if expected != got => {
                Err(self.mismatch("virtual time", format!("{expected:?}"), format!("{got:?}")))
            }
            _ => Ok(()),
        }
    }
}

/// Checks the file's `expect` against the conversation after the last turn.
fn check_end(expect: &Expect, path: &Path, conversation: &crate::Conversation) -> Result<(), TestError> {
    let mismatch = |what: &str, expected: String, got: String| TestError::Mismatch {
        path: path.to_path_buf(),
        turn: None,
        what: what.to_string(),
        expected,
        got,
    };
    let status = conversation.status();
    if let Some(handoff) = &expect.handoff {
        let Status::HandedOff { assignment } = status else {
            return Err(mismatch("status", "handed_off".into(), describe(status)));
        };
        let fields = [
            ("team", &handoff.team, &assignment.team),
            ("agent", &handoff.agent, &assignment.agent),
            ("note", &handoff.note, &assignment.note),
        ];
        for (field, expected, got) in fields {
            if let Some(expected) = expected
                && Some(expected) != got.as_ref()
            {
                return Err(mismatch(
                    &format!("handoff.{field}"),
                    quoted(std::slice::from_ref(expected)),
                    got.as_deref()
                        .map(|g| format!("{g:?}"))
                        .unwrap_or("(none)".into()),
                ));
            }
        }
    }
    if let Some(words) = &expect.error {
        let Status::Failed { error } = status else {
            return Err(mismatch("status", "failed".into(), describe(status)));
        };
        if !error.contains(words.as_str()) {
            return Err(mismatch(
                "error",
                format!("an error containing {words:?}"),
                error.clone(),
            ));
        }
    }
    let contact = conversation.contact();
    if let Some(differs) = expect
        .contact
        .iter()
        .find(|(key, value)| contact.get(key.as_str()) != Some(value))
    {
        let expected: BTreeMap<&String, &Value> = expect.contact.iter().collect();
        let got: BTreeMap<&String, &Value> = expect
            .contact
            .keys()
            .filter_map(|key| Some((key, contact.get(key.as_str())?)))
            .collect();
        return Err(mismatch(
            &format!("contact attributes (first: {})", differs.0),
            pretty(&expected),
            pretty(&got),
        ));
    }
    Ok(())
}

/// Whether `got` holds `expected`: objects may have more keys; arrays and
/// other values are compared item by item.
fn holds(got: &Value, expected: &Value) -> bool {
    match (got, expected) {
        (Value::Object(got), Value::Object(expected)) => expected
            .iter()
            .all(|(key, value)| got.get(key).is_some_and(|g| holds(g, value))),
        (Value::Array(got), Value::Array(expected)) => {
            got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| holds(g, e))
        }
        _ => got == expected,
    }
}

/// `text` with every secret as `***`, as it is and as JSON escapes it: a
/// request body shown in a failure must not leak one.
fn masked(text: &str, secrets: &[String]) -> String {
    let mut forms: Vec<String> = Vec::with_capacity(secrets.len() * 2);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let quoted = Value::String(secret.clone()).to_string();
        forms.push(quoted.get(1..quoted.len() - 1).unwrap_or(secret).to_string());
        forms.push(secret.clone());
    }
    // Longest first: a secret that holds another is masked whole.
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    let mut text = text.to_string();
    for form in &forms {
        text = text.replace(form.as_str(), "***");
    }
    text
}

/// One quoted item a line: a message with a newline still reads as one line.
fn quoted(items: &[String]) -> String {
    items.iter().map(|i| format!("{i:?}\n")).collect()
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A status as the file would name it, with a failure's message.
fn describe(status: &Status) -> String {
    match (status, StatusName::of(status)) {
        (Status::Failed { error }, _) => format!("failed: {error}"),
        (_, Some(name)) => name.to_string(),
        (other, None) => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn a_secret_holding_another_is_masked_whole() {
        let secrets = ["sk-a".to_string(), "sk-a-longer-key".to_string()];
        assert_eq!(
            masked("key sk-a-longer-key and sk-a", &secrets),
            "key *** and ***"
        );
    }
}
