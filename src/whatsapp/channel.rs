//! [`WhatsAppChannel`]: delivers a conversation's outbound entries through
//! the Cloud API, inside the 24-hour window or with a template.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::WhatsAppSettings;
use super::graph::GraphClient;
use super::limits::MAX_LIST_BUTTON_CHARS;
use super::send::{self, MarkRead, OutgoingMessage, Template, Wording};
use crate::channel::{Channel, Delivery, DeliveryOutcome};
use crate::http::HttpClient;
use crate::store::TranscriptEntry;
use crate::{Clock, SystemClock};

/// How long after the user's last message free-form messages may be sent.
pub const REPLY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// What a handoff entry sends unless told otherwise.
pub const DEFAULT_HANDOFF_TEXT: &str = "A person will answer you here shortly.";

/// The [`Channel`] of WhatsApp conversations (`whatsapp:<wa_id>`): sends
/// each outbound entry with `POST {graph}/{phone-number-id}/messages`.
///
/// - **Text**: one text message, or several of at most 4,096 characters
///   ([`super::split_text`]). A retry re-sends every part of the entry
///   (parts the API took before the failure arrive twice), and the entry's
///   channel message id is its last part's.
/// - **A question with options**: reply buttons when they fit (at most 3,
///   titles of at most 20 characters, no descriptions), else a list (menu
///   label [`WhatsAppChannel::with_list_button`]); the body is the
///   question's last 1,024 characters, anything before goes first as text.
///   Options that fit neither go as numbered lines ([`super::check_flow`]
///   refuses such a flow at load).
/// - **A handoff**: a short notice ([`WhatsAppChannel::with_handoff_text`]).
/// - **The 24-hour window**: measured from the user's last message
///   ([`Delivery::last_inbound`]) to the attempt's time on the channel's
///   clock. Once closed, an entry whose details name a `whatsapp_template`
///   (`{"name", "language", "components"?}`) sends that template instead;
///   any other is refused, naming the window.
/// - **Read receipts**: the user's last message is marked read with the
///   first entry after it (failures are logged, never fail the delivery).
/// - Rate limits (130429, 131056), 5xx and network failures answer
///   [`DeliveryOutcome::RetryAfter`] (a `Retry-After` is honoured); 131047
///   and other errors are refused with `"<code> <message>"`. The access
///   token never appears in a reason or a log.
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use chatflow::channel::{Channel, Delivery, DeliveryOutcome};
/// use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
/// use chatflow::store::{Direction, TranscriptEntry};
/// use chatflow::whatsapp::{WhatsAppChannel, WhatsAppSettings};
/// use chatflow::{Clock, VirtualClock};
///
/// /// The Graph API, accepting everything.
/// struct Graph;
///
/// #[async_trait]
/// impl HttpClient for Graph {
///     async fn send(&self, _: &HttpRequest) -> Result<HttpResponse, HttpError> {
///         Ok(HttpResponse::json(200, &serde_json::json!({"messages": [{"id": "wamid.OUT"}]})))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let clock = Arc::new(VirtualClock::new());
/// let settings = WhatsAppSettings::new("verify", "secret", "token", "PNID");
/// let channel = WhatsAppChannel::new(settings, Arc::new(Graph)).with_clock(clock.clone());
///
/// let now_ms = clock.now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
/// let mut question = TranscriptEntry::new(1, Direction::In, "hi", now_ms);
/// question.message_id = Some("wamid.IN".into());
/// let reply = TranscriptEntry::new(2, Direction::Out, "Hello!", now_ms);
/// let delivery = Delivery::new("whatsapp:15551234567", reply).with_last_inbound(question);
/// assert_eq!(channel.deliver(&delivery).await, DeliveryOutcome::accepted("wamid.OUT"));
/// # }
/// ```
pub struct WhatsAppChannel {
    graph: GraphClient,
    clock: Arc<dyn Clock>,
    wording: Wording,
}

impl fmt::Debug for WhatsAppChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhatsAppChannel")
            .field("handoff_text", &self.wording.handoff)
            .field("list_button", &self.wording.list_button)
            .finish_non_exhaustive()
    }
}

impl WhatsAppChannel {
    /// A channel sending through `http` (tests pass a fake) with these
    /// settings, on the system clock.
    pub fn new(settings: WhatsAppSettings, http: Arc<dyn HttpClient>) -> WhatsAppChannel {
        WhatsAppChannel {
            graph: GraphClient::new(&settings, http),
            clock: Arc::new(SystemClock),
            wording: Wording {
                handoff: DEFAULT_HANDOFF_TEXT.to_string(),
                list_button: "Options".to_string(),
                choose: "Please choose:".to_string(),
            },
        }
    }

