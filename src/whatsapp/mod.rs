//! The WhatsApp Cloud API channel (feature `whatsapp`).
//!
//! - [`WhatsAppSettings`]: the verify token, app secret, access token,
//!   phone number id and Graph API URL;
//! - [`router`]: `GET /webhooks/whatsapp` (the verification handshake) and
//!   `POST /webhooks/whatsapp` (signed notifications, made durable and
//!   answered at once; the turns run after the response);
//! - [`verify_signature`] and [`sign`]: the `X-Hub-Signature-256` header;
//! - [`parse_notification`]: a notification's messages
//!   ([`InboundWhatsApp`]) and statuses ([`StatusUpdate`]).
//!
//! A WhatsApp conversation's id is `whatsapp:<wa_id>`.

mod inbound;
mod notification;
mod routes;
mod settings;
mod signature;

pub use inbound::InboundWhatsApp;
pub use notification::{Notification, NotificationError, StatusUpdate, parse_notification};
pub use routes::router;
pub use settings::WhatsAppSettings;
pub use signature::{SIGNATURE_HEADER, SignatureError, sign, verify_signature};
