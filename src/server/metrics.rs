//! The server's Prometheus metrics, in a registry the router owns (no
//! global recorder), written out by `prometheus-client` in the OpenMetrics
//! text format.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::Status;
use crate::channel::{Channel, Delivery, DeliveryOutcome};
use crate::event::{Event, EventSink};
use crate::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use crate::runtime::{RuntimeError, Turn};
use crate::store::{ConversationCounts, Direction};

/// Histogram buckets, in seconds, for turn and API call latencies.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// HTTP status codes get a cached handle each; anything else is looked up.
const STATUS_CODES: usize = 600;

/// The content type of [`Metrics::encode`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The server's metrics: turns, messages, `POST /chat` answers, Api calls,
/// stored conversations, open event streams, undelivered replies. Cheap to
/// clone (a handle to one registry).
///
/// A router records into a registry of its own unless given one with
/// [`ServerSettings::with_metrics`](super::ServerSettings::with_metrics); give it one to
/// count the engine's Api calls too, by wrapping the HTTP client in
/// [`Metrics::instrument`]:
///
/// ```
/// use chatflow::http::ReqwestClient;
/// use chatflow::server::{Metrics, ServerSettings};
/// use chatflow::{Engine, Flow};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let flow = Flow::from_json(r#"{"name": "hi", "steps": [{"type": "message", "name": "Hi", "text": "hi"}]}"#)?;
/// let metrics = Metrics::new();
/// let engine = Engine::builder(flow)
///     .http_client(metrics.instrument(ReqwestClient::new()?))
///     .build()?;
/// let settings = ServerSettings::new().with_metrics(metrics);
/// # Ok(())
/// # }
/// ```
///
/// Replies a channel refused for good, or reported failed, are counted in
/// `chatflow_undelivered_total` once the runtime reports them here: the
/// host builds the runtime before the router, so it passes
/// [`Metrics::event_sink`] to [`RuntimeBuilder::events`](crate::RuntimeBuilder::events):
///
/// ```
/// use chatflow::server::{Metrics, ServerSettings, router};
/// # use std::sync::Arc;
/// # use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let flow = Flow::from_json(r#"{"name": "hi", "steps": [{"type": "message", "name": "Hi", "text": "hi"}]}"#)?;
/// # let engine = Engine::builder(flow).build()?;
/// let metrics = Metrics::new();
/// let runtime = Runtime::builder(engine, Arc::new(MemoryStore::new()))
///     .events(metrics.event_sink())
///     .build();
/// let app = router(runtime, ServerSettings::new().with_metrics(metrics));
/// # Ok(())
/// # }
/// ```
///
/// A host with an [`EventSink`] of its own calls [`Metrics::record_event`]
/// from it instead.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    turn_seconds: Histogram,
    duplicates: Counter,
    chat_requests: Family<CodeLabel, Counter>,
    in_flight: Gauge,
    steps: Counter,
    conversations: Family<StateLabel, Gauge>,
    api_calls: Family<StatusLabel, Counter>,
    api_seconds: Family<StatusLabel, Histogram, fn() -> Histogram>,
    event_streams: Gauge,
    undelivered: Family<ChannelLabel, Counter>,
    delivery_attempts: Family<DeliveryLabel, Counter>,
    delivery_seconds: Family<ChannelLabel, Histogram, fn() -> Histogram>,
    // Handles registered once: looking a labelled metric up costs more than
    // recording into it, and these are recorded several times per turn.
    chat_by_code: Box<[OnceLock<Counter>]>,
    api_by_code: Box<[OnceLock<(Histogram, Counter)>]>,
    turn_handles: TurnHandles,
}

