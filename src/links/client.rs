//! Who is asking: the connection's peer, or, behind a trusted reverse
//! proxy, the address that proxy forwarded; and the key a client is
//! counted under.
//!
//! The password limits are only as good as this address, so a forwarded
//! address is believed only from configured proxies. The listener lives
//! here because it is what gives a request its peer address.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::serve::IncomingStream;
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};

use super::LOG_TARGET;

/// The TCP listener of [`serve`](super::service::serve): axum alone
/// retries failed accepts silently (its logging needs a feature this crate
/// does not enable).
pub(super) struct LoggedListener(pub(super) TcpListener);

impl axum::serve::Listener for LoggedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    // Pages and downloads are written in one go; waiting
                    // for Nagle only adds latency.
                    let _ = stream.set_nodelay(true);
                    return (stream, addr);
                }
                // The client gave up before we got to it.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    tracing::debug!(target: LOG_TARGET, error = %e, "connection lost before accept");
                }
                Err(e) => {
                    // Typically out of file descriptors: waiting lets some
                    // connections close instead of spinning on the error.
                    tracing::error!(
                        target: LOG_TARGET,
                        error = %e,
                        "link service cannot accept connections; retrying in 1s"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The peer address of a connection accepted by [`LoggedListener`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, LoggedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, LoggedListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The client of a request, as far as it can be told.
pub(super) struct Client {
    pub(super) ip: IpAddr,
}

/// The state of a router that extracts [`Client`]: whose forwarded
/// addresses to believe. Implemented by the service's state, so this file
/// needs nothing from the service.
pub(super) trait TrustedProxies {
    fn trusted_proxies(&self) -> &[IpNet];
}

impl<S: TrustedProxies + Send + Sync> FromRequestParts<Arc<S>> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<S>,
    ) -> Result<Self, Self::Rejection> {
        // [`serve`] provides `Peer`; a caller using plain axum::serve with
        // `SocketAddr` connect info works too.
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|ConnectInfo(Peer(addr))| addr.ip())
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(addr)| addr.ip())
            });
        Ok(Client {
            ip: client_ip(peer, &parts.headers, state.trusted_proxies()),
        })
    }
}

/// The client address: the peer, or, when the peer is a trusted proxy, the
/// rightmost `X-Forwarded-For` entry that is not a trusted proxy. Entries
/// left of that were written by the client and prove nothing. Without a
/// peer (not served by [`serve`](super::service::serve)) all such requests
/// share the unspecified address, so the limits still hold.
fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut hop = peer.to_canonical();
    if !is_trusted(&hop) {
        return hop;
    }
    let mut entries = Vec::new();
    for value in headers.get_all(HeaderName::from_static("x-forwarded-for")) {
        match value.to_str() {
            Ok(list) => entries.extend(list.split(',').map(parse_forwarded)),
            Err(_) => entries.push(None),
        }
    }
    for entry in entries.into_iter().rev() {
        // Garbage where a proxy should have written an address: believe
        // nothing further left, count the request against the last hop.
        let Some(ip) = entry else {
            break;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        hop = ip;
    }
    hop
}

/// One `X-Forwarded-For` entry: `203.0.113.7`, `2001:db8::1`, and the
/// forms with a port some proxies write (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The budget key of a client address: IPv6 clients are counted by /64,
/// the block one customer gets.
pub(super) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn client_addresses() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            headers
        };
        let local = Some(ip("127.0.0.1"));

        assert_eq!(
            client_ip(Some(ip("192.0.2.1")), &xff(&["1.1.1.1"]), &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(client_ip(local, &xff(&[]), &trusted), ip("127.0.0.1"));
        assert_eq!(
            client_ip(local, &xff(&["1.1.1.1, 2.2.2.2"]), &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(local, &xff(&["1.1.1.1, 2.2.2.2", "10.1.1.1"]), &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(local, &xff(&["2.2.2.2:4711"]), &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(local, &xff(&["[2001:db8::1]:4711"]), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(local, &xff(&["[2001:db8::2]"]), &trusted),
            ip("2001:db8::2")
        );
        assert_eq!(
            client_ip(local, &xff(&["::ffff:2.2.2.2"]), &trusted),
            ip("2.2.2.2")
        );
        // Garbage written by the client left of real entries is never reached.
        assert_eq!(
            client_ip(local, &xff(&["evil, 2.2.2.2"]), &trusted),
            ip("2.2.2.2")
        );
        // Garbage on the right: the last believed hop answers for it.
        assert_eq!(
            client_ip(local, &xff(&["2.2.2.2, 10.0.0.5, junk"]), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(local, &xff(&["10.0.0.5, 10.0.0.6"]), &trusted),
            ip("10.0.0.5")
        );
        let mut bad = HeaderMap::new();
        bad.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"2.2.2.2\xff").unwrap(),
        );
        assert_eq!(client_ip(local, &bad, &trusted), ip("127.0.0.1"));
        assert_eq!(
            client_ip(Some(ip("::ffff:127.0.0.1")), &xff(&["3.3.3.3"]), &trusted),
            ip("3.3.3.3")
        );
        assert_eq!(client_ip(None, &xff(&["3.3.3.3"]), &trusted), ip("0.0.0.0"));

        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }
}
