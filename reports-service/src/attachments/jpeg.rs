//! JPEG without its metadata: the marker segments are walked as they stream; APP1 (EXIF, XMP),
//! APP13 (IPTC, Photoshop), COM and every other application segment are dropped, except what a
//! decoder needs to show the same pixels: APP0 (JFIF/JFXX), APP2 `ICC_PROFILE` and APP14 `Adobe`
//! (colour transform). Tables, frame headers and the entropy-coded scans are copied byte for byte.
//! Anything after the end marker is refused: that is where a ZIP or a script rides along.

use super::{Machine, Refusal, Step};

const KIND: &str = "JPEG";
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
/// Bytes of an application segment's payload that say what it is (`ICC_PROFILE\0` is 12).
const SIGNATURE_LEN: usize = 12;

#[derive(Default, Clone, Copy)]
enum State {
    #[default]
    Start,
    /// Between segments: a marker comes next.
    Marker,
    /// Entropy-coded data, up to the next marker that is not a restart or a stuffed 0xFF.
    Scan,
    End,
}

#[derive(Default)]
pub struct Jpeg {
    state: State,
}

fn malformed(why: &'static str) -> Refusal {
    Refusal::malformed(KIND, why)
}

/// Whether a segment with `marker` stays, given the start of its payload.
fn keep(marker: u8, payload: &[u8]) -> bool {
    match marker {
        // JFIF only: a JFXX extension is a whole thumbnail image (with metadata of its own).
        0xE0 => payload.starts_with(b"JFIF\0"),
        0xE2 => payload.starts_with(b"ICC_PROFILE\0"),
        0xEE => payload.starts_with(b"Adobe"),
        // Other application segments (EXIF, XMP, IPTC, MPF, maker notes) and comments.
        0xE1 | 0xE3..=0xED | 0xEF | 0xFE => false,
        // Reserved markers (JPG, JPG0..JPG13): no decoder needs them, and they can carry anything.
        0xC8 | 0xF0..=0xFD => false,
        _ => true,
    }
}

impl Machine for Jpeg {
    const KIND: &'static str = KIND;
    const AFTER_END: &'static str = "data after the JPEG end marker";

    fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    fn step(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<Step, Refusal> {
        match self.state {
            State::Start => {
                if rest.len() < 2 {
                    return Ok(Step::More);
                }
                if rest[..2] != [0xFF, SOI] {
                    return Err(malformed("does not start with SOI"));
                }
                out.extend_from_slice(&rest[..2]);
                self.state = State::Marker;
                Ok(Step::Took(2))
            }
            State::Marker => {
                if rest.len() < 2 {
                    return Ok(Step::More);
                }
                if rest[0] != 0xFF {
                    return Err(malformed("expected a marker"));
                }
                let marker = rest[1];
                match marker {
                    // Fill bytes before a marker.
                    0xFF => Ok(Step::Took(1)),
                    0x00 | SOI => Err(malformed("unexpected marker")),
                    EOI => {
                        out.extend_from_slice(&rest[..2]);
                        self.state = State::End;
                        Ok(Step::Took(2))
                    }
                    // Standalone markers (TEM, restarts) have no length.
                    0x01 | 0xD0..=0xD7 => {
                        out.extend_from_slice(&rest[..2]);
                        Ok(Step::Took(2))
                    }
                    _ => {
                        if rest.len() < 4 {
                            return Ok(Step::More);
                        }
                        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                        if len < 2 {
                            return Err(malformed("segment length below 2"));
                        }
                        let payload_len = len - 2;
                        let peek = payload_len.min(SIGNATURE_LEN);
                        if rest.len() < 4 + peek {
                            return Ok(Step::More);
                        }
                        let keep = keep(marker, &rest[4..4 + peek]);
                        if keep {
                            out.extend_from_slice(&rest[..4]);
                        }
                        self.state = if marker == SOS { State::Scan } else { State::Marker };
                        Ok(Step::Pass {
                            took: 4,
                            len: payload_len,
                            keep,
                        })
                    }
                }
            }
            State::Scan => match rest.iter().position(|&x| x == 0xFF) {
                None => {
                    out.extend_from_slice(rest);
                    Ok(Step::Took(rest.len()))
                }
                Some(ff) if ff > 0 => {
                    out.extend_from_slice(&rest[..ff]);
                    Ok(Step::Took(ff))
                }
                // At a 0xFF: stuffed, a restart, or the marker that ends the scan.
                Some(_) => match rest.get(1) {
                    None => Ok(Step::More),
                    Some(&next) if next == 0x00 || (0xD0..=0xD7).contains(&next) => {
                        out.extend_from_slice(&[0xFF, next]);
                        Ok(Step::Took(2))
                    }
                    Some(_) => {
                        self.state = State::Marker;
                        Ok(Step::Took(0))
                    }
                },
            },
            // Framed stops before this; bytes here would be after the end all the same.
            State::End => Err(Refusal::Polyglot(Self::AFTER_END)),
        }
    }
}
