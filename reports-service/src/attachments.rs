//! Attachments as bytes: what a file is (judged from its content), what may be stored, and images
//! with their metadata stripped. Pure rules over byte streams; no I/O of their own.
