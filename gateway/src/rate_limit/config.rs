//! Rate-limit policies: built-in defaults, then an optional TOML file (`RATE_LIMIT_CONFIG_FILE`,
//! e.g. a Kubernetes ConfigMap), then environment variables. A setting given both in the file and
//! by its variable is refused rather than one silently hiding the other, and so is a key the file
//! does not know (a typo must not leave a limit at its default). The gateway checks the file for
//! changes (`watch_policy_file`) and puts a valid new version in force without a restart.
//!
//! `gateway/rate-limits.example.toml` lists every key with its default and its variable.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use service_kit::config::{Env, Environment};

use super::gcra::Quota;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    Local,
    Open,
    Closed,
}

impl FailureMode {
    /// As configured (`RATE_LIMIT_FAILURE_MODE`) and as the metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// A named limit.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: &'static str,
    pub quota: Quota,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.quota;
        write!(f, "{}/{}s burst {}", q.limit, q.window.as_secs(), q.burst)
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub failure_mode: FailureMode,
    pub redis_timeout: Duration,
    pub auth: Policy,
    /// `AUTH_RATE_LIMIT_SKIP_SUCCESSFUL`: the `auth` policy counts only failed attempts (status
    /// 400 and up), as the old deployment's "skip successful requests" did.
    pub auth_skip_successful: bool,
    pub api: Policy,
    pub events: Policy,
    pub global: Policy,
    /// `RATE_LIMIT_ABUSE_THRESHOLD` refusals of one address within `RATE_LIMIT_ABUSE_WINDOW`
    /// raise one `rate_limit_abuse` security event.
    pub abuse_threshold: u64,
    pub abuse_window: Duration,
    /// The file the policies came from, if any, and the text they were read from.
    pub source: Option<String>,
    pub source_text: Option<String>,
    /// `RATE_LIMIT_CONFIG_RELOAD_SECONDS`: how often the file is checked for changes.
    pub reload_every: Duration,
}

const FILE_VAR: &str = "RATE_LIMIT_CONFIG_FILE";

impl RateLimitConfig {
    pub fn from_env(env: &Env, environment: Environment) -> Self {
        Self::build(env, environment, None)
    }

    /// The same, with the policy file's text already read (a reload parses exactly what it saw).
    pub fn from_file_text(env: &Env, environment: Environment, text: String) -> Self {
        Self::build(env, environment, Some(text))
    }

    fn build(env: &Env, environment: Environment, text: Option<String>) -> Self {
        let enabled = env.bool_or("RATE_LIMIT_ENABLED", true);
        if !enabled && environment == Environment::Production {
            env.problem(
                "RATE_LIMIT_ENABLED",
                "=false is for benchmarks only and is refused when APP_ENV=production",
            );
        }
        let settings = Settings::new(env, text);
        let failure_mode = match settings.read("RATE_LIMIT_FAILURE_MODE", "failure_mode", "local", |e, n, d| {
            e.one_of(n, d, &["local", "open", "closed"])
        }) {
            "open" => FailureMode::Open,
            "closed" => FailureMode::Closed,
            _ => FailureMode::Local,
        };
        // `PREFIX` + RATE_LIMIT_MAX_REQUESTS / _WINDOW / _BURST, or `[table]` in the file.
        let policy = |name: &'static str, prefix: &str, limit: u32, window: u64, burst: u32| {
            let var = |suffix: &str| format!("{prefix}RATE_LIMIT_{suffix}");
            let limit = settings.int(
                &var("MAX_REQUESTS"),
                &format!("{name}.max_requests"),
                limit,
                1,
                1_000_000,
            );
            let window = settings.int(&var("WINDOW"), &format!("{name}.window_seconds"), window, 1, 86_400);
            let burst = settings.int(&var("BURST"), &format!("{name}.burst"), burst, 1, 1_000_000);
            let quota = Quota {
                limit,
                window: Duration::from_secs(window),
                burst,
            };
            if quota.capacity_us() > Quota::MAX_CAPACITY_US {
                settings.env.problem(
                    &var("BURST"),
                    format!(
                        "(or {name}.burst in {FILE_VAR}): a burst of {burst} at {limit} per {window} s takes \
                         more than 10 years to earn back; lower the burst or the window"
                    ),
                );
            }
            Policy { name, quota }
        };
        let config = Self {
            enabled,
            failure_mode,
            redis_timeout: Duration::from_millis(settings.int(
                "RATE_LIMIT_REDIS_TIMEOUT_MS",
                "redis_timeout_ms",
                50,
                1,
                5000,
            )),
            auth: policy("auth", "AUTH_", 5, 60, 3),
            auth_skip_successful: settings.read(
                "AUTH_RATE_LIMIT_SKIP_SUCCESSFUL",
                "auth.skip_successful",
                false,
                Env::bool_or,
            ),
            api: policy("api", "", 100, 60, 20),
            events: policy("events", "EVENTS_", 30, 60, 10),
            global: policy("global", "GLOBAL_", 2000, 300, 2000),
            abuse_threshold: settings.int("RATE_LIMIT_ABUSE_THRESHOLD", "abuse.threshold", 20, 1, 1_000_000),
            abuse_window: Duration::from_secs(settings.int(
                "RATE_LIMIT_ABUSE_WINDOW",
                "abuse.window_seconds",
                60,
                1,
                86_400,
            )),
            source: settings.file.as_ref().map(|f| f.path.clone()),
            source_text: settings.file.as_ref().map(|f| f.text.clone()),
            reload_every: env.seconds_in("RATE_LIMIT_CONFIG_RELOAD_SECONDS", 10, 1, 3600),
        };
        settings.finish();
        config
    }
}

