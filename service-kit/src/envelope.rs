//! Envelope encryption of the columns and files a service keeps about its users.
//!
//! Each owner (a user) has a random 256-bit [`DataKey`] that seals their values with AES-256-GCM.
//! The data key is never stored as such: a [`Keyring`] of master keys (`ENCRYPTION_KEYS`) wraps it,
//! and the wrapped form ([`WrappedKey`]) is stored with the id of the master key that wrapped it.
//! This keeps rotation cheap (re-wrap one small key per owner, never re-encrypt the data: see
//! [`Keyring::rewrap`]) and erasure simple (delete the owner's wrapped key and their data is
//! unreadable everywhere, backups included).
//!
//! `ENCRYPTION_KEYS` is a comma-separated list of `id:base64` entries, each a 32-byte key (standard
//! or URL-safe base64, padded or not; `openssl rand -base64 32`). The first entry wraps new data
//! keys; the others only unwrap, so a rotation is: put the new key first, run the service's
//! `rotate-master-key`, then remove the old key. Ids are `[A-Za-z0-9_-]{1,32}`.
//!
//! Byte formats (version 1; the leading byte lets the format change later, and is authenticated):
//! - wrapped data key: `0x01 || nonce (12) || AES-256-GCM(master, data key (32)) || tag (16)`, 61
//!   bytes, with associated data `"service-kit/envelope/wrap/v1" || lp(key_id) || lp(owner)`: a
//!   wrapped key copied onto another owner does not unwrap.
//! - sealed value: `0x01 || nonce (12) || AES-256-GCM(data key, plaintext) || tag (16)`, with
//!   associated data `"service-kit/envelope/seal/v1" || lp(table) || lp(column) || lp(row_id)`: a
//!   ciphertext copied into another row or column does not open.
//!
//! `lp(x)` is the length of `x` as a big-endian `u32` followed by `x`, so no two distinct tuples
//! give the same associated data. Nonces are 96 random bits from the thread's CSPRNG (`rand`'s
//! `ThreadRng`: ChaCha12 seeded and periodically reseeded from the OS generator, without a system
//! call per nonce, which cost a create five `getrandom` calls): with at most a few billion values
//! per key the chance of a repeat stays far below 2⁻³² (NIST SP 800-38D §8.3). Keys come from the
//! OS generator itself.
//! Key material (master keys, data keys and AES key schedules) is zeroed when dropped.

use std::fmt;

use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use crate::config::Env;

/// The variable the master keyring is read from.
pub const ENCRYPTION_KEYS: &str = "ENCRYPTION_KEYS";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;
const MAX_ID_LEN: usize = 32;
const WRAP_DOMAIN: &[u8] = b"service-kit/envelope/wrap/v1";
const SEAL_DOMAIN: &[u8] = b"service-kit/envelope/seal/v1";

/// Why a wrapped key or a sealed value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The master key that wrapped this data key is no longer in the keyring: it was removed before
    /// `rotate-master-key` re-wrapped everything under the current key.
    #[error(
        "data key is wrapped under master key {key_id:?}, which is not in {ENCRYPTION_KEYS} \
         (removed before every data key was re-wrapped?)"
    )]
    UnknownKeyId { key_id: String },
    /// Authentication failed: the bytes were changed, or belong to another row, column or owner, or
    /// were sealed under another key.
    #[error("ciphertext does not open: tampered with, or bound to another row, column or owner")]
    DoesNotOpen,
    /// Not something this module wrote: too short or an unknown format version.
    #[error("ciphertext is malformed: {0}")]
    Malformed(&'static str),
}

/// Why `ENCRYPTION_KEYS` was refused. Never contains key material: entries are named by their
/// position, and by their id only once the id itself is known to be well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("must list at least one id:base64 key")]
    Empty,
    #[error("entry {position} is empty (entries are separated by commas)")]
    EmptyEntry { position: usize },
    #[error("entry {position} must be id:base64 with an id of 1 to 32 characters from A-Z a-z 0-9 _ -")]
    BadEntry { position: usize },
    #[error("key {id:?} must be 32 bytes encoded in base64 (generate one with `openssl rand -base64 32`)")]
    BadKey { id: String },
    #[error("lists the id {id:?} twice")]
    DuplicateId { id: String },
}

/// A master key wrapped data keys name by `key_id`.
#[derive(Clone)]
struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The master keys: the first wraps, every one unwraps.
#[derive(Clone)]
pub struct Keyring {
    /// Never empty; `keys[0]` is the current key.
    keys: Vec<MasterKey>,
}

