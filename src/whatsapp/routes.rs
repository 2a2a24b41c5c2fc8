//! The webhook routes. (Being written: issue 16.)

use super::WhatsAppSettings;
use crate::Runtime;

/// `GET /webhooks/whatsapp` and `POST /webhooks/whatsapp`, to merge into a
/// server's router.
pub fn router(runtime: Runtime, settings: WhatsAppSettings) -> axum::Router {
    let _ = (runtime, settings);
    axum::Router::new()
}
