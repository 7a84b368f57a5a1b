//! `[reputation]`: the blocklist watch (SPEC §6, `crate::reputation`) and
//! the anomaly hold (`crate::anomaly`).
//!
//! Off by default: the IPs that matter are the ones the internet sees the
//! mail come from, which the gateway cannot know by itself (behind Mailjet
//! they are Mailjet's), and Spamhaus answers queries that arrive through
//! public resolvers with "refused" (127.255.255.254), so an unconfigured
//! check would mostly report "unknown" and tell a third party the county's
//! domain names for nothing.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reputation {
    /// Run the watch at all.
    pub blocklist_check: bool,
    /// The gateway's public source addresses (IPv4 and IPv6), looked up in
    /// every `dnsbl`.
    pub egress_ips: Vec<IpAddr>,
    /// IP blocklist zones (`<reversed ip>.<zone>`).
    pub dnsbl: Vec<String>,
    /// Domain blocklist zones (`<domain>.<zone>`).
    pub rhsbl: Vec<String>,
    /// Sending domains looked up in every `rhsbl`; empty: the `[[dkim]]`
    /// domains and the domain of `[sender] system_address`.
    pub domains: Vec<String>,
    /// Time between two rounds (read again every round, so a reload applies).
    #[serde(deserialize_with = "duration")]
    pub check_interval: Duration,
    /// Hold all delivery (messages stay queued) while anything is listed.
    pub pause_on_listing: bool,
    /// Hold the further mail of an account sending far above its baseline
    /// (`crate::anomaly`).
    pub anomaly_hold: bool,
    /// How far above the baseline (current > factor × baseline).
    pub anomaly_factor: f64,
    /// The current period (rounded up to whole hours).
    #[serde(deserialize_with = "duration")]
    pub anomaly_window: Duration,
    /// How far back the baseline looks (rounded up to whole hours).
    #[serde(deserialize_with = "duration")]
    pub anomaly_baseline: Duration,
    /// Nothing is held before the current window has this many messages.
    pub anomaly_min_messages: u64,
}

impl Default for Reputation {
    fn default() -> Self {
        Self {
            blocklist_check: false,
            egress_ips: Vec::new(),
            dnsbl: vec!["zen.spamhaus.org".into()],
            rhsbl: vec!["dbl.spamhaus.org".into()],
            domains: Vec::new(),
            check_interval: Duration::from_secs(15 * 60),
            pause_on_listing: false,
            anomaly_hold: false,
            anomaly_factor: 5.0,
            anomaly_window: Duration::from_secs(3600),
            anomaly_baseline: Duration::from_secs(7 * 86_400),
            anomaly_min_messages: 50,
        }
    }
}

/// A blocklist zone or a domain, lowercased, without a final dot, when it
/// is a plausible DNS name: two or more labels of letters, digits and `-`
/// (not at either end), at most 63 bytes each and 253 in all. Domains with
/// non-ASCII letters are taken in their IDNA (`xn--`) form.
pub fn dns_name(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let t = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let ascii = if t.is_ascii() {
        t.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(t).ok()?
    };
    let labels: Vec<&str> = ascii.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (ascii.len() <= 253 && labels.len() >= 2 && labels.iter().all(label_ok)).then_some(ascii)
}

/// A duration in whole hours, rounded up, at least 1.
fn hours(d: Duration) -> i64 {
    i64::try_from(d.as_secs().div_ceil(3600))
        .unwrap_or(i64::MAX)
        .max(1)
}

impl Reputation {
    /// `anomaly_window` and `anomaly_baseline` in whole hours, as the
    /// anomaly hold counts them (`crate::anomaly`).
    pub fn anomaly_hours(&self) -> (i64, i64) {
        (hours(self.anomaly_window), hours(self.anomaly_baseline))
    }