/// Ids only, never key bytes.
impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("current", &self.current_id())
            .field("ids", &ids)
            .finish()
    }
}

/// A data key wrapped by the master key `key_id`, as stored next to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

/// What a sealed value is bound to: the table, the column and the row it is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row_id: &'a [u8],
}

impl<'a> Aad<'a> {
    pub fn new(table: &'a str, column: &'a str, row_id: &'a [u8]) -> Self {
        Self { table, column, row_id }
    }

    fn encode(&self) -> Vec<u8> {
        associated_data(
            SEAL_DOMAIN,
            &[self.table.as_bytes(), self.column.as_bytes(), self.row_id],
        )
    }
}

/// One owner's 256-bit key. On the heap so moves do not leave copies behind; zeroed on drop.
pub struct DataKey {
    bytes: Box<Zeroizing<[u8; KEY_LEN]>>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh random key from the OS generator.
    pub fn generate() -> Self {
        let mut bytes = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        OsRng.fill_bytes(&mut bytes[..]);
        Self { bytes }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.bytes[..]))
    }

    /// `0x01 || nonce || ciphertext+tag`, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &Aad<'_>) -> Vec<u8> {
        seal_with(&self.cipher(), plaintext, &aad.encode())
    }

    /// The plaintext of a value [`DataKey::seal`] made with this key and the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &Aad<'_>) -> Result<Vec<u8>, EnvelopeError> {
        open_with(&self.cipher(), sealed, &aad.encode())
    }
}

impl Keyring {
    /// The keyring from `ENCRYPTION_KEYS` (or `ENCRYPTION_KEYS_FILE`); a problem naming the
    /// variable is recorded in `env` when it is missing or refused.
    pub fn from_env(env: &Env) -> Option<Self> {
        let secret = env.secret(ENCRYPTION_KEYS)?;
        Self::parse(&secret).map_err(|e| env.problem(ENCRYPTION_KEYS, e)).ok()
    }

    /// Parses an `id:base64,id:base64,...` list (see the module documentation).
    pub fn parse(list: &SecretString) -> Result<Self, KeyringError> {
        let text = list.expose_secret();
        if text.split(',').all(|entry| entry.trim().is_empty()) {
            return Err(KeyringError::Empty);
        }
        let mut keys: Vec<MasterKey> = Vec::new();
        for (index, entry) in text.split(',').enumerate() {
            let position = index + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(KeyringError::EmptyEntry { position });
            }
            let (id, encoded) = entry
                .split_once(':')
                .filter(|(id, _)| valid_id(id))
                .ok_or(KeyringError::BadEntry { position })?;
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateId { id: id.to_owned() });
            }
            let bad_key = || KeyringError::BadKey { id: id.to_owned() };
            let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(encoded.trim()).ok())
                .map(Zeroizing::new)
                .ok_or_else(bad_key)?;
            if bytes.len() != KEY_LEN {
                return Err(bad_key());
            }
            keys.push(MasterKey {
                id: id.to_owned(),
                cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            });
        }
        Ok(Self { keys })
    }

    /// The id of the key that wraps new data keys.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// `key` wrapped under the current master key, bound to `owner` (e.g. the user id's bytes).
    pub fn wrap(&self, key: &DataKey, owner: &[u8]) -> WrappedKey {
        let current = &self.keys[0];
        let aad = wrap_aad(&current.id, owner);
        WrappedKey {
            key_id: current.id.clone(),
            bytes: seal_with(&current.cipher, &key.bytes[..], &aad),
        }
    }

    /// The data key `wrapped` holds, if it was wrapped for `owner` by a key still in the ring.
    pub fn unwrap(&self, wrapped: &WrappedKey, owner: &[u8]) -> Result<DataKey, EnvelopeError> {
        let master = self
            .keys
            .iter()
            .find(|k| k.id == wrapped.key_id)
            .ok_or_else(|| EnvelopeError::UnknownKeyId {
                key_id: wrapped.key_id.clone(),
            })?;
        if wrapped.bytes.len() != WRAPPED_LEN {
            return Err(EnvelopeError::Malformed("a wrapped data key is 61 bytes"));
        }
        let plain = Zeroizing::new(open_with(
            &master.cipher,
            &wrapped.bytes,
            &wrap_aad(&wrapped.key_id, owner),
        )?);
        let mut bytes = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        bytes.copy_from_slice(&plain);
        Ok(DataKey { bytes })
    }

    /// `wrapped` under the current master key, or `None` when it already is (so a rotation that
    /// stopped half-way can simply run again). The data the key seals is untouched.
    pub fn rewrap(&self, wrapped: &WrappedKey, owner: &[u8]) -> Result<Option<WrappedKey>, EnvelopeError> {
        if wrapped.key_id == self.current_id() {
            return Ok(None);
        }
        let key = self.unwrap(wrapped, owner)?;
        Ok(Some(self.wrap(&key, owner)))
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn wrap_aad(key_id: &str, owner: &[u8]) -> Vec<u8> {
    associated_data(WRAP_DOMAIN, &[key_id.as_bytes(), owner])
}

/// `domain || lp(part) || ...`: unambiguous, so ("ab", "c") and ("a", "bc") differ.
fn associated_data(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>());
    out.extend_from_slice(domain);
    for part in parts {
        let len = u32::try_from(part.len()).expect("associated data parts are names and ids, far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn seal_with(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = Nonce::default();
    rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
    let ct = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad })
        .expect("AES-GCM only refuses plaintexts over 64 GiB, far beyond any column or file here");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let Some((&version, rest)) = sealed.split_first() else {
        return Err(EnvelopeError::Malformed("empty"));
    };
    if version != VERSION {
        return Err(EnvelopeError::Malformed("unknown format version"));
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(EnvelopeError::Malformed("shorter than a nonce and a tag"));
    }
    let (nonce, msg) = rest.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .map_err(|_| EnvelopeError::DoesNotOpen)
}

