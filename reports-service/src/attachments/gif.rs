//! GIF without its metadata: blocks are walked as they stream; comment extensions and application
//! extensions other than looping (`NETSCAPE2.0`, `ANIMEXTS1.0`) and colour (`ICCRGBG1012`) are
//! dropped (XMP rides in an application extension). Image descriptors, colour tables and the
//! LZW data are copied byte for byte. Anything after the trailer is refused.

use super::{Machine, Refusal};

const KIND: &str = "GIF";
const KEPT_APPLICATIONS: [&[u8; 11]; 3] = [b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012"];

#[derive(Default, Clone, Copy)]
enum State {
    #[default]
    Header,
    /// `left` bytes to copy (a colour table), then `then`.
    Copy {
        left: usize,
        then: After,
    },
    /// The next block's introducer.
    Block,
    /// The LZW minimum code size of an image, then its data sub-blocks.
    CodeSize,
    /// A sub-block's size byte (0 ends the run of sub-blocks).
    SubBlock {
        keep: bool,
    },
    /// Inside a sub-block, `left` bytes to go.
    Data {
        keep: bool,
        left: usize,
    },
    End,
}

#[derive(Clone, Copy)]
enum After {
    Block,
    CodeSize,
}

#[derive(Default)]
pub struct Gif {
    state: State,
}

fn malformed(why: &'static str) -> Refusal {
    Refusal::malformed(KIND, why)
}

/// The size of a colour table whose flags byte is `flags`, if it has one.
fn color_table(flags: u8) -> usize {
    if flags & 0x80 == 0 {
        0
    } else {
        3 * (1 << ((flags & 0x07) + 1))
    }
}

impl Machine for Gif {
    const KIND: &'static str = KIND;

    fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    fn parse(&mut self, b: &[u8], out: &mut Vec<u8>) -> Result<usize, Refusal> {
        let mut pos = 0;
        loop {
            let rest = &b[pos..];
            match self.state {
                State::Header => {
                    // Signature and version (6), logical screen descriptor (7).
                    if rest.len() < 13 {
                        return Ok(pos);
                    }
                    if !(rest.starts_with(b"GIF87a") || rest.starts_with(b"GIF89a")) {
                        return Err(malformed("bad signature"));
                    }
                    out.extend_from_slice(&rest[..13]);
                    pos += 13;
                    self.state = State::Copy {
                        left: color_table(rest[10]),
                        then: After::Block,
                    };
                }
                State::Copy { left, then } => {
                    let n = left.min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    if n < left {
                        self.state = State::Copy { left: left - n, then };
                        return Ok(pos);
                    }
                    self.state = match then {
                        After::Block => State::Block,
                        After::CodeSize => State::CodeSize,
                    };
                }
                State::Block => {
                    let Some(&introducer) = rest.first() else {
                        return Ok(pos);
                    };
                    match introducer {
                        0x3B => {
                            out.push(0x3B);
                            pos += 1;
                            self.state = State::End;
                        }
                        0x2C => {
                            // Image descriptor: position, size (8) and flags.
                            if rest.len() < 10 {
                                return Ok(pos);
                            }
                            out.extend_from_slice(&rest[..10]);
                            pos += 10;
                            self.state = State::Copy {
                                left: color_table(rest[9]),
                                then: After::CodeSize,
                            };
                        }
                        0x21 => {
                            if rest.len() < 2 {
                                return Ok(pos);
                            }
                            match rest[1] {
                                // Graphic control (delays, transparency) and plain text stay.
                                0xF9 | 0x01 => {
                                    out.extend_from_slice(&rest[..2]);
                                    pos += 2;
                                    self.state = State::SubBlock { keep: true };
                                }
                                0xFF => {
                                    // The identifier is the first sub-block, 11 bytes.
                                    if rest.len() < 14 {
                                        return Ok(pos);
                                    }
                                    if rest[2] != 11 {
                                        return Err(malformed("application extension without its identifier"));
                                    }
                                    let id: &[u8; 11] = rest[3..14].try_into().expect("eleven bytes");
                                    let keep = KEPT_APPLICATIONS.contains(&id);
                                    if keep {
                                        out.extend_from_slice(&rest[..14]);
                                    }
                                    pos += 14;
                                    self.state = State::SubBlock { keep };
                                }
                                // Comments and extensions we do not know.
                                _ => {
                                    pos += 2;
                                    self.state = State::SubBlock { keep: false };
                                }
                            }
                        }
                        _ => return Err(malformed("unknown block")),
                    }
                }
                State::CodeSize => {
                    let Some(&size) = rest.first() else {
                        return Ok(pos);
                    };
                    if !(1..=12).contains(&size) {
                        return Err(malformed("LZW code size out of range"));
                    }
                    out.push(size);
                    pos += 1;
                    self.state = State::SubBlock { keep: true };
                }
                State::SubBlock { keep } => {
                    let Some(&size) = rest.first() else {
                        return Ok(pos);
                    };
                    if keep {
                        out.push(size);
                    }
                    pos += 1;
                    self.state = if size == 0 {
                        State::Block
                    } else {
                        State::Data {
                            keep,
                            left: usize::from(size),
                        }
                    };
                }
                State::Data { keep, left } => {
                    let n = left.min(rest.len());
                    if keep {
                        out.extend_from_slice(&rest[..n]);
                    }
                    pos += n;
                    if n < left {
                        self.state = State::Data { keep, left: left - n };
                        return Ok(pos);
                    }
                    self.state = State::SubBlock { keep };
                }
                State::End => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    return Err(Refusal::Polyglot("data after the GIF trailer"));
                }
            }
        }
    }
}
