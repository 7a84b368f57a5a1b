//! `[[dkim]]` and `[dns]`: the signing keys (`crate::dkim`) and the name
//! servers for the gateway's own lookups (`dkim check`, blocklist watch).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, expand_path};

/// One DKIM signing key (RFC 6376). The algorithm (Ed25519 or RSA) is the
/// key file's; the file is PKCS#8 PEM, as `schleuse dkim keygen` writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    #[serde(deserialize_with = "expand_path")]
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Name servers for the gateway's own lookups (`dkim check`, blocklist
    /// watch); empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

pub(super) fn check(keys: &[DkimKey]) -> Result<(), (String, String)> {
    for (i, k) in keys.iter().enumerate() {
        let key = format!("dkim[{i}]");
        if k.domain.trim().is_empty() || !k.domain.contains('.') {
            return Err((
                format!("{key}.domain"),
                "needs a domain like landkreis.example".into(),
            ));
        }
        if k.selector.trim().is_empty()
            || !k
                .selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err((
                format!("{key}.selector"),
                "letters, digits, '-', '_' and '.' only".into(),
            ));
        }
        if keys[..i].iter().any(|o| {
            o.domain.eq_ignore_ascii_case(&k.domain) && o.selector.eq_ignore_ascii_case(&k.selector)
        }) {
            return Err((
                format!("{key}.selector"),
                format!("{} is listed twice for {}", k.selector, k.domain),
            ));
        }
    }
    Ok(())
}
