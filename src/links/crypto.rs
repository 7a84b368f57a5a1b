//! The cryptography of a document link.
//!
//! - **Token**: 256 random bits, base64url in the link. Only
//!   [`token_hash`] (SHA-256 with a domain prefix) is stored, to find the row.
//! - **Key**: HKDF-SHA256 over the token (and, for a protected document, an
//!   argon2id hash of the password) with a random per-document salt. Nothing
//!   stored on the server derives it, which is the point: deleting the row
//!   (the salt) or never having the token leaves only noise.
//! - **Cipher**: AES-256-GCM (aws-lc-rs, the tree's one crypto stack; with
//!   AES-NI it runs at several GB/s) over 64 KiB chunks. Each chunk has its
//!   own tag, its number as nonce and a "last chunk" flag in the associated
//!   data, so chunks cannot be reordered, dropped or truncated unnoticed. A
//!   wrong password fails on the first chunk, without decrypting the rest.
//!
//! The key is unique per document (fresh salt and fresh token), so a counter
//! nonce never repeats under one key.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{digest, hkdf};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::argon2_pool::Memory;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// `SCHL`, format version, chunk size (u32 LE): bound into every chunk's
/// associated data, so a file cannot be re-read under other parameters.
const MAGIC: &[u8; 4] = b"SCHL";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 9;
const KEY_INFO: &[u8] = b"schleuse/document/v1";
const TOKEN_HASH_PREFIX: &[u8] = b"schleuse/link-token/v1\0";
pub const SALT_LEN: usize = 16;
const TOKEN_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the system random generator failed")]
    Random,
    #[error("not a schleuse document file")]
    Format,
    /// The first chunk does not authenticate: wrong token or password.
    #[error("wrong key")]
    WrongKey,
    /// A later chunk does not authenticate: the file was altered or cut.
    #[error("the document file is damaged")]
    Damaged,
    #[error("password hashing failed: {0}")]
    Password(String),
}

/// A new random link token (43 characters of base64url).
pub fn new_token() -> Result<String, CryptoError> {
    let mut bytes = [0u8; TOKEN_LEN];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new random salt for one document.
pub fn new_salt() -> Result<[u8; SALT_LEN], CryptoError> {
    let mut salt = [0u8; SALT_LEN];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CryptoError::Random)?;
    Ok(salt)
}

