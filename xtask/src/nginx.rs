//! nginx as the benchmark's reference gateway: measured by the same load generator, on the same
//! CPUs, with the same certificate, in the same run as ours, so that a figure of the stack can be
//! read against what one of the best gateways does on this very machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::devstack;

/// The reference's routes: the same trivial answer as our `/health`, without and with a per-IP
/// rate limit (in nginx's shared memory: nginx has no shared store such as our Redis), set high
/// enough never to refuse, like the benchmark's policies for our gateway.
pub const STATIC: &str = "/health";
pub const LIMITED: &str = "/health-limited";

/// An nginx we started, TLS on loopback; stopped on drop.
pub struct Nginx {
    pub port: u16,
    child: Child,
}

/// nginx's configuration: `workers` processes, keep-alive as our gateway's (30 s idle, no cap on
/// requests per connection: nginx's default of 1000 would make it re-handshake during the runs,
/// which ours does not), no access log (ours logs at `warn` in the benchmark).
pub fn config(dir: &Path, port: u16, cert: &Path, key: &Path, workers: usize) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 30s;
    keepalive_requests 1000000000;
    limit_req_zone $binary_remote_addr zone=per_ip:10m rate=1000000r/s;
    limit_req_status 429;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        default_type application/json;
        location = {STATIC} {{ return 200 '{{\"status\":\"ok\"}}'; }}
        location = {LIMITED} {{
            limit_req zone=per_ip burst=1000000 nodelay;
            return 200 '{{\"status\":\"ok\"}}';
        }}
    }}
}}
",
        cert = cert.display(),
        key = key.display(),
    )
}

impl Nginx {
    /// Installs nginx when missing (Debian's package), writes its configuration under `dir` and
    /// waits until it accepts connections. Its processes run on the CPUs of the calling thread.
    pub fn start(dir: &Path, port: u16, cert: &Path, key: &Path, workers: usize) -> anyhow::Result<Self> {
        let bin = program()?;
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(dir, port, cert, key, workers))?;
        let child = Command::new(&bin)
            // -e: errors before the configuration is read go here, not to /var/log/nginx.
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut nginx = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !devstack::reachable("127.0.0.1", port) {
            if let Some(status) = nginx.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({status}) before it listened on {port}: {log}");
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }

    /// "nginx/1.22.1", as `nginx -v` names itself.
    pub fn version(&self) -> String {
        program()
            .ok()
            .and_then(|bin| Command::new(bin).arg("-v").output().ok())
            .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
            .and_then(|text| Some(text.split_once("version: ")?.1.trim().to_owned()))
            .unwrap_or_else(|| "nginx".to_owned())
    }

    /// The master's pid: its workers are its children.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// nginx, installed from Debian's package when missing.
fn program() -> anyhow::Result<PathBuf> {
    devstack::program_or_install("nginx", "nginx")
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers, then itself.
        devstack::terminate(&mut self.child);
    }
}
