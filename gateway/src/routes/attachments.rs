//! `/v1/reports/{id}/attachments…`: files streamed to and from reports-service.
