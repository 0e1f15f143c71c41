//! CAPTCHA verification for registration and login: asks the provider's siteverify endpoint
//! (reCAPTCHA, hCaptcha or Cloudflare Turnstile) whether a client's token is good.
//!
//! It fails closed: a timeout, a network error, an odd status or an unreadable answer is an error,
//! never a pass. Neither the secret nor the token is ever logged.

use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use service_kit::config::{Env, Environment};

/// Longer tokens are refused without asking the provider (real ones are about 2 KiB at most), so a
/// client cannot make us upload megabytes to a third party.
const MAX_TOKEN_BYTES: usize = 4096;

/// reCAPTCHA v3 scores run from 0.0 (bot) to 1.0 (human); 0.5 is Google's suggested threshold.
const MIN_RECAPTCHA_SCORE: f64 = 0.5;

/// A siteverify answer is a few hundred bytes; anything much larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Error codes that mean our side is wrong (bad secret) or the provider is failing, not the user:
/// these are reported as `Unavailable` so the operator sees an outage instead of every user being
/// told their CAPTCHA failed. Still an error, so still closed.
const NOT_THE_USERS_FAULT: &[&str] = &[
    "missing-input-secret",
    "invalid-input-secret",
    "invalid-parsed-secret",
    "sitekey-secret-mismatch",
    "internal-error",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Recaptcha,
    Hcaptcha,
    Turnstile,
    /// No check at all; refused in production.
    Disabled,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recaptcha => "recaptcha",
            Self::Hcaptcha => "hcaptcha",
            Self::Turnstile => "turnstile",
            Self::Disabled => "disabled",
        }
    }

    /// The public siteverify endpoint; `None` when there is nothing to ask.
    fn default_verify_url(self) -> Option<&'static str> {
        match self {
            Self::Recaptcha => Some("https://www.google.com/recaptcha/api/siteverify"),
            Self::Hcaptcha => Some("https://api.hcaptcha.com/siteverify"),
            Self::Turnstile => Some("https://challenges.cloudflare.com/turnstile/v0/siteverify"),
            Self::Disabled => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaptchaConfig {
    /// `CAPTCHA_PROVIDER` = recaptcha | hcaptcha | turnstile | disabled (default disabled, refused
    /// in production).
    pub provider: Provider,
    /// `CAPTCHA_SECRET`, or `RECAPTCHA_SECRET_KEY` as the old Node deployment named it (either may
    /// come from a `_FILE`).
    pub secret: Option<SecretString>,
    /// `CAPTCHA_TIMEOUT_MS` (default 3000, 100..=30000): the whole siteverify round trip.
    pub timeout: Duration,
    /// `CAPTCHA_VERIFY_URL`, or the provider's public endpoint; the override lets tests point at a
    /// local fake. Empty when the provider is disabled.
    pub verify_url: String,
}

impl CaptchaConfig {
    pub fn from_env(env: &Env, environment: Environment) -> Self {
        let provider = match env.one_of(
            "CAPTCHA_PROVIDER",
            "disabled",
            &["recaptcha", "hcaptcha", "turnstile", "disabled"],
        ) {
            "recaptcha" => Provider::Recaptcha,
            "hcaptcha" => Provider::Hcaptcha,
            "turnstile" => Provider::Turnstile,
            _ => Provider::Disabled,
        };
        if provider == Provider::Disabled && environment == Environment::Production {
            env.problem("CAPTCHA_PROVIDER=disabled", "is refused when APP_ENV=production");
        }

        let secret = match (
            env.optional_secret("CAPTCHA_SECRET"),
            env.optional_secret("RECAPTCHA_SECRET_KEY"),
        ) {
            (Some(new), Some(_)) => {
                env.problem(
                    "CAPTCHA_SECRET",
                    "and RECAPTCHA_SECRET_KEY are both set (directly or as _FILE); set only one",
                );
                Some(new)
            }
            (new, old) => new.or(old),
        };
        // A `_FILE` that was set but could not be used has already been reported by the `Env`;
        // saying "missing" on top of that would only blur the message.
        let file_given = ["CAPTCHA_SECRET_FILE", "RECAPTCHA_SECRET_KEY_FILE"]
            .iter()
            .any(|name| env.optional_string(name).is_some());
        if provider != Provider::Disabled && secret.is_none() && !file_given {
            env.problem(
                "CAPTCHA_SECRET",
                format!("is missing (required when CAPTCHA_PROVIDER={})", provider.as_str()),
            );
        }

        let timeout = env.millis_in("CAPTCHA_TIMEOUT_MS", 3000, 100, 30_000);

        let verify_url = match env.optional_string("CAPTCHA_VERIFY_URL") {
            Some(url) => {
                check_verify_url(env, &url, environment);
                url
            }
            None => provider.default_verify_url().unwrap_or_default().to_owned(),
        };

        Self {
            provider,
            secret,
            timeout,
            verify_url,
        }
    }
}

/// The secret travels in the request body, so a production override must be HTTPS.
fn check_verify_url(env: &Env, url: &str, environment: Environment) {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match parsed.scheme() {
            "https" => {}
            "http" if environment != Environment::Production => {}
            "http" => env.problem("CAPTCHA_VERIFY_URL", "must be an https URL when APP_ENV=production"),
            other => env.problem(
                "CAPTCHA_VERIFY_URL",
                format!("must be an http(s) URL, got scheme {other:?}"),
            ),
        },
        Err(e) => env.problem("CAPTCHA_VERIFY_URL", format!("must be a URL ({e})")),
    }
}

