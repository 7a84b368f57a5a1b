//! DKIM private keys: PKCS#8 PEM files, Ed25519 or RSA.
//!
//! A key file holds exactly what `schleuse dkim keygen` writes (and what
//! `openssl genpkey -algorithm ed25519` / `-algorithm rsa` writes):
//! an unencrypted `-----BEGIN PRIVATE KEY-----` block. The algorithm is the
//! key's own (the PKCS#8 algorithm identifier), not the file name's.
//!
//! Everything here runs on aws-lc-rs, the crypto stack rustls already uses.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::DkimError;

/// The signing algorithms DKIM knows today (RFC 6376, RFC 8463).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `a=ed25519-sha256`, `k=ed25519`; `p=` is the raw 32-byte key.
    Ed25519,
    /// `a=rsa-sha256`, `k=rsa`; `p=` is the SubjectPublicKeyInfo (DER).
    Rsa,
}

impl Algorithm {
    /// The `k=` tag value, also the key file's suffix (`….ed25519.pem`).
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Rsa => "rsa",
        }
    }

    /// The `a=` tag value of the signatures made with it.
    pub fn signature_algorithm(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519-sha256",
            Algorithm::Rsa => "rsa-sha256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Ed25519 => "Ed25519",
            Algorithm::Rsa => "RSA",
        })
    }
}

/// A private key read from a file and checked, with its public half.
pub struct PrivateKey {
    pub algorithm: Algorithm,
    /// Modulus size for RSA; 256 for Ed25519.
    pub bits: usize,
    /// What a DKIM record's `p=` carries: the raw 32-byte key for Ed25519,
    /// the DER SubjectPublicKeyInfo for RSA (what every verifier accepts;
    /// the bare PKCS#1 `RSAPublicKey` is not).
    pub public_key: Vec<u8>,
    /// The PKCS#8 DER document.
    pkcs8: Vec<u8>,
}

