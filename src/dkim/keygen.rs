//! `schleuse dkim keygen`: a new signing key and the DNS record to publish.
//!
//! Keys are generated with aws-lc-rs (Ed25519, or RSA with 2048 bits) and
//! written as unencrypted PKCS#8 PEM, mode 0600, to
//! `<dir>/<domain>.<selector>.<ed25519|rsa>.pem`; an existing file is never
//! overwritten. The key is read back through the same code the gateway
//! uses to load it, so what is printed is what will sign.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer as _;

use super::DkimError;
use super::keys::{self, Algorithm, PrivateKey};

/// Where keygen writes keys, relative to the working directory.
pub const DEFAULT_DIR: &str = "certs/dkim";

/// RSA modulus size of generated keys (RFC 8301: at least 2048 SHOULD).
pub const RSA_BITS: usize = 2048;

/// What `dkim keygen` made.
#[derive(Debug, Clone)]
pub struct Generated {
    pub path: PathBuf,
    pub algorithm: Algorithm,
    /// Lowercase A-label domain.
    pub domain: String,
    pub selector: String,
    /// `<selector>._domainkey.<domain>`
    pub record_name: String,
    /// `v=DKIM1; k=…; p=…`
    pub record_value: String,
}

impl Generated {
    /// The record as a zone-file line: character-strings of at most 255
    /// bytes each (an RSA-2048 record is about 410), which DNS joins again.
    pub fn zone_line(&self) -> String {
        let chunks: Vec<String> = self
            .record_value
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!("{}. IN TXT {}", self.record_name, chunks.join(" "))
    }

    /// The `[[dkim]]` block that makes the gateway sign with this key.
    pub fn config_block(&self) -> String {
        format!(
            "[[dkim]]\ndomain = \"{}\"\nselector = \"{}\"\nkey = \"{}\"\n",
            self.domain,
            self.selector,
            self.path.display()
        )
    }

    /// Everything `dkim keygen` prints.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Wrote {} ({}{}, PKCS#8, mode 0600).\n",
            self.path.display(),
            self.algorithm,
            if self.algorithm == Algorithm::Rsa {
                format!(" {RSA_BITS} bits")
            } else {
                String::new()
            }
        );
        let _ = writeln!(s, "Publish this DNS TXT record:");
        let _ = writeln!(s, "  name:  {}", self.record_name);
        let _ = writeln!(s, "  value: {}\n", self.record_value);
        let _ = writeln!(s, "As a zone-file line:");
        let _ = writeln!(s, "  {}\n", self.zone_line());
        let _ = writeln!(
            s,
            "Add this to the configuration (then reload with SIGHUP):"
        );
        for line in self.config_block().lines() {
            let _ = writeln!(s, "  {line}");
        }
        let _ = writeln!(
            s,
            "\nOnce the record is published: schleuse dkim check --domain {} --selector {}",
            self.domain, self.selector
        );
        s
    }
}

/// A selector as the config accepts it: letters, digits, `-`, `_`, `.`.
pub fn valid_selector(selector: &str) -> bool {
    !selector.is_empty()
        && !selector.starts_with('.')
        && !selector.ends_with('.')
        && selector
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The file keygen writes for this key (and `dkim check` looks for when a
/// selector is not in the config yet).
pub fn key_path(dir: &Path, domain: &str, selector: &str, algorithm: Algorithm) -> PathBuf {
    dir.join(format!("{domain}.{selector}.{}.pem", algorithm.key_type()))
}

/// Generates a key, writes it under `dir` (created 0700 if missing) and
/// returns what to publish.
pub fn keygen(
    dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
) -> Result<Generated, DkimError> {
    let normalized = keys::normalize_domain(domain)
        .filter(|d| d.contains('.'))
        .ok_or_else(|| {
            DkimError::Config(format!(
                "--domain {domain:?} is not a domain name like landkreis.example"
            ))
        })?;
    if !valid_selector(selector) {
        return Err(DkimError::Config(format!(
            "--selector {selector:?}: letters, digits, '-', '_' and '.' only"
        )));
    }
    let path = key_path(dir, &normalized, selector, algorithm);
    if path.exists() {
        return Err(DkimError::Exists { path });
    }
    // One selector is one DNS record: it cannot hold an Ed25519 and an RSA key.
    for other in [Algorithm::Ed25519, Algorithm::Rsa] {
        let other_path = key_path(dir, &normalized, selector, other);
        if other != algorithm && other_path.exists() {
            return Err(DkimError::Config(format!(
                "{} already holds the {other} key of selector {selector}; one selector \
                 publishes one key: choose another selector for the {algorithm} key",
                other_path.display()
            )));
        }
    }
    let io = |p: &Path, what: &str, e: std::io::Error| DkimError::Io {
        path: p.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, "cannot create the directory", e))?;

    let der = generate(algorithm)?;
    // Parse what was generated exactly as the gateway will load it.
    let key = PrivateKey::from_pkcs8_der(&der).map_err(|reason| DkimError::Key {
        path: path.clone(),
        reason,
    })?;
    let pem = keys::pkcs8_to_pem(&der);

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => DkimError::Exists { path: path.clone() },
            _ => io(&path, "cannot create", e),
        })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&path, "cannot write", e))?;

    Ok(Generated {
        record_name: keys::record_name(selector, &normalized),
        record_value: keys::record_value(&key),
        path,
        algorithm,
        domain: normalized,
        selector: selector.to_string(),
    })
}

fn generate(algorithm: Algorithm) -> Result<Vec<u8>, DkimError> {
    let failed = |_| DkimError::Config(format!("{algorithm} key generation failed"));
    Ok(match algorithm {
        // PKCS#8 v1, as `openssl genpkey -algorithm ed25519` writes it.
        Algorithm::Ed25519 => aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(failed)?
        .as_ref()
        .to_vec(),
        Algorithm::Rsa => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(failed)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(failed)?;
            der.as_ref().to_vec()
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_0600_pkcs8_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kdir = dir.path().join("certs/dkim");
        for (alg, selector) in [
            (Algorithm::Ed25519, "via2026"),
            (Algorithm::Rsa, "via2026r"),
        ] {
            let g = keygen(&kdir, "Landkreis.Example", selector, alg).expect("keygen");
            assert_eq!(
                g.path,
                kdir.join(format!(
                    "landkreis.example.{selector}.{}.pem",
                    alg.key_type()
                ))
            );
            let mode = std::fs::metadata(&g.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let key = PrivateKey::load(&g.path).expect("loads back");
            assert_eq!(key.algorithm, alg);
            assert_eq!(
                g.record_name,
                format!("{selector}._domainkey.landkreis.example")
            );
            assert_eq!(g.record_value, keys::record_value(&key));
            assert!(g.zone_line().split('"').all(|s| s.len() <= 255));
            let e = keygen(&kdir, "landkreis.example", selector, alg)
                .unwrap_err()
                .to_string();
            assert!(e.contains("already exists"), "{e}");
        }
        let e = keygen(&kdir, "landkreis.example", "via2026", Algorithm::Rsa)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one selector"), "{e}");
        let mode = std::fs::metadata(&kdir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(keygen(&kdir, "nodot", "s", Algorithm::Ed25519).is_err());
        assert!(keygen(&kdir, "a.example", "bad selector", Algorithm::Ed25519).is_err());
    }
}