/// Why a token was not accepted; the caller maps each to a response (e.g. 400 vs 503).
#[derive(Debug, thiserror::Error)]
pub enum CaptchaError {
    /// The client sent no token.
    #[error("CAPTCHA token is missing")]
    Missing,
    /// The provider said no (wrong, expired or reused token, low score), or the token is absurd.
    #[error("CAPTCHA token was rejected")]
    Rejected,
    /// We could not get a usable answer; the cause is for the log, not the client.
    #[error("CAPTCHA provider is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// The fields of a siteverify answer we act on; the providers add others (hostname, action,
/// challenge_ts...) that serde ignores.
#[derive(Debug, serde::Deserialize)]
struct SiteVerifyAnswer {
    success: bool,
    #[serde(rename = "error-codes", default)]
    error_codes: Vec<String>,
    score: Option<f64>,
}

/// A siteverify client; cheap to clone (the HTTP client is shared).
#[derive(Debug, Clone)]
pub struct Captcha {
    /// `None` when the provider is disabled.
    site: Option<Site>,
    http: reqwest::Client,
}

/// Whom to ask, and how we prove who we are.
#[derive(Debug, Clone)]
struct Site {
    provider: Provider,
    secret: SecretString,
    url: reqwest::Url,
}

impl Captcha {
    pub fn new(config: CaptchaConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            // A redirect from siteverify is not an answer; following it could send the secret
            // somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the CAPTCHA HTTP client")?;
        let site = match config.provider {
            Provider::Disabled => None,
            provider => Some(Site {
                provider,
                secret: config
                    .secret
                    .with_context(|| format!("CAPTCHA provider {} needs a secret", provider.as_str()))?,
                url: reqwest::Url::parse(&config.verify_url)
                    .with_context(|| format!("CAPTCHA verify URL {:?}", config.verify_url))?,
            }),
        };
        Ok(Self { site, http })
    }

    /// Asks the provider about `token`; `remote_ip` is the client's address, when known.
    /// True with `CAPTCHA_PROVIDER=disabled`: callers then need another answer to abuse.
    pub fn is_disabled(&self) -> bool {
        self.site.is_none()
    }

