//! How values are written in the configuration file, for every section:
//! `${ENV_VAR}` references, durations, sizes, host names and addresses, and
//! the serde helpers that read them (errors name the key through serde).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

thread_local! {
    // Set while `Config::load_for_admin` loads: unset `${VAR}`s read as
    // empty, and the checks that need a real secret let that pass.
    pub(super) static LENIENT_ENV: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Replaces every `${NAME}` with the environment variable `NAME`.
pub fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {value:?}"))?;
        let name = &after[..end];
        if name.is_empty() {
            return Err("empty ${} reference".into());
        }
        let var = match std::env::var(name) {
            Ok(v) => v,
            Err(_) if LENIENT_ENV.with(|l| l.get()) => String::new(),
            Err(_) => return Err(format!("environment variable {name} is not set")),
        };
        out.push_str(&var);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn expand<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    expand_env(&raw).map_err(serde::de::Error::custom)
}

pub(super) fn expand_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = String::deserialize(d)?;
    expand_env(&raw).map(Some).map_err(serde::de::Error::custom)
}

pub(super) fn expand_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    expand(d).map(PathBuf::from)
}

pub(super) fn expand_opt_path<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<PathBuf>, D::Error> {
    expand(d).map(|s| Some(PathBuf::from(s)))
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    parse_duration(&raw).map_err(serde::de::Error::custom)
}

pub(super) fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| parse_duration(s))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
        // Anything else (-1, 15.5, true) gets the same sentence as a bad
        // text, not serde's "did not match any variant".
        Other(serde::de::IgnoredAny),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(n),
        Raw::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
        Raw::Other(_) => Err(serde::de::Error::custom(
            "not a size like \"25MB\" or \"512KB\" (or a number of bytes)",
        )),
    }
}

/// `30s`, `15m`, `14d`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like \"30s\", \"15m\" or \"14d\" ({e})"))
}

/// `25MB`, `512KB`, `1GB` or plain bytes. Units are binary (1KB = 1024 bytes),
/// as mail administrators usually mean them; `MiB`-style spellings work too.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size like \"25MB\" or \"512KB\"");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// `localhost` or a loopback IP literal.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `local@domain` with a dotted domain or an address literal.
pub fn plausible_recipient(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && (domain.contains('.') || domain.starts_with('['))
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("25MB"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("512 KB"), Ok(512 * 1024));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("25 parsecs").is_err());
        assert!(parse_size("99999999999999GB").is_err());
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86400)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn recipients() {
        assert!(plausible_recipient("eltern@example.org"));
        assert!(plausible_recipient("a@[192.0.2.1]"));
        assert!(!plausible_recipient("postmaster"));
        assert!(!plausible_recipient("a@localhost"));
        assert!(!plausible_recipient("@example.org"));
    }
}
