//! When and how long to wait before trying an Api call again, on the model
//! of OpenAI's own SDK: retry connection errors, timeouts, 408, 409, 429 and
//! 5xx; honour `retry-after-ms`, then `retry-after`; otherwise back off
//! exponentially with jitter. The jitter comes from an injected [`Jitter`]
//! source, so the core stays deterministic under test.

use std::time::{Duration, SystemTime};

use crate::flow::RetrySettings;
use crate::http::{HttpError, HttpResponse, Method};

/// How an Api call is retried. Set engine-wide with
/// [`crate::EngineOptions::with_retry`]; a step's `retry` object overrides
/// fields.
///
/// ```
/// use std::time::Duration;
/// use chatflow::{EngineOptions, RetryPolicy};
///
/// let retry = RetryPolicy::default()
///     .with_max_attempts(5)
///     .with_initial_backoff(Duration::from_millis(200));
/// let options = EngineOptions::default().with_retry(retry);
/// assert_eq!(options.retry().max_attempts(), 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_elapsed: Duration,
    pub(crate) retry_non_idempotent: bool,
    pub(crate) max_retry_after: Duration,
}

impl RetryPolicy {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts in all, the first included (default 3: two retries).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Sets [`RetryPolicy::max_attempts`].
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The first backoff (default 0.5 s); it doubles each retry.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// Sets [`RetryPolicy::initial_backoff`].
    pub fn with_initial_backoff(mut self, initial_backoff: Duration) -> Self {
        self.initial_backoff = initial_backoff;
        self
    }

    /// The largest backoff (default 8 s).
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// Sets [`RetryPolicy::max_backoff`].
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// No retry starts later than this after the first attempt (default 60 s).
    pub fn max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// Sets [`RetryPolicy::max_elapsed`].
    pub fn with_max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = max_elapsed;
        self
    }

    /// Retry POST and PATCH even when the server may have processed the
    /// request (timeouts, 5xx). Off by default: a repeated "create" could
    /// create twice. Connection failures and 429 are retried regardless,
    /// since the request was certainly not processed.
    pub fn retry_non_idempotent(&self) -> bool {
        self.retry_non_idempotent
    }

    /// Sets [`RetryPolicy::retry_non_idempotent`].
    pub fn with_retry_non_idempotent(mut self, retry_non_idempotent: bool) -> Self {
        self.retry_non_idempotent = retry_non_idempotent;
        self
    }

    /// The longest `retry-after` honoured (default 60 s); a longer one falls
    /// back to the exponential backoff.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// Sets [`RetryPolicy::max_retry_after`].
    pub fn with_max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = max_retry_after;
        self
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_elapsed: Duration::from_secs(60),
            retry_non_idempotent: false,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// This policy with a step's overrides applied.
    pub(crate) fn with(&self, settings: &RetrySettings) -> RetryPolicy {
        let secs = |s: Option<f64>, default: Duration| {
            s.and_then(|s| Duration::try_from_secs_f64(s).ok())
                .unwrap_or(default)
        };
        RetryPolicy {
            max_attempts: settings.max_attempts.unwrap_or(self.max_attempts).max(1),
            initial_backoff: secs(settings.initial_backoff_seconds, self.initial_backoff),
            max_backoff: secs(settings.max_backoff_seconds, self.max_backoff),
            max_elapsed: secs(settings.max_elapsed_seconds, self.max_elapsed),
            retry_non_idempotent: settings.retry_non_idempotent.unwrap_or(self.retry_non_idempotent),
            max_retry_after: self.max_retry_after,
        }
    }

    /// Whether this outcome of `method` may be retried at all.
    pub(crate) fn is_retryable(&self, method: Method, outcome: &Result<HttpResponse, HttpError>) -> bool {
        let repeatable = method.is_idempotent() || self.retry_non_idempotent;
        match outcome {
            // Nothing reached the server.
            Err(HttpError::Connect(_)) => true,
            Err(HttpError::Timeout(_) | HttpError::Transport(_)) => repeatable,
            Err(_) => false,
            Ok(response) => {
                if let Some(should) = response.header("x-should-retry") {
                    match should.trim() {
                        "true" => return repeatable || response.status == 429,
                        "false" => return false,
                        _ => {}
                    }
                }
                match response.status {
                    // Rate limited: refused before processing.
                    429 => true,
                    408 | 409 | 500..=599 => repeatable,
                    _ => false,
                }
            }
        }
    }

    /// The wait before retry number `retry` (1 for the first retry);
    /// `jitter` in `[0, 1)` takes up to 25% off an exponential backoff.
    pub(crate) fn delay(
        &self,
        retry: u32,
        response: Option<&HttpResponse>,
        now: SystemTime,
        jitter: f64,
    ) -> Duration {
        if let Some(wait) = response.and_then(|r| retry_after(r, now))
            && wait <= self.max_retry_after
        {
            return wait;
        }
        let exponent = retry.saturating_sub(1).min(20);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        // Up to 25% less, so many clients retrying together spread out.
        base.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }
}