    /// A channel sending through the crate's reqwest client
    /// ([`crate::http::ReqwestClient`]).
    ///
    /// ```
    /// use chatflow::whatsapp::{WhatsAppChannel, WhatsAppSettings};
    ///
    /// let settings = WhatsAppSettings::new("verify", "secret", "token", "PNID");
    /// let channel = WhatsAppChannel::with_reqwest(settings)?;
    /// # Ok::<(), chatflow::http::HttpError>(())
    /// ```
    #[cfg(feature = "reqwest")]
    pub fn with_reqwest(settings: WhatsAppSettings) -> Result<WhatsAppChannel, crate::http::HttpError> {
        let http = crate::http::ReqwestClient::new()?;
        Ok(WhatsAppChannel::new(settings, Arc::new(http)))
    }

    /// The clock the 24-hour window is measured on (a runtime passes its
    /// own; tests a [`crate::VirtualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> WhatsAppChannel {
        self.clock = clock;
        self
    }

    /// What a handoff entry sends (default [`DEFAULT_HANDOFF_TEXT`]).
    pub fn with_handoff_text(mut self, text: impl Into<String>) -> WhatsAppChannel {
        let text = text.into();
        if !text.trim().is_empty() {
            self.wording.handoff = text;
        }
        self
    }

    /// The label of a list's menu button (default `Options`; cut to 20
    /// characters, WhatsApp's limit).
    pub fn with_list_button(mut self, label: impl Into<String>) -> WhatsAppChannel {
        let label: String = label.into().chars().take(MAX_LIST_BUTTON_CHARS).collect();
        if !label.trim().is_empty() {
            self.wording.list_button = label;
        }
        self
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether free-form messages may still reach the user at `now`.
fn window_open(last_inbound: Option<&TranscriptEntry>, now: SystemTime) -> bool {
    last_inbound.is_some_and(|last| {
        millis(now).saturating_sub(last.at_ms) < u64::try_from(REPLY_WINDOW.as_millis()).unwrap_or(u64::MAX)
    })
}

/// The user's message to mark read with this delivery: the last inbound
/// one, when this entry is the first after it.
fn to_mark_read(delivery: &Delivery) -> Option<&str> {
    let last = delivery.last_inbound.as_ref()?;
    (delivery.entry.seq == last.seq.saturating_add(1))
        .then_some(last.message_id.as_deref())
        .flatten()
}

#[async_trait]
impl Channel for WhatsAppChannel {
    async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
        let to = delivery.recipient();
        if to.is_empty() {
            return DeliveryOutcome::refused("the conversation id names no WhatsApp number");
        }
        let now = self.clock.now();
        let entry = &delivery.entry;
        let open = window_open(delivery.last_inbound.as_ref(), now);
        let messages: Vec<OutgoingMessage<'_>> = if open {
            send::messages_for(entry, to, &self.wording)
        } else {
            let template = entry
                .details
                .as_ref()
                .and_then(|details| details.get("whatsapp_template"));
            match template.map(Template::from_details) {
                Some(Ok(template)) => vec![OutgoingMessage::template(to, template)],
                Some(Err(problem)) => {
                    return DeliveryOutcome::refused(format!(
                        "the 24-hour window has closed and the entry's whatsapp_template is unusable: {problem}"
                    ));
                }
                None => {
                    return DeliveryOutcome::refused(
                        "the 24-hour window has closed (the user's last message is more than 24 hours old) \
                         and the entry names no whatsapp_template",
                    );
                }
            }
        };
        if messages.is_empty() {
            return DeliveryOutcome::refused("the entry has no text to send");
        }
        // A template re-engages a user who went quiet: it answers nothing.
        if let Some(message_id) = to_mark_read(delivery).filter(|_| open)
            && let Err(error) = self.graph.post(&MarkRead::new(message_id), now).await
        {
            tracing::warn!(
                conversation = %delivery.conversation_id,
                %error,
                "could not mark the user's message as read"
            );
        }
        let mut last_id = None;
        for message in &messages {
            match self.graph.post(message, now).await {
                Ok(id) => last_id = id.or(last_id),
                Err(error) => return error.into(),
            }
        }
        DeliveryOutcome::Accepted {
            channel_message_id: last_id,
        }
    }
}
