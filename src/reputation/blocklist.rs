//! DNSBL and RHSBL lookups and their classification (the state kept
//! between rounds is [`super::watch`]).
//!
//! Names: an IPv4 address reversed by octet (`203.0.113.25` in
//! `zen.spamhaus.org` is `25.113.0.203.zen.spamhaus.org`), an IPv6 address
//! reversed by nibble (32 labels), a domain as it is (`example.org` in
//! `dbl.spamhaus.org` is `example.org.dbl.spamhaus.org`).
//!
//! Answers (A records):
//! - `127.0.0.0/8` → listed, with those return codes (and the TXT record's
//!   text as the reason, when there is one);
//! - NXDOMAIN, or the name without an A record → not listed;
//! - `127.255.255.0/24` (Spamhaus: query refused — public resolver, rate
//!   limit, wrong zone name), `127.0.1.255` on an RHSBL (Spamhaus DBL: "IP
//!   queries prohibited"), an address outside `127.0.0.0/8` (a resolver that
//!   rewrites NXDOMAIN), SERVFAIL, REFUSED, a timeout or any other resolver
//!   error → unknown. Unknown is never a listing; it does not clear one
//!   either (see [`Watch`](super::watch::Watch)).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::task::JoinSet;

use crate::config::{Config, dns_name};

/// What one lookup said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Listed {
        /// The A records of the answer (`127.0.0.2`, …).
        codes: Vec<Ipv4Addr>,
        /// The list's TXT record at the same name, if it has one.
        reason: Option<String>,
    },
    /// NXDOMAIN (or no A record): not on this list.
    Clear,
    /// No usable answer; the text says why.
    Unknown(String),
}

impl Verdict {
    /// The `result` label of `schleuse_blocklist_checks_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Listed { .. } => "listed",
            Verdict::Clear => "clear",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// One name to look up: a target (egress IP or sending domain) on a list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Check {
    /// The IP address or the domain, as logged and in the metric.
    pub target: String,
    /// The list's zone.
    pub list: String,
    /// The DNS name asked for (no final dot).
    pub query: String,
    /// A domain on an RHSBL (else an IP on a DNSBL).
    pub rhsbl: bool,
}

/// `<reversed address>.<zone>`; IPv4-mapped IPv6 addresses as IPv4.
pub fn ip_query(ip: IpAddr, zone: &str) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            name.push_str(zone);
            name
        }
    }
}

/// `<domain>.<zone>`.
pub fn domain_query(domain: &str, zone: &str) -> String {
    format!("{domain}.{zone}")
}

/// The sending domains checked on the RHSBLs: `[reputation] domains`, or
/// else every `[[dkim]]` domain and the domain of `[sender] system_address`.
pub fn domains(config: &Config) -> Vec<String> {
    let configured = &config.reputation.domains;
    let raw: Vec<&str> = if configured.is_empty() {
        let system = config
            .sender
            .system_address
            .rsplit_once('@')
            .map(|(_, d)| d);
        config
            .dkim
            .iter()
            .map(|k| k.domain.as_str())
            .chain(system)
            .collect()
    } else {
        configured.iter().map(String::as_str).collect()
    };
    let set: BTreeSet<String> = raw.into_iter().filter_map(dns_name).collect();
    set.into_iter().collect()
}

/// Every (target, list) pair the configuration asks for.
pub fn checks(config: &Config) -> Vec<Check> {
    let r = &config.reputation;
    let zones = |lists: &[String]| -> BTreeSet<String> {
        lists.iter().filter_map(|z| dns_name(z)).collect()
    };
    let ips: BTreeSet<IpAddr> = r
        .egress_ips
        .iter()
        .map(IpAddr::to_canonical)
        .chain(config.upstream.egress.iter().map(|e| e.public()))
        .collect();
    let mut out = Vec::new();
    for ip in &ips {
        for zone in &zones(&r.dnsbl) {
            out.push(Check {
                target: ip.to_string(),
                list: zone.clone(),
                query: ip_query(*ip, zone),
                rhsbl: false,
            });
        }
    }
    for domain in domains(config) {
        for zone in &zones(&r.rhsbl) {
            out.push(Check {
                target: domain.clone(),
                list: zone.clone(),
                query: domain_query(&domain, zone),
                rhsbl: true,
            });
        }
    }
    out
}

