//! An S3-compatible server for tests: `moto` in server mode, installed from PyPI into a throwaway
//! virtual environment under target/ (like schemathesis), started on a free port.
//!
//! `Moto::start("bucket")` answers once the server takes requests and the bucket exists; the
//! server is stopped when the value is dropped. [`Moto::file_store_env`] is what reports-service
//! needs to keep its files there. Moto checks no signatures, so the tests read objects back with
//! plain HTTP ([`Moto::keys`], [`Moto::object`]).

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::devstack;

/// The moto every machine tests against (a new release arrives by a change of this line).
pub const VERSION: &str = "5.2.6";

/// The `moto_server` executable of the pinned moto, installed first when missing.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let root = crate::workspace_root().join("target").join("moto");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let lock = fs::File::create(root.join(".lock")).context("creating the moto lock file")?;
    lock.lock().context("locking the moto environment")?;
    let venv = root.join(format!("venv-{VERSION}"));
    let server = venv.join("bin").join("moto_server");
    let marker = venv.join(".installed");
    if marker.is_file() && server.is_file() {
        return Ok(server);
    }
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing the unfinished {}", venv.display()))?;
    }
    install(&venv)?;
    anyhow::ensure!(server.is_file(), "pip left no {}", server.display());
    fs::write(&marker, VERSION).context("marking the moto environment done")?;
    Ok(server)
}

fn install(venv: &Path) -> anyhow::Result<()> {
    let python = devstack::find_program("python3").context(
        "python3 is not installed: the S3 tests need it for moto (Debian: `apt-get install python3 python3-venv`)",
    )?;
    eprintln!("xtask: installing moto {VERSION} into {}", venv.display());
    let make = || devstack::output(Command::new(&python).args(["-m", "venv"]).arg(venv), "python3 -m venv");
    if make().is_err() {
        // Debian ships `venv` without `ensurepip` in a package of its own.
        let _ = fs::remove_dir_all(venv);
        devstack::install_package("python3-venv", "python3 -m venv")?;
        make()?;
    }
    devstack::output(
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("moto[server]=={VERSION}"),
        ]),
        &format!("pip install moto[server]=={VERSION} (is PyPI reachable?)"),
    )?;
    Ok(())
}

/// A running moto server with one bucket.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub bucket: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Installs moto when missing, starts it on a free port and makes `bucket`.
    pub fn start(bucket: &str) -> anyhow::Result<Self> {
        let server = ensure()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A port found free can be taken before moto binds it: then moto exits, try another.
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", server.display()))?;
            let mut moto = Self {
                child,
                port,
                bucket: bucket.to_owned(),
            };
            match moto.wait_ready(Duration::from_secs(60)) {
                Ok(()) => {
                    let (status, _) = moto.request("PUT", &format!("/{bucket}"))?;
                    anyhow::ensure!(status == 200, "moto answered {status} to creating bucket {bucket}");
                    return Ok(moto);
                }
                Err(e) if attempt < 3 && moto.child.try_wait()?.is_some() => {
                    eprintln!("xtask: moto exited during start-up ({e}); another port");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Polls until the server answers HTTP, or fails as soon as it exits.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto exited during start-up ({status})");
            }
            if self.request("GET", "/").is_ok() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!("moto did not answer on port {} within {timeout:?}", self.port);
            }
            // Connection refused comes back at once; a short pause keeps this from spinning.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `S3_ENDPOINT` of this server.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What reports-service needs to keep its files here, under `prefix`.
    pub fn file_store_env(&self, prefix: &str) -> Vec<(String, String)> {
        [
            ("FILE_STORE_URL", format!("s3://{}/{prefix}", self.bucket)),
            ("S3_ENDPOINT", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The keys of every object whose key starts with `prefix`.
    pub fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let (status, body) = self.request("GET", &format!("/{}?list-type=2&prefix={prefix}", self.bucket))?;
        anyhow::ensure!(status == 200, "listing the bucket: {status}");
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect())
    }

    /// Whether multipart uploads are still open (an upload that was neither completed nor aborted).
    pub fn open_uploads(&self) -> anyhow::Result<usize> {
        let (status, body) = self.request("GET", &format!("/{}?uploads", self.bucket))?;
        anyhow::ensure!(status == 200, "listing multipart uploads: {status}");
        Ok(String::from_utf8_lossy(&body).matches("<Upload>").count())
    }

    /// The bytes of object `key`.
    pub fn object(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let (status, body) = self.request("GET", &format!("/{}/{key}", self.bucket))?;
        anyhow::ensure!(status == 200, "reading {key}: {status}");
        Ok(body)
    }

    /// One HTTP/1.0 request (no chunked answers), its status and body.
    fn request(&self, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("an HTTP answer without a blank line")?;
        let head = String::from_utf8_lossy(&answer[..split]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("an HTTP answer without a status")?;
        Ok((status, answer[split + 4..].to_vec()))
    }
}
