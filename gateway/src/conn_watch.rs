//! Cuts off connections that hold a slot without a request being served, however busy the client
//! keeps them.
//!
//! actix-web bounds the first request's headers (`HEADER_READ_TIMEOUT_MS`, answered 408) and a
//! silent keep-alive connection (`KEEP_ALIVE_SECONDS`), but not the headers of a later request on
//! the same HTTP/1.1 connection: any byte stops the keep-alive timer, and its header timer runs
//! for the first request only. A client that sends one request, then the start of a second and
//! nothing more (slowloris), held its connection for ever (measured: still open after 70 s).
//!
//! So each connection gets a watchdog on its worker: once no request has been in flight on it for
//! `KEEP_ALIVE_SECONDS` + `HEADER_READ_TIMEOUT_MS` (actix closes an idle connection before then;
//! only a connection with an unfinished request lives that long), it shuts the socket down. A
//! request counts from the edge middleware seeing its headers until its response is handed back,
//! so a slow handler or a large upload (bounded by their own timeouts) is never cut.

use std::any::Any;
use std::cell::Cell;
use std::net::Shutdown;
use std::os::fd::AsFd as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use prometheus::{IntCounter, Registry};

/// The watchdogs' settings and counter; one for the server, cloned into every worker.
#[derive(Clone)]
pub struct ConnWatch {
    /// How long a connection may go without a request in flight.
    idle_limit: Duration,
    cut: IntCounter,
}

/// The state one connection shares with its watchdog (both on the connection's worker thread).
struct State {
    in_flight: Cell<u32>,
    /// When the last request ended (or the connection opened).
    idle_since: Cell<Instant>,
    closed: Cell<bool>,
    ended: tokio::sync::Notify,
}

/// Lives in the connection's data (`HttpRequest::conn_data`): dropped when the connection ends,
/// which stops its watchdog.
pub struct Connection(Rc<State>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.closed.set(true);
        self.0.ended.notify_one();
    }
}

/// A request in flight on a connection, from its headers until its response is handed back
/// (or the request is dropped, when the client goes away).
pub struct Busy(Rc<State>);

impl Connection {
    pub fn busy(&self) -> Busy {
        self.0.in_flight.set(self.0.in_flight.get() + 1);
        Busy(self.0.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get().saturating_sub(1));
        self.0.idle_since.set(Instant::now());
    }
}

impl ConnWatch {
    pub fn new(keep_alive: Duration, header_timeout: Duration, registry: &Registry) -> prometheus::Result<Self> {
        let cut = service_kit::metrics::register(
            registry,
            IntCounter::new(
                "http_connections_cut_total",
                "Connections shut down for holding a slot without a request in flight (an unfinished \
                 request after keep-alive + header timeout)",
            )?,
        )?;
        Ok(Self {
            idle_limit: keep_alive + header_timeout,
            cut,
        })
    }

    /// For `HttpServer::on_connect`: starts the connection's watchdog. `io` is the TLS stream, or
    /// the TCP stream when serving plain HTTP.
    pub fn on_connect(&self, io: &dyn Any, data: &mut Extensions) {
        let tcp = io
            .downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
            .map(|tls| tls.get_ref().0)
            .or_else(|| io.downcast_ref::<TcpStream>());
        // A second descriptor of the same socket, for the watchdog to shut it down with; it is
        // closed when the watchdog ends, which the connection's end triggers.
        let Some(socket) = tcp
            .and_then(|tcp| tcp.as_fd().try_clone_to_owned().ok())
            .map(std::net::TcpStream::from)
        else {
            tracing::warn!("a connection of an unexpected kind is not watched for idleness");
            return;
        };
        let state = Rc::new(State {
            in_flight: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            closed: Cell::new(false),
            ended: tokio::sync::Notify::new(),
        });
        data.insert(Connection(state.clone()));
        actix_web::rt::spawn(watch(state, socket, self.idle_limit, self.cut.clone()));
    }
}

async fn watch(state: Rc<State>, socket: std::net::TcpStream, idle_limit: Duration, cut: IntCounter) {
    loop {
        let deadline = if state.in_flight.get() > 0 {
            Instant::now() + idle_limit
        } else {
            state.idle_since.get() + idle_limit
        };
        tokio::select! {
            () = state.ended.notified() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
        if state.closed.get() {
            return;
        }
        if state.in_flight.get() == 0 && state.idle_since.get().elapsed() >= idle_limit {
            // Counted first: the client sees the close the moment the socket is shut down, and
            // may read the counter (through another worker) before this thread runs again.
            cut.inc();
            // The connection's own reads and writes now fail, and actix closes it.
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
    }
}