impl RateLimitConfig {
    /// One log line with the policies in force.
    pub fn log(&self, message: &'static str) {
        tracing::info!(
            auth = %self.auth,
            api = %self.api,
            events = %self.events,
            global = %self.global,
            auth_skip_successful = self.auth_skip_successful,
            failure_mode = ?self.failure_mode,
            abuse_threshold = self.abuse_threshold,
            file = self.source.as_deref().unwrap_or("none"),
            "{message}"
        );
    }
}

/// The policy file, flattened to `table.key` → value so that [`Env`]'s checks (ranges, words,
/// booleans) apply to it unchanged.
struct PolicyFile {
    path: String,
    text: String,
    values: Env,
    keys: Vec<String>,
}

impl PolicyFile {
    fn load(env: &Env, path: String, text: Option<String>) -> Option<Self> {
        let problem = |what: String| env.problem(FILE_VAR, format!("({path}) {what}"));
        let text = match text.map_or_else(|| std::fs::read_to_string(&path), Ok) {
            Ok(text) => text,
            Err(e) => {
                problem(format!("cannot be read: {e}"));
                return None;
            }
        };
        let table: toml::Table = match toml::from_str(&text) {
            Ok(table) => table,
            Err(e) => {
                problem(format!("is not valid TOML: {}", e.message()));
                return None;
            }
        };
        let mut flat = Vec::new();
        for (key, value) in table {
            // `"api.burst" = 5` would collide with `[api] burst = 5`; only tables nest.
            if key.contains('.') {
                problem(format!(
                    "has a quoted key with a dot ({key:?}); write it as a [table] key"
                ));
                continue;
            }
            match value {
                toml::Value::Table(inner) => {
                    for (inner_key, value) in inner {
                        flat.push((format!("{key}.{inner_key}"), value));
                    }
                }
                value => flat.push((key, value)),
            }
        }
        let mut values = Vec::new();
        for (key, value) in flat {
            match value {
                toml::Value::String(s) => values.push((key, s)),
                toml::Value::Integer(i) => values.push((key, i.to_string())),
                toml::Value::Float(f) => values.push((key, f.to_string())),
                toml::Value::Boolean(b) => values.push((key, b.to_string())),
                _ => problem(format!("{key} must be a number, true/false or a word")),
            }
        }
        Some(Self {
            keys: values.iter().map(|(k, _)| k.clone()).collect(),
            values: Env::from_map(values),
            path,
            text,
        })
    }
}

/// Reads each setting from the file, then from its variable.
struct Settings<'a> {
    env: &'a Env,
    file: Option<PolicyFile>,
    read_keys: RefCell<BTreeSet<String>>,
}