/// What [`crate::envelope_stream`] needs of this module: the data key's cipher, and the
/// associated data of a sealed stream (the same binding as a column, under its own domain).
impl DataKey {
    pub(crate) fn stream_cipher(&self) -> Aes256Gcm {
        self.cipher()
    }
}

impl Aad<'_> {
    pub(crate) fn encode_in(&self, domain: &[u8]) -> Vec<u8> {
        associated_data(domain, &[self.table.as_bytes(), self.column.as_bytes(), self.row_id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(byte: u8) -> String {
        STANDARD.encode([byte; KEY_LEN])
    }

    fn ring(list: &str) -> Keyring {
        Keyring::parse(&SecretString::from(list.to_owned())).expect("valid keyring")
    }

    const ROW_A: &[u8] = b"row-a";
    const ROW_B: &[u8] = b"row-b";

    #[test]
    fn a_sealed_value_opens_only_in_its_own_row_and_column() {
        let key = DataKey::generate();
        let title = Aad::new("reports", "title", ROW_A);
        let sealed = key.seal(b"broken streetlight", &title);
        assert_eq!(sealed[0], VERSION);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + b"broken streetlight".len() + TAG_LEN);
        assert!(!sealed.windows(6).any(|w| w == b"broken"), "plaintext visible");
        assert_eq!(key.open(&sealed, &title).as_deref(), Ok(&b"broken streetlight"[..]));

        let other_row = Aad::new("reports", "title", ROW_B);
        assert_eq!(key.open(&sealed, &other_row), Err(EnvelopeError::DoesNotOpen));
        let other_column = Aad::new("reports", "description", ROW_A);
        assert_eq!(key.open(&sealed, &other_column), Err(EnvelopeError::DoesNotOpen));
        let other_table = Aad::new("expenses", "title", ROW_A);
        assert_eq!(key.open(&sealed, &other_table), Err(EnvelopeError::DoesNotOpen));
        // Length prefixes: moving a byte between the table and column names changes the binding.
        let shifted = Aad::new("reportst", "itle", ROW_A);
        assert_eq!(key.open(&sealed, &shifted), Err(EnvelopeError::DoesNotOpen));
        assert_eq!(
            DataKey::generate().open(&sealed, &title),
            Err(EnvelopeError::DoesNotOpen),
            "another owner's key"
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let key = DataKey::generate();
        let aad = Aad::new("reports", "title", ROW_A);
        let sealed = key.seal(b"pothole", &aad);
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert!(key.open(&flipped, &aad).is_err(), "byte {i} flipped still opens");
        }
        let mut version = sealed.clone();
        version[0] = 2;
        assert_eq!(
            key.open(&version, &aad),
            Err(EnvelopeError::Malformed("unknown format version"))
        );
        assert!(matches!(key.open(&[], &aad), Err(EnvelopeError::Malformed(_))));
        assert!(matches!(
            key.open(&sealed[..1 + NONCE_LEN + TAG_LEN - 1], &aad),
            Err(EnvelopeError::Malformed(_))
        ));
        assert_eq!(
            key.open(&sealed[..sealed.len() - 1], &aad),
            Err(EnvelopeError::DoesNotOpen),
            "truncated"
        );
    }

    #[test]
    fn two_seals_of_one_plaintext_differ() {
        let key = DataKey::generate();
        let aad = Aad::new("reports", "title", ROW_A);
        let first = key.seal(b"same", &aad);
        let second = key.seal(b"same", &aad);
        assert_ne!(first[1..1 + NONCE_LEN], second[1..1 + NONCE_LEN], "nonces repeat");
        assert_ne!(first, second);
        assert_eq!(key.open(&second, &aad).as_deref(), Ok(&b"same"[..]));
        assert_ne!(DataKey::generate().bytes[..], DataKey::generate().bytes[..]);
    }

    #[test]
    fn an_empty_plaintext_round_trips() {
        let key = DataKey::generate();
        let aad = Aad::new("reports", "notes", ROW_A);
        assert_eq!(key.open(&key.seal(b"", &aad), &aad), Ok(Vec::new()));
    }

    #[test]
    fn a_wrapped_key_unwraps_for_its_owner_only() {
        let keyring = ring(&format!("k1:{}", b64(1)));
        let key = DataKey::generate();
        let aad = Aad::new("reports", "title", ROW_A);
        let sealed = key.seal(b"secret", &aad);
        let wrapped = keyring.wrap(&key, b"user-1");
        assert_eq!(wrapped.key_id, "k1");
        assert_eq!(wrapped.bytes.len(), WRAPPED_LEN);
        assert!(!wrapped.bytes.windows(KEY_LEN).any(|w| w == &key.bytes[..]));

        let unwrapped = keyring.unwrap(&wrapped, b"user-1").expect("own owner");
        assert_eq!(unwrapped.open(&sealed, &aad).as_deref(), Ok(&b"secret"[..]));
        assert!(matches!(
            keyring.unwrap(&wrapped, b"user-2"),
            Err(EnvelopeError::DoesNotOpen)
        ));
        let mut flipped = wrapped.clone();
        flipped.bytes[20] ^= 1;
        assert!(matches!(
            keyring.unwrap(&flipped, b"user-1"),
            Err(EnvelopeError::DoesNotOpen)
        ));
        let mut short = wrapped.clone();
        short.bytes.pop();
        assert!(matches!(
            keyring.unwrap(&short, b"user-1"),
            Err(EnvelopeError::Malformed(_))
        ));
        // Same key bytes under another id: the id is bound too.
        let renamed = ring(&format!("k2:{}", b64(1)));
        let relabelled = WrappedKey {
            key_id: "k2".into(),
            bytes: wrapped.bytes.clone(),
        };
        assert!(matches!(
            renamed.unwrap(&relabelled, b"user-1"),
            Err(EnvelopeError::DoesNotOpen)
        ));
        // Another master key under the same id.
        assert!(matches!(
            ring(&format!("k1:{}", b64(2))).unwrap(&wrapped, b"user-1"),
            Err(EnvelopeError::DoesNotOpen)
        ));
    }

    #[test]
    fn rotation_rewraps_once_and_old_data_still_opens() {
        let old_ring = ring(&format!("old:{}", b64(1)));
        let key = DataKey::generate();
        let aad = Aad::new("reports", "description", ROW_A);
        let sealed = key.seal(b"before rotation", &aad);
        let wrapped_old = old_ring.wrap(&key, b"user-1");

        let both = ring(&format!("new:{}, old:{}", b64(2), b64(1)));
        assert_eq!(both.current_id(), "new");
        let via_old = both.unwrap(&wrapped_old, b"user-1").expect("old still unwraps");
        assert_eq!(via_old.open(&sealed, &aad).as_deref(), Ok(&b"before rotation"[..]));

        let wrapped_new = both
            .rewrap(&wrapped_old, b"user-1")
            .expect("rewrap")
            .expect("moved to the current key");
        assert_eq!(wrapped_new.key_id, "new");
        assert_eq!(both.rewrap(&wrapped_new, b"user-1"), Ok(None), "re-run does nothing");
        assert!(matches!(
            both.rewrap(&wrapped_old, b"user-2"),
            Err(EnvelopeError::DoesNotOpen)
        ));

        // The old key is removed: the re-wrapped key and the untouched data still read.
        let new_only = ring(&format!("new:{}", b64(2)));
        let via_new = new_only.unwrap(&wrapped_new, b"user-1").expect("new unwraps");
        assert_eq!(via_new.open(&sealed, &aad).as_deref(), Ok(&b"before rotation"[..]));
        let err = new_only.unwrap(&wrapped_old, b"user-1").expect_err("old key removed");
        assert_eq!(err, EnvelopeError::UnknownKeyId { key_id: "old".into() });
        assert!(err.to_string().contains("\"old\""), "{err}");
        assert!(err.to_string().contains(ENCRYPTION_KEYS), "{err}");
        assert_eq!(
            new_only.rewrap(&wrapped_old, b"user-1"),
            Err(EnvelopeError::UnknownKeyId { key_id: "old".into() })
        );
    }

    fn refused(value: &str) -> String {
        let env = Env::from_map([(ENCRYPTION_KEYS, value)]);
        assert!(Keyring::from_env(&env).is_none(), "{value:?} accepted");
        let err = env.finish().expect_err("refused").to_string();
        assert!(err.contains(ENCRYPTION_KEYS), "{err}");
        err
    }

    #[test]
    fn bad_keyrings_are_refused_at_start_without_echoing_keys() {
        let good = b64(7);
        let short = STANDARD.encode([7u8; 16]);
        for (value, expected) in [
            (" , ".to_owned(), "must list at least one"),
            (format!("a:{good},"), "entry 2 is empty"),
            (format!("a:{good},a:{}", b64(8)), "lists the id \"a\" twice"),
            (good.clone(), "entry 1 must be id:base64"),
            (format!(":{good}"), "entry 1 must be id:base64"),
            (format!("bad id:{good}"), "entry 1 must be id:base64"),
            (format!("{}:{good}", "x".repeat(33)), "entry 1 must be id:base64"),
            (format!("ok:{good},é:{good}"), "entry 2 must be id:base64"),
            (format!("a:{short}"), "key \"a\" must be 32 bytes"),
            ("a:not base64!".to_owned(), "key \"a\" must be 32 bytes"),
            (
                format!("a:{}", STANDARD.encode([7u8; 33])),
                "key \"a\" must be 32 bytes",
            ),
        ] {
            let err = refused(&value);
            assert!(err.contains(expected), "{value:?}: {err}");
            for secret in [&good, &short, &"not base64!".to_owned()] {
                assert!(!err.contains(secret.as_str()), "{err} echoes a key");
            }
        }
        let missing = Env::from_map(Vec::<(String, String)>::new());
        assert!(Keyring::from_env(&missing).is_none());
        assert!(
            missing
                .finish()
                .expect_err("missing")
                .to_string()
                .contains("ENCRYPTION_KEYS is missing")
        );
    }

    #[test]
    fn good_keyrings_accept_every_base64_alphabet_and_the_longest_id() {
        let id = "A-z_9".repeat(6) + "ab";
        assert_eq!(id.len(), MAX_ID_LEN);
        let value = format!(
            "{id}:{},b:{},c:{}",
            URL_SAFE_NO_PAD.encode([0xfb; 32]),
            STANDARD_NO_PAD.encode([2; 32]),
            b64(3)
        );
        let env = Env::from_map([(ENCRYPTION_KEYS, value.as_str())]);
        let keyring = Keyring::from_env(&env).expect("valid");
        env.finish().expect("no problem");
        assert_eq!(keyring.current_id(), id);
        // The URL-safe key is the same key as its standard spelling.
        let key = DataKey::generate();
        let wrapped = keyring.wrap(&key, b"o");
        let standard = ring(&format!("{id}:{}", STANDARD.encode([0xfb; 32])));
        assert!(standard.unwrap(&wrapped, b"o").is_ok());
    }

    /// The `zeroize` features really reach the AES key schedule (the cipher holds the expanded
    /// key, which is as good as the key).
    #[test]
    fn key_material_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroed_on_drop::<aes::Aes256>();
        zeroed_on_drop::<Zeroizing<[u8; KEY_LEN]>>();
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let secret = b64(9);
        let keyring = ring(&format!("current:{secret},old:{}", b64(10)));
        let shown = format!("{keyring:?}");
        assert!(shown.contains("current") && shown.contains("old"), "{shown}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(!shown.contains("9, 9") && !shown.contains("[9"), "{shown}");

        let key = DataKey::generate();
        let shown = format!("{key:?}");
        assert_eq!(shown, "DataKey(..)");
        let first = key.bytes[0].to_string();
        assert!(!format!("{key:#?}").contains(&format!("[{first},")));
    }
}
