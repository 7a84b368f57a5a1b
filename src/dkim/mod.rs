//! DKIM signing (RFC 6376, RFC 8463) and the `schleuse dkim` key tools.
//!
//! Signing is the last change made to a message before it is queued: it
//! runs after every rewrite of the transform stage, over the exact bytes
//! that will be relayed. [`Signer::sign`] returns the `DKIM-Signature:`
//! header field(s) to put in front of the message.
//!
//! - Keys: `[[dkim]]` entries (domain, selector, PKCS#8 PEM file). One
//!   entry per domain signs once; two (an Ed25519 and an RSA key) sign
//!   twice — a per-domain choice, since some receivers and relays handle
//!   two signatures badly. All keys are read and parsed when the gateway
//!   starts and on SIGHUP; a missing, unreadable or non-PKCS#8 key is an
//!   error naming the file (see [`Signer::load`]).
//! - The key is chosen by the domain of the (first) `From:` address,
//!   compared exactly (lowercase, IDNA A-labels): a key for
//!   `landkreis.example` does not sign for `schule.landkreis.example`.
//! - Canonicalization relaxed/relaxed; no `l=` (body length), no `x=`.
//!   Signed header fields: [`SIGNED_HEADERS`]. `From` is listed twice, so
//!   a `From:` added after signing breaks the signature (over-signing,
//!   RFC 6376 §5.4.2); listed fields the message lacks are signed as
//!   absent too, so none of them can be added later either.
//! - Crypto: mail-auth on aws-lc-rs, the crypto library rustls already
//!   uses; no second stack (no ring, no RustCrypto `rsa`).
//!
//! [`keygen`] writes new keys and the DNS record to publish; [`check`]
//! compares the published record with the key (`schleuse dkim check`).

pub mod check;
pub mod keygen;
pub mod keys;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use mail_auth::common::crypto::DkimKey as MailAuthKey;
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_parser::{HeaderName, HeaderValue, MessageParser};

pub use keys::{Algorithm, LoadedKey, PrivateKey};

/// The header fields every signature covers, in this order. `From` twice:
/// over-signed. mail-auth signs the instances a message has (bottom-up)
/// and lists the missing ones as well, which signs their absence.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// What can go wrong loading keys, signing, or in the key tools. Each
/// message is one sentence; key problems name the file.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// A key file is missing, unreadable, not PKCS#8 or not Ed25519/RSA.
    #[error("DKIM key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    /// mail-auth could not sign (should not happen with a loaded key).
    #[error("DKIM signing failed: {0}")]
    Sign(String),
    /// `dkim keygen` would overwrite an existing key.
    #[error("{} already exists; refusing to overwrite a key (remove it first, or choose another selector)", path.display())]
    Exists { path: PathBuf },
    /// A file or directory could not be written.
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    /// A domain, selector or `[[dkim]]` entry that cannot be used.
    #[error("{0}")]
    Config(String),
    /// The resolver could not be set up.
    #[error(transparent)]
    Dns(#[from] crate::dns::ResolverError),
}

/// One key ready to sign: the key plus mail-auth's signature template.
struct KeySigner {
    key: LoadedKey,
    signer: DkimSigner<MailAuthKey, Done>,
}

/// The DKIM signer: every configured key, by signing domain.
///
/// Built once at start and on each SIGHUP ([`Signer::load`]), then shared
/// read-only; signing needs no lock.
pub struct Signer {
    /// Keys by lowercase (A-label) domain, in config order.
    by_domain: HashMap<String, Vec<KeySigner>>,
}

impl Signer {
    /// Reads and parses every key file now. The first problem is returned,
    /// naming the file (`DKIM key certs/dkim/x.pem: cannot read: …`).
    pub fn load(keys: &[crate::config::DkimKey]) -> Result<Signer, DkimError> {
        let mut by_domain: HashMap<String, Vec<KeySigner>> = HashMap::new();
        for entry in keys {
            let key = LoadedKey::load(entry)?;
            let mail_auth_key = key.key.signing_key().map_err(|reason| DkimError::Key {
                path: key.path.clone(),
                reason,
            })?;
            let signer = DkimSigner::from_key(mail_auth_key)
                .domain(key.domain.clone())
                .selector(key.selector.clone())
                .headers(SIGNED_HEADERS.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed);
            by_domain
                .entry(key.domain.clone())
                .or_default()
                .push(KeySigner { key, signer });
        }
        Ok(Signer { by_domain })
    }

    /// A signer without keys: every message is "no key for its domain".
    pub fn empty() -> Signer {
        Signer {
            by_domain: HashMap::new(),
        }
    }