impl<'a> Settings<'a> {
    fn new(env: &'a Env, text: Option<String>) -> Self {
        let file = env
            .optional_string(FILE_VAR)
            .and_then(|path| PolicyFile::load(env, path, text));
        Self {
            env,
            file,
            read_keys: RefCell::new(BTreeSet::new()),
        }
    }

    /// `read(source, name, default)` on the file (under `key`), whose value becomes the default of
    /// the variable `var`.
    fn read<T: Copy>(&self, var: &str, key: &str, default: T, read: impl Fn(&Env, &str, T) -> T) -> T {
        self.read_keys.borrow_mut().insert(key.to_owned());
        let Some(file) = &self.file else {
            return read(self.env, var, default);
        };
        if file.values.optional_string(key).is_some() && self.env.optional_string(var).is_some() {
            self.env.problem(
                var,
                format!("is set and {FILE_VAR} ({}) sets {key} too; set only one", file.path),
            );
            return default;
        }
        let default = read(&file.values, key, default);
        read(self.env, var, default)
    }

    fn int<T>(&self, var: &str, key: &str, default: T, min: T, max: T) -> T
    where
        T: std::str::FromStr + PartialOrd + Copy + fmt::Display,
    {
        self.read(var, key, default, |e, n, d| e.int_in(n, d, min, max))
    }

