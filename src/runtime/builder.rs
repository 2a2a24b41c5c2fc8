//! Building a [`Runtime`] with channels and an event sink.

use std::sync::Arc;

use super::local_lock::LocalLocks;
use super::scheduler::LocalWakeups;
use super::{Runtime, RuntimeInner, RuntimeOptions};
use crate::channel::Channel;
use crate::engine::Engine;
use crate::event::EventSink;
use crate::store::Store;

/// Builds a [`Runtime`]: options, the channels replies are delivered
/// through, and where delivery events go.
///
/// ```
/// use std::sync::Arc;
/// use chatflow::{Engine, Flow, Runtime, RuntimeOptions, store::MemoryStore};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let flow = Flow::from_json(r#"{"name": "f", "steps": [{"type": "message", "name": "Hi", "text": "Hi"}]}"#)?;
/// let runtime = Runtime::builder(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()))
///     .options(RuntimeOptions::default().with_scheduler_batch(8))
///     .build();
/// assert_eq!(runtime.options().scheduler_batch(), 8);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct RuntimeBuilder {
    engine: Engine,
    store: Arc<dyn Store>,
    options: RuntimeOptions,
    channels: Vec<(String, Arc<dyn Channel>)>,
    events: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("options", &self.options)
            .field(
                "channels",
                &self.channels.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    pub(super) fn new(engine: Engine, store: Arc<dyn Store>) -> RuntimeBuilder {
        RuntimeBuilder {
            engine,
            store,
            options: RuntimeOptions::default(),
            channels: Vec::new(),
            events: None,
        }
    }

    /// The runtime's options.
    pub fn options(mut self, options: RuntimeOptions) -> RuntimeBuilder {
        self.options = options;
        self
    }

    /// Delivers the replies of every conversation whose id starts with
    /// `prefix` and a `:` (`"whatsapp"` for `whatsapp:15551234567`) through
    /// `channel`, from the store's outbox (see [`crate::channel`]). A prefix
    /// registered twice keeps the last channel.
    pub fn channel(mut self, prefix: impl Into<String>, channel: Arc<dyn Channel>) -> RuntimeBuilder {
        let prefix = prefix.into();
        self.channels.retain(|(name, _)| *name != prefix);
        self.channels.push((prefix, channel));
        self
    }

    /// Where the runtime reports deliveries refused for good and failed
    /// receipts ([`crate::Event::Undelivered`]).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> RuntimeBuilder {
        self.events = Some(events);
        self
    }

    /// The runtime.
    pub fn build(self) -> Runtime {
        let clock = self.engine.clock();
        let (committed, _) = tokio::sync::broadcast::channel(1024);
        Runtime {
            inner: Arc::new(RuntimeInner {
                engine: self.engine,
                store: self.store,
                clock,
                owner: format!("runner-{:016x}", fastrand::u64(..)),
                options: self.options,
                running: LocalLocks::default(),
                wakeups: LocalWakeups::default(),
                channels: self.channels,
                events: self.events,
                outbox: tokio::sync::Notify::new(),
                committed,
                early_failures: Default::default(),
            }),
        }
    }
}
