//! Request bodies that are files: a raw body with its `Content-Type`, or the first file part of a
//! `multipart/form-data` body, streamed in chunks with the size limit applied as they arrive.
