//! The mock's memory, and the front door every Graph request goes through:
//! route, token, phone number id, body, fault, 24-hour window, record.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use wiremock::{Request, ResponseTemplate};

use super::MockWhatsAppConfig;
use super::error::GraphError;
use super::fault::SendFault;
use super::record::{GraphRequest, ReadReceipt, SentMessage};
use super::send::{self, Body, Outgoing};

/// The Graph API version the mock serves.
pub(crate) const VERSION: &str = "v23.0";

/// How long after a user's last message free-form messages may reach them.
pub(crate) const WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Everything the mock remembers, behind one mutex.
pub(crate) struct State {
    pub config: MockWhatsAppConfig,
    /// Random per mock, so ids of two mocks in one process never collide.
    nonce: String,
    counter: u64,
    pub sent: Vec<SentMessage>,
    pub reads: Vec<ReadReceipt>,
    pub requests: Vec<GraphRequest>,
    pub faults: VecDeque<SendFault>,
    /// Each user's last inbound message time, for the 24-hour window.
    pub last_inbound: HashMap<String, SystemTime>,
    /// Profile names, remembered from the notifications that named them.
    pub names: HashMap<String, String>,
    /// The ids of the inbound messages this mock built.
    pub inbound_ids: HashSet<String>,
    /// Built notifications by id: their exact bytes, for redelivery.
    pub notifications: HashMap<String, Vec<u8>>,
    /// Sends whose statuses `post_statuses` already posted.
    pub reported: HashSet<String>,
}

/// What a request came to.
struct Outcome {
    result: Result<Value, GraphError>,
    wamid: Option<String>,
}

impl State {
    pub fn new(config: MockWhatsAppConfig) -> Self {
        State {
            config,
            nonce: format!("{:08X}", fastrand::u32(..)),
            counter: 0,
            sent: Vec::new(),
            reads: Vec::new(),
            requests: Vec::new(),
            faults: VecDeque::new(),
            last_inbound: HashMap::new(),
            names: HashMap::new(),
            inbound_ids: HashSet::new(),
            notifications: HashMap::new(),
            reported: HashSet::new(),
        }
    }

    pub fn now(&self) -> SystemTime {
        self.config.clock.now()
    }

    /// A fresh id: `prefix` + this mock's nonce + a counter.
    pub fn next_id(&mut self, prefix: &str) -> String {
        self.counter = self.counter.saturating_add(1);
        format!("{prefix}{}{:06}", self.nonce, self.counter)
    }

    /// Notes an inbound message from `wa_id` at `at` (the latest one counts).
    pub fn note_inbound(&mut self, wa_id: &str, at: SystemTime) {
        let last = self.last_inbound.entry(wa_id.to_owned()).or_insert(at);
        if at > *last {
            *last = at;
        }
    }

    /// Whether a free-form message may reach `wa_id` now.
    pub fn window_open(&self, wa_id: &str, now: SystemTime) -> bool {
        self.last_inbound
            .get(wa_id)
            .and_then(|last| last.checked_add(WINDOW))
            .is_some_and(|closes| now < closes)
    }

    /// Answers one request and records it.
    pub fn handle(&mut self, request: &Request) -> ResponseTemplate {
        let now = self.now();
        let Outcome { result, wamid } = self.answer(request, now);
        let (status, error_code, template) = match &result {
            Ok(body) => (200, None, ResponseTemplate::new(200).set_body_json(body)),
            Err(error) => {
                tracing::debug!(
                    path = %request.url.path(),
                    code = error.code,
                    details = %error.details,
                    "mock WhatsApp refused a request"
                );
                (error.status, Some(error.code), error.to_template())
            }
        };
        self.requests
            .push(record(request, status, error_code, wamid, now));
        template.insert_header("x-fb-trace-id", format!("mock{}", self.counter))
    }