    /// The DKIM-Signature header field(s), each ending in CRLF, to prepend
    /// to `message` (CRLF line endings), signed with every key of the
    /// From: domain (one or two signatures: Ed25519 and/or RSA-SHA256 as
    /// configured, in config order); `Ok(None)` when no key exists for that
    /// domain — including a message without a `From:` address with a domain.
    pub fn sign(&self, message: &[u8]) -> Result<Option<Vec<u8>>, DkimError> {
        let Some(domain) = from_domain(message) else {
            return Ok(None);
        };
        let Some(keys) = self.by_domain.get(&domain) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(keys.len() * 640);
        for k in keys {
            let signature = k.signer.sign(message).map_err(|e| {
                DkimError::Sign(format!(
                    "{} with {}: {e}",
                    k.key.record_name(),
                    k.key.path.display()
                ))
            })?;
            out.extend_from_slice(signature.to_header().as_bytes());
        }
        Ok(Some(out))
    }

    /// Whether a key exists for `domain` (any case, U- or A-labels).
    pub fn has_key_for(&self, domain: &str) -> bool {
        keys::normalize_domain(domain).is_some_and(|d| self.by_domain.contains_key(&d))
    }

    /// The signing domains, sorted (for log lines).
    pub fn domains(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self.by_domain.keys().map(String::as_str).collect();
        d.sort_unstable();
        d
    }

    /// Every loaded key, grouped by domain.
    pub fn keys(&self) -> impl Iterator<Item = &LoadedKey> {
        self.by_domain.values().flatten().map(|k| &k.key)
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<String> = self
            .keys()
            .map(|k| format!("{} ({})", k.record_name(), k.key.algorithm))
            .collect();
        keys.sort();
        f.debug_struct("Signer").field("keys", &keys).finish()
    }
}

