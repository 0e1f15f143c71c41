//! A local fake SMTP relay for tests: it accepts every message on loopback and hands it to the
//! test, so mail flows (verification, password reset) are tested end to end without a real relay.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub recipients: Vec<String>,
    /// The DATA section (headers and body), dot-unstuffed, soft line breaks of quoted-printable
    /// bodies joined.
    pub data: String,
}

pub struct FakeSmtp {
    pub port: u16,
    rx: mpsc::UnboundedReceiver<Mail>,
}

impl FakeSmtp {
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = session(stream, tx).await;
                });
            }
        });
        Ok(Self { port, rx })
    }

    /// The next message, or None when none arrives within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Mail> {
        tokio::time::timeout(timeout, self.rx.recv()).await.ok().flatten()
    }

    /// True when no message is waiting right now.
    pub fn is_empty(&mut self) -> bool {
        self.rx.is_empty()
    }
}

async fn session(stream: tokio::net::TcpStream, tx: mpsc::UnboundedSender<Mail>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 fake-smtp ready\r\n").await?;
    let mut recipients = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => write.write_all(b"250-fake-smtp\r\n250 8BITMIME\r\n").await?,
            "MAIL" | "RSET" | "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "RCPT" => {
                let to = line
                    .split_once(':')
                    .map(|(_, a)| a.trim().trim_matches(['<', '>']).to_owned())
                    .unwrap_or_default();
                recipients.push(to);
                write.write_all(b"250 OK\r\n").await?;
            }
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                while let Some(l) = lines.next_line().await? {
                    if l == "." {
                        break;
                    }
                    let l = l.strip_prefix('.').unwrap_or(&l);
                    match l.strip_suffix('=') {
                        Some(soft) => data.push_str(soft),
                        None => {
                            data.push_str(l);
                            data.push('\n');
                        }
                    }
                }
                let _ = tx.send(Mail {
                    recipients: std::mem::take(&mut recipients),
                    data: data.replace("=3D", "="),
                });
                write.write_all(b"250 queued\r\n").await?;
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 not implemented\r\n").await?,
        }
    }
    Ok(())
}
