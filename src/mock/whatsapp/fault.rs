//! Failures a test can inject into the next sends.

use super::error::GraphError;

/// A failure for [`super::MockWhatsApp::fail_next`]: the next sends get it
/// instead of being handled. Statuses and codes are those Meta documents
/// (throttling answers HTTP 400 with its own code: a client should decide on
/// `error.code`, as Meta recommends, not on the status).
///
/// ```
/// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig, SendFault};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// // The next two sends hit the throughput limit, the third a server error.
/// mock.fail_next(2, SendFault::RateLimited);
/// mock.fail_next(1, SendFault::ServerError);
/// assert_eq!(mock.pending_faults(), 3);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendFault {
    /// 400, code 130429 "Rate limit hit": the number's throughput limit.
    RateLimited,
    /// 400, code 131056: too many messages to this user in a short time.
    PairRateLimit,
    /// 400, code 131047 "Re-engagement message", whatever the window says.
    WindowClosed,
    /// 500, code 131000 "Something went wrong".
    ServerError,
    /// 400, code 131026 "Message Undeliverable".
    Undeliverable,
    /// Any HTTP status and Graph code (an unusable status becomes 500).
    Custom {
        /// The HTTP status.
        status: u16,
        /// `error.code`.
        code: i64,
        /// The error's title, shown as `(#code) title`.
        message: String,
    },
}

impl SendFault {
    pub(crate) fn error(&self) -> GraphError {
        match self {
            SendFault::RateLimited => GraphError::rate_limited(),
            SendFault::PairRateLimit => GraphError::pair_rate_limited(),
            SendFault::WindowClosed => GraphError::window_closed(),
            SendFault::ServerError => GraphError::server_error(),
            SendFault::Undeliverable => GraphError::undeliverable(),
            SendFault::Custom {
                status,
                code,
                message,
            } => GraphError::custom(*status, *code, message),
        }
    }
}