struct TurnHandles {
    by_state: Vec<(&'static str, Counter)>,
    errors: Counter,
    messages_in: Counter,
    messages_out: Counter,
    handoffs: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

/// A channel's name: the conversation id's prefix, which only registered
/// channels deliver (so the label's values are few).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

/// A delivery attempt's channel and what the channel answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabel {
    channel: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

const STATE_NAMES: [&str; 6] = [
    "running",
    "awaiting_reply",
    "sleeping",
    "handed_off",
    "finished",
    "failed",
];

/// The metric label of a conversation status.
pub(crate) fn state_name(status: &Status) -> &'static str {
    match status {
        Status::Running => "running",
        Status::AwaitingReply => "awaiting_reply",
        Status::Sleeping { .. } => "sleeping",
        Status::HandedOff { .. } => "handed_off",
        Status::Finished => "finished",
        Status::Failed { .. } => "failed",
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

fn status_label(status: impl Into<Cow<'static, str>>) -> StatusLabel {
    StatusLabel {
        status: status.into(),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every server metric registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let turns = Family::<StatusLabel, Counter>::default();
        registry.register(
            "chatflow_turns",
            "Turns run to completion, by the status they left",
            turns.clone(),
        );
        let turn_seconds = latency_histogram();
        registry.register_with_unit(
            "chatflow_turn",
            "Time from receiving a message to the bot waiting, handing off or ending",
            Unit::Seconds,
            turn_seconds.clone(),
        );
        let messages = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "chatflow_messages",
            "Transcript entries, by direction",
            messages.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "chatflow_duplicates",
            "Messages ignored as repeats of a message_id",
            duplicates.clone(),
        );
        let chat_requests = Family::<CodeLabel, Counter>::default();
        registry.register(
            "chatflow_chat_requests",
            "POST /chat answers, by HTTP status",
            chat_requests.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("chatflow_turns_in_flight", "Turns running now", in_flight.clone());
        let steps = Counter::default();
        registry.register("chatflow_steps", "Flow steps run by this process", steps.clone());
        let conversations = Family::<StateLabel, Gauge>::default();
        registry.register(
            "chatflow_conversations",
            "Stored conversations: sleeping in a Delay, or parked (waiting for the user, handed off, ended)",
            conversations.clone(),
        );
        let api_calls = Family::<StatusLabel, Counter>::default();
        registry.register(
            "chatflow_api_calls",
            "Api step requests, by HTTP status or error kind",
            api_calls.clone(),
        );
        let api_seconds =
            Family::<StatusLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "chatflow_api",
            "Api step request latency, by HTTP status or error kind",
            Unit::Seconds,
            api_seconds.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "chatflow_event_streams",
            "Open GET /conversations/{id}/events streams",
            event_streams.clone(),
        );
        let undelivered = Family::<ChannelLabel, Counter>::default();
        registry.register(
            "chatflow_undelivered",
            "Bot entries that did not reach the customer (refused for good, out of attempts, or reported failed), by channel",
            undelivered.clone(),
        );
        let delivery_attempts = Family::<DeliveryLabel, Counter>::default();
        registry.register(
            "chatflow_delivery_attempts",
            "Deliveries tried through an instrumented channel, by channel and outcome (accepted, retry, refused)",
            delivery_attempts.clone(),
        );
        let delivery_seconds =
            Family::<ChannelLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "chatflow_delivery",
            "Time an instrumented channel took to answer a delivery, by channel",
            Unit::Seconds,
            delivery_seconds.clone(),
        );
        let start_time = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "chatflow_start_time",
            "When the server started, Unix seconds",
            Unit::Seconds,
            start_time.clone(),
        );
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );

