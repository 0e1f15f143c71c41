//! gateway: the public HTTPS edge. REST for the phones, gRPC to the services. Wiring only.

mod app;
mod auth;
mod body;
mod client_ip;
mod config;
mod conn_watch;
mod edge;
mod error;
mod file_watch;
mod maintenance;
mod openapi;
mod query;
mod rate_limit;
mod redis_link;
mod revocation;
mod routes;
mod state;
mod tls;
mod upload;
mod upstream;

use std::process::ExitCode;

/// Every request allocates (headers, buffers, futures) across worker threads; under load glibc's
/// malloc spent about a sixth of the gateway's CPU (perf, `cargo xtask bench`), mimalloc less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use service_kit::config::Env;
use service_kit::shutdown::Shutdown;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "The public HTTPS edge: REST for the mobile apps, gRPC to the services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTPS (PORT, default 8443) and the admin port (METRICS_PORT, default 9090) until
    /// SIGTERM or Ctrl-C. Configuration is read from the environment; see README.md.
    Serve,
    /// Print the OpenAPI document and exit.
    Openapi,
    /// GET /health on the admin port (ADMIN_HOST, METRICS_PORT); exit 0 when it answers 200, 1
    /// otherwise. The image's HEALTHCHECK: it has no shell and no curl.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        use std::io::Write as _;
        use utoipa::OpenApi as _;
        let doc = openapi::ApiDoc::openapi().to_pretty_json().unwrap_or_default();
        let _ = writeln!(std::io::stdout(), "{doc}");
        return ExitCode::SUCCESS;
    }
    let env = Env::from_process();
    if let Command::Healthcheck = cli.command {
        let common = service_kit::config::CommonConfig::from_env(&env, "gateway", config::DEFAULT_ADMIN_PORT);
        return service_kit::service::healthcheck("gateway", env, common.admin_addr);
    }
    let config = config::GatewayConfig::from_env(&env);
    if let Err(e) = env.finish() {
        eprintln!("gateway: {e}");
        return ExitCode::from(2);
    }
    let Some(config) = config else {
        return ExitCode::from(2);
    };
    service_kit::telemetry::init("gateway", config.common.environment, &config.common.log);
    let runtime = match config.common.runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let app = app::Application::build(config).await?;
        app.run_until_stopped(Shutdown::on_signals()).await
    });
    service_kit::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gateway stopped with an error");
            ExitCode::FAILURE
        }
    }
}
