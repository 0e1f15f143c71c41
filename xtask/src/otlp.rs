//! A test OTLP/gRPC receiver: what the processes export when `OTEL_EXPORTER_OTLP_ENDPOINT` names
//! it, recorded span by span (service, name, trace id, span id, parent), so that a test can see a
//! trace cross the gateway and a service. Plain gRPC on a loopback port, stopped when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::sync::{oneshot, watch};

/// One span as a collector received it; ids in lowercase hex, `parent_span_id` "" for a root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceivedSpan {
    /// The exporting process's `service.name`.
    pub service: String,
    /// Its `service.version`.
    pub version: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// The span's attributes whose values are strings (`request_id`, ...).
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// The receiver; [`OtlpReceiver::endpoint`] goes into `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    received: watch::Receiver<usize>,
    _stop: oneshot::Sender<()>,
}

struct Recorder {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    received: watch::Sender<usize>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let attribute = |key: &str| {
                resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default()
            };
            let (service, version) = (attribute("service.name"), attribute("service.version"));
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                got.push(ReceivedSpan {
                    service: service.clone(),
                    version: version.clone(),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .filter_map(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Value::StringValue(s)) => Some((a.key.clone(), s.clone())),
                            _ => None,
                        })
                        .collect(),
                });
            }
        }
        let total = {
            let mut spans = self.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            spans.extend(got);
            spans.len()
        };
        self.received.send_replace(total);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    /// Listens on a free loopback port (on the current runtime) until dropped.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the OTLP receiver")?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (sender, received) = watch::channel(0);
        let recorder = Recorder {
            spans: spans.clone(),
            received: sender,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(recorder))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            spans,
            received,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until `check` finds what it looks for in the spans received (checked again at each
    /// export, no polling), or fails naming `what` after `timeout`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[ReceivedSpan]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut received = self.received.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            received.borrow_and_update();
            if let Some(found) = check(&self.spans()) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, received.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => anyhow::bail!("the OTLP receiver stopped while waiting for {what}"),
                Err(_) => anyhow::bail!("no {what} within {timeout:?}; received: {:#?}", self.spans()),
            }
        }
    }
}
