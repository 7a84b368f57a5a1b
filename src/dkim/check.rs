//! `schleuse dkim check`: does the key published in DNS match the private key?
//!
//! For each selector of the domain (its `[[dkim]]` entries, or the one
//! `--selector`), the TXT record `<selector>._domainkey.<domain>` is looked
//! up with hickory-resolver — through the `[dns] nameservers` when set
//! (tests point them at a stand-in on loopback), else the system's — and
//! compared with the key file. Each selector gets one line:
//! `matches`, `no TXT record at …`, `malformed record at …: …`,
//! `published key does not match …`, or `DNS lookup of … failed: …`.

use std::fmt;
use std::path::{Path, PathBuf};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;

use super::DkimError;
use super::keygen;
use super::keys::{self, Algorithm, PrivateKey};
use crate::config::Config;
use crate::dns::resolver;

/// The verdict for one selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Matches,
    /// NXDOMAIN, or the name exists without a TXT record.
    NoRecord,
    /// The record is there but is not a usable DKIM key record.
    Malformed(String),
    /// A valid record for another key; the detail says how they differ.
    Mismatch(Option<String>),
    /// No answer (timeout, SERVFAIL, refused…).
    LookupFailed(String),
}

/// One selector's result, printed as one line.
#[derive(Debug, Clone)]
pub struct SelectorReport {
    pub selector: String,
    /// `<selector>._domainkey.<domain>`
    pub name: String,
    pub path: PathBuf,
    pub algorithm: Algorithm,
    pub outcome: Outcome,
}

impl SelectorReport {
    pub fn matches(&self) -> bool {
        self.outcome == Outcome::Matches
    }
}

impl fmt::Display for SelectorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, path) = (&self.name, self.path.display());
        write!(f, "{}: ", self.selector)?;
        match &self.outcome {
            Outcome::Matches => write!(
                f,
                "matches: {name} publishes the {} key of {path}",
                self.algorithm
            ),
            Outcome::NoRecord => write!(f, "no TXT record at {name}"),
            Outcome::Malformed(why) => write!(f, "malformed record at {name}: {why}"),
            Outcome::Mismatch(None) => {
                write!(f, "published key does not match {path} (at {name})")
            }
            Outcome::Mismatch(Some(why)) => {
                write!(f, "published key does not match {path} (at {name}): {why}")
            }
            Outcome::LookupFailed(why) => write!(f, "DNS lookup of {name} failed: {why}"),
        }
    }
}

/// The keys to check: the domain's `[[dkim]]` entries, or the one selector
/// (from the config, or else the file `dkim keygen` would have written).
pub fn keys_to_check(
    config: &Config,
    domain: &str,
    selector: Option<&str>,
) -> Result<Vec<(String, String, PathBuf)>, DkimError> {
    let wanted = keys::normalize_domain(domain)
        .ok_or_else(|| DkimError::Config(format!("{domain:?} is not a domain name")))?;
    let configured: Vec<(String, String, PathBuf)> = config
        .dkim
        .iter()
        .filter(|k| keys::normalize_domain(&k.domain).as_deref() == Some(wanted.as_str()))
        .filter(|k| selector.is_none_or(|s| s.eq_ignore_ascii_case(&k.selector)))
        .map(|k| (wanted.clone(), k.selector.clone(), k.key.clone()))
        .collect();
    if !configured.is_empty() {
        return Ok(configured);
    }
    let file = config.file_name().display().to_string();
    let Some(selector) = selector else {
        return Err(DkimError::Config(format!(
            "no [[dkim]] key for {wanted} in {file} \
             (add the block `schleuse dkim keygen` printed, or give --selector)"
        )));
    };
    let dir = Path::new(keygen::DEFAULT_DIR);
    let found: Vec<PathBuf> = [Algorithm::Ed25519, Algorithm::Rsa]
        .into_iter()
        .map(|alg| keygen::key_path(dir, &wanted, selector, alg))
        .filter(|p| p.exists())
        .collect();
    match found.as_slice() {
        [one] => Ok(vec![(wanted, selector.to_string(), one.clone())]),
        [] => Err(DkimError::Config(format!(
            "no [[dkim]] key with selector {selector} for {wanted} in {file}, \
             and no {}/{wanted}.{selector}.{{ed25519,rsa}}.pem",
            keygen::DEFAULT_DIR
        ))),
        _ => Err(DkimError::Config(format!(
            "selector {selector} for {wanted} is not in {file}, and both an Ed25519 and \
             an RSA key file exist for it under {}; add the one in use to the config",
            keygen::DEFAULT_DIR
        ))),
    }
}