impl PrivateKey {
    /// Parses a PKCS#8 DER document (Ed25519 or RSA, 2048 to 8192 bits).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, String> {
        let algorithm = match pkcs8_algorithm(der)? {
            KeyOid::Ed25519 => Algorithm::Ed25519,
            KeyOid::Rsa => Algorithm::Rsa,
            KeyOid::Ec => {
                return Err("is an EC (ECDSA) key; DKIM signs with Ed25519 or RSA only".to_string());
            }
            KeyOid::Other => {
                return Err(
                    "holds a key of an unsupported type; DKIM signs with Ed25519 or RSA only"
                        .to_string(),
                );
            }
        };
        let (bits, public_key) = match algorithm {
            Algorithm::Ed25519 => {
                let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| format!("is not a valid Ed25519 PKCS#8 key ({e})"))?;
                (256, pair.public_key().as_ref().to_vec())
            }
            Algorithm::Rsa => {
                let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(|e| {
                    format!("is not a usable RSA PKCS#8 key ({e}; DKIM needs 2048 to 8192 bits)")
                })?;
                let spki = pair
                    .public_key()
                    .as_der()
                    .map_err(|_| "RSA public key cannot be encoded".to_string())?;
                (pair.public_modulus_len() * 8, spki.as_ref().to_vec())
            }
        };
        Ok(PrivateKey {
            algorithm,
            bits,
            public_key,
            pkcs8: der.to_vec(),
        })
    }

    /// Reads and parses a PKCS#8 PEM file. The error names the file and
    /// says what is wrong with it in one sentence.
    pub fn load(path: &Path) -> Result<PrivateKey, DkimError> {
        let fail = |reason: String| DkimError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let der = pkcs8_from_pem(&text).map_err(fail)?;
        PrivateKey::from_pkcs8_der(&der).map_err(fail)
    }

    /// The PKCS#8 DER document.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key for mail-auth's signer.
    pub(crate) fn signing_key(&self) -> Result<mail_auth::common::crypto::DkimKey, String> {
        use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
        Ok(match self.algorithm {
            Algorithm::Ed25519 => DkimKey::Ed25519(
                Ed25519Key::from_pkcs8_maybe_unchecked_der(&self.pkcs8)
                    .map_err(|e| e.to_string())?,
            ),
            Algorithm::Rsa => DkimKey::Rsa(
                RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    self.pkcs8.as_slice(),
                )))
                .map_err(|e| e.to_string())?,
            ),
        })
    }

    /// Whether `published` (a record's decoded `p=`) is this key's public
    /// half. RSA keys compare as keys, so a record holding the bare PKCS#1
    /// form of the same key also matches.
    pub fn public_key_matches(&self, published: &[u8]) -> bool {
        match self.algorithm {
            Algorithm::Ed25519 => published == self.public_key.as_slice(),
            Algorithm::Rsa => match (rsa_public(published), rsa_public(&self.public_key)) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

/// The PKCS#1 `RSAPublicKey` DER of an RSA public key given as
/// SubjectPublicKeyInfo or PKCS#1; `None` if it is neither.
pub fn rsa_public(der: &[u8]) -> Option<Vec<u8>> {
    aws_lc_rs::rsa::PublicKey::from_der(der)
        .ok()
        .map(|k| k.as_ref().to_vec())
}

/// The PKCS#8 DER inside a PEM file, or why there is none.
fn pkcs8_from_pem(text: &[u8]) -> Result<Vec<u8>, String> {
    let has = |label: &str| text.windows(label.len()).any(|w| w == label.as_bytes());
    if has("BEGIN ENCRYPTED PRIVATE KEY") {
        return Err(
            "is an encrypted PKCS#8 key; the gateway needs it unencrypted \
             (openssl pkcs8 -in KEY -nocrypt -out KEY.new)"
                .to_string(),
        );
    }
    match PrivateKeyDer::from_pem_slice(text) {
        Ok(PrivateKeyDer::Pkcs8(der)) => Ok(der.secret_pkcs8_der().to_vec()),
        Ok(PrivateKeyDer::Pkcs1(_)) => Err(
            "is a PKCS#1 RSA key (BEGIN RSA PRIVATE KEY), not PKCS#8; convert it with \
             `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pem`"
                .to_string(),
        ),
        Ok(PrivateKeyDer::Sec1(_)) => Err(
            "is an EC key (BEGIN EC PRIVATE KEY); DKIM signs with Ed25519 or RSA only".to_string(),
        ),
        Ok(_) => Err("holds an unsupported kind of private key".to_string()),
        Err(pem::Error::NoItemsFound) => Err(
            "no PKCS#8 private key in it (expected a -----BEGIN PRIVATE KEY----- block, \
             as `schleuse dkim keygen` writes)"
                .to_string(),
        ),
        Err(e) => Err(format!("is not a valid PEM file ({e})")),
    }
}

/// PKCS#8 DER → PEM text (`-----BEGIN PRIVATE KEY-----`, 64 columns).
pub fn pkcs8_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

enum KeyOid {
    Ed25519,
    Rsa,
    Ec,
    Other,
}

/// The algorithm OID of a PKCS#8 `PrivateKeyInfo`/`OneAsymmetricKey`:
/// `SEQUENCE { INTEGER version, SEQUENCE { OID algorithm, … }, OCTET STRING … }`.
fn pkcs8_algorithm(der: &[u8]) -> Result<KeyOid, String> {
    const NOT: &str = "is not a PKCS#8 private key";
    let (tag, outer, _) = der_item(der).ok_or(NOT)?;
    if tag != 0x30 {
        return Err(NOT.into());
    }
    let (tag, _, rest) = der_item(outer).ok_or(NOT)?;
    if tag != 0x02 {
        return Err(NOT.into());
    }
    let (tag, alg, _) = der_item(rest).ok_or(NOT)?;
    if tag != 0x30 {
        return Err(NOT.into());
    }
    let (tag, oid, _) = der_item(alg).ok_or(NOT)?;
    if tag != 0x06 {
        return Err(NOT.into());
    }
    Ok(match oid {
        [0x2b, 0x65, 0x70] => KeyOid::Ed25519,
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01] => KeyOid::Rsa,
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01] => KeyOid::Ec,
        _ => KeyOid::Other,
    })
}

/// One DER TLV: (tag, contents, the bytes after it).
fn der_item(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (len, header) = if first & 0x80 == 0 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*der.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, der.get(header..end)?, &der[end..]))
}

/// A `[[dkim]]` entry with its key loaded.
pub struct LoadedKey {
    /// The signing domain (`d=`): lowercase, A-labels.
    pub domain: String,
    pub selector: String,
    pub path: PathBuf,
    pub key: PrivateKey,
}