        let counter = |family: &Family<StatusLabel, Counter>, name: &'static str| {
            family.get_or_create_owned(&status_label(name))
        };
        let turn_handles = TurnHandles {
            by_state: STATE_NAMES
                .iter()
                .map(|&name| (name, counter(&turns, name)))
                .collect(),
            errors: counter(&turns, "error"),
            messages_in: messages.get_or_create_owned(&DirectionLabel { direction: "in" }),
            messages_out: messages.get_or_create_owned(&DirectionLabel { direction: "out" }),
            handoffs: messages.get_or_create_owned(&DirectionLabel { direction: "handoff" }),
        };
        // Both states show from the start, at 0, until the first scrape counts them.
        for state in ["sleeping", "parked"] {
            let _ = conversations.get_or_create(&StateLabel { state });
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                turn_seconds,
                duplicates,
                chat_requests,
                in_flight,
                steps,
                conversations,
                api_calls,
                api_seconds,
                event_streams,
                undelivered,
                delivery_attempts,
                delivery_seconds,
                chat_by_code: (0..STATUS_CODES).map(|_| OnceLock::new()).collect(),
                api_by_code: (0..STATUS_CODES).map(|_| OnceLock::new()).collect(),
                turn_handles,
            }),
        }
    }

    /// `client`, counting and timing every request it sends in
    /// `chatflow_api_calls_total` and `chatflow_api_seconds`, by HTTP status
    /// or error kind.
    pub fn instrument<C: HttpClient>(&self, client: C) -> InstrumentedClient<C> {
        InstrumentedClient {
            inner: client,
            metrics: self.clone(),
        }
    }

    /// `channel`, counting every delivery attempt in
    /// `chatflow_delivery_attempts_total` (by outcome: `accepted`, `retry`,
    /// `refused`) and timing it in `chatflow_delivery_seconds`, labelled
    /// `channel` with `name`: register the result with
    /// [`RuntimeBuilder::channel`](crate::RuntimeBuilder::channel) under the
    /// same name.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use chatflow::channel::{Channel, Delivery, DeliveryOutcome};
    /// use chatflow::server::Metrics;
    /// # use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
    ///
    /// struct Push;
    ///
    /// #[async_trait::async_trait]
    /// impl Channel for Push {
    ///     async fn deliver(&self, _delivery: &Delivery) -> DeliveryOutcome {
    ///         DeliveryOutcome::accepted_without_id()
    ///     }
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let flow = Flow::from_json(r#"{"name": "hi", "steps": [{"type": "message", "name": "Hi", "text": "hi"}]}"#)?;
    /// # let engine = Engine::builder(flow).build()?;
    /// let metrics = Metrics::new();
    /// let runtime = Runtime::builder(engine, Arc::new(MemoryStore::new()))
    ///     .channel("push", metrics.instrument_channel("push", Arc::new(Push)))
    ///     .events(metrics.event_sink())
    ///     .build();
    /// # Ok(())
    /// # }
    /// ```
    pub fn instrument_channel(&self, name: impl Into<String>, channel: Arc<dyn Channel>) -> Arc<dyn Channel> {
        let name = name.into();
        let outcome = |outcome| {
            self.inner.delivery_attempts.get_or_create_owned(&DeliveryLabel {
                channel: name.clone(),
                outcome,
            })
        };
        Arc::new(InstrumentedChannel {
            accepted: outcome("accepted"),
            retry: outcome("retry"),
            refused: outcome("refused"),
            seconds: self.inner.delivery_seconds.get_or_create_owned(&ChannelLabel {
                channel: name.clone(),
            }),
            inner: channel,
        })
    }

    /// An [`EventSink`] that records the runtime's events here (see
    /// [`Metrics::record_event`]), for
    /// [`RuntimeBuilder::events`](crate::RuntimeBuilder::events).
    pub fn event_sink(&self) -> Arc<dyn EventSink> {
        let metrics = self.clone();
        Arc::new(move |event: Event| metrics.record_event(&event))
    }

    /// Records what the metrics count of a runtime event: an
    /// [`Event::Undelivered`] in `chatflow_undelivered_total`, labelled
    /// with the conversation's channel. Other events are left to the
    /// turn's own counters.
    pub fn record_event(&self, event: &Event) {
        if let Event::Undelivered { conversation_id, .. } = event {
            let channel = conversation_id
                .split_once(':')
                .map_or("", |(prefix, _)| prefix)
                .to_string();
            self.inner
                .undelivered
                .get_or_create(&ChannelLabel { channel })
                .inc();
        }
    }

    /// The metrics in the OpenMetrics text format (what `GET /metrics` serves).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// The state of a finished turn (or its failure), and how long it took.
    pub(crate) fn record_turn(&self, result: &Result<Turn, RuntimeError>, elapsed: Duration) {
        let handles = &self.inner.turn_handles;
        let turn = match result {
            Ok(turn) => turn,
            Err(_) => {
                handles.errors.inc();
                return;
            }
        };
        if turn.duplicate {
            self.inner.duplicates.inc();
            return;
        }
        handles.messages_in.inc();
        let state = state_name(&turn.status);
        if let Some((_, counter)) = handles.by_state.iter().find(|(name, _)| *name == state) {
            counter.inc();
        }
        self.inner.turn_seconds.observe(elapsed.as_secs_f64());
        let (mut out, mut handoff) = (0u64, 0u64);
        for entry in &turn.replies {
            match entry.direction {
                Direction::Out => out += 1,
                Direction::Handoff => handoff += 1,
                Direction::In => {}
            }
        }
        handles.messages_out.inc_by(out);
        handles.handoffs.inc_by(handoff);
    }

    /// One `POST /chat` answer.
    pub(crate) fn record_chat_answer(&self, code: u16) {
        let make = || self.inner.chat_requests.get_or_create_owned(&CodeLabel { code });
        match self.inner.chat_by_code.get(usize::from(code)) {
            Some(slot) => slot.get_or_init(make).inc(),
            None => make().inc(),
        };
    }

    fn record_api_call(&self, result: &Result<HttpResponse, HttpError>, elapsed: Duration) {
        let make = |status: Cow<'static, str>| {
            let label = status_label(status);
            (
                self.inner.api_seconds.get_or_create_owned(&label),
                self.inner.api_calls.get_or_create_owned(&label),
            )
        };
        let record = |(seconds, calls): &(Histogram, Counter)| {
            seconds.observe(elapsed.as_secs_f64());
            calls.inc();
        };
        match result {
            Ok(response) => {
                let status = response.status();
                match self.inner.api_by_code.get(usize::from(status)) {
                    Some(slot) => record(slot.get_or_init(|| make(status.to_string().into()))),
                    None => record(&make(status.to_string().into())),
                }
            }
            Err(error) => record(&make(error.kind().into())),
        }
    }

    /// A turn started (`+1`) or ended (`-1`).
    pub(crate) fn add_in_flight(&self, delta: i64) {
        self.inner.in_flight.inc_by(delta);
    }

    /// An event stream opened (`+1`) or closed (`-1`).
    pub(crate) fn add_event_streams(&self, delta: i64) {
        self.inner.event_streams.inc_by(delta);
    }

    /// The values read at scrape time: the engine's step count and the
    /// store's conversation counts.
    pub(crate) fn set_scraped(&self, steps_run: u64, counts: Option<ConversationCounts>) {
        // The engine counts its steps itself; the counter shows its total.
        self.inner
            .steps
            .inner()
            .store(steps_run, std::sync::atomic::Ordering::Relaxed);
        if let Some(counts) = counts {
            let set = |state, n: u64| {
                self.inner
                    .conversations
                    .get_or_create(&StateLabel { state })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            set("sleeping", counts.sleeping);
            set("parked", counts.parked);
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// An [`HttpClient`] that records every request in a [`Metrics`]; made by
/// [`Metrics::instrument`].
pub struct InstrumentedClient<C> {
    inner: C,
    metrics: Metrics,
}

impl<C> fmt::Debug for InstrumentedClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstrumentedClient").finish_non_exhaustive()
    }
}

#[async_trait]
impl<C: HttpClient> HttpClient for InstrumentedClient<C> {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let started = Instant::now();
        let result = self.inner.send(request).await;
        self.metrics.record_api_call(&result, started.elapsed());
        result
    }
}

/// A [`Channel`] that records every delivery attempt in a [`Metrics`]; made
/// by [`Metrics::instrument_channel`].
struct InstrumentedChannel {
    inner: Arc<dyn Channel>,
    // Its series, looked up once.
    accepted: Counter,
    retry: Counter,
    refused: Counter,
    seconds: Histogram,
}

#[async_trait]
impl Channel for InstrumentedChannel {
    async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
        let started = Instant::now();
        let outcome = self.inner.deliver(delivery).await;
        self.seconds.observe(started.elapsed().as_secs_f64());
        match &outcome {
            DeliveryOutcome::Accepted { .. } => self.accepted.inc(),
            DeliveryOutcome::RetryAfter { .. } => self.retry.inc(),
            DeliveryOutcome::Refused { .. } => self.refused.inc(),
        };
        outcome
    }
}
