//! `events.v1.EventSink` over tonic: decode each envelope into a domain event (a refusal is
//! `INVALID_ARGUMENT` naming the field and the event's place in the batch), call the use case,
//! map errors through service-kit's one table.

use proto::events::v1::event_sink_server::EventSink;
use proto::events::v1::{DeliverRequest, DeliverResponse, Envelope};
use service_kit::grpc::invalid_field;
use service_kit::proto_time::from_timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{IncomingEvent, check_batch_size};
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
        let envelopes = request.into_inner().events;
        check_batch_size(envelopes.len()).map_err(|why| invalid_field("events", &why.to_string()))?;
        let events = envelopes
            .iter()
            .enumerate()
            .map(|(i, e)| decode(i, e))
            .collect::<Result<Vec<_>, _>>()?;
        let ingested = self.events.ingest(events).await.map_err(|e| e.into_status())?;
        Ok(Response::new(DeliverResponse {
            accepted: ingested.accepted,
            duplicates: ingested.duplicates,
        }))
    }
}
