//! Transactional e-mail (address verification, password reset): sent through an SMTP relay, or
//! written to the log in development so no relay is needed there.
//!
//! Recipients are parsed before anything is sent, so a bad address is the caller's error and never
//! reaches the relay. Every relay failure (down, refused, too slow) is `Unavailable`. Neither the
//! SMTP password nor, outside the development log mailer, the message body is ever logged: bodies
//! carry verification and reset links.

use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::{ExposeSecret as _, SecretString};
use service_kit::config::{Env, Environment};

/// RFC 8314 submission ports: STARTTLS (or plain, on a trusted local relay) and implicit TLS.
const SUBMISSION_PORT: u16 = 587;
const SUBMISSIONS_PORT: u16 = 465;

/// One plain-text message to one recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    /// A bare address (`user@example.org`), as the user typed it at registration.
    pub to: String,
    pub subject: String,
    pub text: String,
}

/// Bodies hold verification and reset links, which are as good as a password for a while; a stray
/// `{:?}` must not put them in a log line.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

/// Where messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Smtp,
    /// Written to the log instead of sent; refused in production.
    Log,
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; the upgrade is required, never optional, so a
    /// man in the middle cannot strip it.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: a trusted local relay or a test fake only; refused in production.
    None,
}

/// Login to the relay; both parts may come from `_FILE`s.
#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    pub user: SecretString,
    pub password: SecretString,
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `MAILER` = smtp | log (default log outside production, smtp in production, where log is
    /// refused).
    pub backend: Backend,
    /// `SMTP_HOST`: required when `MAILER=smtp`.
    pub host: Option<String>,
    /// `SMTP_PORT` (1..=65535; default 465 with `SMTP_TLS=tls`, else 587).
    pub port: u16,
    /// `SMTP_USER` and `SMTP_PASS` (each also as `_FILE`): both or neither.
    pub credentials: Option<SmtpCredentials>,
    /// `SMTP_FROM`, e.g. `Platform <no-reply@example.org>`: required when `MAILER=smtp`.
    pub from: Option<Mailbox>,
    /// `SMTP_TLS` = starttls | tls | none (default starttls; none is refused in production).
    pub tls: SmtpTls,
    /// `SMTP_TIMEOUT_MS` (default 10000, 100..=120000): the whole exchange with the relay, from
    /// connecting to the answer after the message.
    pub timeout: Duration,
}

impl MailConfig {
    pub fn from_env(env: &Env, environment: Environment) -> Self {
        let production = environment == Environment::Production;
        let backend = match env.one_of("MAILER", if production { "smtp" } else { "log" }, &["smtp", "log"]) {
            "smtp" => Backend::Smtp,
            _ => Backend::Log,
        };
        if backend == Backend::Log && production {
            env.problem("MAILER=log", "is refused when APP_ENV=production");
        }

        let tls = match env.one_of("SMTP_TLS", "starttls", &["starttls", "tls", "none"]) {
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            _ => SmtpTls::StartTls,
        };
        if tls == SmtpTls::None && production {
            env.problem("SMTP_TLS=none", "is refused when APP_ENV=production");
        }
        let default_port = if tls == SmtpTls::Tls {
            SUBMISSIONS_PORT
        } else {
            SUBMISSION_PORT
        };
        let port = env.int_in("SMTP_PORT", default_port, 1, u16::MAX);
        let timeout = env.millis_in("SMTP_TIMEOUT_MS", 10_000, 100, 120_000);

        // The SMTP variables are read whatever the backend, so a typo is reported before the day
        // someone switches to smtp; only their absence is forgiven under `MAILER=log`.
        let host = env.optional_string("SMTP_HOST");
        if let Some(host) = &host
            && (host.contains('/') || host.contains(char::is_whitespace))
        {
            env.problem(
                "SMTP_HOST",
                format!("must be a host name or IP address (no scheme or path), got {host:?}"),
            );
        }
        let from = env
            .optional_string("SMTP_FROM")
            .and_then(|raw| match raw.trim().parse::<Mailbox>() {
                Ok(mailbox) => Some(mailbox),
                Err(e) => {
                    env.problem(
                        "SMTP_FROM",
                        format!("must be a mailbox such as \"Platform <no-reply@example.org>\", got {raw:?} ({e})"),
                    );
                    None
                }
            });
        let credentials = credentials(env);

        if backend == Backend::Smtp {
            // A value that was set but refused has been reported already; "missing" on top of
            // that would only blur the message.
            for (name, absent) in [("SMTP_HOST", host.is_none()), ("SMTP_FROM", from.is_none())] {
                if absent && env.optional_string(name).is_none() {
                    env.problem(name, "is missing (required when MAILER=smtp)");
                }
            }
        }

        Self {
            backend,
            host,
            port,
            credentials,
            from,
            tls,
            timeout,
        }
    }
}

