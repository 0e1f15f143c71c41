//! PNG without its metadata: chunks are walked as they stream and only those a decoder needs to
//! show the same pixels (critical chunks, colour, transparency, physical size, animation) are
//! kept; text (tEXt, zTXt, iTXt), EXIF (eXIf), time (tIME) and every chunk we do not know are
//! dropped. Image data is copied byte for byte. Anything after IEND is refused.

use super::{Machine, Refusal, Step};

const KIND: &str = "PNG";
const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// Chunks that stay. Critical ones first; an unknown critical chunk is refused.
const CRITICAL: [&[u8; 4]; 4] = [b"IHDR", b"PLTE", b"IDAT", b"IEND"];
const KEPT_ANCILLARY: [&[u8; 4]; 16] = [
    b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP", b"mDCV", b"cLLI", b"bKGD", b"hIST", b"pHYs",
    b"sPLT", b"acTL", b"fcTL", b"fdAT",
];

#[derive(Default, Clone, Copy)]
enum State {
    #[default]
    Signature,
    /// A chunk's length and type come next; `first` until IHDR was seen.
    Header {
        first: bool,
    },
    End,
}

#[derive(Default)]
pub struct Png {
    state: State,
}

fn malformed(why: &'static str) -> Refusal {
    Refusal::malformed(KIND, why)
}

impl Machine for Png {
    const KIND: &'static str = KIND;
    const AFTER_END: &'static str = "data after the PNG IEND chunk";

    fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    fn step(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<Step, Refusal> {
        match self.state {
            State::Signature => {
                if rest.len() < SIGNATURE.len() {
                    return Ok(Step::More);
                }
                if &rest[..8] != SIGNATURE {
                    return Err(malformed("bad signature"));
                }
                out.extend_from_slice(SIGNATURE);
                self.state = State::Header { first: true };
                Ok(Step::Took(8))
            }
            State::Header { first } => {
                if rest.len() < 8 {
                    return Ok(Step::More);
                }
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                if len > 0x7fff_ffff {
                    return Err(malformed("chunk length over 2^31-1"));
                }
                let kind: &[u8; 4] = rest[4..8].try_into().expect("four bytes");
                if !kind.iter().all(u8::is_ascii_alphabetic) {
                    return Err(malformed("chunk type is not four letters"));
                }
                if first != (kind == b"IHDR") {
                    return Err(malformed("IHDR must come first, once"));
                }
                let critical = kind[0].is_ascii_uppercase();
                if critical && !CRITICAL.contains(&kind) {
                    return Err(malformed("unknown critical chunk"));
                }
                let keep = critical || KEPT_ANCILLARY.contains(&kind);
                if keep {
                    out.extend_from_slice(&rest[..8]);
                }
                self.state = if kind == b"IEND" {
                    State::End
                } else {
                    State::Header { first: false }
                };
                // The chunk's data and its CRC.
                Ok(Step::Pass {
                    took: 8,
                    len: len as usize + 4,
                    keep,
                })
            }
            // Framed stops before this; bytes here would be after the end all the same.
            State::End => Err(Refusal::Polyglot(Self::AFTER_END)),
        }
    }
}