/// Classifies the A records of an answer that had some.
pub fn classify(addrs: &[Ipv4Addr], rhsbl: bool) -> Verdict {
    if addrs.is_empty() {
        return Verdict::Clear;
    }
    let list = |a: &[Ipv4Addr]| {
        a.iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if let Some(a) = addrs.iter().find(|a| !a.is_loopback()) {
        return Verdict::Unknown(format!(
            "answer {a} is outside 127.0.0.0/8 (a resolver that rewrites NXDOMAIN?)"
        ));
    }
    let refused = |a: &&Ipv4Addr| {
        let [_, b, c, d] = a.octets();
        (b, c) == (255, 255) || (rhsbl && (b, c, d) == (0, 1, 255))
    };
    if addrs.iter().any(|a| refused(&a)) {
        return Verdict::Unknown(format!(
            "the list refused the query ({}: public or unregistered resolver, rate limit, \
             or wrong zone name)",
            list(addrs)
        ));
    }
    let mut codes = addrs.to_vec();
    codes.sort();
    codes.dedup();
    Verdict::Listed {
        codes,
        reason: None,
    }
}

/// The response code of a "no records" answer; `None` for other errors.
fn negative_code(e: &NetError) -> Option<ResponseCode> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            Some(*response_code)
        }
        _ => None,
    }
}

/// Looks `query` up and classifies the answer. Bounded by the resolver's
/// own timeout and attempts, and by `limit` over all.
pub async fn lookup(
    resolver: &TokioResolver,
    query: &str,
    rhsbl: bool,
    limit: Duration,
) -> Verdict {
    if query.len() > 253 {
        return Verdict::Unknown(format!("{query} is longer than 253 bytes"));
    }
    let fqdn = format!("{query}.");
    let answer =
        match tokio::time::timeout(limit, resolver.lookup(fqdn.as_str(), RecordType::A)).await {
            Err(_) => return Verdict::Unknown(format!("no answer within {limit:?}")),
            Ok(a) => a,
        };
    let addrs: Vec<Ipv4Addr> = match answer {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
        Err(e) => {
            return match negative_code(&e) {
                Some(ResponseCode::NXDomain | ResponseCode::NoError) => Verdict::Clear,
                _ => Verdict::Unknown(e.to_string()),
            };
        }
    };
    let mut verdict = classify(&addrs, rhsbl);
    if let Verdict::Listed { reason, .. } = &mut verdict {
        *reason = txt_reason(resolver, &fqdn, limit).await;
    }
    verdict
}

/// The list's explanation (usually a URL), best effort.
async fn txt_reason(resolver: &TokioResolver, fqdn: &str, limit: Duration) -> Option<String> {
    let lookup = tokio::time::timeout(limit, resolver.txt_lookup(fqdn))
        .await
        .ok()?
        .ok()?;
    let texts: Vec<String> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(String::from_utf8_lossy(&txt.txt_data.concat()).into_owned()),
            _ => None,
        })
        .collect();
    let mut text = texts.join(" | ");
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    (!text.is_empty()).then_some(text)
}

