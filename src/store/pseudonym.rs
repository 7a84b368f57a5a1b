//! Pseudonymised recipient addresses for the delivery log (SPEC §7).
//!
//! Once a message is final, the log keeps each recipient as a keyed hash
//! (HMAC-SHA256 under a random key in the data directory), not in clear:
//! the log can still answer "what did we send to this address?" (`gdpr
//! export` hashes the address it is asked about), but a copy of the
//! database alone does not list who got mail. Deleting the key file makes
//! every pseudonym in the log unlinkable at once.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;

/// The key file under `data_dir`.
pub const KEY_FILE: &str = "log.key";
const KEY_LEN: usize = 32;
/// Pseudonyms are recognisable as such in the log and in exports.
pub const PREFIX: &str = "hmac:";

#[derive(Debug, thiserror::Error)]
pub enum PseudonymError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{0}: not a key file (expected {KEY_LEN} bytes); delete it only if you accept that older log entries can no longer be matched"
    )]
    BadKey(PathBuf),
    #[error("the system random generator failed")]
    Random,
}

#[derive(Clone)]
pub struct Pseudonymizer {
    key: hmac::Key,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(..)")
    }
}

impl Pseudonymizer {
    /// Reads the key, creating it (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Pseudonymizer, PseudonymError> {
        let path = data_dir.join(KEY_FILE);
        let io = |cause| PseudonymError::Io {
            path: path.clone(),
            cause,
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == KEY_LEN => return Ok(Self::from_key(&bytes)),
            Ok(_) => return Err(PseudonymError::BadKey(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut key = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| PseudonymError::Random)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(&key).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(Self::from_key(&key))
            }
            // Another process (the CLI beside the gateway) created it first.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(&path).map_err(io)?;
                if bytes.len() == KEY_LEN {
                    Ok(Self::from_key(&bytes))
                } else {
                    Err(PseudonymError::BadKey(path))
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The key in `data_dir` as it is, without creating one: `None` when
    /// there is no key file. For `schleuse store migrate`, which carries the
    /// key to another store and must not write to the old one.
    pub fn read_key(data_dir: &Path) -> Result<Option<Vec<u8>>, PseudonymError> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == KEY_LEN => Ok(Some(bytes)),
            Ok(_) => Err(PseudonymError::BadKey(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(cause) => Err(PseudonymError::Io { path, cause }),
        }
    }

    pub fn from_key(key: &[u8]) -> Pseudonymizer {
        Pseudonymizer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The pseudonym of an address: case-insensitive, like mailbox matching
    /// in practice (the local part is case-sensitive by the letter of RFC
    /// 5321, never in the mailboxes counties write to).
    pub fn of(&self, address: &str) -> String {
        let normalised = address.trim().to_lowercase();
        let tag = hmac::sign(&self.key, normalised.as_bytes());
        let mut out = String::with_capacity(PREFIX.len() + 32);
        out.push_str(PREFIX);
        // 128 bits: collisions are not a practical concern for a log.
        for b in &tag.as_ref()[..16] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// `text` with every occurrence of `address` (any case) replaced by its
    /// pseudonym: upstream replies often quote the address.
    pub fn scrub(&self, text: &str, address: &str) -> String {
        if address.is_empty() {
            return text.to_owned();
        }
        let lower_text = text.to_lowercase();
        let lower_addr = address.to_lowercase();
        // Lowercasing can change byte lengths outside ASCII; then fall back
        // to an exact-case replacement rather than slicing wrongly.
        if lower_text.len() != text.len() || lower_addr.len() != address.len() {
            return text.replace(address, &self.of(address));
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (at, _) in lower_text.match_indices(&lower_addr) {
            out.push_str(&text[last..at]);
            out.push_str(&self.of(address));
            last = at + address.len();
        }
        out.push_str(&text[last..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_keyed_and_case_insensitive() {
        let a = Pseudonymizer::from_key(&[1; 32]);
        let b = Pseudonymizer::from_key(&[2; 32]);
        assert_eq!(a.of("Eltern@Example.org"), a.of("eltern@example.org "));
        assert_ne!(a.of("eltern@example.org"), b.of("eltern@example.org"));
        assert!(a.of("x@y").starts_with(PREFIX));
        assert_eq!(a.of("x@y").len(), PREFIX.len() + 32);
    }

    #[test]
    fn scrubs_quoted_addresses_from_replies() {
        let p = Pseudonymizer::from_key(&[1; 32]);
        let reply = "550 5.1.1 <Eltern@Example.org>: Recipient address rejected";
        let scrubbed = p.scrub(reply, "eltern@example.org");
        assert!(!scrubbed.to_lowercase().contains("eltern@example.org"));
        assert!(scrubbed.contains(&p.of("eltern@example.org")));
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Pseudonymizer::load_or_create(dir.path()).expect("create");
        let b = Pseudonymizer::load_or_create(dir.path()).expect("load");
        assert_eq!(a.of("x@y"), b.of("x@y"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), b"short").expect("write");
        assert!(matches!(
            Pseudonymizer::load_or_create(dir.path()),
            Err(PseudonymError::BadKey(_))
        ));
    }
}