/// Checks every selector; key files are read first (an unreadable key is an
/// error naming it), then each record is looked up.
pub async fn check(
    config: &Config,
    domain: &str,
    selector: Option<&str>,
) -> Result<Vec<SelectorReport>, DkimError> {
    let wanted = keys_to_check(config, domain, selector)?;
    let mut loaded = Vec::new();
    for (domain, selector, path) in wanted {
        let key = PrivateKey::load(&path)?;
        loaded.push((domain, selector, path, key));
    }
    let resolver = resolver(&config.dns)?;
    let mut reports = Vec::new();
    for (domain, selector, path, key) in loaded {
        let name = keys::record_name(&selector, &domain);
        let outcome = match lookup_txt(&resolver, &name).await {
            Ok(records) => evaluate(&records, &key),
            Err(outcome) => outcome,
        };
        reports.push(SelectorReport {
            selector,
            name,
            algorithm: key.algorithm,
            path,
            outcome,
        });
    }
    Ok(reports)
}

/// The TXT records at `name`, each with its strings joined (RFC 6376
/// §3.6.2.2); `Err` is the outcome when there is none or no answer.
async fn lookup_txt(resolver: &TokioResolver, name: &str) -> Result<Vec<Vec<u8>>, Outcome> {
    match resolver.txt_lookup(format!("{name}.")).await {
        Ok(lookup) => {
            let records: Vec<Vec<u8>> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                Err(Outcome::NoRecord)
            } else {
                Ok(records)
            }
        }
        Err(e) if e.is_no_records_found() => Err(Outcome::NoRecord),
        Err(e) => Err(Outcome::LookupFailed(e.to_string())),
    }
}

/// Compares the TXT record(s) found with the key.
pub fn evaluate(records: &[Vec<u8>], key: &PrivateKey) -> Outcome {
    let record = match records {
        [] => return Outcome::NoRecord,
        [one] => one,
        many => {
            return Outcome::Malformed(format!(
                "{} TXT records; publish exactly one (verifiers may pick any)",
                many.len()
            ));
        }
    };
    let published = match parse_record(record) {
        Ok(p) => p,
        Err(why) => return Outcome::Malformed(why),
    };
    if published.key_type != key.algorithm {
        return Outcome::Mismatch(Some(format!(
            "the record has k={}, the key file holds an {} key",
            published.key_type.key_type(),
            key.algorithm
        )));
    }
    match key.algorithm {
        Algorithm::Ed25519 if published.p.len() != 32 => {
            let why = if published.p.len() == 44 && published.p.starts_with(&ED25519_SPKI_PREFIX) {
                "p= holds a SubjectPublicKeyInfo (44 bytes); an Ed25519 record carries \
                 the raw 32-byte key (RFC 8463)"
                    .to_string()
            } else {
                format!(
                    "p= holds {} bytes; an Ed25519 key has 32",
                    published.p.len()
                )
            };
            return Outcome::Malformed(why);
        }
        Algorithm::Rsa if keys::rsa_public(&published.p).is_none() => {
            return Outcome::Malformed(
                "p= is not an RSA public key (DER SubjectPublicKeyInfo)".to_string(),
            );
        }
        _ => {}
    }
    if key.public_key_matches(&published.p) {
        Outcome::Matches
    } else {
        Outcome::Mismatch(None)
    }
}

/// `SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (33 bytes) }`
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A DKIM key record, reduced to what matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub key_type: Algorithm,
    /// The decoded `p=`.
    pub p: Vec<u8>,
}

