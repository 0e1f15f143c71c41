//! The limiter's decisions: in process, and on the test Redis of `cargo xtask test`.

use std::time::Duration;

use super::gcra::Quota;
use super::redis::decision_from_ahead;
use super::*;

fn config(mode: FailureMode) -> RateLimitConfig {
    let q = Quota {
        limit: 5,
        window: Duration::from_secs(60),
        burst: 3,
    };
    RateLimitConfig {
        enabled: true,
        failure_mode: mode,
        redis_timeout: Duration::from_millis(50),
        auth: Policy { name: "auth", quota: q },
        auth_skip_successful: false,
        api: Policy { name: "api", quota: q },
        events: Policy {
            name: "events",
            quota: q,
        },
        global: Policy {
            name: "global",
            quota: q,
        },
        abuse_threshold: 3,
        abuse_window: Duration::from_secs(60),
        source: None,
        source_text: None,
        reload_every: Duration::from_secs(10),
    }
}

/// Redis answers how far each bucket's TAT runs ahead of now; the gateway's reading of it is
/// the decision the same arithmetic makes in process, at and around every boundary.
#[test]
fn a_bucket_read_from_how_far_ahead_it_runs_is_the_in_process_decision() {
    const NOW: u64 = 1_800_000_000_000_000;
    for quota in [
        config(FailureMode::Local).api.quota,
        gcra::Quota {
            limit: 1_000_000,
            window: Duration::from_secs(1),
            burst: 5,
        },
        gcra::Quota {
            limit: 7,
            window: Duration::from_secs(60),
            burst: 1,
        },
    ] {
        let (t, cap) = (quota.emission_us(), quota.capacity_us());
        let mut tats = vec![None, Some(0), Some(NOW - 1), Some(NOW)];
        for edge in [cap - t, cap] {
            tats.extend([NOW + edge - 1, NOW + edge, NOW + edge + 1].map(Some));
        }
        tats.push(Some(NOW + cap + 12_345_678));
        for tat in tats {
            let ahead = tat.unwrap_or(NOW).max(NOW) + t - NOW;
            assert_eq!(
                decision_from_ahead(ahead, &quota),
                gcra::decide(tat, NOW, &quota).0,
                "TAT {tat:?} under {quota:?}"
            );
        }
    }
}

fn events() -> crate::edge::SecurityEvents {
    crate::edge::SecurityEvents::new(&Registry::new()).expect("metric")
}

/// A limiter whose Redis is not there (nothing listens on port 1).
fn without_redis(mode: FailureMode) -> Limiter {
    let dead = RedisLink::new(&"redis://127.0.0.1:1".into()).ok();
    Limiter::new(config(mode), dead, RedisKeys::default(), events(), &Registry::new()).expect("limiter")
}

#[tokio::test]
async fn without_redis_the_failure_mode_decides_and_is_counted() {
    let local = without_redis(FailureMode::Local);
    let policy = local.config().auth.clone();
    let allowed: Vec<bool> = futures_util::future::join_all((0..4).map(|_| local.decide(&policy, "k")))
        .await
        .into_iter()
        .map(|d| d.is_some_and(|d| d.allowed))
        .collect();
    assert_eq!(
        allowed.iter().filter(|a| **a).count(),
        3,
        "the local limiter keeps the same burst"
    );
    assert_eq!(local.fallbacks.with_label_values(&["local"]).get(), 4);

    let open = without_redis(FailureMode::Open);
    assert!(
        open.decide(&policy, "k").await.is_none(),
        "open lets requests through unlimited"
    );

    let closed = without_redis(FailureMode::Closed);
    assert!(
        closed.decide(&policy, "k").await.is_some_and(|d| !d.allowed),
        "closed refuses"
    );
}

#[tokio::test]
async fn without_redis_refunds_and_abuse_counting_stay_local() {
    let local = without_redis(FailureMode::Local);
    let policy = local.config().auth.clone();
    for _ in 0..3 {
        assert!(local.decide(&policy, "k").await.is_some_and(|d| d.allowed));
    }
    // A refund gives exactly one request back.
    let after = local
        .refund(&local.config(), &policy, "k", false)
        .await
        .expect("refunded");
    assert_eq!(after.remaining, 1);
    assert!(local.decide(&policy, "k").await.is_some_and(|d| d.allowed));
    assert!(local.decide(&policy, "k").await.is_some_and(|d| !d.allowed));

    // Refusals of one address are counted; the event fires once, at the threshold (3).
    let checks = Checks {
        ip: "192.0.2.7".to_owned(),
        config: local.config(),
        policies: vec![(policy.clone(), "k".to_owned())],
    };
    let mut counts = Vec::new();
    for _ in 0..5 {
        let outcome = local.decide_all(&checks, None).await;
        counts.push(outcome.refusals);
        local.report_abuse(&checks.config, &checks.ip, &policy, outcome.refusals);
    }
    assert_eq!(counts, vec![1, 2, 3, 4, 5]);
    assert_eq!(local.security_events.count("rate_limit_abuse", "medium"), 1);
}

