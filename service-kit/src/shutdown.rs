//! Graceful shutdown: one signal (SIGTERM or SIGINT) fans out to every server of the process.

use tokio::sync::watch;

/// A cloneable handle that resolves once shutdown has begun.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Triggers a [`Shutdown`]; dropping it also triggers (so a failing server stops its siblings).
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.trigger();
    }
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl Shutdown {
    /// Resolves when shutdown begins.
    pub async fn wait(mut self) {
        // An error means the trigger is gone, which also means stop.
        let _ = self.rx.wait_for(|stopping| *stopping).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// A shutdown that follows SIGTERM and SIGINT (Ctrl-C).
    pub fn on_signals() -> Self {
        let (trigger, shutdown) = channel();
        tokio::spawn(async move {
            wait_for_signal().await;
            trigger.trigger();
        });
        shutdown
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
}
