//! `events.v1.EventSink` over tonic: decode each envelope into a domain event (a refusal is
//! `INVALID_ARGUMENT` naming the field and the event's place in the batch), call the use case,
//! map errors through service-kit's one table.

use proto::events::v1::event_sink_server::EventSink;
use proto::events::v1::{DeliverRequest, DeliverResponse, Envelope};
use service_kit::grpc::invalid_field;
use service_kit::grpc_tls::CallerProcess;
use service_kit::proto_time::from_timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{IncomingEvent, check_batch_size, not_the_callers};
use crate::service::Events;

pub struct EventSinkGrpc {
    events: Events,
}

impl EventSinkGrpc {
    pub fn new(events: Events) -> Self {
        Self { events }
    }
}

fn decode(index: usize, e: &Envelope) -> Result<IncomingEvent, Status> {
    IncomingEvent::new(
        &e.event_id,
        &e.producer,
        &e.event_type,
        from_timestamp(e.occurred_at.as_ref()),
        &e.traceparent,
        &e.payload,
    )
    .map_err(|why| invalid_field(why.field(), &format!("events[{index}]: {why}")))
}

#[tonic::async_trait]
impl EventSink for EventSinkGrpc {
    async fn deliver(&self, request: Request<DeliverRequest>) -> Result<Response<DeliverResponse>, Status> {
        let caller = request.extensions().get::<CallerProcess>().map(|c| c.0.clone());
        let envelopes = request.into_inner().events;
        check_batch_size(envelopes.len()).map_err(|why| invalid_field("events", &why.to_string()))?;
        let events = envelopes
            .iter()
            .enumerate()
            .map(|(i, e)| decode(i, e))
            .collect::<Result<Vec<_>, _>>()?;
        // A service delivers its own events: one that names another producer is refused whole,
        // before anything is stored, so no caller can pass its events off as another's.
        if let Some(i) = not_the_callers(caller.as_deref(), &events) {
            tracing::warn!(
                caller = caller.as_deref().unwrap_or_default(),
                producer = events[i].producer.as_str(),
                "refused a delivery: the events name a producer other than the caller"
            );
            return Err(service_kit::errors::status(
                service_kit::errors::ErrorCode::Forbidden,
                format!(
                    "events[{i}]: this caller may not deliver {} events",
                    events[i].producer.as_str()
                ),
            ));
        }
        let ingested = self.events.ingest(events).await.map_err(|e| e.into_status())?;
        Ok(Response::new(DeliverResponse {
            accepted: ingested.accepted,
            duplicates: ingested.duplicates,
        }))
    }
}
