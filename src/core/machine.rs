//! The step machine: runs a conversation's steps until one needs the
//! outside world, and takes the outcome back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::effect::{Effect, Outbound, Wake};
use super::retry::RetryPolicy;
use super::scope::ConversationScope;
use super::{Interpreter, api};
use crate::conversation::{Assignment, Conversation, Cursor, Status};
use crate::engine::ReplyMode;
use crate::error::RunError;
use crate::flow::{CompiledKind, CompiledStep};
use crate::http::{HttpError, HttpRequest, HttpResponse};
use crate::template::Secrets;

/// Advances one conversation of an engine, one [`Effect`] at a time. Made
/// by [`crate::Engine::machine`]; the conversation is passed to each call.
///
/// The machine holds only what must not be stored: the Api call in
/// progress (its rendered request may hold secrets). Dropping it mid-call
/// loses nothing the conversation needs: the next machine makes the call
/// again from its first attempt, as a runner does after a crash.
///
/// ```
/// use std::time::SystemTime;
/// use chatflow::{Flow, Engine, core::{Effect, Outbound}};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let flow = Flow::from_json(r#"{"name": "f", "steps": [
///   {"type": "question", "name": "Ask", "text": "Name?"},
///   {"type": "message", "name": "Hi", "text": "Hi <<step.Ask.response>>"}]}"#)?;
/// let engine = Engine::builder(flow).build()?;
/// let mut conversation = engine.start("c1");
/// let now = SystemTime::UNIX_EPOCH;
/// let mut machine = engine.machine(&mut conversation);
/// assert!(matches!(machine.poll(&mut conversation, now), Effect::Send(Outbound::Question { .. })));
/// assert!(matches!(machine.poll(&mut conversation, now), Effect::AwaitReply));
/// engine.receive(&mut conversation, "Ada")?;
/// match machine.poll(&mut conversation, now) {
///     Effect::Send(sent) => assert_eq!(sent.text(), Some("Hi Ada")),
///     other => panic!("{other:?}"),
/// }
/// assert!(matches!(machine.poll(&mut conversation, now), Effect::Finish));
/// assert!(matches!(machine.poll(&mut conversation, now), Effect::Ended));
/// # Ok(())
/// # }
/// ```
pub struct Machine<'e> {
    interpreter: &'e Interpreter,
    /// The Api call in progress, if any.
    call: Option<Call>,
    /// An end the machine brought about, not yet told to the driver.
    ending: Option<Ending>,
}

impl std::fmt::Debug for Machine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("call", &self.call.as_ref().map(|c| (&c.request, c.attempt)))
            .finish_non_exhaustive()
    }
}

/// An Api call in progress.
struct Call {
    step_index: usize,
    request: HttpRequest,
    policy: RetryPolicy,
    /// When the first attempt was made: no retry starts later than the
    /// policy's `max_elapsed` after it.
    started: SystemTime,
    attempt: u32,
    /// Set while backing off before the next attempt.
    retry_at: Option<SystemTime>,
}

enum Ending {
    Finish,
    HandOff,
    Fail(RunError),
}

/// What one step asks for.
enum Stepped {
    /// Go on with the next step.
    Continue,
    /// Tell the driver.
    Effect(Effect<'static>),
    /// An Api call was set up.
    Call,
}

impl<'e> Machine<'e> {
    /// A machine for `conversation`, which it makes this engine's: it checks
    /// the conversation's flow and, after a flow edit, finds its step again
    /// by name; when it cannot, the conversation fails and the first poll
    /// says so.
    pub(crate) fn new(interpreter: &'e Interpreter, conversation: &mut Conversation) -> Machine<'e> {
        let mut machine = Machine {
            interpreter,
            call: None,
            ending: None,
        };
        if let Err(error) = machine.check_flow(conversation) {
            machine.fail(conversation, error);
        }
        machine
    }

    /// The next effect of `conversation` at `now`: runs every step that
    /// needs nothing from outside (contact updates, conditions, GoTo …)
    /// until one does. Polling again without doing what the effect asked
    /// returns the same effect (or the next one, for [`Effect::Send`]).
    pub fn poll(&mut self, conversation: &mut Conversation, now: SystemTime) -> Effect<'_> {
        if self.call.is_none()
            && let Some(effect) = self.advance(conversation, now)
        {
            return effect;
        }
        let Some(call) = self.call.as_mut() else {
            return Effect::Ended;
        };
        if let Some(at) = call.retry_at {
            if now < at {
                let wake = Wake::Retry {
                    attempt: call.attempt,
                };
                return Effect::Sleep { until: at, wake };
            }
            call.retry_at = None;
        }
        Effect::Http {
            request: &call.request,
            attempt: call.attempt,
        }
    }

