//! `RATE_LIMIT_CONFIG_FILE`, watched: policies changed in the file apply without a restart.

use prometheus::Registry;
use service_kit::metrics::counter_vec;

use super::{Limiter, RateLimitConfig};
/// Watches `RATE_LIMIT_CONFIG_FILE`: a changed file that reads the same twice in a row (so a file
/// caught half-written is not applied) and is valid is put in force for the next requests; an
/// invalid or unreadable one is refused (logged, counted) and the policies in force stay.
/// `redis_timeout_ms` changes at the next start only (revocation lookups share it).
pub fn watch_policy_file(
    limiter: Limiter,
    environment: service_kit::config::Environment,
    registry: &Registry,
) -> prometheus::Result<()> {
    let start = limiter.config();
    let (Some(path), Some(mut applied)) = (start.source.clone(), start.source_text.clone()) else {
        return Ok(());
    };
    let reloads = counter_vec(
        registry,
        "rate_limit_config_reloads_total",
        "Changes of the rate-limit policy file, by result (applied, refused)",
        &["result"],
    )?;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(start.reload_every);
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
                        tracing::error!(file = path, error = %e, "rate-limit policy file cannot be read; the policies in force stay");
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
            let env = service_kit::config::Env::from_process();
            let mut next = RateLimitConfig::from_file_text(&env, environment, text);
            match env.finish() {
                Ok(()) => {
                    next.redis_timeout = limiter.config().redis_timeout;
                    next.log("rate-limit policies reloaded");
                    limiter.replace_config(next);
                    reloads.with_label_values(&["applied"]).inc();
                }
                Err(e) => {
                    reloads.with_label_values(&["refused"]).inc();
                    tracing::error!(file = path, error = %e, "rate-limit policy file changed but is invalid; the policies in force stay");
                }
            }
        }
    });
    Ok(())
}
