//! Attachments as bytes: what a file is (judged from its content), what may be stored, and images
//! with their metadata stripped. Pure rules over byte streams; no I/O of their own.
//!
//! [`Inspector`] takes an upload chunk by chunk and hands back the bytes to store, also chunk by
//! chunk: it never holds more than one incoming chunk and a few header bytes, so twenty
//! concurrent 10 MiB uploads cost kilobytes here, not 200 MiB. There is no widely used crate that
//! strips image metadata as a stream (img-parts and kamadak-exif read a whole file into memory),
//! so each format has a small state machine that reads its segment or chunk headers (`jpeg`,
//! `png`, `gif`), and one driver, [`Framed`], that carries a split header over to the next chunk,
//! passes the bodies between headers through unread and refuses bytes after the end marker;
//! `pdf` passes the bytes through while it looks for an embedded ZIP. Pixels are never decoded
//! or re-encoded: the image data is copied byte for byte.

mod gif;
mod jpeg;
mod pdf;
mod png;

use sha2::{Digest as _, Sha256};

/// The file types that may ever be stored; `ALLOWED_FILE_TYPES` picks among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Jpeg,
    Png,
    Gif,
    Pdf,
}

impl FileType {
    pub const ALL: [FileType; 4] = [Self::Jpeg, Self::Png, Self::Gif, Self::Pdf];

    /// The media type, as stored and served.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Pdf => "application/pdf",
        }
    }

    /// The short name `ALLOWED_FILE_TYPES` lists.
    pub fn name(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Pdf => "pdf",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The type a client declared (`Content-Type` without parameters), if it is one of ours.
    pub fn from_declared(media_type: &str) -> Option<Self> {
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        match media_type.to_ascii_lowercase().as_str() {
            "image/jpeg" | "image/jpg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/gif" => Some(Self::Gif),
            "application/pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    /// The type the first bytes show (magic numbers, by the `infer` crate).
    fn sniff(head: &[u8]) -> Option<Self> {
        match infer::get(head)?.mime_type() {
            "image/jpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/gif" => Some(Self::Gif),
            "application/pdf" => Some(Self::Pdf),
            _ => None,
        }
    }
}

/// Why an upload is refused. Each is a client's mistake (a 4xx naming the field at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the body is not as long as its declared size")]
    SizeMismatch,
    #[error("the file is not one of the allowed types ({allowed})")]
    TypeNotAllowed { allowed: String },
    #[error("the file's content is {sniffed}, not the declared {declared}")]
    TypeMismatch { declared: String, sniffed: &'static str },
    #[error("the file is also another kind of file ({0})")]
    Polyglot(&'static str),
    #[error("the file is not a well-formed {kind}: {why}")]
    Malformed { kind: &'static str, why: &'static str },
    #[error("the file name must be a plain name (no path, no control characters, at most 255 bytes)")]
    FileName,
}

impl Refusal {
    /// The label of `attachment_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge { .. } => "too_large",
            Self::SizeMismatch => "size_mismatch",
            Self::TypeNotAllowed { .. } => "type_not_allowed",
            Self::TypeMismatch { .. } => "type_mismatch",
            Self::Polyglot(_) => "polyglot",
            Self::Malformed { .. } => "malformed",
            Self::FileName => "file_name",
        }
    }

    /// Every reason, so each counter exists (at 0) from the start.
    pub const REASONS: [&'static str; 9] = [
        "empty",
        "too_large",
        "size_mismatch",
        "type_not_allowed",
        "type_mismatch",
        "polyglot",
        "malformed",
        "file_name",
        "too_many",
    ];

    fn malformed(kind: &'static str, why: &'static str) -> Self {
        Self::Malformed { kind, why }
    }
}

/// A file name as the client sent it: a plain name or nothing. The name is never used to store
/// anything; refusing paths keeps a client from believing it chose where the file goes.
pub fn check_file_name(name: &str) -> Result<(), Refusal> {
    let bad = name.len() > 255
        || name.contains(['/', '\\'])
        || name == "."
        || name.contains("..")
        || name.chars().any(char::is_control);
    if bad { Err(Refusal::FileName) } else { Ok(()) }
}

/// What the upload must satisfy.
#[derive(Debug, Clone)]
pub struct Rules {
    pub allowed: Vec<FileType>,
    pub max_size: u64,
}

/// What was stored, once the whole upload passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub file_type: FileType,
    /// Bytes stored (after stripping).
    pub size: u64,
    /// Lower-case hex SHA-256 of the stored bytes.
    pub sha256: String,
}

