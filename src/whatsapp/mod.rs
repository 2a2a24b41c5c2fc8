//! The WhatsApp Cloud API channel (feature `whatsapp`).
//!
//! - [`WhatsAppSettings`]: the verify token, app secret, access token,
//!   phone number id and Graph API URL;
//! - [`router`]: `GET /webhooks/whatsapp` (the verification handshake) and
//!   `POST /webhooks/whatsapp` (signed notifications, made durable and
//!   answered at once; the turns run after the response);
//! - [`verify_signature`] and [`sign`]: the `X-Hub-Signature-256` header;
//! - [`parse_notification`]: a notification's messages
//!   ([`InboundWhatsApp`]) and statuses ([`StatusUpdate`]);
//! - [`WhatsAppChannel`]: the [`crate::channel::Channel`] that sends a
//!   conversation's replies through the Graph API (text, reply buttons,
//!   lists, templates once the 24-hour window has closed, read receipts);
//! - [`check_flow`]: whether WhatsApp can show every Question's options.
//!
//! A WhatsApp conversation's id is `whatsapp:<wa_id>`.

mod channel;
mod graph;
mod inbound;
mod limits;
mod notification;
mod routes;
mod send;
mod settings;
mod signature;

pub use channel::{DEFAULT_HANDOFF_TEXT, REPLY_WINDOW, WhatsAppChannel};

pub use inbound::InboundWhatsApp;
pub use limits::{
    FlowLimitError, MAX_BODY_CHARS, MAX_BUTTON_ID_CHARS, MAX_BUTTON_TITLE_CHARS, MAX_BUTTONS,
    MAX_LIST_BUTTON_CHARS, MAX_LIST_ROWS, MAX_ROW_DESCRIPTION_CHARS, MAX_ROW_ID_CHARS, MAX_ROW_TITLE_CHARS,
    MAX_TEXT_CHARS, check_flow,
};
pub use notification::{Notification, NotificationError, StatusUpdate, parse_notification};
pub use routes::router;
pub use send::split_text;
pub use settings::{DEFAULT_GRAPH_URL, WhatsAppSettings};
pub use signature::{SIGNATURE_HEADER, SignatureError, sign, verify_signature};
