//! Envelope encryption of files, streamed: a file is sealed and opened segment by segment, so its
//! size never decides how much memory it takes.
//!
//! The construction is RustCrypto's STREAM (`aead::stream`, Hoang, Reyhanitabar, Rogaway and
//! Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015) over
//! AES-256-GCM with the owner's [`DataKey`]: each segment's nonce is a random 7-byte prefix, a
//! 32-bit big-endian segment counter and a last-segment flag, so segments cannot be reordered,
//! dropped, repeated or cut off at a segment boundary without failing to open.
//!
//! Format (version 1): `0x01 || nonce prefix (7) || segment*`, where every segment but the last
//! seals exactly [`SEGMENT`] plaintext bytes (`SEGMENT + 16` bytes) and the last seals
//! `0..=SEGMENT` bytes. Each segment's associated data is
//! `"service-kit/envelope/stream/v1" || lp(table) || lp(column) || lp(row_id) || 0x01`, so a file
//! sealed for one row (an attachment id) does not open as another's.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{OsRng, Payload};

use crate::envelope::{Aad, DataKey, EnvelopeError};

/// Plaintext bytes per segment: large enough that the 16-byte tags cost 0.02 %, small enough that
/// twenty concurrent uploads hold a couple of MiB between them.
pub const SEGMENT: usize = 64 * 1024;
const TAG_LEN: usize = 16;
const VERSION: u8 = 1;
const PREFIX_LEN: usize = 7;
/// The header before the first segment.
pub const HEADER_LEN: usize = 1 + PREFIX_LEN;
const STREAM_DOMAIN: &[u8] = b"service-kit/envelope/stream/v1";

fn stream_aad(aad: &Aad<'_>) -> Vec<u8> {
    let mut bytes = aad.encode_in(STREAM_DOMAIN);
    bytes.push(VERSION);
    bytes
}

/// The sealed size of a plaintext of `len` bytes (what the stored object's size will be).
pub fn sealed_len(len: u64) -> u64 {
    let segments = len.div_ceil(SEGMENT as u64).max(1);
    HEADER_LEN as u64 + len + segments * TAG_LEN as u64
}

/// Seals a stream: feed it plaintext in pieces of any size, send on what it hands back.
pub struct Sealer {
    encryptor: Option<EncryptorBE32<Aes256Gcm>>,
    aad: Vec<u8>,
    /// Plaintext not sealed yet: at most one segment.
    pending: Vec<u8>,
    header: Option<Vec<u8>>,
}

impl Sealer {
    pub fn new(key: &DataKey, aad: &Aad<'_>) -> Self {
        let mut prefix = [0u8; PREFIX_LEN];
        OsRng.fill_bytes(&mut prefix);
        let encryptor = EncryptorBE32::from_aead(key.stream_cipher(), (&prefix).into());
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.push(VERSION);
        header.extend_from_slice(&prefix);
        Self {
            encryptor: Some(encryptor),
            aad: stream_aad(aad),
            pending: Vec::with_capacity(SEGMENT),
            header: Some(header),
        }
    }

    /// The sealed bytes `plaintext` completes (the header first, then whole segments). A full
    /// segment is held back until more plaintext arrives, because the last one is sealed apart.
    pub fn push(&mut self, mut plaintext: &[u8]) -> Vec<u8> {
        let mut out = self.header.take().unwrap_or_default();
        while !plaintext.is_empty() {
            if self.pending.len() == SEGMENT {
                self.seal_pending(&mut out);
            }
            let take = (SEGMENT - self.pending.len()).min(plaintext.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
        }
        out
    }

    fn seal_pending(&mut self, out: &mut Vec<u8>) {
        let encryptor = self
            .encryptor
            .as_mut()
            .expect("a sealer is used until finish consumes it");
        let sealed = encryptor
            .encrypt_next(Payload {
                msg: &self.pending,
                aad: &self.aad,
            })
            .expect("a 64 KiB segment under a 32-bit counter of at most 2^32 segments always seals");
        out.extend_from_slice(&sealed);
        self.pending.clear();
    }

    /// The last sealed bytes (the last segment, which says it is the last).
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = self.header.take().unwrap_or_default();
        let encryptor = self.encryptor.take().expect("finish runs once");
        let sealed = encryptor
            .encrypt_last(Payload {
                msg: &self.pending,
                aad: &self.aad,
            })
            .expect("the last segment is at most 64 KiB");
        out.extend_from_slice(&sealed);
        out
    }
}

