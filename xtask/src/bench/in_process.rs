//! The figures measured without the network: raw password hashing, to set the login rate against,
//! and the cost of verifying an access token.

use anyhow::bail;

use crate::devstack;

/// Raw argon2id hashes per second on `threads` threads, at the service's default parameters and
/// the way auth-service computes them: into work memory allocated once and reused (a fresh 19 MiB
/// per hash would add page faults the service does not pay, and flatter its overhead figure).
pub(super) fn argon2_rate(threads: usize) -> f64 {
    let per_thread = 16;
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let params = argon2::Params::new(19_456, 2, 1, None).expect("OWASP parameters are valid");
                let mut memory = vec![argon2::Block::default(); params.block_count()];
                let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
                let mut out = [0u8; 32];
                for i in 0..per_thread {
                    let salt = [t as u8, i as u8, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a];
                    let _ =
                        a.hash_password_into_with_memory(b"correct horse battery staple", &salt, &mut out, &mut memory);
                }
            });
        }
    });
    (threads * per_thread) as f64 / started.elapsed().as_secs_f64()
}

/// Microseconds to verify one access token in a release build: the first time (signature and
/// claims) and again (from the cache of verified tokens).
pub(super) fn verify_cost() -> anyhow::Result<(f64, f64)> {
    let out = devstack::output(
        devstack::cargo().args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "service-kit",
            "--example",
            "verify_cost",
        ]),
        "the verify_cost example",
    )?;
    let text = String::from_utf8_lossy(&out);
    let mut numbers = text.split_whitespace().map(str::parse::<f64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(first)), Some(Ok(cached))) => Ok((first, cached)),
        _ => bail!("verify_cost printed {text:?}"),
    }
}