    fn answer(&mut self, request: &Request, now: SystemTime) -> Outcome {
        let refused = |error| Outcome {
            result: Err(error),
            wamid: None,
        };
        let method = request.method.as_str();
        let path = request.url.path();
        let Some(phone_number_id) = route(method, path) else {
            let object = path.trim_start_matches('/').split('/').nth(1).unwrap_or("");
            return refused(GraphError::unsupported(method, object));
        };
        if let Err(error) = self.check_token(request) {
            return refused(error);
        }
        if phone_number_id != self.config.phone_number_id {
            return refused(GraphError::unsupported(method, phone_number_id));
        }
        let object = match send::object(&request.body) {
            Ok(object) => object,
            Err(error) => return refused(error),
        };
        // Faults are for sends: a mark-as-read never consumes one.
        if !send::is_read_request(&object)
            && let Some(fault) = self.faults.pop_front()
        {
            return refused(fault.error());
        }
        match send::classify(&object) {
            Err(error) => refused(error),
            Ok(Body::Read {
                message_id,
                typing_indicator,
            }) => {
                let known = self.inbound_ids.contains(&message_id);
                self.reads.push(ReadReceipt {
                    message_id,
                    typing_indicator,
                    known,
                    at: now,
                });
                Outcome {
                    result: Ok(json!({"success": true})),
                    wamid: None,
                }
            }
            Ok(Body::Send(outgoing)) => {
                if outgoing.needs_window() && !self.window_open(&outgoing.wa_id, now) {
                    return refused(GraphError::window_closed());
                }
                let contact = json!({"input": outgoing.to, "wa_id": outgoing.wa_id});
                let wamid = self.accept(outgoing, Value::Object(object), now);
                Outcome {
                    result: Ok(json!({
                        "messaging_product": "whatsapp",
                        "contacts": [contact],
                        "messages": [{"id": wamid}],
                    })),
                    wamid: Some(wamid),
                }
            }
        }
    }

    fn accept(&mut self, outgoing: Outgoing, body: Value, now: SystemTime) -> String {
        let wamid = self.next_id("wamid.MOCK");
        self.sent.push(SentMessage {
            wamid: wamid.clone(),
            to: outgoing.to,
            wa_id: outgoing.wa_id,
            kind: outgoing.kind,
            text: outgoing.text,
            options: outgoing.options,
            menu_button: outgoing.menu_button,
            template: outgoing.template,
            reply_to: outgoing.reply_to,
            body,
            at: now,
        });
        wamid
    }

    fn check_token(&self, request: &Request) -> Result<(), GraphError> {
        let header = request
            .headers
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let token = header.as_deref().and_then(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        match token {
            Some(token) if token == self.config.access_token => Ok(()),
            Some(token) if !token.is_empty() => Err(GraphError::bad_token(false)),
            _ => Err(GraphError::bad_token(true)),
        }
    }
}

/// `POST /v23.0/{phone_number_id}/messages` → the phone number id.
fn route<'p>(method: &str, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix('/')?.strip_prefix(VERSION)?.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (id, endpoint) = rest.split_once('/')?;
    (method == "POST" && endpoint == "messages" && !id.is_empty()).then_some(id)
}

fn record(
    request: &Request,
    status: u16,
    error_code: Option<i64>,
    wamid: Option<String>,
    at: SystemTime,
) -> GraphRequest {
    GraphRequest {
        method: request.method.as_str().to_owned(),
        path: request.url.path().to_owned(),
        headers: request
            .headers
            .iter()
            .map(|(name, value)| {
                let name = name.as_str().to_ascii_lowercase();
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                // The token is a secret: keep only its scheme.
                let value = if name == "authorization" {
                    let scheme = value.split_whitespace().next().unwrap_or("");
                    format!("{scheme} <redacted>")
                } else {
                    value
                };
                (name, value)
            })
            .collect(),
        body: serde_json::from_slice(&request.body).ok(),
        body_text: String::from_utf8_lossy(&request.body).into_owned(),
        status,
        error_code,
        wamid,
        at,
    }
}
