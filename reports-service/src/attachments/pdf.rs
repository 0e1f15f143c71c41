//! PDF, passed through as it is, but refused when it is also a ZIP archive (a local file header,
//! a central directory entry or its end record anywhere in it): readers of either format would
//! open it, which is how a polyglot smuggles an archive past a type check. The scan spans chunk
//! boundaries by remembering the last three bytes.

use super::{Filter, Refusal};

const ZIP_SIGNATURES: [&[u8; 4]; 3] = [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"];

#[derive(Default)]
pub struct Pdf {
    /// The last bytes seen, so a signature split between chunks is still found.
    tail: Vec<u8>,
}

impl Filter for Pdf {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(&input[..input.len().min(3)]);
        let found = |b: &[u8]| b.windows(4).any(|w| ZIP_SIGNATURES.iter().any(|s| w == &s[..]));
        if found(&window) || found(input) {
            return Err(Refusal::Polyglot("a PDF that is also a ZIP archive"));
        }
        self.tail = if input.len() >= 3 {
            input[input.len() - 3..].to_vec()
        } else {
            window[window.len().saturating_sub(3)..].to_vec()
        };
        out.extend_from_slice(input);
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), Refusal> {
        Ok(())
    }
}