/// `SMTP_USER` and `SMTP_PASS` together, or no login at all.
fn credentials(env: &Env) -> Option<SmtpCredentials> {
    // Set directly or as `_FILE`: a `_FILE` that could not be used has been reported by the `Env`.
    let given =
        |name: &str| env.optional_string(name).is_some() || env.optional_string(&format!("{name}_FILE")).is_some();
    match (env.optional_secret("SMTP_USER"), env.optional_secret("SMTP_PASS")) {
        (Some(user), Some(password)) => Some(SmtpCredentials { user, password }),
        (None, None) => None,
        (Some(_), None) => {
            if !given("SMTP_PASS") {
                env.problem(
                    "SMTP_USER",
                    "is set without SMTP_PASS (set both, directly or as _FILE, or neither)",
                );
            }
            None
        }
        (None, Some(_)) => {
            if !given("SMTP_USER") {
                env.problem(
                    "SMTP_PASS",
                    "is set without SMTP_USER (set both, directly or as _FILE, or neither)",
                );
            }
            None
        }
    }
}

/// Why a message was not sent; the caller decides what the user is told.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The message itself cannot be sent (bad recipient address); retrying will not help. The
    /// text names the problem, never the address.
    #[error("e-mail cannot be sent: {0}")]
    Invalid(String),
    /// The relay is down, refused the message or did not answer in time; the cause is for the
    /// log, not the client.
    #[error("mail relay is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// Sends [`Email`]s; cheap to clone.
#[derive(Debug, Clone)]
pub enum Mailer {
    /// Boxed: the transport's settings are a few hundred bytes, `Log` is nothing.
    Smtp(Box<SmtpMailer>),
    /// Development only: the message, body included, goes to the log.
    Log,
}

/// An SMTP relay and the sender we present to it.
#[derive(Debug, Clone)]
pub struct SmtpMailer {
    /// Opens one connection per message: transactional mail is rare enough that a pool of idle
    /// connections (lettre's `pool` feature) would buy nothing.
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
    /// `host:port`, for log lines.
    relay: String,
}