impl LoadedKey {
    pub fn load(entry: &crate::config::DkimKey) -> Result<LoadedKey, DkimError> {
        let domain = normalize_domain(&entry.domain).ok_or_else(|| {
            DkimError::Config(format!(
                "dkim domain {:?} is not a valid domain name",
                entry.domain
            ))
        })?;
        Ok(LoadedKey {
            domain,
            selector: entry.selector.clone(),
            path: entry.key.clone(),
            key: PrivateKey::load(&entry.key)?,
        })
    }

    /// `<selector>._domainkey.<domain>`, the name of the TXT record.
    pub fn record_name(&self) -> String {
        record_name(&self.selector, &self.domain)
    }
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("path", &self.path)
            .field("algorithm", &self.key.algorithm)
            .finish()
    }
}

/// `<selector>._domainkey.<domain>`.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// A domain as DKIM compares it: A-labels (IDNA), lowercase, no final dot.
/// `None` for something that is not a domain name.
pub fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.');
    if d.is_empty() || d.starts_with('[') {
        return None;
    }
    let ascii = idna::domain_to_ascii(d).ok()?;
    (!ascii.is_empty()).then(|| ascii.to_ascii_lowercase())
}

/// `p=` value: base64 of the public key bytes.
pub fn public_key_base64(key: &PrivateKey) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(&key.public_key)
}

/// The TXT record value to publish for this key.
pub fn record_value(key: &PrivateKey) -> String {
    format!(
        "v=DKIM1; k={}; p={}",
        key.algorithm.key_type(),
        public_key_base64(key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed25519_der() -> Vec<u8> {
        aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("generate")
        .as_ref()
        .to_vec()
    }

    #[test]
    fn ed25519_key_roundtrip_through_pem() {
        let der = ed25519_der();
        let pem = pkcs8_to_pem(&der);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(pkcs8_from_pem(pem.as_bytes()).expect("pem"), der);
        let key = PrivateKey::from_pkcs8_der(&der).expect("parse");
        assert_eq!(key.algorithm, Algorithm::Ed25519);
        assert_eq!(key.public_key.len(), 32);
        assert!(key.public_key_matches(&key.public_key.clone()));
        assert!(record_value(&key).starts_with("v=DKIM1; k=ed25519; p="));
    }

    #[test]
    fn rsa_public_key_is_spki_and_pkcs1_also_matches() {
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("generate");
        let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().expect("der");
        let key = PrivateKey::from_pkcs8_der(der.as_ref()).expect("parse");
        assert_eq!(key.algorithm, Algorithm::Rsa);
        assert_eq!(key.bits, 2048);
        // SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID rsaEncryption … } … }
        assert_eq!(&key.public_key[..2], &[0x30, 0x82]);
        assert!(
            key.public_key
                .windows(9)
                .any(|w| w == [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01])
        );
        let pkcs1 = pair.public_key().as_ref().to_vec();
        assert_ne!(pkcs1, key.public_key);
        assert!(key.public_key_matches(&pkcs1));
        assert!(key.public_key_matches(&key.public_key.clone()));
        let other =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("generate");
        assert!(!key.public_key_matches(other.public_key().as_ref()));
        key.signing_key().expect("mail-auth accepts it");
    }

    #[test]
    fn wrong_files_are_named_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let e = PrivateKey::load(&missing).unwrap_err().to_string();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").expect("write");
        let e = PrivateKey::load(&garbage).unwrap_err().to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("BEGIN PRIVATE KEY"),
            "{e}"
        );

        let pkcs1 = dir.path().join("pkcs1.pem");
        std::fs::write(
            &pkcs1,
            "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK==\n-----END RSA PRIVATE KEY-----\n",
        )
        .expect("write");
        let e = PrivateKey::load(&pkcs1).unwrap_err().to_string();
        assert!(e.contains("PKCS#1") && e.contains("openssl pkcs8"), "{e}");

        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
        let ec_path = dir.path().join("ec.pem");
        std::fs::write(&ec_path, ec.serialize_pem()).expect("write");
        let e = PrivateKey::load(&ec_path).unwrap_err().to_string();
        assert!(e.contains("EC") && e.contains("Ed25519 or RSA"), "{e}");
    }

    #[test]
    fn domains_normalize_to_lowercase_a_labels() {
        assert_eq!(
            normalize_domain("Landkreis.Example.").as_deref(),
            Some("landkreis.example")
        );
        assert_eq!(
            normalize_domain("müller.example").as_deref(),
            Some("xn--mller-kva.example")
        );
        assert_eq!(normalize_domain(""), None);
        assert_eq!(normalize_domain("[127.0.0.1]"), None);
    }
}
