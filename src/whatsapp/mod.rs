//! The WhatsApp Cloud API channel (feature `whatsapp`).
//!
//! - [`WhatsAppSettings`]: the verify token, app secret, access token,
//!   phone number id and Graph API URL;
//! - [`router`]: `GET /webhooks/whatsapp` (the verification handshake) and
//!   `POST /webhooks/whatsapp` (signed notifications, made durable and
//!   answered at once; the turns run after the response).
//!
//! A WhatsApp conversation's id is `whatsapp:<wa_id>`.

mod routes;
mod settings;

pub use routes::router;
pub use settings::WhatsAppSettings;