impl Mailer {
    pub fn build(config: MailConfig) -> anyhow::Result<Self> {
        if config.backend == Backend::Log {
            return Ok(Self::Log);
        }
        let host = config.host.context("MAILER=smtp needs SMTP_HOST")?;
        let from = config.from.context("MAILER=smtp needs SMTP_FROM")?;
        let tls = match config.tls {
            SmtpTls::StartTls => Tls::Required(tls_parameters(&host)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(&host)?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(config.port)
            .tls(tls)
            // lettre applies this to connecting only; `SmtpMailer::send` bounds the whole exchange.
            .timeout(Some(config.timeout));
        if let Some(credentials) = config.credentials {
            // `Credentials` keeps the password out of its `Debug` output.
            builder = builder.credentials(Credentials::new(
                credentials.user.expose_secret().to_owned(),
                credentials.password.expose_secret().to_owned(),
            ));
        }
        Ok(Self::Smtp(Box::new(SmtpMailer {
            transport: builder.build(),
            from,
            timeout: config.timeout,
            relay: format!("{host}:{}", config.port),
        })))
    }

    /// Sends `email`, or says why not. The recipient is checked first, by both mailers, so
    /// development sees the same `Invalid` errors as production.
    pub async fn send(&self, email: &Email) -> Result<(), MailError> {
        let to = recipient(&email.to)?;
        match self {
            Self::Smtp(smtp) => smtp.send(to, email).await,
            Self::Log => {
                tracing::info!(
                    to = %email.to,
                    subject = %email.subject,
                    body = %email.text,
                    "e-mail not sent (MAILER=log)"
                );
                Ok(())
            }
        }
    }
}

impl SmtpMailer {
    async fn send(&self, to: Address, email: &Email) -> Result<(), MailError> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(one_line(&email.subject))
            .header(ContentType::TEXT_PLAIN)
            .body(email.text.clone())
            .map_err(|e| MailError::Invalid(format!("message cannot be built ({e})")))?;
        let outcome = match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_response)) => return Ok(()),
            Ok(Err(e)) => anyhow::Error::new(e).context(format!("sending through {}", self.relay)),
            Err(_elapsed) => anyhow::anyhow!("{} did not finish within {} ms", self.relay, self.timeout.as_millis()),
        };
        tracing::warn!(
            relay = %self.relay,
            subject = %email.subject,
            error = format!("{outcome:#}"),
            "mail relay unavailable"
        );
        Err(MailError::Unavailable(outcome))
    }
}

fn tls_parameters(host: &str) -> anyhow::Result<TlsParameters> {
    TlsParameters::new(host.to_owned()).with_context(|| format!("TLS settings for SMTP host {host:?}"))
}

/// A bare address: display names, comments and anything else lettre's parser refuses are an
/// error. The address is not repeated in the error, which may end up in a log.
fn recipient(to: &str) -> Result<Address, MailError> {
    to.parse::<Address>()
        .map_err(|e| MailError::Invalid(format!("recipient address is not valid ({e})")))
}

