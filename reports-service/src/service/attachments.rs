//! Use cases: adding a file to a report, and reading it back (for its reporter, or a moderator).

/// The attachment use cases (filled in by the attachments work of issue 18).
#[derive(Clone)]
pub struct Attachments;