/// The domain of the message's first `From:` address, normalised as keys
/// are (lowercase A-labels); `None` without one.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = MessageParser::new().parse_headers(message)?;
    parsed
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::From)
        .find_map(|h| match &h.value {
            HeaderValue::Address(a) => a.iter().find_map(|addr| addr.address()),
            _ => None,
        })
        .and_then(|address| address.rsplit_once('@'))
        .and_then(|(_, domain)| keys::normalize_domain(domain))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use mail_auth::common::parse::TxtRecordParser as _;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
    use mail_auth::{
        AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
    };

    use super::*;
    use crate::config::DkimKey;

    /// A TXT "cache" holding the test's records: mail-auth's verifier looks
    /// here first and never reaches the network (no `test` feature needed).
    #[derive(Default)]
    struct Records(Mutex<HashMap<Box<str>, Txt>>);

    impl ResolverCache<Box<str>, Txt> for Records {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.lock().ok()?.get(name).cloned()
        }
        fn remove<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.lock().ok()?.remove(name)
        }
        fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
            if let Ok(mut m) = self.0.lock() {
                m.insert(key, value);
            }
        }
    }

    fn write_key(dir: &std::path::Path, name: &str, alg: Algorithm) -> PathBuf {
        let der = match alg {
            Algorithm::Ed25519 => aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
                &aws_lc_rs::rand::SystemRandom::new(),
            )
            .expect("generate")
            .as_ref()
            .to_vec(),
            Algorithm::Rsa => {
                use aws_lc_rs::encoding::AsDer as _;
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .expect("generate");
                let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().expect("der");
                der.as_ref().to_vec()
            }
        };
        let path = dir.join(name);
        std::fs::write(&path, keys::pkcs8_to_pem(&der)).expect("write key");
        path
    }

    fn entry(domain: &str, selector: &str, key: PathBuf) -> DkimKey {
        DkimKey {
            domain: domain.into(),
            selector: selector.into(),
            key,
        }
    }

    fn message(from: &str) -> Vec<u8> {
        let mut m = format!(
            "From: =?utf-8?q?M=C3=BCller?= <{from}>\r\n\
             To: Eltern <eltern@example.org>\r\n\
             Subject: Schülerbeförderung — Bescheid\r\n\
             Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
             Message-ID: <1@landkreis.example>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n"
        )
        .into_bytes();
        for i in 0..100 {
            m.extend_from_slice(
                format!("Zeile {i}: Grüße aus dem Landratsamt,   mit  Leerzeichen \t\r\n")
                    .as_bytes(),
            );
        }
        m
    }

    /// Verifies `signed` with mail-auth, the public keys served from `records`.
    fn verify(signed: &[u8], records: &Records) -> Vec<DkimResult> {
        let auth = MessageAuthenticator::new(ResolverConfig::default(), ResolverOpts::default())
            .expect("authenticator");
        let msg = AuthenticatedMessage::parse(signed).expect("parse");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let params = Parameters::new(&msg).with_txt_cache(records);
        rt.block_on(auth.verify_dkim(params))
            .into_iter()
            .map(|o| o.result().clone())
            .collect()
    }

    fn publish(records: &Records, signer: &Signer) {
        for k in signer.keys() {
            let value = keys::record_value(&k.key);
            let dk = DomainKey::parse(value.as_bytes()).expect("record parses");
            records.insert(
                format!("{}.", k.record_name()).into_boxed_str(),
                Txt::DomainKey(std::sync::Arc::new(dk)),
                std::time::Instant::now(),
            );
        }
    }

    fn signed(signer: &Signer, msg: &[u8]) -> Vec<u8> {
        let mut out = signer.sign(msg).expect("sign").expect("a key applies");
        out.extend_from_slice(msg);
        out
    }

    #[test]
    fn ed25519_rsa_and_both_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ed = write_key(dir.path(), "ed.pem", Algorithm::Ed25519);
        let rsa = write_key(dir.path(), "rsa.pem", Algorithm::Rsa);
        let msg = message("sb@landkreis.example");
        for (keys, n) in [
            (vec![entry("landkreis.example", "ed", ed.clone())], 1),
            (vec![entry("landkreis.example", "rsa", rsa.clone())], 1),
            (
                vec![
                    entry("Landkreis.Example", "ed", ed.clone()),
                    entry("landkreis.example", "rsa", rsa.clone()),
                ],
                2,
            ),
        ] {
            let signer = Signer::load(&keys).expect("load");
            let records = Records::default();
            publish(&records, &signer);
            let out = signed(&signer, &msg);
            let headers = signer.sign(&msg).unwrap().unwrap();
            let text = String::from_utf8(headers).expect("ascii");
            assert_eq!(text.matches("DKIM-Signature:").count(), n, "{text}");
            assert!(text.ends_with("\r\n"), "{text:?}");
            assert!(text.contains("c=relaxed/relaxed"), "{text}");
            assert!(text.contains("d=landkreis.example"), "{text}");
            let results = verify(&out, &records);
            assert_eq!(results, vec![DkimResult::Pass; n], "{text}");

            // A second From: added after signing breaks every signature.
            let mut tampered = out.clone();
            let at = tampered
                .windows(4)
                .position(|w| w == b"To: ")
                .expect("To header");
            tampered.splice(at..at, b"From: evil@attacker.example\r\n".iter().copied());
            let results = verify(&tampered, &records);
            assert!(
                results.iter().all(|r| *r != DkimResult::Pass),
                "{results:?}"
            );
        }
    }

    #[test]
    fn from_is_over_signed_and_absent_headers_are_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ed = write_key(dir.path(), "ed.pem", Algorithm::Ed25519);
        let signer = Signer::load(&[entry("landkreis.example", "s1", ed)]).expect("load");
        let msg = message("a@landkreis.example");
        let header = String::from_utf8(signer.sign(&msg).unwrap().unwrap()).unwrap();
        let unfolded = header.replace("\r\n\t", " ").replace(' ', "");
        let h = unfolded
            .split(';')
            .find_map(|t| t.strip_prefix("h="))
            .expect("h= tag");
        let names: Vec<String> = h.split(':').map(str::to_ascii_lowercase).collect();
        assert_eq!(names.iter().filter(|n| *n == "from").count(), 2, "{h}");
        for name in ["cc", "reply-to", "to", "subject", "message-id"] {
            assert!(names.iter().any(|n| n == name), "{name} not in {h}");
        }
    }

    #[test]
    fn no_key_for_the_from_domain_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ed = write_key(dir.path(), "ed.pem", Algorithm::Ed25519);
        let signer = Signer::load(&[entry("landkreis.example", "s1", ed)]).expect("load");
        assert!(signer.has_key_for("LANDKREIS.example."));
        assert!(!signer.has_key_for("schule.landkreis.example"));
        assert!(signer.sign(&message("x@other.example")).unwrap().is_none());
        assert!(
            signer
                .sign(&message("x@schule.landkreis.example"))
                .unwrap()
                .is_none()
        );
        assert!(
            signer
                .sign(b"Subject: no from\r\n\r\nbody\r\n")
                .unwrap()
                .is_none()
        );
        assert!(
            Signer::empty()
                .sign(&message("x@landkreis.example"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn idn_from_domain_signs_with_a_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ed = write_key(dir.path(), "ed.pem", Algorithm::Ed25519);
        let signer = Signer::load(&[entry("müller.example", "s1", ed)]).expect("load");
        assert!(signer.has_key_for("xn--mller-kva.example"));
        let msg = message("info@müller.example");
        let header = String::from_utf8(signer.sign(&msg).unwrap().unwrap()).unwrap();
        assert!(header.contains("d=xn--mller-kva.example"), "{header}");
        let records = Records::default();
        publish(&records, &signer);
        assert_eq!(verify(&signed(&signer, &msg), &records), [DkimResult::Pass]);
    }

    #[test]
    fn load_fails_naming_the_file() {
        let e = Signer::load(&[entry(
            "landkreis.example",
            "s1",
            "/nonexistent/dkim/key.pem".into(),
        )])
        .expect_err("a missing key file")
        .to_string();
        assert!(e.contains("/nonexistent/dkim/key.pem"), "{e}");
    }

    #[test]
    fn from_domain_takes_the_first_address() {
        assert_eq!(
            from_domain(b"From: \"A, B\" <a@Example.ORG>, c@other.example\r\n\r\n").as_deref(),
            Some("example.org")
        );
        assert_eq!(from_domain(b"To: a@example.org\r\n\r\n"), None);
    }
}