/// A subject is one line. lettre encodes what it is given, but collapsing line breaks and other
/// control characters here means no encoding corner case can ever turn them into a new header.
fn one_line(text: &str) -> String {
    text.split(char::is_control)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::*;

    const FROM: &str = "Platform <no-reply@example.org>";
    const PASSWORD: &str = "hunter2-smtp-password";

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    fn email(to: &str, subject: &str, text: &str) -> Email {
        Email {
            to: to.to_owned(),
            subject: subject.to_owned(),
            text: text.to_owned(),
        }
    }

    /// An SMTP mailer for a local relay on `port`, built from variables like the service does.
    fn smtp_mailer(port: u16, timeout_ms: &str) -> Mailer {
        let port = port.to_string();
        let e = env(&[
            ("MAILER", "smtp"),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &port),
            ("SMTP_FROM", FROM),
            ("SMTP_TLS", "none"),
            ("SMTP_TIMEOUT_MS", timeout_ms),
        ]);
        let config = MailConfig::from_env(&e, Environment::Test);
        e.finish().expect("complete test configuration");
        Mailer::build(config).expect("valid test configuration")
    }

    /// What the fake relay received.
    #[derive(Debug, Default)]
    struct Received {
        mail_from: Vec<String>,
        rcpt_to: Vec<String>,
        /// The message after DATA, dot-unstuffed, lines joined with `\n`.
        data: Option<String>,
    }

    impl Received {
        /// Header lines of the message, as sent (continuation lines start with whitespace).
        fn header_lines(&self) -> Vec<&str> {
            let data = self.data.as_deref().unwrap_or_default();
            data.lines().take_while(|line| !line.is_empty()).collect()
        }

        /// The header named `name`, unfolded.
        fn header(&self, name: &str) -> Option<String> {
            let lines = self.header_lines();
            let prefix = format!("{}:", name.to_ascii_lowercase());
            let start = lines
                .iter()
                .position(|line| line.to_ascii_lowercase().starts_with(&prefix))?;
            let mut value = lines[start][prefix.len()..].trim().to_owned();
            for continuation in lines[start + 1..]
                .iter()
                .take_while(|line| line.starts_with([' ', '\t']))
            {
                value.push(' ');
                value.push_str(continuation.trim());
            }
            Some(value)
        }

        fn body(&self) -> String {
            let data = self.data.as_deref().unwrap_or_default();
            data.split_once("\n\n")
                .map(|(_, body)| body.to_owned())
                .unwrap_or_default()
        }
    }

    /// A relay speaking just enough SMTP for one message, with neither STARTTLS nor AUTH on
    /// offer. With `refuse_recipients` it answers 554 to every RCPT TO.
    async fn fake_relay(refuse_recipients: bool) -> (u16, JoinHandle<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake relay");
        let port = listener.local_addr().expect("bound address").port();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("client connects");
            converse(stream, refuse_recipients).await.expect("SMTP conversation")
        });
        (port, task)
    }

    async fn converse(stream: TcpStream, refuse_recipients: bool) -> std::io::Result<Received> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut received = Received::default();
        write.write_all(b"220 fake.test ESMTP\r\n").await?;
        while let Some(line) = lines.next_line().await? {
            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 fake.test\r\n",
                "MAIL" => {
                    received.mail_from.push(line);
                    b"250 2.1.0 OK\r\n"
                }
                "RCPT" if refuse_recipients => {
                    received.rcpt_to.push(line);
                    b"554 5.7.1 Relay access denied\r\n"
                }
                "RCPT" => {
                    received.rcpt_to.push(line);
                    b"250 2.1.5 OK\r\n"
                }
                "DATA" => {
                    write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                    let mut data = Vec::new();
                    while let Some(line) = lines.next_line().await? {
                        if line == "." {
                            break;
                        }
                        // Dot-stuffing (RFC 5321 4.5.2): a leading dot was doubled by the client.
                        data.push(line.strip_prefix('.').map(str::to_owned).unwrap_or(line));
                    }
                    received.data = Some(data.join("\n"));
                    b"250 2.0.0 queued\r\n"
                }
                "RSET" | "NOOP" => b"250 2.0.0 OK\r\n",
                "QUIT" => {
                    write.write_all(b"221 2.0.0 bye\r\n").await?;
                    break;
                }
                _ => b"502 5.5.2 not implemented\r\n",
            };
            write.write_all(answer).await?;
        }
        Ok(received)
    }

    // --- configuration ---

    #[test]
    fn defaults_are_the_log_mailer_outside_production() {
        for environment in [Environment::Development, Environment::Test] {
            let e = env(&[]);
            let config = MailConfig::from_env(&e, environment);
            e.finish().expect("nothing required");
            assert_eq!(config.backend, Backend::Log);
            assert_eq!(config.port, 587);
            assert_eq!(config.tls, SmtpTls::StartTls);
            assert_eq!(config.timeout, Duration::from_millis(10_000));
            assert!(config.host.is_none() && config.from.is_none() && config.credentials.is_none());
        }
    }

    #[test]
    fn production_defaults_to_smtp_and_needs_host_and_sender() {
        let e = env(&[]);
        let config = MailConfig::from_env(&e, Environment::Production);
        assert_eq!(config.backend, Backend::Smtp);
        let err = e.finish().expect_err("nothing configured");
        assert_eq!(
            err.to_string(),
            "invalid configuration: SMTP_HOST is missing (required when MAILER=smtp); \
             SMTP_FROM is missing (required when MAILER=smtp)"
        );
    }

    #[test]
    fn log_mailer_is_refused_in_production() {
        let e = env(&[("MAILER", "log")]);
        MailConfig::from_env(&e, Environment::Production);
        let err = e.finish().expect_err("log in production");
        assert_eq!(
            err.to_string(),
            "invalid configuration: MAILER=log is refused when APP_ENV=production"
        );
    }

    #[test]
    fn clear_text_relay_is_refused_in_production() {
        let e = env(&[
            ("MAILER", "smtp"),
            ("SMTP_HOST", "smtp.example.org"),
            ("SMTP_FROM", FROM),
            ("SMTP_TLS", "none"),
        ]);
        MailConfig::from_env(&e, Environment::Production);
        let err = e.finish().expect_err("no TLS in production");
        assert_eq!(
            err.to_string(),
            "invalid configuration: SMTP_TLS=none is refused when APP_ENV=production"
        );
    }

    #[test]
    fn complete_production_configuration() {
        let e = env(&[
            ("SMTP_HOST", "smtp.example.org"),
            ("SMTP_FROM", FROM),
            ("SMTP_USER", "mailer"),
            ("SMTP_PASS", PASSWORD),
            ("SMTP_TLS", "TLS"),
            ("SMTP_TIMEOUT_MS", "2500"),
        ]);
        let config = MailConfig::from_env(&e, Environment::Production);
        e.finish().expect("complete");
        assert_eq!(config.backend, Backend::Smtp);
        assert_eq!(config.host.as_deref(), Some("smtp.example.org"));
        assert_eq!(config.tls, SmtpTls::Tls);
        assert_eq!(config.port, 465, "implicit TLS defaults to the submissions port");
        assert_eq!(config.timeout, Duration::from_millis(2500));
        let from = config.from.as_ref().expect("parsed sender");
        assert_eq!(from.name.as_deref(), Some("Platform"));
        assert_eq!(from.email.to_string(), "no-reply@example.org");
        let credentials = config.credentials.as_ref().expect("login");
        assert_eq!(credentials.user.expose_secret(), "mailer");
        assert_eq!(credentials.password.expose_secret(), PASSWORD);

        let mailer = Mailer::build(config.clone()).expect("buildable");
        assert!(matches!(mailer, Mailer::Smtp(_)));
        assert!(!format!("{config:?}").contains(PASSWORD));
        assert!(!format!("{mailer:?}").contains(PASSWORD));
    }

    #[test]
    fn explicit_port_wins() {
        let e = env(&[("SMTP_PORT", "2525"), ("SMTP_TLS", "tls")]);
        let config = MailConfig::from_env(&e, Environment::Development);
        e.finish().expect("valid");
        assert_eq!(config.port, 2525);
    }

    #[test]
    fn login_needs_both_user_and_password() {
        let e = env(&[("SMTP_USER", "mailer")]);
        let config = MailConfig::from_env(&e, Environment::Development);
        assert!(config.credentials.is_none());
        let err = e.finish().expect_err("user alone");
        assert_eq!(
            err.to_string(),
            "invalid configuration: SMTP_USER is set without SMTP_PASS (set both, directly or as _FILE, or neither)"
        );

        let e = env(&[("SMTP_PASS", PASSWORD)]);
        MailConfig::from_env(&e, Environment::Development);
        let err = e.finish().expect_err("password alone");
        assert_eq!(
            err.to_string(),
            "invalid configuration: SMTP_PASS is set without SMTP_USER (set both, directly or as _FILE, or neither)"
        );
        assert!(!err.to_string().contains(PASSWORD));
    }

    #[test]
    fn password_file_is_read_and_an_unreadable_one_reported_once() {
        let dir = std::env::temp_dir().join(format!("auth-mailer-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("smtp-pass");
        std::fs::write(&path, format!("{PASSWORD}\n")).expect("write secret");
        let path = path.to_string_lossy().into_owned();

        let e = env(&[("SMTP_USER", "mailer"), ("SMTP_PASS_FILE", &path)]);
        let config = MailConfig::from_env(&e, Environment::Development);
        e.finish().expect("password from file");
        let credentials = config.credentials.expect("login");
        assert_eq!(credentials.password.expose_secret(), PASSWORD);

        let e = env(&[("SMTP_USER", "mailer"), ("SMTP_PASS_FILE", "/nonexistent/smtp-pass")]);
        MailConfig::from_env(&e, Environment::Development);
        let err = e.finish().expect_err("unreadable");
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(
            err.to_string()
                .starts_with("invalid configuration: SMTP_PASS_FILE names a file that cannot be read")
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bad_values_are_named_on_one_line() {
        let e = env(&[
            ("MAILER", "sendmail"),
            ("SMTP_HOST", "smtp://smtp.example.org"),
            ("SMTP_PORT", "0"),
            ("SMTP_FROM", "Platform no-reply at example.org"),
            ("SMTP_TLS", "ssl"),
            ("SMTP_TIMEOUT_MS", "50"),
        ]);
        MailConfig::from_env(&e, Environment::Test);
        let err = e.finish().expect_err("six problems");
        assert_eq!(err.problems().len(), 6, "{err}");
        let text = err.to_string();
        assert!(!text.contains('\n'));
        for expected in [
            "MAILER must be one of smtp|log, got \"sendmail\"",
            "SMTP_TLS must be one of starttls|tls|none, got \"ssl\"",
            "SMTP_PORT must be an integer in 1..=65535, got 0",
            "SMTP_TIMEOUT_MS must be an integer in 100..=120000, got 50",
            "SMTP_HOST must be a host name or IP address (no scheme or path), got \"smtp://smtp.example.org\"",
            "SMTP_FROM must be a mailbox such as \"Platform <no-reply@example.org>\", got \"Platform no-reply at example.org\"",
        ] {
            assert!(text.contains(expected), "{text}\nshould contain\n{expected}");
        }
    }

    #[test]
    fn smtp_cannot_be_built_without_host_or_sender() {
        let e = env(&[("MAILER", "smtp")]);
        let config = MailConfig::from_env(&e, Environment::Test);
        assert!(e.finish().is_err());
        let err = Mailer::build(config).expect_err("no host");
        assert_eq!(err.to_string(), "MAILER=smtp needs SMTP_HOST");
    }

    #[test]
    fn email_debug_output_hides_the_body() {
        let e = email("user@example.com", "Reset", "https://example.org/reset?token=s3cret");
        let shown = format!("{e:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("user@example.com"));
    }

    #[test]
    fn subject_is_collapsed_to_one_line() {
        assert_eq!(one_line("Hello\r\nBcc: x"), "Hello Bcc: x");
        assert_eq!(one_line("\r\nA\tB\n"), "A B");
        assert_eq!(one_line("Vérifiez votre adresse"), "Vérifiez votre adresse");
    }

    // --- log mailer ---

    #[tokio::test]
    async fn log_mailer_accepts_a_valid_message() {
        let e = env(&[]);
        let mailer = Mailer::build(MailConfig::from_env(&e, Environment::Development)).expect("log");
        e.finish().expect("defaults");
        assert!(matches!(mailer, Mailer::Log));
        mailer
            .send(&email("user@example.com", "Verify your address", "Open the link."))
            .await
            .expect("logged");
    }

    #[tokio::test]
    async fn log_mailer_refuses_a_bad_recipient_like_smtp_would() {
        let err = Mailer::Log
            .send(&email("not an address", "Verify", "Open the link."))
            .await
            .expect_err("bad recipient");
        assert!(matches!(err, MailError::Invalid(_)), "{err:?}");
    }

    // --- SMTP mailer against a fake relay ---

    #[tokio::test]
    async fn smtp_delivers_sender_recipient_subject_and_body() {
        let (port, relay) = fake_relay(false).await;
        let mailer = smtp_mailer(port, "5000");
        mailer
            .send(&email(
                "user@example.com",
                "Verify your address",
                "Hello,\n\nopen https://example.org/verify?t=abc to confirm.\n",
            ))
            .await
            .expect("sent");
        let received = relay.await.expect("relay task");

        assert_eq!(received.mail_from, ["MAIL FROM:<no-reply@example.org>"]);
        assert_eq!(received.rcpt_to, ["RCPT TO:<user@example.com>"]);
        assert_eq!(received.header("From").as_deref(), Some(FROM));
        assert_eq!(received.header("To").as_deref(), Some("user@example.com"));
        assert_eq!(received.header("Subject").as_deref(), Some("Verify your address"));
        assert_eq!(
            received.header("Content-Type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            received.body(),
            "Hello,\n\nopen https://example.org/verify?t=abc to confirm.\n"
        );
    }

    #[tokio::test]
    async fn line_breaks_in_the_subject_cannot_add_a_header() {
        let (port, relay) = fake_relay(false).await;
        let mailer = smtp_mailer(port, "5000");
        mailer
            .send(&email(
                "user@example.com",
                "Hello\r\nBcc: attacker@evil.example\r\nX-Injected: yes",
                "Body.",
            ))
            .await
            .expect("sent");
        let received = relay.await.expect("relay task");

        // A Bcc header would also have become an envelope recipient.
        assert_eq!(received.rcpt_to, ["RCPT TO:<user@example.com>"]);
        for line in received.header_lines() {
            let lower = line.to_ascii_lowercase();
            assert!(
                !lower.starts_with("bcc:") && !lower.starts_with("x-injected:"),
                "injected header {line:?} in {:?}",
                received.data
            );
        }
        assert_eq!(
            received.header("Subject").as_deref(),
            Some("Hello Bcc: attacker@evil.example X-Injected: yes")
        );
    }

    #[tokio::test]
    async fn a_dot_line_in_the_body_cannot_end_the_message_early() {
        let (port, relay) = fake_relay(false).await;
        let mailer = smtp_mailer(port, "5000");
        let text = "first\n.\nRCPT TO:<attacker@evil.example>\n.last\n";
        mailer
            .send(&email("user@example.com", "Dots", text))
            .await
            .expect("sent");
        let received = relay.await.expect("relay task");
        assert_eq!(received.rcpt_to, ["RCPT TO:<user@example.com>"]);
        assert_eq!(received.body(), text);
    }

    #[tokio::test]
    async fn bad_recipient_is_invalid_without_contacting_the_relay() {
        // A std listener that is never accepted on: a connection attempt would still be
        // completed by the kernel and show up as a pending accept.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("bound address").port();
        let mailer = smtp_mailer(port, "5000");
        for to in [
            "",
            "not an address",
            "User <user@example.com>",
            "user@example.com\r\nBcc: attacker@evil.example",
            "user@",
        ] {
            let err = mailer
                .send(&email(to, "Verify", "Open the link."))
                .await
                .expect_err("bad recipient");
            assert!(matches!(err, MailError::Invalid(_)), "{to:?}: {err:?}");
            if !to.is_empty() {
                assert!(!err.to_string().contains(to), "address repeated in {err}");
            }
        }
        let pending = listener.accept();
        assert!(
            matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the relay was contacted: {pending:?}"
        );
    }

    #[tokio::test]
    async fn refused_recipient_is_unavailable() {
        let (port, relay) = fake_relay(true).await;
        let mailer = smtp_mailer(port, "5000");
        let err = mailer
            .send(&email("user@example.com", "Verify", "Open the link."))
            .await
            .expect_err("relay refuses");
        assert!(matches!(err, MailError::Unavailable(_)), "{err:?}");
        let received = relay.await.expect("relay task");
        assert_eq!(received.rcpt_to, ["RCPT TO:<user@example.com>"]);
        assert!(received.data.is_none(), "no message after a refused recipient");
    }

    #[tokio::test]
    async fn closed_port_is_unavailable() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("bound address").port()
        };
        let mailer = smtp_mailer(port, "5000");
        let err = mailer
            .send(&email("user@example.com", "Verify", "Open the link."))
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, MailError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn silent_relay_is_unavailable_within_the_timeout() {
        // Bound but never accepted on: the kernel completes the connection, and no greeting
        // ever comes. lettre's own timeout covers connecting only.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("bound address").port();
        let mailer = smtp_mailer(port, "300");
        let started = Instant::now();
        let err = mailer
            .send(&email("user@example.com", "Verify", "Open the link."))
            .await
            .expect_err("no answer");
        let elapsed = started.elapsed();
        assert!(matches!(err, MailError::Unavailable(_)), "{err:?}");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
            "gave up after {elapsed:?}"
        );
        drop(listener);
    }
}