    /// Whether an Api call is in progress: made, or backing off before a
    /// retry. `false` once its final outcome has been kept.
    pub fn calling(&self) -> bool {
        self.call.is_some()
    }

    /// Takes the outcome of the [`Effect::Http`] just made, at `now`:
    /// schedules a retry when the policy allows one, or keeps the result in
    /// the conversation and moves on (or fails it). An outcome with no call
    /// in progress is ignored.
    pub fn http_done(
        &mut self,
        conversation: &mut Conversation,
        outcome: Result<HttpResponse, HttpError>,
        now: SystemTime,
    ) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        let interpreter = self.interpreter;
        let Some(step) = interpreter.flow.program().steps.get(call.step_index) else {
            return;
        };
        let request = &call.request;
        tracing::debug!(
            step = %step.name,
            method = %request.method,
            url = %request.display_url,
            attempt = call.attempt,
            status = outcome.as_ref().map(|r| r.status).ok(),
            "api call"
        );
        let policy = &call.policy;
        if call.attempt < policy.max_attempts && policy.is_retryable(request.method, &outcome) {
            let jitter = interpreter.jitter.fraction();
            let wait = policy.delay(call.attempt, outcome.as_ref().ok(), now, jitter);
            let elapsed = now.duration_since(call.started).unwrap_or_default();
            if elapsed.saturating_add(wait) <= policy.max_elapsed {
                tracing::info!(step = %step.name, attempt = call.attempt, ?wait, "retrying api call");
                call.attempt += 1;
                call.retry_at = Some(now + wait);
                self.call = Some(call);
                return;
            }
        }
        // The step counts once its call is over: a call cut short (a crash,
        // a dropped machine) runs again and counts then.
        self.count_step(conversation);
        let CompiledKind::Api(api) = &step.kind else {
            return;
        };
        let kept = api::keep_outcome(
            interpreter,
            (step, api),
            call.step_index,
            call.request,
            call.attempt,
            outcome,
            conversation,
        );
        match kept {
            Ok(target) => self.go_to(conversation, target),
            Err(error) => self.fail(conversation, error),
        }
    }

