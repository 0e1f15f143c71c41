//! Attachments over gRPC: the upload stream (a header, then chunks) and the download stream.

use std::pin::Pin;

use futures_util::Stream;
use proto::reports::v1::{Attachment, DownloadAttachmentRequest, DownloadAttachmentResponse, UploadAttachmentRequest};
use tonic::{Request, Response, Status};

use crate::service::attachments::Attachments;

/// The download's message stream: `info`, then the bytes.
pub type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadAttachmentResponse, Status>> + Send + 'static>>;

fn not_yet() -> Status {
    Status::unimplemented("attachments are being built (issue 18)")
}

pub async fn upload(
    _attachments: &Attachments,
    _request: Request<tonic::Streaming<UploadAttachmentRequest>>,
) -> Result<Response<Attachment>, Status> {
    Err(not_yet())
}

pub async fn download(
    _attachments: &Attachments,
    _request: Request<DownloadAttachmentRequest>,
) -> Result<Response<DownloadStream>, Status> {
    Err(not_yet())
}
