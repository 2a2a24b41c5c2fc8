//! SIGTERM and SIGINT (Ctrl-C), counted: the first stops the server, a
//! second stops waiting for turns.

use tokio::sync::watch;

/// How many signals came so far.
pub(crate) struct SignalCount(watch::Receiver<u32>);

impl SignalCount {
    /// Listens from now on (install it before announcing the address, so a
    /// signal can never find the default handler).
    pub(crate) fn install() -> SignalCount {
        let mut signals = Signals::install();
        let (tx, rx) = watch::channel(0u32);
        tokio::spawn(async move {
            for n in 1..=2 {
                signals.recv().await;
                tx.send_replace(n);
            }
            // Further signals find the handlers still installed, and are ignored.
            std::future::pending::<()>().await;
        });
        SignalCount(rx)
    }

    /// Completes once `n` signals came.
    pub(crate) fn reached(&self, n: u32) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|count| *count >= n).await;
        }
    }
}

struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |name: &str, kind: SignalKind| {
                signal(kind)
                    .map_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
                    .ok()
            };
            Signals {
                terminate: listen("SIGTERM", SignalKind::terminate()),
                interrupt: listen("SIGINT", SignalKind::interrupt()),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.terminate) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