/// The bytes a sniff needs: the longest magic number we match (PNG's 8) with room to spare.
const SNIFF_LEN: usize = 16;

/// One format's filter: takes the upload's bytes, appends the bytes to store to `out`.
trait Filter: Send {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal>;
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), Refusal>;
}

/// Judges one upload as it streams: size, type, polyglots, metadata. Feed it every chunk with
/// [`Inspector::push`] and store what it answers; [`Inspector::finish`] says whether the whole is
/// acceptable (if not, what was stored must be thrown away).
pub struct Inspector {
    rules: Rules,
    declared: Option<FileType>,
    declared_text: String,
    declared_size: Option<u64>,
    received: u64,
    head: Vec<u8>,
    filter: Option<(FileType, Box<dyn Filter>)>,
    stored: u64,
    hash: Sha256,
}

impl Inspector {
    /// `declared_type` is the client's `Content-Type`; `declared_size` its `Content-Length` (0:
    /// none), which the body must match exactly. No type, or `application/octet-stream` (what a
    /// multipart part without its own `Content-Type` amounts to), declares nothing: the content
    /// alone is judged. Any other declared type must be allowed and match the content.
    pub fn new(rules: Rules, declared_type: &str, declared_size: u64) -> Result<Self, Refusal> {
        let declared_text = declared_type.split(';').next().unwrap_or_default().trim().to_owned();
        let undeclared = declared_text.is_empty() || declared_text.eq_ignore_ascii_case("application/octet-stream");
        let declared = FileType::from_declared(declared_type);
        let allowed = || rules.allowed.iter().map(|t| t.mime()).collect::<Vec<_>>().join(", ");
        if !undeclared && !declared.is_some_and(|d| rules.allowed.contains(&d)) {
            return Err(Refusal::TypeNotAllowed { allowed: allowed() });
        }
        if declared_size > rules.max_size {
            return Err(Refusal::TooLarge { limit: rules.max_size });
        }
        Ok(Self {
            rules,
            declared,
            declared_text,
            declared_size: (declared_size > 0).then_some(declared_size),
            received: 0,
            head: Vec::with_capacity(SNIFF_LEN),
            filter: None,
            stored: 0,
            hash: Sha256::new(),
        })
    }

