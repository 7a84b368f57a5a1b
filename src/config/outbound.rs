//! Outbound protection (SPEC §6): rate caps per recipient domain
//! (`[[delivery.domain_limit]]`) and egress source addresses, each with its
//! own cap (`[[upstream.egress]]`). Both are optional; the delivery side is
//! `crate::delivery::caps` and `crate::delivery::egress`.

use std::net::IpAddr;

use serde::Deserialize;

use super::dns_name;

/// A group of recipient domains sharing one rate cap: providers run several
/// domains on the same servers (gmx.de, gmx.net and web.de are one), and it
/// is the servers that throttle.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainLimit {
    /// Recipient domains; `*.example.org` also matches every subdomain.
    pub domains: Vec<String>,
    /// Recipients handed to the upstream per minute for these domains.
    pub recipients_per_minute: u32,
    /// How many may go at once before the steady rate applies; default:
    /// `recipients_per_minute` (a full minute's worth).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// One source address for upstream connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// The local address connections are made from (must exist on a local
    /// interface).
    pub address: IpAddr,
    /// The address the world sees for it, when NAT sits in between; looked
    /// up in the blocklists instead of `address`.
    #[serde(default)]
    pub public_address: Option<IpAddr>,
    /// Messages sent from this address per minute; 0: no cap of its own.
    #[serde(default)]
    pub messages_per_minute: u32,
}

impl Egress {
    /// The address the blocklists know this egress by.
    pub fn public(&self) -> IpAddr {
        self.public_address.unwrap_or(self.address).to_canonical()
    }
}

impl DomainLimit {
    /// Whether `domain` (lowercase ASCII) is one of this group's.
    pub fn matches(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| domain_matches(d, domain))
    }
}

/// `pattern` as configured: `example.org` exactly, `*.example.org` the
/// domain and every subdomain; case does not matter.
fn domain_matches(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.trim().trim_end_matches('.');
    let domain = domain.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            domain.eq_ignore_ascii_case(parent)
                || (domain.len() > parent.len() + 1
                    && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
                    && domain[domain.len() - parent.len()..].eq_ignore_ascii_case(parent))
        }
        None => domain.eq_ignore_ascii_case(pattern),
    }
}

pub(super) fn check_domain_limits(limits: &[DomainLimit]) -> Result<(), (String, String)> {
    for (i, l) in limits.iter().enumerate() {
        let key = |k: &str| format!("delivery.domain_limit[{i}].{k}");
        if l.domains.is_empty() {
            return Err((key("domains"), "needs at least one domain".into()));
        }
        for (j, d) in l.domains.iter().enumerate() {
            let bare = d.trim().strip_prefix("*.").unwrap_or(d.trim());
            if dns_name(bare).is_none() {
                return Err((
                    format!("delivery.domain_limit[{i}].domains[{j}]"),
                    format!("{d:?} is not a domain like gmx.de or *.schule.example"),
                ));
            }
            let earlier = limits[..i]
                .iter()
                .flat_map(|o| o.domains.iter())
                .chain(&l.domains[..j]);
            if earlier.into_iter().any(|o| o.eq_ignore_ascii_case(d)) {
                return Err((
                    format!("delivery.domain_limit[{i}].domains[{j}]"),
                    format!("{d} is listed twice; one domain belongs to one group"),
                ));
            }
        }
        if l.recipients_per_minute == 0 {
            return Err((
                key("recipients_per_minute"),
                "must be at least 1 (leave the group out for no cap)".into(),
            ));
        }
        if l.burst == Some(0) {
            return Err((key("burst"), "must be at least 1".into()));
        }
    }
    Ok(())
}

pub(super) fn check_egress(egress: &[Egress]) -> Result<(), (String, String)> {
    for (i, e) in egress.iter().enumerate() {
        let key = |k: &str| format!("upstream.egress[{i}].{k}");
        if e.address.is_unspecified() || e.address.is_multicast() {
            return Err((key("address"), format!("{} cannot be bound", e.address)));
        }
        if egress[..i].iter().any(|o| o.address == e.address) {
            return Err((key("address"), format!("{} is listed twice", e.address)));
        }
        if let Some(p) = e.public_address
            && (p.is_unspecified() || p.is_loopback() || p.is_multicast())
        {
            return Err((
                key("public_address"),
                format!("{p} is not a public address"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_the_domain_and_its_subdomains() {
        assert!(domain_matches("gmx.de", "GMX.de"));
        assert!(!domain_matches("gmx.de", "mail.gmx.de"));
        assert!(domain_matches("*.schule.example", "schule.example"));
        assert!(domain_matches("*.schule.example", "gs-nord.schule.example"));
        assert!(!domain_matches("*.schule.example", "xschule.example"));
        assert!(!domain_matches("*.schule.example", "example"));
    }

    #[test]
    fn bad_groups_are_named() {
        let group = |domains: &[&str], rate| DomainLimit {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            recipients_per_minute: rate,
            burst: None,
        };
        let err = |l: &[DomainLimit]| check_domain_limits(l).err().map(|e| e.0);
        assert_eq!(err(&[group(&["gmx.de", "web.de"], 60)]), None);
        assert_eq!(
            err(&[group(&["gmx.de"], 0)]).as_deref(),
            Some("delivery.domain_limit[0].recipients_per_minute")
        );
        assert_eq!(
            err(&[group(&["gmx.de"], 5), group(&["GMX.de"], 5)]).as_deref(),
            Some("delivery.domain_limit[1].domains[0]")
        );
        assert_eq!(
            err(&[group(&["not a domain"], 5)]).as_deref(),
            Some("delivery.domain_limit[0].domains[0]")
        );
    }
}