    /// Reports the file's own problems and the keys nothing read.
    fn finish(self) {
        let Some(file) = self.file else { return };
        let read = self.read_keys.into_inner();
        for key in file.keys.iter().filter(|k| !read.contains(*k)) {
            let known: Vec<&str> = read.iter().map(String::as_str).collect();
            self.env.problem(
                FILE_VAR,
                format!("({}) has an unknown key {key} (known: {})", file.path, known.join(", ")),
            );
        }
        if let Err(e) = file.values.finish() {
            for p in e.problems() {
                self.env.problem(FILE_VAR, format!("({}) {p}", file.path));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy file on disk, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn with_file(toml: &str, vars: &[(&str, &str)]) -> (Result<RateLimitConfig, String>, TempFile) {
        let file = TempFile(std::env::temp_dir().join(format!("rate-limits-{}.toml", uuid::Uuid::new_v4())));
        std::fs::write(&file.0, toml).expect("write the policy file");
        let mut all: Vec<(String, String)> = vec![(FILE_VAR.into(), file.0.to_string_lossy().into_owned())];
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let env = Env::from_map(all);
        let config = RateLimitConfig::from_env(&env, Environment::Test);
        (env.finish().map(|()| config).map_err(|e| e.to_string()), file)
    }

    #[test]
    fn without_a_file_the_defaults_and_variables_hold() {
        let env = Env::from_map([("AUTH_RATE_LIMIT_BURST", "4")]);
        let config = RateLimitConfig::from_env(&env, Environment::Test);
        env.finish().expect("valid");
        assert_eq!(config.auth.to_string(), "5/60s burst 4");
        assert_eq!(config.api.to_string(), "100/60s burst 20");
        assert_eq!(config.global.to_string(), "2000/300s burst 2000");
        assert_eq!(config.source, None);
    }

    #[test]
    fn a_burst_that_takes_more_than_ten_years_to_earn_back_is_refused() {
        // One a day with a burst of 4000: eleven years. The script's times would leave the range
        // Lua's doubles hold exactly.
        let env = Env::from_map([
            ("EVENTS_RATE_LIMIT_MAX_REQUESTS", "1"),
            ("EVENTS_RATE_LIMIT_WINDOW", "86400"),
            ("EVENTS_RATE_LIMIT_BURST", "4000"),
        ]);
        let _ = RateLimitConfig::from_env(&env, Environment::Test);
        let err = env.finish().expect_err("refused").to_string();
        assert!(
            err.contains("EVENTS_RATE_LIMIT_BURST") && err.contains("more than 10 years"),
            "{err}"
        );
        // Three thousand of them (eight years) are fine, and so is a million a second.
        let env = Env::from_map([
            ("EVENTS_RATE_LIMIT_MAX_REQUESTS", "1"),
            ("EVENTS_RATE_LIMIT_WINDOW", "86400"),
            ("EVENTS_RATE_LIMIT_BURST", "3000"),
            ("GLOBAL_RATE_LIMIT_MAX_REQUESTS", "1000000"),
            ("GLOBAL_RATE_LIMIT_WINDOW", "1"),
        ]);
        let config = RateLimitConfig::from_env(&env, Environment::Test);
        env.finish().expect("valid");
        assert_eq!(config.global.quota.emission_us(), 1);
    }

    #[test]
    fn the_file_sets_policies_and_variables_fill_in_the_rest() {
        let (config, _file) = with_file(
            "failure_mode = \"closed\"\nredis_timeout_ms = 80\n\
             [auth]\nmax_requests = 10\nwindow_seconds = 120\nskip_successful = true\n\
             [events]\nburst = 2\n[abuse]\nthreshold = 7\n",
            &[("GLOBAL_RATE_LIMIT_MAX_REQUESTS", "500")],
        );
        let config = config.expect("valid");
        assert_eq!(config.failure_mode, FailureMode::Closed);
        assert_eq!(config.redis_timeout, Duration::from_millis(80));
        assert_eq!(config.auth.to_string(), "10/120s burst 3");
        assert!(config.auth_skip_successful);
        assert_eq!(config.events.to_string(), "30/60s burst 2");
        assert_eq!(config.global.to_string(), "500/300s burst 2000");
        assert_eq!(config.abuse_threshold, 7);
        assert!(config.source.is_some());
    }

    /// The example file operators copy states exactly the built-in defaults.
    #[test]
    fn the_example_file_is_valid_and_states_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/rate-limits.example.toml");
        let env = Env::from_map([(FILE_VAR, example)]);
        let from_file = RateLimitConfig::from_env(&env, Environment::Test);
        env.finish().expect("the example is valid");
        let builtin = RateLimitConfig::from_env(&Env::default(), Environment::Test);
        assert_eq!(from_file.source.as_deref(), Some(example));
        assert_eq!(
            format!(
                "{:?}",
                RateLimitConfig {
                    source: None,
                    source_text: None,
                    ..from_file
                }
            ),
            format!("{builtin:?}")
        );
    }

    #[test]
    fn a_setting_in_both_places_is_refused() {
        let (err, _file) = with_file("[api]\nmax_requests = 50\n", &[("RATE_LIMIT_MAX_REQUESTS", "60")]);
        let err = err.expect_err("conflict");
        assert!(
            err.contains("RATE_LIMIT_MAX_REQUESTS is set and RATE_LIMIT_CONFIG_FILE (")
                && err.contains("sets api.max_requests too; set only one"),
            "{err}"
        );
    }

    #[test]
    fn typos_bad_values_and_bad_files_are_refused() {
        let (err, _file) = with_file(
            "[api]\nmax_request = 50\nburst = 0\n[global]\nwindow_seconds = \"soon\"\nfailure_mode = \"open\"\n",
            &[],
        );
        let err = err.expect_err("four problems");
        assert!(err.contains("unknown key api.max_request (known:"), "{err}");
        assert!(err.contains("unknown key global.failure_mode"), "{err}");
        assert!(
            err.contains("api.burst must be an integer in 1..=1000000, got 0"),
            "{err}"
        );
        assert!(
            err.contains("global.window_seconds must be an integer in 1..=86400"),
            "{err}"
        );

        let (err, _file) = with_file("[api\nmax_requests = 5\n", &[]);
        assert!(err.expect_err("syntax").contains("is not valid TOML"));
        let (err, _file) = with_file("\"api.burst\" = 4\n[api]\nburst = 5\n", &[]);
        assert!(
            err.expect_err("dotted key")
                .contains("quoted key with a dot (\"api.burst\")")
        );
        let (err, _file) = with_file("[api]\nmax_requests = [1, 2]\n", &[]);
        assert!(
            err.expect_err("array")
                .contains("api.max_requests must be a number, true/false or a word")
        );

        let env = Env::from_map([(FILE_VAR, "/nonexistent/rate-limits.toml")]);
        RateLimitConfig::from_env(&env, Environment::Test);
        let err = env.finish().expect_err("missing file").to_string();
        assert!(err.contains("(/nonexistent/rate-limits.toml) cannot be read"), "{err}");
    }
}