/// Where retry backoffs get their jitter: a fraction in `[0, 1)` per retry.
///
/// The default, [`RandomJitter`], draws it at random so that many clients
/// retrying together spread out. Tests set a fixed one with
/// [`crate::EngineBuilder::jitter`]; any `Fn() -> f64 + Send + Sync` closure is
/// a source:
///
/// ```
/// # let flow = chatflow::Flow::from_json(r#"{"name": "f", "steps": [
/// #   {"type": "message", "name": "Hi", "text": "hi"}]}"#).unwrap();
/// let engine = chatflow::Engine::builder(flow).jitter(|| 0.0).build()?;
/// # Ok::<(), chatflow::BuildError>(())
/// ```
pub trait Jitter: Send + Sync {
    /// A fraction in `[0, 1)`: `0` waits the full backoff, values near `1`
    /// a quarter less. Values outside are clamped.
    fn fraction(&self) -> f64;
}

impl<F: Fn() -> f64 + Send + Sync> Jitter for F {
    fn fraction(&self) -> f64 {
        self()
    }
}

/// Jitter drawn from a fast, non-cryptographic random generator (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn fraction(&self) -> f64 {
        fastrand::f64()
    }
}

// The engine holds its jitter source as a trait object.
fn _assert_object_safe(_: &dyn Jitter) {}

/// The server's requested wait: `retry-after-ms`, else `retry-after` in
/// seconds or as an HTTP date.
pub(crate) fn retry_after(response: &HttpResponse, now: SystemTime) -> Option<Duration> {
    // An unusable retry-after-ms (negative, huge) falls through to retry-after.
    let ms = response
        .header("retry-after-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| *ms >= 0.0);
    if let Some(wait) = ms.and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok()) {
        return Some(wait);
    }
    let value = response.header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> Result<HttpResponse, HttpError> {
        let mut r = HttpResponse::new(status, "");
        r.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(r)
    }

    #[test]
    fn what_is_retried() {
        let p = RetryPolicy::default();
        for status in [408, 409, 429, 500, 502, 503] {
            assert!(p.is_retryable(Method::Get, &response(status, &[])), "{status}");
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(!p.is_retryable(Method::Get, &response(status, &[])), "{status}");
        }
        // POST: only when it certainly was not processed.
        assert!(p.is_retryable(Method::Post, &response(429, &[])));
        assert!(p.is_retryable(Method::Post, &Err(HttpError::Connect("refused".into()))));
        assert!(!p.is_retryable(Method::Post, &response(500, &[])));
        assert!(!p.is_retryable(Method::Post, &Err(HttpError::Timeout(Duration::from_secs(1)))));
        let opt_in = RetryPolicy {
            retry_non_idempotent: true,
            ..RetryPolicy::default()
        };
        assert!(opt_in.is_retryable(Method::Post, &response(500, &[])));
        assert!(!p.is_retryable(Method::Get, &response(500, &[("x-should-retry", "false")])));
        assert!(p.is_retryable(Method::Get, &response(400, &[("x-should-retry", "true")])));
        assert!(!p.is_retryable(Method::Get, &Err(HttpError::BodyTooLarge { limit: 1 })));
    }

    #[test]
    fn retry_after_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let get = |h: &[(&str, &str)]| retry_after(&response(429, h).unwrap(), now);
        assert_eq!(
            get(&[("retry-after-ms", "1500"), ("retry-after", "9")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(get(&[("retry-after", "2")]), Some(Duration::from_secs(2)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(get(&[("retry-after", &date)]), Some(Duration::from_secs(7)));
        assert_eq!(get(&[("retry-after", "soon")]), None);
        assert_eq!(
            get(&[("retry-after-ms", "-1"), ("retry-after", "4")]),
            Some(Duration::from_secs(4))
        );
        assert_eq!(get(&[]), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = RetryPolicy::default();
        let now = SystemTime::UNIX_EPOCH;
        for (retry, full) in [(1, 500), (2, 1000), (3, 2000), (5, 8000), (9, 8000)] {
            let full = Duration::from_millis(full);
            assert_eq!(p.delay(retry, None, now, 0.0), full, "retry {retry}");
            assert_eq!(
                p.delay(retry, None, now, 1.0),
                full.mul_f64(0.75),
                "retry {retry}"
            );
            let d = p.delay(retry, None, now, RandomJitter.fraction());
            assert!(d <= full && d >= full.mul_f64(0.75), "retry {retry}: {d:?}");
        }
        let r = response(429, &[("retry-after", "3")]).unwrap();
        assert_eq!(p.delay(1, Some(&r), now, 0.5), Duration::from_secs(3));
        let too_long = response(429, &[("retry-after", "3600")]).unwrap();
        assert_eq!(p.delay(1, Some(&too_long), now, 0.0), Duration::from_millis(500));
    }
}