    /// Runs until an effect other than an Api call is due; `None` when an
    /// Api call was set up instead.
    fn advance(&mut self, conversation: &mut Conversation, now: SystemTime) -> Option<Effect<'static>> {
        loop {
            if let Some(ending) = self.ending.take() {
                return Some(match ending {
                    Ending::Finish => Effect::Finish,
                    Ending::HandOff => Effect::HandOff,
                    Ending::Fail(error) => Effect::Fail(error),
                });
            }
            match &conversation.status {
                Status::Finished | Status::HandedOff { .. } | Status::Failed { .. } => {
                    return Some(Effect::Ended);
                }
                Status::AwaitingReply => match self.take_reply(conversation) {
                    Some(reply) => self.answer(conversation, reply),
                    None => return Some(Effect::AwaitReply),
                },
                Status::Sleeping { until } => {
                    if now < *until {
                        let until = *until;
                        return Some(Effect::Sleep {
                            until,
                            wake: Wake::Delay,
                        });
                    }
                    let next = self.current(conversation).and_then(|s| s.next);
                    self.go_to(conversation, next);
                }
                Status::Running => match self.run_step(conversation, now) {
                    Ok(Stepped::Continue) => {}
                    Ok(Stepped::Effect(effect)) => return Some(effect),
                    Ok(Stepped::Call) => return None,
                    Err(error) => self.fail(conversation, error),
                },
            }
        }
    }

    /// Makes sure the conversation belongs to this flow; after a flow edit,
    /// finds its step again by name.
    fn check_flow(&self, conversation: &mut Conversation) -> Result<(), RunError> {
        let flow = &self.interpreter.flow;
        if conversation.flow.name != flow.name() {
            return Err(RunError::WrongFlow {
                expected: flow.name().to_string(),
                found: conversation.flow.name.clone(),
            });
        }
        if conversation.flow.hash == flow.hash() {
            return Ok(());
        }
        if let Some(cursor) = &mut conversation.cursor {
            let index = flow
                .program()
                .index_of(&cursor.name)
                .ok_or_else(|| RunError::StepGone {
                    flow: flow.name().to_string(),
                    step: cursor.name.to_string(),
                })?;
            tracing::info!(step = %cursor.name, "flow changed; continuing at the same step");
            cursor.index = index;
        }
        conversation.flow.hash = flow.hash().to_string();
        Ok(())
    }

    /// Fails the conversation; the next poll returns the error.
    fn fail(&mut self, conversation: &mut Conversation, error: RunError) {
        let message = self.interpreter.redactor.redact(&error.to_string());
        tracing::warn!(error = %message, "conversation failed");
        conversation.status = Status::Failed { error: message };
        self.call = None;
        self.ending = Some(Ending::Fail(error));
    }

    fn current(&self, conversation: &Conversation) -> Option<&'e CompiledStep> {
        let cursor = conversation.cursor.as_ref()?;
        self.interpreter.flow.program().steps.get(cursor.index)
    }

    /// The reply for the waiting Question. Joined replies stay within
    /// `max_reply_bytes`: what does not fit waits for the next Question.
    fn take_reply(&self, conversation: &mut Conversation) -> Option<String> {
        let mut reply = conversation.inbox.pop_front()?;
        let options = &self.interpreter.options;
        if options.reply_mode == ReplyMode::Join {
            let limit = options.max_reply_bytes;
            while let Some(next) = conversation.inbox.front() {
                if reply.len() + 1 + next.len() > limit {
                    break;
                }
                reply.push('\n');
                reply.push_str(next);
                conversation.inbox.pop_front();
            }
        }
        Some(reply)
    }

    /// The user answered the Question the conversation waits at.
    fn answer(&mut self, conversation: &mut Conversation, reply: String) {
        let Some(step) = self.current(conversation) else {
            return;
        };
        // An answer that matches no option is kept as free text, with no
        // `option`: a flow re-asks by testing `step.<name>.option`.
        let option = match &step.kind {
            CompiledKind::Question { options, .. } => {
                crate::flow::chosen(options, &reply).map(|o| o.id.clone())
            }
            _ => None,
        };
        let result = match option {
            Some(option) => json!({ "response": reply, "option": option }),
            None => json!({ "response": reply }),
        };
        conversation.steps.insert(step.name.clone(), Arc::new(result));
        conversation.steps_since_reply = 0;
        conversation.visits.clear();
        self.go_to(conversation, step.next);
    }

    /// Moves to step `target`, or ends the conversation when there is none.
    fn go_to(&mut self, conversation: &mut Conversation, target: Option<usize>) {
        let steps = &self.interpreter.flow.program().steps;
        match target.and_then(|i| Some((i, steps.get(i)?))) {
            Some((index, step)) => {
                conversation.cursor = Some(Cursor {
                    index,
                    name: step.name.clone(),
                });
                conversation.status = Status::Running;
            }
            None => {
                conversation.cursor = None;
                conversation.status = Status::Finished;
                tracing::debug!("flow finished");
                self.ending = Some(Ending::Finish);
            }
        }
    }

    /// Counts a step against the loop guard and the engine's metrics.
    fn count_step(&self, conversation: &mut Conversation) {
        conversation.steps_since_reply += 1;
        self.interpreter.steps_run.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs the current step.
    fn run_step(&mut self, conversation: &mut Conversation, now: SystemTime) -> Result<Stepped, RunError> {
        let Some(step) = self.current(conversation) else {
            self.go_to(conversation, None);
            return Ok(Stepped::Continue);
        };
        let limit = self.interpreter.options.max_steps_without_reply;
        if conversation.steps_since_reply >= limit {
            return Err(RunError::StepLimit {
                step: step.name.to_string(),
                limit,
            });
        }
        if let CompiledKind::Api(api) = &step.kind {
            // Counted when its call is over (see `http_done`).
            let step_index = conversation.cursor.as_ref().map_or(0, |c| c.index);
            let request = api::build_request(self.interpreter, step_index, step, api, conversation)?;
            self.call = Some(Call {
                step_index,
                request,
                policy: self.interpreter.options.retry.with(&api.retry),
                started: now,
                attempt: 1,
                retry_at: None,
            });
            return Ok(Stepped::Call);
        }
        self.count_step(conversation);
        let span = tracing::debug_span!("step", step = %step.name, kind = step.kind.type_name());
        Ok(span.in_scope(|| self.local_step(step, conversation, now)))
    }

    /// Runs every kind of step that needs no I/O.
    fn local_step(
        &mut self,
        step: &'e CompiledStep,
        conversation: &mut Conversation,
        now: SystemTime,
    ) -> Stepped {
        let interpreter = self.interpreter;
        let scope = ConversationScope {
            interpreter,
            conversation,
        };
        match &step.kind {
            CompiledKind::Question { text, options } => {
                let text = text.render(&scope, Secrets::Reveal);
                conversation.status = Status::AwaitingReply;
                return Stepped::Effect(Effect::Send(Outbound::Question {
                    step: step.name.clone(),
                    text,
                    options: options.clone(),
                }));
            }
            CompiledKind::Message {
                text,
                whatsapp_template,
            } => {
                let text = text.render(&scope, Secrets::Reveal);
                let whatsapp_template = whatsapp_template.as_ref().map(|t| t.render(&scope));
                self.go_to(conversation, step.next);
                return Stepped::Effect(Effect::Send(Outbound::Message {
                    step: step.name.clone(),
                    text,
                    whatsapp_template,
                }));
            }
            CompiledKind::ContactUpdate { set } => {
                // Every value is computed from the state before the step;
                // a few are held on the stack rather than in a vector.
                let mut inline: [Value; 8] = Default::default();
                let mut spilled = Vec::new();
                let values: &mut [Value] = match inline.get_mut(..set.len()) {
                    Some(values) => values,
                    None => {
                        spilled.resize(set.len(), Value::Null);
                        &mut spilled
                    }
                };
                for (value, (_, template)) in values.iter_mut().zip(set) {
                    *value = template.render(&scope);
                }
                for ((key, _), value) in set.iter().zip(values) {
                    let value = std::mem::take(value);
                    // An attribute set before keeps its key.
                    match conversation.contact.get_mut(key) {
                        Some(slot) => *slot = value,
                        None => {
                            conversation.contact.insert(key.clone(), value);
                        }
                    }
                }
                self.go_to(conversation, step.next);
            }
            CompiledKind::Condition {
                any,
                rules,
                then,
                otherwise,
            } => {
                let holds = if *any {
                    rules.iter().any(|r| r.evaluate(&scope))
                } else {
                    rules.iter().all(|r| r.evaluate(&scope))
                };
                tracing::debug!(step = %step.name, holds, "condition");
                let target = if holds { then } else { otherwise };
                self.go_to(conversation, target.or(step.next));
            }
            CompiledKind::Delay { durations } => {
                let duration = if durations.len() == 1 {
                    durations[0]
                } else {
                    let visits = conversation.visits.entry(step.name.clone()).or_insert(0);
                    *visits = visits.saturating_add(1);
                    let nth = (*visits as usize).saturating_sub(1).min(durations.len() - 1);
                    durations[nth]
                };
                conversation.status = Status::Sleeping {
                    until: now + duration,
                };
            }
            CompiledKind::GoTo {
                target,
                max_visits,
                fallback,
            } => {
                let visits = conversation.visits.entry(step.name.clone()).or_insert(0);
                *visits = visits.saturating_add(1);
                let spent = max_visits.is_some_and(|max| *visits > max);
                let target = if spent { *fallback } else { Some(*target) };
                if spent {
                    tracing::info!(step = %step.name, "GoTo bound reached; taking the fallback");
                }
                self.go_to(conversation, target);
            }
            CompiledKind::Assign { team, agent, note } => {
                let render = |t: &Option<crate::template::Template>| {
                    t.as_ref().map(|t| t.render(&scope, Secrets::Mask))
                };
                let assignment = Assignment {
                    step: step.name.to_string(),
                    team: render(team),
                    agent: render(agent),
                    note: render(note),
                };
                tracing::info!(step = %step.name, "handed off");
                conversation.cursor = None;
                conversation.status = Status::HandedOff {
                    assignment: assignment.clone(),
                };
                self.ending = Some(Ending::HandOff);
                return Stepped::Effect(Effect::Send(Outbound::Handoff(assignment)));
            }
            // Set up by `run_step`.
            CompiledKind::Api(_) => {}
        }
        Stepped::Continue
    }
}