/// One round: every check of `config`, looked up at once through the
/// `[dns]` resolver (a fresh one, so no answer is cached from an earlier
/// round). Results come in the order of [`checks`].
pub async fn check_all(config: &Config) -> Vec<(Check, Verdict)> {
    let checks = checks(config);
    if checks.is_empty() {
        return Vec::new();
    }
    let resolver = match crate::dns::resolver(&config.dns) {
        Ok(r) => r,
        Err(e) => {
            let why = e.to_string();
            return checks
                .into_iter()
                .map(|c| (c, Verdict::Unknown(why.clone())))
                .collect();
        }
    };
    // The resolver makes 2 attempts of [dns] timeout each; the margin covers
    // the TXT lookup of a listing.
    let limit = config.dns.timeout.saturating_mul(3) + Duration::from_secs(1);
    let mut tasks = JoinSet::new();
    for (i, check) in checks.iter().enumerate() {
        let (resolver, query, rhsbl) = (resolver.clone(), check.query.clone(), check.rhsbl);
        tasks.spawn(async move { (i, lookup(&resolver, &query, rhsbl, limit).await) });
    }
    let mut verdicts: Vec<Option<Verdict>> = vec![None; checks.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, v)) = done {
            verdicts[i] = Some(v);
        }
    }
    checks
        .into_iter()
        .zip(verdicts)
        .map(|(c, v)| {
            let v = v.unwrap_or_else(|| Verdict::Unknown("lookup task failed".into()));
            (c, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DkimKey;

    #[test]
    fn query_names() {
        assert_eq!(
            ip_query("203.0.113.25".parse().unwrap(), "zen.spamhaus.org"),
            "25.113.0.203.zen.spamhaus.org"
        );
        assert_eq!(
            ip_query("::ffff:203.0.113.25".parse().unwrap(), "bl.test"),
            "25.113.0.203.bl.test"
        );
        let v6 = ip_query("2001:db8::567:89ab".parse().unwrap(), "zen.spamhaus.org");
        assert_eq!(
            v6,
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org"
        );
        assert_eq!(v6.split('.').count(), 32 + 3);
        assert_eq!(
            domain_query("landkreis.example", "dbl.spamhaus.org"),
            "landkreis.example.dbl.spamhaus.org"
        );
    }

    #[test]
    fn checks_and_default_domains() {
        let mut c = Config::default();
        c.sender.system_address = "via@Landkreis.Example".into();
        c.dkim = ["landkreis.example", "schule.landkreis.example"]
            .into_iter()
            .map(|d| DkimKey {
                domain: d.into(),
                selector: "s".into(),
                key: "k.pem".into(),
            })
            .collect();
        assert_eq!(
            domains(&c),
            ["landkreis.example", "schule.landkreis.example"]
        );
        c.reputation.egress_ips = vec![
            "203.0.113.25".parse().unwrap(),
            "::ffff:203.0.113.25".parse().unwrap(),
        ];
        c.reputation.dnsbl = vec!["ZEN.spamhaus.org.".into()];
        let all = checks(&c);
        assert_eq!(all.len(), 1 + 2, "{all:?}");
        assert_eq!(all[0].query, "25.113.0.203.zen.spamhaus.org");
        assert!(!all[0].rhsbl && all[1].rhsbl);
        assert_eq!(all[1].query, "landkreis.example.dbl.spamhaus.org");
        c.reputation.domains = vec!["andere.example".into()];
        assert_eq!(domains(&c), ["andere.example"]);
    }

    #[test]
    fn classification() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            classify(&[ip("127.0.0.4"), ip("127.0.0.2"), ip("127.0.0.4")], false),
            Verdict::Listed {
                codes: vec![ip("127.0.0.2"), ip("127.0.0.4")],
                reason: None
            }
        );
        assert_eq!(classify(&[], false), Verdict::Clear);
        for refused in ["127.255.255.254", "127.255.255.255", "127.255.255.252"] {
            assert!(
                matches!(classify(&[ip(refused)], false), Verdict::Unknown(w) if w.contains("refused")),
                "{refused}"
            );
        }
        // A listing code together with a refusal is still no answer.
        assert!(matches!(
            classify(&[ip("127.0.0.2"), ip("127.255.255.254")], false),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            classify(&[ip("127.0.1.255")], true),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            classify(&[ip("127.0.1.2")], true),
            Verdict::Listed { .. }
        ));
        assert!(matches!(
            classify(&[ip("198.51.100.7")], false),
            Verdict::Unknown(w) if w.contains("outside")
        ));
    }
}
