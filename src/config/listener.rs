//! `[[listener]]`: where clients connect, with which TLS, whom a listener
//! trusts without AUTH, and the PROXY protocol behind a load balancer.

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    Starttls,
    Implicit,
    /// Plain text; only allowed on loopback addresses.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub bind: SocketAddr,
    pub tls: ListenerTls,
    /// Clients from these networks are treated as `account` without AUTH.
    #[serde(default)]
    pub trusted_networks: Vec<IpNet>,
    /// The account whose identity trusted clients get.
    #[serde(default)]
    pub account: Option<String>,
    /// Every connection starts with a PROXY protocol v2 header (behind a
    /// TCP load balancer such as HAProxy); its source address is then the
    /// client's for bans, limits, `trusted_networks`, logs and `Received:`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Socket addresses allowed to send that header; connections from
    /// anywhere else are refused, since the header could claim any client.
    #[serde(default)]
    pub proxy_trusted: Vec<IpNet>,
}

pub(super) fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        bind: SocketAddr::from(([127, 0, 0, 1], 2525)),
        tls: ListenerTls::Starttls,
        trusted_networks: Vec::new(),
        account: None,
        proxy_protocol: false,
        proxy_trusted: Vec::new(),
    }]
}

pub(super) fn check(listeners: &[Listener]) -> Result<(), (String, String)> {
    if listeners.is_empty() {
        return Err((
            "listener".into(),
            "at least one [[listener]] is needed".into(),
        ));
    }
    for (i, l) in listeners.iter().enumerate() {
        let key = format!("listener[{i}]");
        if l.tls == ListenerTls::None && !l.bind.ip().is_loopback() {
            return Err((
                format!("{key}.tls"),
                format!(
                    "\"none\" is only allowed on a loopback address, not {}",
                    l.bind
                ),
            ));
        }
        if !l.trusted_networks.is_empty() && l.account.is_none() {
            return Err((
                format!("{key}.account"),
                "trusted_networks needs the account whose identity those clients get".into(),
            ));
        }
        // A PROXY header is believed only from known proxies: without
        // the list, any client could claim any address.
        if l.proxy_protocol && l.proxy_trusted.is_empty() {
            return Err((
                format!("{key}.proxy_trusted"),
                "proxy_protocol = true needs the addresses of the proxies allowed to send the header".into(),
            ));
        }
        if !l.proxy_protocol && !l.proxy_trusted.is_empty() {
            return Err((
                format!("{key}.proxy_trusted"),
                "has no effect without proxy_protocol = true".into(),
            ));
        }
    }
    for (i, a) in listeners.iter().enumerate() {
        if listeners[..i].iter().any(|b| b.bind == a.bind) {
            return Err((
                format!("listener[{i}].bind"),
                format!("{} is bound twice", a.bind),
            ));
        }
    }
    Ok(())
}