    /// The bytes to store for `chunk` (possibly none yet).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Refusal> {
        self.received += chunk.len() as u64;
        if self.received > self.rules.max_size {
            return Err(Refusal::TooLarge {
                limit: self.rules.max_size,
            });
        }
        if self.declared_size.is_some_and(|d| self.received > d) {
            return Err(Refusal::SizeMismatch);
        }
        let mut out = Vec::with_capacity(chunk.len() + SNIFF_LEN);
        match &mut self.filter {
            Some((_, filter)) => filter.push(chunk, &mut out)?,
            None => {
                self.head.extend_from_slice(chunk);
                if self.head.len() >= SNIFF_LEN {
                    self.start(&mut out)?;
                }
            }
        }
        self.account(&out);
        Ok(out)
    }

    /// The last bytes to store, and what the file was judged to be.
    pub fn finish(mut self) -> Result<(Vec<u8>, Judged), Refusal> {
        if self.received == 0 {
            return Err(Refusal::Empty);
        }
        if self.declared_size.is_some_and(|d| self.received != d) {
            return Err(Refusal::SizeMismatch);
        }
        let mut out = Vec::new();
        if self.filter.is_none() {
            self.start(&mut out)?;
        }
        let (file_type, filter) = self.filter.as_mut().expect("started above");
        let file_type = *file_type;
        filter.finish(&mut out)?;
        self.account(&out);
        Ok((
            out,
            Judged {
                file_type,
                size: self.stored,
                sha256: hex(&self.hash.finalize()),
            },
        ))
    }

    fn account(&mut self, out: &[u8]) {
        self.stored += out.len() as u64;
        self.hash.update(out);
    }

    fn start(&mut self, out: &mut Vec<u8>) -> Result<(), Refusal> {
        let allowed = || {
            self.rules
                .allowed
                .iter()
                .map(|t| t.mime())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sniffed = FileType::sniff(&self.head).ok_or_else(|| Refusal::TypeNotAllowed { allowed: allowed() })?;
        if !self.rules.allowed.contains(&sniffed) {
            return Err(Refusal::TypeNotAllowed { allowed: allowed() });
        }
        if self.declared.is_some_and(|d| d != sniffed) {
            return Err(Refusal::TypeMismatch {
                declared: self.declared_text.clone(),
                sniffed: sniffed.mime(),
            });
        }
        let mut filter: Box<dyn Filter> = match sniffed {
            FileType::Jpeg => Box::new(Framed::<jpeg::Jpeg>::default()),
            FileType::Png => Box::new(Framed::<png::Png>::default()),
            FileType::Gif => Box::new(Framed::<gif::Gif>::default()),
            FileType::Pdf => Box::new(pdf::Pdf::default()),
        };
        let head = std::mem::take(&mut self.head);
        filter.push(&head, out)?;
        self.filter = Some((sniffed, filter));
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// What a [`Machine`] made of the start of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The next header is not all there yet: call again with more bytes.
    More,
    /// `n` bytes were read (those to keep are in `out`); 0 when only the state moved on.
    Took(usize),
    /// A header of `took` bytes was read, and `len` bytes of body follow that pass through
    /// unread: copied when `keep`, dropped otherwise. The machine is already in the state after
    /// the body.
    Pass { took: usize, len: usize, keep: bool },
}

/// A format's state machine over its segments: `step` reads one header (or a stretch of data it
/// must look at) at the start of `input` and appends the bytes to keep to `out`. Bodies it need
/// not read, and whatever comes after the end marker, are [`Framed`]'s business.
trait Machine: Default + Send {
    const KIND: &'static str;
    /// The polyglot refusal for bytes after the end marker.
    const AFTER_END: &'static str;
    /// `input` is never empty; the machine is never past its end marker.
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Step, Refusal>;
    /// Whether the end marker was read.
    fn ended(&self) -> bool;
}

/// A [`Machine`] fed chunk by chunk: the tail of a chunk that did not make a whole header waits
/// for the next one (a few bytes); bodies pass straight through, never held.
#[derive(Default)]
struct Framed<M> {
    machine: M,
    body: Body,
    carry: Vec<u8>,
}

/// The rest of a body being passed through.
#[derive(Default)]
struct Body {
    left: usize,
    keep: bool,
}

impl<M: Machine> Framed<M> {
    /// Consumes what it can of `input`; the bytes it leaves are the start of a header.
    fn walk(machine: &mut M, body: &mut Body, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Refusal> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            if body.left > 0 {
                let n = body.left.min(rest.len());
                if body.keep {
                    out.extend_from_slice(&rest[..n]);
                }
                body.left -= n;
                pos += n;
                if body.left > 0 {
                    return Ok(pos);
                }
                continue;
            }
            if rest.is_empty() {
                return Ok(pos);
            }
            if machine.ended() {
                return Err(Refusal::Polyglot(M::AFTER_END));
            }
            match machine.step(rest, out)? {
                Step::More => return Ok(pos),
                Step::Took(n) => pos += n,
                Step::Pass { took, len, keep } => {
                    pos += took;
                    *body = Body { left: len, keep };
                }
            }
        }
    }
}

impl<M: Machine> Filter for Framed<M> {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        let Self { machine, body, carry } = self;
        if carry.is_empty() {
            let used = Self::walk(machine, body, input, out)?;
            carry.extend_from_slice(&input[used..]);
        } else {
            carry.extend_from_slice(input);
            let used = Self::walk(machine, body, carry, out)?;
            carry.drain(..used);
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), Refusal> {
        if self.machine.ended() && self.body.left == 0 && self.carry.is_empty() {
            Ok(())
        } else {
            Err(Refusal::malformed(M::KIND, "ends before its end marker"))
        }
    }
}

#[cfg(test)]
mod tests;