    pub async fn verify(&self, token: &str, remote_ip: Option<&str>) -> Result<(), CaptchaError> {
        let Some(site) = &self.site else {
            return Ok(());
        };
        let provider = site.provider.as_str();
        if token.trim().is_empty() {
            return Err(CaptchaError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            tracing::warn!(provider, token_bytes = token.len(), "CAPTCHA token refused: too long");
            return Err(CaptchaError::Rejected);
        }
        match self.ask(site, token, remote_ip).await {
            Ok(answer) => site.judge(answer),
            Err(e) => {
                tracing::warn!(provider, error = format!("{e:#}"), "CAPTCHA provider unavailable");
                Err(CaptchaError::Unavailable(e))
            }
        }
    }

    /// One siteverify round trip; every way it can go wrong is an error.
    async fn ask(&self, site: &Site, token: &str, remote_ip: Option<&str>) -> anyhow::Result<SiteVerifyAnswer> {
        let mut form = vec![("secret", site.secret.expose_secret()), ("response", token)];
        if let Some(ip) = remote_ip.filter(|ip| !ip.is_empty()) {
            form.push(("remoteip", ip));
        }
        let mut response = self
            .http
            .post(site.url.clone())
            .form(&form)
            .send()
            .await
            .context("siteverify request")?;
        let status = response.status();
        // `error_for_status` would let a 3xx through; only a 2xx carries an answer.
        if !status.is_success() {
            anyhow::bail!("siteverify answered HTTP {status}");
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.context("reading the siteverify answer")? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                anyhow::bail!("siteverify answer is larger than {MAX_ANSWER_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        // serde_json's message gives a position, never the body, so it is safe to log.
        serde_json::from_slice(&body).context("siteverify answer is not the expected JSON")
    }
}

impl Site {
    fn judge(&self, answer: SiteVerifyAnswer) -> Result<(), CaptchaError> {
        let provider = self.provider.as_str();
        if !answer.success {
            if let Some(code) = answer
                .error_codes
                .iter()
                .find(|code| NOT_THE_USERS_FAULT.contains(&code.as_str()))
            {
                tracing::warn!(provider, error_codes = ?answer.error_codes, "CAPTCHA provider unavailable");
                return Err(CaptchaError::Unavailable(anyhow::anyhow!(
                    "siteverify refused our request: {code:?}"
                )));
            }
            tracing::warn!(provider, error_codes = ?answer.error_codes, "CAPTCHA token rejected");
            return Err(CaptchaError::Rejected);
        }
        // Only reCAPTCHA's score means "how human": hCaptcha Enterprise also sends a `score`, but
        // there higher means riskier, so the same threshold would let bots in. (JSON has no NaN,
        // so a plain comparison is enough.)
        if self.provider == Provider::Recaptcha
            && let Some(score) = answer.score
            && score < MIN_RECAPTCHA_SCORE
        {
            tracing::warn!(provider, score, "CAPTCHA token rejected: score too low");
            return Err(CaptchaError::Rejected);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const SECRET: &str = "test-secret-0123456789";
    const TOKEN: &str = "client-token-abc";

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    fn captcha(server: &MockServer, provider: Provider, timeout: Duration) -> Captcha {
        Captcha::new(CaptchaConfig {
            provider,
            secret: Some(SecretString::from(SECRET)),
            timeout,
            verify_url: format!("{}/siteverify", server.uri()),
        })
        .expect("valid test configuration")
    }

    /// A fake siteverify that answers `template` and expects `calls` requests.
    async fn fake(template: ResponseTemplate, calls: u64) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/siteverify"))
            .respond_with(template)
            .expect(calls)
            .mount(&server)
            .await;
        server
    }

    fn answer(body: serde_json::Value) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(body)
    }

    #[tokio::test]
    async fn success_passes() {
        let server = fake(answer(json!({"success": true, "hostname": "example.org"})), 1).await;
        let c = captcha(&server, Provider::Turnstile, Duration::from_secs(5));
        c.verify(TOKEN, None).await.expect("accepted");
    }

    #[tokio::test]
    async fn request_carries_secret_token_and_remote_ip_as_a_form() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/siteverify"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string_contains(format!("secret={SECRET}")))
            .and(body_string_contains(format!("response={TOKEN}")))
            .and(body_string_contains("remoteip=203.0.113.7"))
            .respond_with(answer(json!({"success": true})))
            .expect(1)
            .mount(&server)
            .await;
        let c = captcha(&server, Provider::Hcaptcha, Duration::from_secs(5));
        // Any mismatch leaves the request unmatched: wiremock answers 404, which is Unavailable.
        c.verify(TOKEN, Some("203.0.113.7")).await.expect("all fields sent");
    }

    #[tokio::test]
    async fn provider_saying_no_is_rejected() {
        let server = fake(
            answer(json!({"success": false, "error-codes": ["timeout-or-duplicate"]})),
            1,
        )
        .await;
        let c = captcha(&server, Provider::Recaptcha, Duration::from_secs(5));
        assert!(matches!(c.verify(TOKEN, None).await, Err(CaptchaError::Rejected)));
    }

    #[tokio::test]
    async fn low_recaptcha_score_is_rejected() {
        let server = fake(answer(json!({"success": true, "score": 0.3, "action": "login"})), 1).await;
        let c = captcha(&server, Provider::Recaptcha, Duration::from_secs(5));
        assert!(matches!(c.verify(TOKEN, None).await, Err(CaptchaError::Rejected)));
    }

    #[tokio::test]
    async fn high_recaptcha_score_passes() {
        let server = fake(answer(json!({"success": true, "score": 0.9})), 1).await;
        let c = captcha(&server, Provider::Recaptcha, Duration::from_secs(5));
        c.verify(TOKEN, None).await.expect("human enough");
    }

    #[tokio::test]
    async fn hcaptcha_risk_score_is_not_read_as_a_recaptcha_score() {
        // hCaptcha Enterprise: 0.1 is low risk, which the reCAPTCHA rule would have refused.
        let server = fake(answer(json!({"success": true, "score": 0.1})), 1).await;
        let c = captcha(&server, Provider::Hcaptcha, Duration::from_secs(5));
        c.verify(TOKEN, None).await.expect("provider said yes");
    }

    #[tokio::test]
    async fn bad_secret_is_our_outage_not_the_users_fault() {
        let server = fake(
            answer(json!({"success": false, "error-codes": ["invalid-input-secret"]})),
            1,
        )
        .await;
        let c = captcha(&server, Provider::Turnstile, Duration::from_secs(5));
        assert!(matches!(c.verify(TOKEN, None).await, Err(CaptchaError::Unavailable(_))));
    }

    #[tokio::test]
    async fn server_error_is_unavailable() {
        let server = fake(ResponseTemplate::new(500).set_body_json(json!({"success": true})), 1).await;
        let c = captcha(&server, Provider::Hcaptcha, Duration::from_secs(5));
        assert!(matches!(c.verify(TOKEN, None).await, Err(CaptchaError::Unavailable(_))));
    }

    #[tokio::test]
    async fn redirect_is_not_followed() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/siteverify"))
            .respond_with(ResponseTemplate::new(307).insert_header("location", format!("{}/elsewhere", server.uri())))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/elsewhere"))
            .respond_with(answer(json!({"success": true})))
            .expect(0)
            .mount(&server)
            .await;
        let c = captcha(&server, Provider::Recaptcha, Duration::from_secs(5));
        assert!(matches!(c.verify(TOKEN, None).await, Err(CaptchaError::Unavailable(_))));
    }

    #[tokio::test]
    async fn slow_provider_times_out_as_unavailable() {
        let server = fake(answer(json!({"success": true})).set_delay(Duration::from_secs(5)), 1).await;
        let c = captcha(&server, Provider::Turnstile, Duration::from_millis(200));
        let started = std::time::Instant::now();
        assert!(matches!(c.verify(TOKEN, None).await, Err(CaptchaError::Unavailable(_))));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "did not wait for the slow answer"
        );
    }

