//! The in-process driver: performs the core's effects for one conversation
//! — events to the host's sink, HTTP through the engine's client, sleeps on
//! its clock, replies from a spawned conversation's channel.

use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

use super::Engine;
use crate::conversation::{Conversation, Status};
use crate::core::{Effect, Outbound, Wake};
use crate::error::RunError;
use crate::event::{Event, EventSink};

impl Engine {
    pub(crate) async fn drive(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
        inbox: Option<&mut UnboundedReceiver<String>>,
        park_at_delay: bool,
    ) -> Result<Status, RunError> {
        let span = tracing::debug_span!("conversation", id = %conversation.id, flow = %self.flow().name());
        self.drive_in_span(conversation, events, inbox, park_at_delay)
            .instrument(span)
            .await
    }

    async fn drive_in_span(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
        mut inbox: Option<&mut UnboundedReceiver<String>>,
        park_at_delay: bool,
    ) -> Result<Status, RunError> {
        let inner = &*self.inner;
        let mut machine = self.machine(conversation);
        // Read again after every wait only: sending an event takes no time,
        // and a clock read per step would cost more than many steps.
        let mut now = inner.clock.now();
        // A `start_flow` conversation on its own task starts with its first
        // message, whenever that comes: running before it would ask the
        // first Question and take the message as its answer.
        if let Some(rx) = inbox.as_deref_mut()
            && conversation.waits_for_start(inner.core.flow.start_mode())
        {
            match rx.recv().await {
                Some(text) => {
                    self.accept(conversation, text, None);
                    now = inner.clock.now();
                }
                None => return Ok(conversation.status.clone()),
            }
        }
        loop {
            if let Some(rx) = inbox.as_deref_mut() {
                while let Ok(text) = rx.try_recv() {
                    self.accept(conversation, text, None);
                }
            }
            match machine.poll(conversation, now) {
                Effect::Send(entry) => emit(events, conversation, entry),
                Effect::Http { request, attempt } => {
                    let span = tracing::debug_span!("api", url = %request.display_url, attempt);
                    let outcome = inner.http.send(request).instrument(span).await;
                    now = inner.clock.now();
                    machine.http_done(conversation, outcome, now);
                }
                Effect::Sleep { until, wake } => {
                    if park_at_delay && wake == Wake::Delay {
                        return Ok(conversation.status.clone());
                    }
                    inner.clock.sleep_until(until).await;
                    now = inner.clock.now();
                }
                Effect::AwaitReply => match inbox.as_deref_mut() {
                    Some(rx) => match rx.recv().await {
                        Some(text) => {
                            self.accept(conversation, text, None);
                            now = inner.clock.now();
                        }
                        None => return Ok(Status::AwaitingReply),
                    },
                    None => return Ok(Status::AwaitingReply),
                },
                Effect::Finish => {
                    events.emit(Event::Finished {
                        conversation_id: conversation.id.clone(),
                    });
                    return Ok(Status::Finished);
                }
                Effect::Fail(error) => {
                    if let Status::Failed { error } = &conversation.status {
                        events.emit(Event::Failed {
                            conversation_id: conversation.id.clone(),
                            error: error.clone(),
                        });
                    }
                    return Err(error);
                }
                Effect::HandOff | Effect::Ended => return Ok(conversation.status.clone()),
            }
        }
    }
}

/// Tells the host about an entry the bot sent.
fn emit(events: &dyn EventSink, conversation: &Conversation, entry: Outbound) {
    let conversation_id = conversation.id.clone();
    events.emit(match entry {
        Outbound::Message { step, text, .. } => Event::Message {
            conversation_id,
            step: step.to_string(),
            text,
            question: false,
            options: Vec::new(),
        },
        Outbound::Question { step, text, options } => Event::Message {
            conversation_id,
            step: step.to_string(),
            text,
            question: true,
            options,
        },
        Outbound::Handoff(assignment) => Event::Handoff {
            conversation_id,
            assignment,
            contact: conversation.contact.clone(),
        },
    })
}