/// Opens a stream [`Sealer`] made: feed it the sealed bytes in pieces of any size; it hands back
/// plaintext only once it is authenticated.
pub struct Opener {
    cipher: Option<Aes256Gcm>,
    decryptor: Option<DecryptorBE32<Aes256Gcm>>,
    aad: Vec<u8>,
    /// Sealed bytes not opened yet: the header, or up to one segment and a bit.
    pending: Vec<u8>,
}

impl Opener {
    pub fn new(key: &DataKey, aad: &Aad<'_>) -> Self {
        Self {
            cipher: Some(key.stream_cipher()),
            decryptor: None,
            aad: stream_aad(aad),
            pending: Vec::with_capacity(SEGMENT + TAG_LEN + HEADER_LEN),
        }
    }

    /// The plaintext of every segment `sealed` completes, except a segment that may be the last
    /// (held until more arrives or [`Opener::finish`]).
    pub fn push(&mut self, mut sealed: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::new();
        while !sealed.is_empty() {
            if self.decryptor.is_none() {
                let take = (HEADER_LEN - self.pending.len()).min(sealed.len());
                self.pending.extend_from_slice(&sealed[..take]);
                sealed = &sealed[take..];
                if self.pending.len() == HEADER_LEN {
                    self.start()?;
                }
                continue;
            }
            // A whole segment followed by at least one more byte is not the last one.
            let whole = SEGMENT + TAG_LEN;
            if self.pending.len() == whole {
                let decryptor = self.decryptor.as_mut().expect("started above");
                let plain = decryptor
                    .decrypt_next(Payload {
                        msg: &self.pending,
                        aad: &self.aad,
                    })
                    .map_err(|_| EnvelopeError::DoesNotOpen)?;
                out.extend_from_slice(&plain);
                self.pending.clear();
            }
            let take = (whole - self.pending.len()).min(sealed.len());
            self.pending.extend_from_slice(&sealed[..take]);
            sealed = &sealed[take..];
        }
        Ok(out)
    }

    fn start(&mut self) -> Result<(), EnvelopeError> {
        if self.pending[0] != VERSION {
            return Err(EnvelopeError::Malformed("unknown format version"));
        }
        let cipher = self.cipher.take().expect("started once");
        let prefix: [u8; PREFIX_LEN] = self.pending[1..HEADER_LEN]
            .try_into()
            .expect("the header is the version and the prefix");
        self.decryptor = Some(DecryptorBE32::from_aead(cipher, (&prefix).into()));
        self.pending.clear();
        Ok(())
    }