    #[tokio::test]
    async fn garbage_answers_are_unavailable() {
        for template in [
            ResponseTemplate::new(200).set_body_string("<html>captcha</html>"),
            answer(json!({"ok": true})),
            answer(json!({"success": "true"})),
            ResponseTemplate::new(200).set_body_string("x".repeat(MAX_ANSWER_BYTES + 1)),
        ] {
            let server = fake(template, 1).await;
            let c = captcha(&server, Provider::Hcaptcha, Duration::from_secs(5));
            assert!(matches!(c.verify(TOKEN, None).await, Err(CaptchaError::Unavailable(_))));
        }
    }

    #[tokio::test]
    async fn empty_token_is_missing_without_a_request() {
        let server = fake(answer(json!({"success": true})), 0).await;
        let c = captcha(&server, Provider::Recaptcha, Duration::from_secs(5));
        assert!(matches!(c.verify("", None).await, Err(CaptchaError::Missing)));
        assert!(matches!(
            c.verify("  ", Some("203.0.113.7")).await,
            Err(CaptchaError::Missing)
        ));
    }

    #[tokio::test]
    async fn oversized_token_is_rejected_without_a_request() {
        let server = fake(answer(json!({"success": true})), 0).await;
        let c = captcha(&server, Provider::Recaptcha, Duration::from_secs(5));
        let token = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(c.verify(&token, None).await, Err(CaptchaError::Rejected)));
    }

