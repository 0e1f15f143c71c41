//! GIF without its metadata: blocks are walked as they stream; comment extensions and application
//! extensions other than looping (`NETSCAPE2.0`, `ANIMEXTS1.0`) and colour (`ICCRGBG1012`) are
//! dropped (XMP rides in an application extension). Image descriptors, colour tables and the
//! LZW data are copied byte for byte. Anything after the trailer is refused.

use super::{Machine, Refusal, Step};

const KIND: &str = "GIF";
const KEPT_APPLICATIONS: [&[u8; 11]; 3] = [b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012"];

#[derive(Default, Clone, Copy)]
enum State {
    #[default]
    Header,
    /// The next block's introducer.
    Block,
    /// The LZW minimum code size of an image, then its data sub-blocks.
    CodeSize,
    /// A sub-block's size byte (0 ends the run of sub-blocks).
    SubBlock {
        keep: bool,
    },
    End,
}

#[derive(Default)]
pub struct Gif {
    state: State,
}

fn malformed(why: &'static str) -> Refusal {
    Refusal::malformed(KIND, why)
}

/// Keeps `header` and the colour table that follows it, if the flags byte at `flags` says there
/// is one (and its size).
fn with_color_table(header: &[u8], flags: usize, out: &mut Vec<u8>) -> Step {
    out.extend_from_slice(header);
    let flags = header[flags];
    let len = if flags & 0x80 == 0 {
        0
    } else {
        3 * (1 << ((flags & 0x07) + 1))
    };
    Step::Pass {
        took: header.len(),
        len,
        keep: true,
    }
}

impl Machine for Gif {
    const KIND: &'static str = KIND;
    const AFTER_END: &'static str = "data after the GIF trailer";

    fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    fn step(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<Step, Refusal> {
        match self.state {
            State::Header => {
                // Signature and version (6), logical screen descriptor (7), then the global
                // colour table.
                if rest.len() < 13 {
                    return Ok(Step::More);
                }
                if !(rest.starts_with(b"GIF87a") || rest.starts_with(b"GIF89a")) {
                    return Err(malformed("bad signature"));
                }
                self.state = State::Block;
                Ok(with_color_table(&rest[..13], 10, out))
            }
            State::Block => {
                let Some(&introducer) = rest.first() else {
                    return Ok(Step::More);
                };
                match introducer {
                    0x3B => {
                        out.push(0x3B);
                        self.state = State::End;
                        Ok(Step::Took(1))
                    }
                    0x2C => {
                        // Image descriptor: position, size (8) and flags, then the local colour table.
                        if rest.len() < 10 {
                            return Ok(Step::More);
                        }
                        self.state = State::CodeSize;
                        Ok(with_color_table(&rest[..10], 9, out))
                    }
                    0x21 => {
                        if rest.len() < 2 {
                            return Ok(Step::More);
                        }
                        match rest[1] {
                            // Graphic control (delays, transparency) and plain text stay.
                            0xF9 | 0x01 => {
                                out.extend_from_slice(&rest[..2]);
                                self.state = State::SubBlock { keep: true };
                                Ok(Step::Took(2))
                            }
                            0xFF => {
                                // The identifier is the first sub-block, 11 bytes.
                                if rest.len() < 14 {
                                    return Ok(Step::More);
                                }
                                if rest[2] != 11 {
                                    return Err(malformed("application extension without its identifier"));
                                }
                                let id: &[u8; 11] = rest[3..14].try_into().expect("eleven bytes");
                                let keep = KEPT_APPLICATIONS.contains(&id);
                                if keep {
                                    out.extend_from_slice(&rest[..14]);
                                }
                                self.state = State::SubBlock { keep };
                                Ok(Step::Took(14))
                            }
                            // Comments and extensions we do not know.
                            _ => {
                                self.state = State::SubBlock { keep: false };
                                Ok(Step::Took(2))
                            }
                        }
                    }
                    _ => Err(malformed("unknown block")),
                }
            }
            State::CodeSize => {
                let Some(&size) = rest.first() else {
                    return Ok(Step::More);
                };
                if !(1..=12).contains(&size) {
                    return Err(malformed("LZW code size out of range"));
                }
                out.push(size);
                self.state = State::SubBlock { keep: true };
                Ok(Step::Took(1))
            }
            State::SubBlock { keep } => {
                let Some(&size) = rest.first() else {
                    return Ok(Step::More);
                };
                if keep {
                    out.push(size);
                }
                if size == 0 {
                    self.state = State::Block;
                    return Ok(Step::Took(1));
                }
                Ok(Step::Pass {
                    took: 1,
                    len: usize::from(size),
                    keep,
                })
            }
            // Framed stops before this; bytes here would be after the end all the same.
            State::End => Err(Refusal::Polyglot(Self::AFTER_END)),
        }
    }
}
