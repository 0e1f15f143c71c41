//! JPEG without its metadata: the marker segments are walked as they stream; APP1 (EXIF, XMP),
//! APP13 (IPTC, Photoshop), COM and every other application segment are dropped, except what a
//! decoder needs to show the same pixels: APP0 (JFIF/JFXX), APP2 `ICC_PROFILE` and APP14 `Adobe`
//! (colour transform). Tables, frame headers and the entropy-coded scans are copied byte for byte.
//! Anything after the end marker is refused: that is where a ZIP or a script rides along.

use super::{Machine, Refusal};

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
    /// Inside a segment's payload, `left` bytes to go.
    Segment {
        keep: bool,
        left: usize,
        scan_after: bool,
    },
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

    fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    fn parse(&mut self, b: &[u8], out: &mut Vec<u8>) -> Result<usize, Refusal> {
        let mut pos = 0;
        loop {
            let rest = &b[pos..];
            match self.state {
                State::Start => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if rest[..2] != [0xFF, SOI] {
                        return Err(malformed("does not start with SOI"));
                    }
                    out.extend_from_slice(&rest[..2]);
                    pos += 2;
                    self.state = State::Marker;
                }
                State::Marker => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if rest[0] != 0xFF {
                        return Err(malformed("expected a marker"));
                    }
                    let marker = rest[1];
                    match marker {
                        // Fill bytes before a marker.
                        0xFF => pos += 1,
                        0x00 | SOI => return Err(malformed("unexpected marker")),
                        EOI => {
                            out.extend_from_slice(&rest[..2]);
                            pos += 2;
                            self.state = State::End;
                        }
                        // Standalone markers (TEM, restarts) have no length.
                        0x01 | 0xD0..=0xD7 => {
                            out.extend_from_slice(&rest[..2]);
                            pos += 2;
                        }
                        _ => {
                            if rest.len() < 4 {
                                return Ok(pos);
                            }
                            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                            if len < 2 {
                                return Err(malformed("segment length below 2"));
                            }
                            let payload_len = len - 2;
                            let peek = payload_len.min(SIGNATURE_LEN);
                            if rest.len() < 4 + peek {
                                return Ok(pos);
                            }
                            let keep = keep(marker, &rest[4..4 + peek]);
                            if keep {
                                out.extend_from_slice(&rest[..4]);
                            }
                            pos += 4;
                            self.state = State::Segment {
                                keep,
                                left: payload_len,
                                scan_after: marker == SOS,
                            };
                        }
                    }
                }
                State::Segment { keep, left, scan_after } => {
                    let n = left.min(rest.len());
                    if keep {
                        out.extend_from_slice(&rest[..n]);
                    }
                    pos += n;
                    if n < left {
                        self.state = State::Segment {
                            keep,
                            left: left - n,
                            scan_after,
                        };
                        return Ok(pos);
                    }
                    self.state = if scan_after { State::Scan } else { State::Marker };
                }
                State::Scan => {
                    let Some(ff) = rest.iter().position(|&x| x == 0xFF) else {
                        out.extend_from_slice(rest);
                        return Ok(b.len());
                    };
                    out.extend_from_slice(&rest[..ff]);
                    pos += ff;
                    let Some(&next) = rest.get(ff + 1) else {
                        return Ok(pos);
                    };
                    if next == 0x00 || (0xD0..=0xD7).contains(&next) {
                        out.extend_from_slice(&[0xFF, next]);
                        pos += 2;
                    } else {
                        self.state = State::Marker;
                    }
                }
                State::End => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    return Err(Refusal::Polyglot("data after the JPEG end marker"));
                }
            }
        }
    }
}
