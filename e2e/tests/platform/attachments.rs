//! Attachments through the gateway: uploads judged by content, metadata stripped, encrypted at rest
//! in the file store (local and S3-compatible), streamed both ways (issue 18).