/// A limiter on the test Redis that `cargo xtask test` starts, in the closed mode: a decision
/// made without Redis would refuse, so an allowed one is Redis's.
fn on_test_redis() -> (RedisLink, Limiter) {
    let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL: run the tests with `cargo xtask test`");
    let link = RedisLink::new(&url.into()).expect("url");
    let mut config = config(FailureMode::Closed);
    config.redis_timeout = Duration::from_secs(5);
    let limiter = Limiter::new(
        config,
        Some(link.clone()),
        RedisKeys::default(),
        events(),
        &Registry::new(),
    )
    .expect("limiter");
    (link, limiter)
}

/// A decision script that runs after its caller stopped waiting changes nothing; one refused
/// while its caller still waits (the clocks moved apart) is asked again, and spends once.
#[tokio::test]
async fn a_script_past_its_deadline_changes_nothing_and_a_moved_clock_is_learnt_again() {
    let (_, limiter) = on_test_redis();
    let policy = limiter.config().auth.clone();
    let key = format!("test:deadline:{}", uuid::Uuid::new_v4());
    let checks = Checks {
        ip: "192.0.2.9".to_owned(),
        config: limiter.config(),
        policies: vec![(policy.clone(), key.clone())],
    };
    // As if Redis's clock were 10 s behind ours: every deadline is past when a script runs.
    let behind = |limiter: &Limiter| {
        let now = now_us();
        limiter.redis_clock.relearn(now, now as i64 - 10_000_000);
    };
    behind(&limiter);
    let late = limiter
        .run_script(
            limiter.batcher.as_ref().expect("with Redis"),
            &Arc::new(limiter.script_decision(&checks, None)),
            Duration::from_secs(5),
            now_us(),
        )
        .await
        .expect("answered");
    assert!(matches!(late, Script::TooLate(_)), "refused past its deadline");

    behind(&limiter);
    let first = limiter.decide(&policy, &key).await.expect("decided");
    assert!(first.allowed);
    assert_eq!(
        first.remaining, 2,
        "the refused script spent nothing, the second ask once"
    );
    let learnt = limiter.redis_clock.deadline(now_us(), Duration::ZERO);
    assert!(
        learnt.abs_diff(now_us()) < 1_000_000,
        "the offset was learnt again from the refusal (same host: about zero)"
    );
    let second = limiter.decide(&policy, &key).await.expect("decided");
    assert_eq!((second.allowed, second.remaining), (true, 1));
}