/// What the store keeps to find a link's row: hex SHA-256 of the token.
/// A 256-bit random token cannot be recovered from it.
pub fn token_hash(token: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(TOKEN_HASH_PREFIX);
    ctx.update(token.as_bytes());
    hex(ctx.finish().as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The argon2id hash of a document password, one input of its key.
pub struct PasswordKey([u8; 32]);

/// argon2id (the defaults of RFC 9106's second recommendation, as for
/// account passwords): a stolen file plus a guessed token still costs an
/// attacker this much per password guess. CPU-heavy (~20 ms) and 19 MiB of
/// `memory`: the service runs it on [`crate::argon2_pool`].
pub fn password_key(
    memory: &mut Memory,
    password: &str,
    salt: &[u8],
) -> Result<PasswordKey, CryptoError> {
    let mut out = [0u8; 32];
    memory
        .hash_default(password.as_bytes(), salt, &mut out)
        .map_err(|e| CryptoError::Password(e.to_string()))?;
    Ok(PasswordKey(out))
}

/// The document key for a token (and password).
pub struct DocumentKey(LessSafeKey);

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl DocumentKey {
    pub fn derive(
        token: &str,
        password: Option<&PasswordKey>,
        salt: &[u8],
    ) -> Result<Self, CryptoError> {
        let mut ikm = Vec::with_capacity(token.len() + 32);
        ikm.extend_from_slice(token.as_bytes());
        if let Some(password) = password {
            ikm.extend_from_slice(&password.0);
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
        let mut key = [0u8; 32];
        prk.expand(&[KEY_INFO], Len32)
            .and_then(|okm| okm.fill(&mut key))
            .map_err(|_| CryptoError::Format)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| CryptoError::Format)?;
        Ok(DocumentKey(LessSafeKey::new(unbound)))
    }

    /// Encrypts a whole document into the file format.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let chunks = plaintext.len().div_ceil(CHUNK).max(1);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + chunks * TAG);
        let header = header();
        out.extend_from_slice(&header);
        let mut pieces = plaintext.chunks(CHUNK).peekable();
        let mut index = 0u64;
        loop {
            let piece = pieces.next().unwrap_or(&[]);
            let last = pieces.peek().is_none();
            let start = out.len();
            out.extend_from_slice(piece);
            let tag = self
                .0
                .seal_in_place_separate_tag(nonce(index), aad(&header, last), &mut out[start..])
                .map_err(|_| CryptoError::Format)?;
            out.extend_from_slice(tag.as_ref());
            if last {
                return Ok(out);
            }
            index += 1;
        }
    }

    /// Decrypts a document file in place and returns the plaintext.
    pub fn open(&self, mut file: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        if file.len() < HEADER_LEN + TAG || file[..HEADER_LEN] != header() {
            return Err(CryptoError::Format);
        }
        let header = header();
        let sealed = CHUNK + TAG;
        let mut read = HEADER_LEN;
        let mut write = 0usize;
        let mut index = 0u64;
        while read < file.len() {
            let end = (read + sealed).min(file.len());
            let last = end == file.len();
            let opened = self
                .0
                .open_in_place(nonce(index), aad(&header, last), &mut file[read..end])
                .map(|plain| plain.len());
            let len = match opened {
                Ok(len) => len,
                Err(_) if index == 0 => return Err(CryptoError::WrongKey),
                Err(_) => return Err(CryptoError::Damaged),
            };
            file.copy_within(read..read + len, write);
            write += len;
            read = end;
            index += 1;
        }
        file.truncate(write);
        Ok(file)
    }
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5..].copy_from_slice(&(CHUNK as u32).to_le_bytes());
    h
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(header: &[u8; HEADER_LEN], last: bool) -> Aad<[u8; HEADER_LEN + 1]> {
    let mut a = [0u8; HEADER_LEN + 1];
    a[..HEADER_LEN].copy_from_slice(header);
    a[HEADER_LEN] = u8::from(last);
    Aad::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(token: &str, password: Option<&str>, salt: &[u8]) -> DocumentKey {
        let password =
            password.map(|p| password_key(&mut Memory::default(), p, salt).expect("password key"));
        DocumentKey::derive(token, password.as_ref(), salt).expect("derive")
    }

    #[test]
    fn round_trips_every_size_around_chunk_edges() {
        let salt = new_salt().expect("salt");
        let token = new_token().expect("token");
        let k = key(&token, None, &salt);
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = k.seal(&plain).expect("seal");
            assert_eq!(
                sealed.len(),
                HEADER_LEN + len + len.div_ceil(CHUNK).max(1) * TAG
            );
            assert_eq!(k.open(sealed).expect("open"), plain, "length {len}");
        }
    }

    #[test]
    fn ciphertext_does_not_contain_the_plaintext() {
        let salt = new_salt().expect("salt");
        let k = key(&new_token().expect("token"), None, &salt);
        let plain = b"Bescheid fuer Max Mustermann, geb. 01.02.2010".repeat(100);
        let sealed = k.seal(&plain).expect("seal");
        assert!(!sealed.windows(20).any(|w| w == &plain[..20]));
    }

    #[test]
    fn wrong_token_or_password_is_a_wrong_key() {
        let salt = new_salt().expect("salt");
        let token = new_token().expect("token");
        let sealed = key(&token, Some("Sommer2026"), &salt)
            .seal(b"secret")
            .expect("seal");
        assert_eq!(
            key(&token, Some("Winter2026"), &salt).open(sealed.clone()),
            Err(CryptoError::WrongKey)
        );
        assert_eq!(
            key(&token, None, &salt).open(sealed.clone()),
            Err(CryptoError::WrongKey)
        );
        let other = new_token().expect("token");
        assert_eq!(
            key(&other, Some("Sommer2026"), &salt).open(sealed.clone()),
            Err(CryptoError::WrongKey)
        );
        assert_eq!(
            key(&token, Some("Sommer2026"), &salt)
                .open(sealed)
                .expect("open"),
            b"secret"
        );
    }

    #[test]
    fn truncation_reordering_and_tampering_are_detected() {
        let salt = new_salt().expect("salt");
        let k = key(&new_token().expect("token"), None, &salt);
        let plain = vec![42u8; 2 * CHUNK + 5];
        let sealed = k.seal(&plain).expect("seal");
        // Dropping the last chunk leaves a non-final chunk at the end.
        let cut = sealed[..HEADER_LEN + 2 * (CHUNK + TAG)].to_vec();
        assert_eq!(k.open(cut), Err(CryptoError::Damaged));
        let mut flipped = sealed.clone();
        let at = HEADER_LEN + CHUNK + TAG + 3;
        flipped[at] ^= 1;
        assert_eq!(k.open(flipped), Err(CryptoError::Damaged));
        let mut swapped = sealed.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + CHUNK + TAG);
        let first = sealed[a..b].to_vec();
        swapped.copy_within(b..b + CHUNK + TAG, a);
        swapped[b..b + CHUNK + TAG].copy_from_slice(&first);
        assert_eq!(k.open(swapped), Err(CryptoError::WrongKey));
        assert_eq!(k.open(b"not a document".to_vec()), Err(CryptoError::Format));
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
