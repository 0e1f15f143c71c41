//! Files an operator mounts and changes while the gateway runs (`RATE_LIMIT_CONFIG_FILE`,
//! `MAINTENANCE_FILE`): one watcher that puts a changed file in force without a restart, or keeps
//! what is in force when the change is broken.

use std::time::Duration;

use prometheus::IntCounterVec;

/// One watched file and what is in force from it.
pub struct WatchedFile {
    pub path: String,
    /// Names the file in log lines ("rate-limit policy file").
    pub what: &'static str,
    /// The text in force (read at start).
    pub text: String,
    /// How often the file is read.
    pub every: Duration,
    /// `{result="applied"|"refused"}`: each change put in force or refused.
    pub reloads: IntCounterVec,
}

/// Reads the file every `every`: a changed text that reads the same twice in a row (so a file
/// caught half-written is not applied) goes to `apply`; when `apply` refuses it (its cause), or the
/// file cannot be read, the refusal is logged naming the file and the cause, counted, and what is
/// in force stays. A refused text is not tried again until it changes.
pub fn watch(file: WatchedFile, mut apply: impl FnMut(String) -> Result<(), String> + Send + 'static) {
    let WatchedFile {
        path,
        what,
        text: mut applied,
        every,
        reloads,
    } = file;
    // Both series exist from the start, so an alert on refusals sees a 0 before the first one.
    for result in ["applied", "refused"] {
        reloads.with_label_values(&[result]);
    }
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        // A changed text seen once, applied when the next check reads it again.
        let mut candidate: Option<String> = None;
        let mut unreadable = false;
        loop {
            ticker.tick().await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => {
                    unreadable = false;
                    text
                }
                Err(e) => {
                    if !unreadable {
                        reloads.with_label_values(&["refused"]).inc();
                        tracing::error!(file = path, error = %e, "{what} cannot be read; what is in force stays");
                    }
                    unreadable = true;
                    continue;
                }
            };
            if text == applied || candidate.as_ref() != Some(&text) {
                candidate = (text != applied).then_some(text);
                continue;
            }
            candidate = None;
            applied = text.clone();
            match apply(text) {
                Ok(()) => {
                    reloads.with_label_values(&["applied"]).inc();
                }
                Err(cause) => {
                    reloads.with_label_values(&["refused"]).inc();
                    tracing::error!(
                        file = path,
                        error = cause,
                        "{what} changed but is invalid; what is in force stays"
                    );
                }
            }
        }
    });
}