/// Requests decided together share one script call, and each decision sees the buckets the
/// ones before it in the batch spent: a burst of 3 admits exactly 3 of 40 concurrent
/// requests, refusals count up one by one, and decisions with and without revocation keys in
/// one call each get their own answer.
#[tokio::test]
async fn concurrent_decisions_go_out_in_batches_and_each_sees_the_ones_before_it() {
    let (link, limiter) = on_test_redis();
    let test = uuid::Uuid::new_v4();
    let checks = |ip: &str, key: &str| Checks {
        ip: format!("{ip}-{test}"),
        config: limiter.config(),
        policies: vec![(limiter.config().auth.clone(), format!("test:batch:{test}:{key}"))],
    };

    let same = checks("192.0.2.10", "same");
    let outcomes = futures_util::future::join_all((0..40).map(|_| limiter.decide_all(&same, None))).await;
    assert!(
        outcomes.iter().all(|o| o.via_redis),
        "Redis decided (closed mode refuses otherwise)"
    );
    let allowed: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.decisions[0].filter(|d| d.allowed).map(|d| d.remaining))
        .collect();
    assert_eq!(allowed, vec![2, 1, 0], "the burst, counting down, and not one more");
    let refusals: Vec<u64> = outcomes.iter().map(|o| o.refusals).filter(|r| *r > 0).collect();
    assert_eq!(
        refusals,
        (1..=37).collect::<Vec<_>>(),
        "each refusal counted once, in order"
    );
    let (calls, decided) = (
        limiter.batch_sizes.get_sample_count(),
        limiter.batch_sizes.get_sample_sum(),
    );
    assert_eq!(decided, 40.0);
    // The test's runtime has one thread: all 40 are queued before the batching task runs.
    assert_eq!(calls, 1, "40 concurrent decisions took {calls} script calls");

    // One revoked token, one request without a token, one clean token, in one call.
    let mut conn = link.connection().await.expect("connected");
    let rev = |what: &str| -> [String; 4] {
        ["jti", "session", "nbf", "marker"].map(|k| format!("test:batch:{test}:{what}:{k}"))
    };
    let (revoked, session_ended, clean, restored) =
        (rev("revoked"), rev("session-ended"), rev("clean"), rev("restored"));
    // The marker names the server by its run_id (auth-service writes it so).
    let run_id = crate::revocation::tests::server_run_id(&mut conn).await;
    let _: () = ::redis::pipe()
        .set(&revoked[0], 1)
        .set(&revoked[2], 1_700_000_000)
        .set(&revoked[3], &run_id)
        .set(&session_ended[1], 1)
        .set(&clean[3], &run_id)
        // A Redis restored from a snapshot holds the marker of the server it was taken on.
        .set(&restored[3], "0000000000000000000000000000000000000000")
        .query_async(&mut conn)
        .await
        .expect("stored");
    let (a, b, c, d, e) = (
        checks("192.0.2.11", "a"),
        checks("192.0.2.12", "b"),
        checks("192.0.2.13", "c"),
        checks("192.0.2.14", "d"),
        checks("192.0.2.15", "e"),
    );
    let calls = limiter.batch_sizes.get_sample_count();
    let (a, b, c, d, e) = tokio::join!(
        limiter.decide_all(&a, Some(revoked)),
        limiter.decide_all(&b, None),
        limiter.decide_all(&c, Some(clean)),
        limiter.decide_all(&d, Some(session_ended)),
        limiter.decide_all(&e, Some(restored)),
    );
    assert_eq!(
        limiter.batch_sizes.get_sample_count(),
        calls + 1,
        "one call for the five"
    );
    let token = e.revocation.expect("asked");
    assert!(
        !token.revoked && !token.complete,
        "a marker naming another server does not vouch"
    );
    let token = a.revocation.expect("asked");
    assert!(token.revoked && token.complete);
    assert_eq!(token.not_before, Some(1_700_000_000));
    assert!(b.revocation.is_none());
    let token = c.revocation.expect("asked");
    assert!(!token.revoked && token.complete && token.not_before.is_none());
    let token = d.revocation.expect("asked");
    assert!(
        token.revoked && !token.complete && token.not_before.is_none(),
        "an ended session alone revokes; without the marker Redis does not hold them all"
    );
    for outcome in [&a, &b, &c, &d] {
        let first = outcome.decisions[0].map(|d| (d.allowed, d.remaining));
        assert_eq!(first, Some((true, 2)), "each address's own bucket");
    }

    // The largest batch of the largest decisions (a route's policy and the global one, with
    // revocation keys), every key distinct, goes as one call and fits Lua's stack; a second
    // batch right after it sees each of its buckets spent once.
    let full = |ip: usize| Checks {
        ip: format!("198.51.100.{ip}-{test}"),
        config: limiter.config(),
        policies: vec![
            (limiter.config().api.clone(), format!("test:batch:{test}:api:{ip}")),
            (
                limiter.config().global.clone(),
                format!("test:batch:{test}:global:{ip}"),
            ),
        ],
    };
    let everyone: Vec<Checks> = (0..batch::MAX_BATCH).map(full).collect();
    for round in [1, 2] {
        let calls = limiter.batch_sizes.get_sample_count();
        let outcomes = futures_util::future::join_all(
            everyone
                .iter()
                .enumerate()
                .map(|(i, checks)| limiter.decide_all(checks, Some(rev(&format!("full{i}"))))),
        )
        .await;
        assert_eq!(
            limiter.batch_sizes.get_sample_count(),
            calls + 1,
            "one call for the batch"
        );
        for outcome in &outcomes {
            assert!(outcome.via_redis);
            let remaining: Vec<(bool, u64)> = outcome
                .decisions
                .iter()
                .flatten()
                .map(|d| (d.allowed, d.remaining))
                .collect();
            let (api, global) = (limiter.config().api.quota, limiter.config().global.quota);
            let left = |q: &gcra::Quota| q.capacity_us() / q.emission_us() - round;
            assert_eq!(remaining, vec![(true, left(&api)), (true, left(&global))]);
            let token = outcome.revocation.expect("asked");
            assert!(!token.revoked && !token.complete && token.not_before.is_none());
        }
    }
}

/// New policies apply to the requests that start after the replacement.
#[tokio::test]
async fn replaced_policies_apply_to_the_next_requests() {
    let local = without_redis(FailureMode::Local);
    let mut wider = config(FailureMode::Local);
    wider.auth.quota.burst = 5;
    local.replace_config(wider);
    let policy = local.config().auth.clone();
    assert_eq!(policy.quota.burst, 5);
    let mut allowed = 0;
    for _ in 0..6 {
        if local.decide(&policy, "fresh").await.is_some_and(|d| d.allowed) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
}
