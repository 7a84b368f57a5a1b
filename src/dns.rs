//! The DNS resolver for the gateway's own lookups (`dkim check`, the
//! blocklist watch), set up from `[dns]`. Neutral ground: neither user
//! imports the other for it.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::config::Dns;

/// The resolver could not be set up (no usable system configuration, or
/// hickory refused the one given).
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver: {0}")]
pub struct ResolverError(String);

/// A resolver for the gateway's own lookups: exactly the `[dns]
/// nameservers` (UDP, and TCP for long answers, on their ports) when any
/// are configured, else the system's (`/etc/resolv.conf`); `[dns] timeout`
/// per attempt. EDNS0 is on, so large RSA records fit in one UDP answer.
pub fn resolver(dns: &Dns) -> Result<TokioResolver, ResolverError> {
    let mut builder = if dns.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| {
            ResolverError(format!(
                "cannot read the system configuration ({e}); set [dns] nameservers"
            ))
        })?
    } else {
        let servers = dns
            .nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = dns.timeout;
    opts.attempts = 2;
    opts.edns0 = true;
    opts.ndots = 0;
    builder
        .build()
        .map_err(|e| ResolverError(format!("cannot set up the resolver: {e}")))
}