    pub(super) fn check(&self) -> Result<(), (String, String)> {
        for (i, ip) in self.egress_ips.iter().enumerate() {
            let ip = ip.to_canonical();
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                return Err((
                    format!("reputation.egress_ips[{i}]"),
                    format!("{ip} is not a public source address"),
                ));
            }
        }
        for (key, names) in [
            ("dnsbl", &self.dnsbl),
            ("rhsbl", &self.rhsbl),
            ("domains", &self.domains),
        ] {
            for (i, name) in names.iter().enumerate() {
                let Some(normal) = dns_name(name) else {
                    return Err((
                        format!("reputation.{key}[{i}]"),
                        format!("{name:?} is not a DNS name like zen.spamhaus.org"),
                    ));
                };
                // Room for the 64 bytes of a reversed IPv6 address.
                if key == "dnsbl" && normal.len() > 253 - 65 {
                    return Err((format!("reputation.{key}[{i}]"), "is too long".into()));
                }
            }
        }
        if self.check_interval < Duration::from_secs(1) {
            return Err((
                "reputation.check_interval".into(),
                "must be at least 1s".into(),
            ));
        }
        if !(self.anomaly_factor.is_finite() && self.anomaly_factor > 1.0) {
            return Err((
                "reputation.anomaly_factor".into(),
                "must be a number greater than 1".into(),
            ));
        }
        for (key, d) in [
            ("anomaly_window", self.anomaly_window),
            ("anomaly_baseline", self.anomaly_baseline),
        ] {
            if d < Duration::from_secs(60) {
                return Err((format!("reputation.{key}"), "must be at least 1m".into()));
            }
        }
        let (window, baseline) = self.anomaly_hours();
        if baseline <= window {
            return Err((
                "reputation.anomaly_baseline".into(),
                "must be longer than anomaly_window (both rounded up to whole hours)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours() {
        assert_eq!(hours(Duration::from_secs(60)), 1);
        assert_eq!(hours(Duration::from_secs(3600)), 1);
        assert_eq!(hours(Duration::from_secs(3601)), 2);
        assert_eq!(hours(Duration::from_secs(7 * 86_400)), 168);
    }

    #[test]
    fn names() {
        assert_eq!(
            dns_name("Zen.Spamhaus.ORG.").as_deref(),
            Some("zen.spamhaus.org")
        );
        assert_eq!(
            dns_name("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        for bad in [
            "",
            "localhost",
            "zen..spamhaus.org",
            "-a.example",
            "a_b.example",
            "a b.example",
            "127.0.0.1:53.example",
        ] {
            assert_eq!(dns_name(bad), None, "{bad:?}");
        }
        assert!(dns_name(&format!("{}.example", "a".repeat(64))).is_none());
    }

    #[test]
    fn checks() {
        let ok = Reputation {
            blocklist_check: true,
            egress_ips: vec![
                "203.0.113.25".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
            ..Reputation::default()
        };
        ok.check().expect("valid");
        let bad = Reputation {
            egress_ips: vec![
                "203.0.113.25".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
            ],
            ..Reputation::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "reputation.egress_ips[1]");
        let bad = Reputation {
            rhsbl: vec!["dbl.spamhaus.org".into(), "dbl spamhaus".into()],
            ..Reputation::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "reputation.rhsbl[1]");
        let bad = Reputation {
            check_interval: Duration::from_millis(10),
            ..Reputation::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "reputation.check_interval");
        let bad = Reputation {
            anomaly_factor: 1.0,
            ..Reputation::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "reputation.anomaly_factor");
        let bad = Reputation {
            anomaly_window: Duration::from_secs(30),
            ..Reputation::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "reputation.anomaly_window");
        let bad = Reputation {
            anomaly_window: Duration::from_secs(3600),
            anomaly_baseline: Duration::from_secs(3000),
            ..Reputation::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "reputation.anomaly_baseline");
    }

    #[test]
    fn shipped_config_states_the_defaults() {
        let text = include_str!("../../conf/schleuse.toml");
        let c = super::super::Config::parse(text, std::path::Path::new("schleuse.toml"))
            .expect("conf/schleuse.toml");
        let (r, d) = (&c.reputation, Reputation::default());
        assert_eq!(r.blocklist_check, d.blocklist_check);
        assert_eq!(r.egress_ips, d.egress_ips);
        assert_eq!(
            (&r.dnsbl, &r.rhsbl, &r.domains),
            (&d.dnsbl, &d.rhsbl, &d.domains)
        );
        assert_eq!(r.check_interval, d.check_interval);
        assert_eq!(r.pause_on_listing, d.pause_on_listing);
        assert_eq!(r.anomaly_hold, d.anomaly_hold);
        assert_eq!(r.anomaly_factor, d.anomaly_factor);
        assert_eq!(
            (r.anomaly_window, r.anomaly_baseline, r.anomaly_min_messages),
            (d.anomaly_window, d.anomaly_baseline, d.anomaly_min_messages)
        );
    }
}
