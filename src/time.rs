//! Time, injected: the engine reads the clock and sleeps only through a
//! [`Clock`], so a test can run the guide's 10-second polling loop in
//! virtual time, in microseconds.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

/// The engine's source of time.
///
/// Implement it to drive time yourself; the crate ships [`SystemClock`] (real
/// time, the default) and [`VirtualClock`] (tests).
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
    /// Returns once [`Clock::now`] has reached `deadline`.
    async fn sleep_until(&self, deadline: SystemTime);
}

// The engine holds clocks as trait objects: keep the trait object safe.
fn _assert_object_safe(_: &dyn Clock) {}

/// Real time: the system clock, and tokio's timer to sleep.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep_until(&self, deadline: SystemTime) {
        if let Ok(wait) = deadline.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Virtual time for tests: sleeping jumps the clock forward at once.
///
/// Starts at a fixed instant (2026-01-01T00:00:00Z) unless given another, so
/// tests are deterministic. [`VirtualClock::elapsed`] tells how much virtual
/// time has passed, e.g. to assert that a Delay of 10 s really waited 10 s.
///
/// ```
/// use std::time::Duration;
/// use chatflow::{Clock, VirtualClock};
///
/// # tokio_test_block_on(async {
/// let clock = VirtualClock::new();
/// let start = clock.now();
/// clock.sleep_until(start + Duration::from_secs(10)).await; // returns at once
/// assert_eq!(clock.elapsed(), Duration::from_secs(10));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct VirtualClock {
    start: SystemTime,
    now: Mutex<SystemTime>,
}

impl VirtualClock {
    /// A clock at 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }

    /// A clock at `start`.
    pub fn starting_at(start: SystemTime) -> Self {
        VirtualClock {
            start,
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        // Saturating: a test's absurd wait must not panic the clock.
        *now = now.checked_add(by).unwrap_or(*now);
    }

    /// Virtual time passed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.lock().duration_since(self.start).unwrap_or(Duration::ZERO)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // A poisoned lock still holds a valid time.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Clock for VirtualClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }

    async fn sleep_until(&self, deadline: SystemTime) {
        {
            let mut now = self.lock();
            if *now < deadline {
                *now = deadline;
            }
        }
        // Let other tasks run, as a real sleep would.
        tokio::task::yield_now().await;
    }
}

/// Serde for `SystemTime` as whole milliseconds since the Unix epoch: compact
/// and readable in stored conversation state.
pub(crate) mod unix_ms {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        s.serialize_u64(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| serde::de::Error::custom("time out of range"))
    }
}