/// Parses a DKIM key record (RFC 6376 §3.6.1): a tag list `v=DKIM1; k=…; p=…`.
pub fn parse_record(raw: &[u8]) -> Result<Published, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the record is not text".to_string())?;
    let mut tags: Vec<(&str, &str)> = Vec::new();
    for part in text.split(';') {
        let part = part.trim_matches(|c: char| c.is_ascii_whitespace());
        if part.is_empty() {
            continue;
        }
        let Some((tag, value)) = part.split_once('=') else {
            return Err(format!("{part:?} is not a tag=value pair"));
        };
        let tag = tag.trim_matches(|c: char| c.is_ascii_whitespace());
        let valid_tag = tag.starts_with(|c: char| c.is_ascii_alphabetic())
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_tag {
            return Err(format!("{tag:?} is not a tag name"));
        }
        if tags.iter().any(|(t, _)| *t == tag) {
            return Err(format!("tag {tag}= appears twice"));
        }
        tags.push((tag, value.trim_matches(|c: char| c.is_ascii_whitespace())));
    }
    let get = |name: &str| tags.iter().find(|(t, _)| *t == name).map(|(_, v)| *v);
    if let Some(v) = get("v") {
        if tags.first().map(|(t, _)| *t) != Some("v") {
            return Err("v= must be the first tag".to_string());
        }
        if v != "DKIM1" {
            return Err(format!("v={v}; a DKIM key record has v=DKIM1"));
        }
    }
    let key_type = match get("k").unwrap_or("rsa") {
        k if k.eq_ignore_ascii_case("rsa") => Algorithm::Rsa,
        k if k.eq_ignore_ascii_case("ed25519") => Algorithm::Ed25519,
        k => return Err(format!("unknown key type k={k} (expected rsa or ed25519)")),
    };
    if let Some(h) = get("h")
        && !h
            .split(':')
            .any(|a| a.trim().eq_ignore_ascii_case("sha256"))
    {
        return Err(format!(
            "h={h} does not allow sha256, which every signature uses"
        ));
    }
    if let Some(s) = get("s")
        && !s.split(':').any(|a| matches!(a.trim(), "*" | "email"))
    {
        return Err(format!("s={s} does not include email"));
    }
    let p = get("p").ok_or("no p= tag (the public key)")?;
    let p: String = p.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if p.is_empty() {
        return Err("p= is empty: the key is revoked".to_string());
    }
    use base64::Engine as _;
    let p = base64::engine::general_purpose::STANDARD
        .decode(p.as_bytes())
        .map_err(|e| format!("p= is not valid base64 ({e})"))?;
    Ok(Published { key_type, p })
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer as _;

    use super::*;

    fn ed25519() -> PrivateKey {
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("generate");
        PrivateKey::from_pkcs8_der(der.as_ref()).expect("parse")
    }

    fn rsa() -> PrivateKey {
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("generate");
        let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().expect("der");
        PrivateKey::from_pkcs8_der(der.as_ref()).expect("parse")
    }

    fn rec(s: &str) -> Vec<Vec<u8>> {
        vec![s.as_bytes().to_vec()]
    }

    #[test]
    fn verdicts() {
        let ed = ed25519();
        let rsa = rsa();
        let ed_value = keys::record_value(&ed);
        let rsa_value = keys::record_value(&rsa);
        assert_eq!(evaluate(&rec(&ed_value), &ed), Outcome::Matches);
        assert_eq!(evaluate(&rec(&rsa_value), &rsa), Outcome::Matches);
        // Folded whitespace inside p= and around tags is allowed.
        let spaced = rsa_value.replacen("p=", " p = ", 1).replace("MII", "MI I");
        assert_eq!(evaluate(&rec(&spaced), &rsa), Outcome::Matches);
        assert_eq!(evaluate(&[], &ed), Outcome::NoRecord);
        assert_eq!(
            evaluate(&rec(&keys::record_value(&ed25519())), &ed),
            Outcome::Mismatch(None)
        );
        assert!(matches!(
            evaluate(&rec(&rsa_value), &ed),
            Outcome::Mismatch(Some(why)) if why.contains("k=rsa")
        ));
        for (record, want) in [
            ("v=DKIM1; k=ed25519; p=!!!", "base64"),
            ("v=DKIM1; k=ed25519", "no p="),
            ("v=DKIM1; k=ed25519; p=", "revoked"),
            ("k=ed25519; v=DKIM1; p=AAAA", "first"),
            ("v=DKIM2; k=ed25519; p=AAAA", "DKIM1"),
            ("v=DKIM1; k=dsa; p=AAAA", "unknown key type"),
            ("v=DKIM1; k=ed25519; p=AAAA", "32"),
            ("v=DKIM1; k=ed25519; h=sha1; p=AAAA", "sha256"),
            ("v=DKIM1; k=ed25519 p=AAAA", "unknown key type"),
            ("hello world", "tag=value"),
        ] {
            match evaluate(&rec(record), &ed) {
                Outcome::Malformed(why) => assert!(why.contains(want), "{record}: {why}"),
                other => panic!("{record}: {other:?}"),
            }
        }
        match evaluate(&rec("v=DKIM1; p=AAAA"), &rsa) {
            Outcome::Malformed(why) => assert!(why.contains("RSA public key"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&ed.public_key);
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
        match evaluate(&rec(&format!("v=DKIM1; k=ed25519; p={b64}")), &ed) {
            Outcome::Malformed(why) => assert!(why.contains("raw 32-byte"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            evaluate(&[ed_value.clone().into_bytes(), ed_value.into_bytes()], &ed),
            Outcome::Malformed(why) if why.contains("2 TXT records")
        ));
    }
}
