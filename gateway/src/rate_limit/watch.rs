//! `RATE_LIMIT_CONFIG_FILE`, watched: policies changed in the file apply without a restart.

use prometheus::Registry;
use service_kit::metrics::counter_vec;

use super::{Limiter, RateLimitConfig};
use crate::file_watch::{WatchedFile, watch};

/// Watches `RATE_LIMIT_CONFIG_FILE` ([`crate::file_watch`]): a changed, valid file is put in force
/// for the next requests; an invalid or unreadable one is refused (logged, counted) and the
/// policies in force stay. `redis_timeout_ms` changes at the next start only (revocation lookups
/// share it).
pub fn watch_policy_file(
    limiter: Limiter,
    environment: service_kit::config::Environment,
    registry: &Registry,
) -> prometheus::Result<()> {
    let start = limiter.config();
    let (Some(path), Some(text)) = (start.source.clone(), start.source_text.clone()) else {
        return Ok(());
    };
    let reloads = counter_vec(
        registry,
        "rate_limit_config_reloads_total",
        "Changes of the rate-limit policy file, by result (applied, refused)",
        &["result"],
    )?;
    let file = WatchedFile {
        path,
        what: "rate-limit policy file",
        text,
        every: start.reload_every,
        reloads,
    };
    watch(file, move |text| {
        let env = service_kit::config::Env::from_process();
        let mut next = RateLimitConfig::from_file_text(&env, environment, text);
        env.finish().map_err(|e| e.to_string())?;
        next.redis_timeout = limiter.config().redis_timeout;
        next.log("rate-limit policies reloaded");
        limiter.replace_config(next);
        Ok(())
    });
    Ok(())
}