    #[tokio::test]
    async fn disabled_passes_without_a_request() {
        let server = fake(answer(json!({"success": false})), 0).await;
        let c = Captcha::new(CaptchaConfig {
            provider: Provider::Disabled,
            secret: None,
            timeout: Duration::from_secs(1),
            verify_url: format!("{}/siteverify", server.uri()),
        })
        .expect("disabled needs nothing");
        c.verify("", None).await.expect("no check");
        c.verify(TOKEN, None).await.expect("no check");
    }

    #[test]
    fn enabled_provider_without_secret_cannot_be_built() {
        let err = Captcha::new(CaptchaConfig {
            provider: Provider::Turnstile,
            secret: None,
            timeout: Duration::from_secs(1),
            verify_url: "https://example.org/siteverify".to_owned(),
        })
        .expect_err("no secret");
        assert_eq!(err.to_string(), "CAPTCHA provider turnstile needs a secret");
    }

    #[test]
    fn secret_never_shows_in_debug_output() {
        let e = env(&[("CAPTCHA_PROVIDER", "turnstile"), ("CAPTCHA_SECRET", "hunter2-secret")]);
        let config = CaptchaConfig::from_env(&e, Environment::Production);
        assert!(!format!("{config:?}").contains("hunter2"));
        let c = Captcha::new(config).expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_are_disabled_outside_production() {
        let e = env(&[]);
        let config = CaptchaConfig::from_env(&e, Environment::Development);
        e.finish().expect("nothing required");
        assert_eq!(config.provider, Provider::Disabled);
        assert_eq!(config.timeout, Duration::from_millis(3000));
        assert!(config.secret.is_none());
    }

    #[test]
    fn each_provider_has_its_public_endpoint() {
        for (name, provider, url) in [
            (
                "recaptcha",
                Provider::Recaptcha,
                "https://www.google.com/recaptcha/api/siteverify",
            ),
            ("HCaptcha", Provider::Hcaptcha, "https://api.hcaptcha.com/siteverify"),
            (
                "turnstile",
                Provider::Turnstile,
                "https://challenges.cloudflare.com/turnstile/v0/siteverify",
            ),
        ] {
            let e = env(&[
                ("CAPTCHA_PROVIDER", name),
                ("CAPTCHA_SECRET", "s"),
                ("CAPTCHA_TIMEOUT_MS", "750"),
            ]);
            let config = CaptchaConfig::from_env(&e, Environment::Production);
            e.finish().expect("complete");
            assert_eq!(config.provider, provider);
            assert_eq!(config.verify_url, url);
            assert_eq!(config.timeout, Duration::from_millis(750));
        }
    }

    #[test]
    fn old_node_secret_name_is_accepted() {
        let e = env(&[("CAPTCHA_PROVIDER", "recaptcha"), ("RECAPTCHA_SECRET_KEY", "legacy")]);
        let config = CaptchaConfig::from_env(&e, Environment::Production);
        e.finish().expect("complete");
        assert_eq!(config.secret.as_ref().map(|s| s.expose_secret()), Some("legacy"));
    }

    #[test]
    fn missing_secret_is_named() {
        let e = env(&[("CAPTCHA_PROVIDER", "hcaptcha")]);
        CaptchaConfig::from_env(&e, Environment::Production);
        let err = e.finish().expect_err("no secret");
        assert_eq!(
            err.to_string(),
            "invalid configuration: CAPTCHA_SECRET is missing (required when CAPTCHA_PROVIDER=hcaptcha)"
        );
    }

    #[test]
    fn unreadable_secret_file_is_reported_once() {
        let e = env(&[
            ("CAPTCHA_PROVIDER", "hcaptcha"),
            ("CAPTCHA_SECRET_FILE", "/nonexistent/captcha"),
        ]);
        CaptchaConfig::from_env(&e, Environment::Production);
        let err = e.finish().expect_err("unreadable");
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(
            err.to_string()
                .contains("CAPTCHA_SECRET_FILE names a file that cannot be read")
        );
    }

    #[test]
    fn both_secret_names_conflict() {
        let e = env(&[
            ("CAPTCHA_PROVIDER", "recaptcha"),
            ("CAPTCHA_SECRET", "new"),
            ("RECAPTCHA_SECRET_KEY", "old"),
        ]);
        CaptchaConfig::from_env(&e, Environment::Production);
        let err = e.finish().expect_err("both set");
        assert_eq!(
            err.to_string(),
            "invalid configuration: CAPTCHA_SECRET and RECAPTCHA_SECRET_KEY are both set (directly or as _FILE); \
             set only one"
        );
    }

    #[test]
    fn disabled_is_refused_in_production() {
        // Unset counts as disabled: forgetting the variable must not switch the check off.
        for pairs in [&[][..], &[("CAPTCHA_PROVIDER", "disabled")][..]] {
            let e = env(pairs);
            CaptchaConfig::from_env(&e, Environment::Production);
            let err = e.finish().expect_err("disabled in production");
            assert_eq!(
                err.to_string(),
                "invalid configuration: CAPTCHA_PROVIDER=disabled is refused when APP_ENV=production"
            );
        }
    }

    #[test]
    fn bad_values_are_named() {
        let e = env(&[
            ("CAPTCHA_PROVIDER", "friendlycaptcha"),
            ("CAPTCHA_TIMEOUT_MS", "50"),
            ("CAPTCHA_VERIFY_URL", "not a url"),
        ]);
        CaptchaConfig::from_env(&e, Environment::Test);
        let err = e.finish().expect_err("three problems");
        assert_eq!(err.problems().len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("CAPTCHA_PROVIDER must be one of recaptcha|hcaptcha|turnstile|disabled"));
        assert!(text.contains("CAPTCHA_TIMEOUT_MS must be an integer in 100..=30000, got 50"));
        assert!(text.contains("CAPTCHA_VERIFY_URL must be a URL"));
    }

    #[test]
    fn plain_http_override_only_outside_production() {
        let pairs = [
            ("CAPTCHA_PROVIDER", "turnstile"),
            ("CAPTCHA_SECRET", "s"),
            ("CAPTCHA_VERIFY_URL", "http://127.0.0.1:9/siteverify"),
        ];
        let e = env(&pairs);
        let config = CaptchaConfig::from_env(&e, Environment::Test);
        e.finish().expect("a local fake is fine in tests");
        assert_eq!(config.verify_url, "http://127.0.0.1:9/siteverify");

        let e = env(&pairs);
        CaptchaConfig::from_env(&e, Environment::Production);
        let err = e.finish().expect_err("clear text secret");
        assert_eq!(
            err.to_string(),
            "invalid configuration: CAPTCHA_VERIFY_URL must be an https URL when APP_ENV=production"
        );
    }
}