    /// The last segment's plaintext, once it proves to be the last: a stream cut anywhere fails.
    pub fn finish(mut self) -> Result<Vec<u8>, EnvelopeError> {
        let decryptor = self
            .decryptor
            .take()
            .ok_or(EnvelopeError::Malformed("shorter than the header"))?;
        if self.pending.len() < TAG_LEN {
            return Err(EnvelopeError::Malformed("shorter than a segment's tag"));
        }
        decryptor
            .decrypt_last(Payload {
                msg: &self.pending,
                aad: &self.aad,
            })
            .map_err(|_| EnvelopeError::DoesNotOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"attachment-a";
    const B: &[u8] = b"attachment-b";

    fn aad(row: &[u8]) -> Aad<'_> {
        Aad::new("attachments", "bytes", row)
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn seal(key: &DataKey, row: &[u8], plain: &[u8], piece: usize) -> Vec<u8> {
        let mut sealer = Sealer::new(key, &aad(row));
        let mut out = Vec::new();
        for chunk in plain.chunks(piece.max(1)) {
            out.extend(sealer.push(chunk));
        }
        out.extend(sealer.finish());
        out
    }

    fn open(key: &DataKey, row: &[u8], sealed: &[u8], piece: usize) -> Result<Vec<u8>, EnvelopeError> {
        let mut opener = Opener::new(key, &aad(row));
        let mut out = Vec::new();
        for chunk in sealed.chunks(piece.max(1)) {
            out.extend(opener.push(chunk)?);
        }
        out.extend(opener.finish()?);
        Ok(out)
    }

    #[test]
    fn every_size_round_trips_whatever_the_pieces() {
        let key = DataKey::generate();
        for len in [
            0,
            1,
            100,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            3 * SEGMENT + 17,
        ] {
            let plain = sample(len);
            for piece in [1000, 4096, SEGMENT + 5, 10 * SEGMENT] {
                let sealed = seal(&key, A, &plain, piece);
                assert_eq!(sealed.len() as u64, sealed_len(len as u64), "len {len}");
                for open_piece in [7, 65_000, 1 << 20] {
                    assert_eq!(open(&key, A, &sealed, open_piece).as_ref(), Ok(&plain), "len {len}");
                }
            }
        }
    }

    #[test]
    fn the_plaintext_is_not_in_the_sealed_bytes() {
        let key = DataKey::generate();
        let plain = b"GPS 52.5200 13.4050 -- a very recognisable sentence".repeat(100);
        let sealed = seal(&key, A, &plain, 4096);
        assert!(!sealed.windows(16).any(|w| w == &plain[..16]));
    }

    #[test]
    fn a_tampered_byte_anywhere_is_refused() {
        let key = DataKey::generate();
        let plain = sample(2 * SEGMENT + 100);
        let sealed = seal(&key, A, &plain, SEGMENT);
        for at in [0, 1, HEADER_LEN, HEADER_LEN + SEGMENT + 3, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x40;
            assert!(open(&key, A, &bad, 9000).is_err(), "byte {at}");
        }
    }

    #[test]
    fn a_truncated_stream_is_refused_even_at_a_segment_boundary() {
        let key = DataKey::generate();
        let plain = sample(3 * SEGMENT + 10);
        let sealed = seal(&key, A, &plain, SEGMENT);
        let whole = SEGMENT + TAG_LEN;
        for cut in [
            HEADER_LEN + whole,
            HEADER_LEN + 2 * whole,
            sealed.len() - 1,
            HEADER_LEN,
            3,
            0,
        ] {
            assert!(open(&key, A, &sealed[..cut], 5000).is_err(), "cut at {cut}");
        }
        // Extra bytes after the last segment are refused too.
        let mut longer = sealed.clone();
        longer.extend_from_slice(&[0; 20]);
        assert!(open(&key, A, &longer, 5000).is_err());
    }

    #[test]
    fn reordered_or_repeated_segments_are_refused() {
        let key = DataKey::generate();
        let plain = sample(3 * SEGMENT + 10);
        let sealed = seal(&key, A, &plain, SEGMENT);
        let whole = SEGMENT + TAG_LEN;
        let seg = |i: usize| &sealed[HEADER_LEN + i * whole..(HEADER_LEN + (i + 1) * whole).min(sealed.len())];
        let header = &sealed[..HEADER_LEN];
        let swapped = [header, seg(1), seg(0), seg(2), seg(3)].concat();
        assert!(open(&key, A, &swapped, 5000).is_err());
        let repeated = [header, seg(0), seg(0), seg(2), seg(3)].concat();
        assert!(open(&key, A, &repeated, 5000).is_err());
        let dropped = [header, seg(0), seg(2), seg(3)].concat();
        assert!(open(&key, A, &dropped, 5000).is_err());
    }

    #[test]
    fn a_stream_opens_only_for_its_own_attachment_and_key() {
        let key = DataKey::generate();
        let sealed = seal(&key, A, b"receipt", 10);
        assert_eq!(open(&key, A, &sealed, 10).as_deref(), Ok(&b"receipt"[..]));
        assert_eq!(open(&key, B, &sealed, 10), Err(EnvelopeError::DoesNotOpen));
        assert_eq!(
            open(&DataKey::generate(), A, &sealed, 10),
            Err(EnvelopeError::DoesNotOpen)
        );
        // A column value sealed with DataKey::seal is not a stream, and the reverse.
        let column = key.seal(b"receipt", &aad(A));
        assert!(open(&key, A, &column, 10).is_err());
    }
}
