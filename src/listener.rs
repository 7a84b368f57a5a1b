//! Listeners: accept connections, enforce connection caps, run sessions.
//!
//! Caps (SPEC §5): `limits.max_connections` in total and
//! `limits.max_connections_per_ip` per client address; a client over either
//! gets `421 4.7.0` and is disconnected. `accept` errors (e.g. out of file
//! descriptors) back off instead of spinning. Implicit-TLS listeners
//! handshake before the greeting; STARTTLS listeners upgrade on request.
//!
//! Behind a TCP load balancer (SPEC §11) a listener with `proxy_protocol`
//! first reads a PROXY v2 header ([`proxy`]) — before the connection caps,
//! the ban check, the greeting and TLS — and from then on the header's
//! source address is the client: per-IP caps, bans, rate limits,
//! `trusted_networks`, logs and `Received:` all see it. Only sockets from
//! `proxy_trusted` may send a header; anything else, and any connection
//! without a valid header in time, is closed without a reply (a proxy has
//! no use for an SMTP answer, and a stranger gets nothing to go on).
//! A `LOCAL` header (HAProxy's health checks) gets an ordinary session
//! under the proxy's own address, so `option smtpchk` works.

pub mod proxy;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::config::{Listener, ListenerTls};
use crate::metrics::{Handshake, ProxyRefusal};
use crate::server::Shared;
use crate::session::{Origin, Outcome, Session, reply};

/// Live connection counts, total and per client IP.
#[derive(Default)]
pub struct Connections {
    inner: Mutex<ConnCounts>,
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct ConnCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Holds one connection slot; releases it on drop.
pub struct ConnectionGuard {
    owner: Arc<Shared>,
    ip: IpAddr,
}

impl Connections {
    pub fn active(&self) -> usize {
        self.inner.lock().map(|c| c.total).unwrap_or(0)
    }

    /// Waits until no session is left, or the deadline passes.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }
}

fn try_acquire(shared: &Arc<Shared>, ip: IpAddr) -> Option<ConnectionGuard> {
    let config = shared.config();
    let mut counts = shared.connections.inner.lock().ok()?;
    let per_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
    if counts.total >= config.limits.max_connections
        || per_ip >= config.limits.max_connections_per_ip
    {
        return None;
    }
    counts.total += 1;
    *counts.per_ip.entry(ip).or_insert(0) += 1;
    Some(ConnectionGuard {
        owner: Arc::clone(shared),
        ip,
    })
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let conns = &self.owner.connections;
        if let Ok(mut counts) = conns.inner.lock() {
            counts.total = counts.total.saturating_sub(1);
            if let Some(n) = counts.per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&self.ip);
                }
            }
            if counts.total == 0 {
                conns.idle.notify_waiters();
            }
        }
    }
}

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(1);

/// Accepts until shutdown. `bind` identifies this listener in the
/// (reloadable) config.
pub async fn serve(listener: TcpListener, bind: SocketAddr, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (mut tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%bind, error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let config = shared.config();
            let Some(lcfg) = config.listeners.iter().find(|l| l.bind == bind).cloned() else {
                return;
            };
            // The caps below count the real client, so the header comes
            // first. Connections waiting for it are not capped: they come
            // only from `proxy_trusted` and last at most the timeout.
            let client = if lcfg.proxy_protocol {
                let timeout = config.timeouts.tls_handshake;
                match proxied_client(&mut tcp, peer, &lcfg, timeout).await {
                    Some(client) => client,
                    None => return,
                }
            } else {
                peer
            };
            drop(config);
            let Some(guard) = try_acquire(&shared, client.ip()) else {
                refuse(tcp, client).await;
                return;
            };
            handle(tcp, client, &lcfg, Arc::clone(&shared)).await;
            drop(guard);
        });
    }
    tracing::info!(%bind, "listener closed");
}

/// The client a `proxy_protocol` connection speaks for, or `None` when the
/// connection is to be closed (already logged and counted). `peer` is the
/// socket's address, i.e. the proxy's.
async fn proxied_client(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    lcfg: &Listener,
    timeout: Duration,
) -> Option<SocketAddr> {
    if !lcfg
        .proxy_trusted
        .iter()
        .any(|net| net.contains(&peer.ip()))
    {
        tracing::warn!(listener = %lcfg.bind, proxy = %peer, "PROXY listener: connection from an address not in proxy_trusted; closing");
        crate::metrics::proxy_refused(ProxyRefusal::Untrusted);
        return None;
    }
    match tokio::time::timeout(timeout, proxy::read_header(tcp)).await {
        Ok(Ok(proxy::Proxied::Client(client))) => {
            tracing::debug!(proxy = %peer, client = %client.ip(), "PROXY v2 header read");
            Some(client)
        }
        Ok(Ok(proxy::Proxied::Local)) => {
            tracing::debug!(proxy = %peer, "PROXY v2 LOCAL (health check): the proxy's own address is the client");
            Some(peer)
        }
        Ok(Err(e)) => {
            tracing::warn!(listener = %lcfg.bind, proxy = %peer, error = %e, "PROXY listener: no valid header; closing");
            crate::metrics::proxy_refused(ProxyRefusal::Invalid);
            None
        }
        Err(_) => {
            tracing::warn!(listener = %lcfg.bind, proxy = %peer, ?timeout, "PROXY listener: no header in time; closing");
            crate::metrics::proxy_refused(ProxyRefusal::Timeout);
            None
        }
    }
}

async fn refuse(mut tcp: TcpStream, peer: SocketAddr) {
    tracing::warn!(client = %peer.ip(), "connection limit reached; refusing");
    let mut out = Vec::new();
    reply::TOO_MANY_CONNECTIONS.write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&out)).await;
}

async fn handle(tcp: TcpStream, peer: SocketAddr, lcfg: &Listener, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let session_id = format!("{:x}", SESSION_COUNTER.fetch_add(1, Ordering::Relaxed));
    let trusted_account = lcfg
        .trusted_networks
        .iter()
        .any(|net| net.contains(&peer.ip()))
        .then(|| lcfg.account.clone())
        .flatten();
    let origin = Origin {
        peer,
        listener_tls: lcfg.tls,
        trusted_account,
        session_id,
    };
    tracing::debug!(session = %origin.session_id, client = %peer.ip(), "connected");
    crate::metrics::session();
    let handshake = shared.config().timeouts.tls_handshake;
    match lcfg.tls {
        ListenerTls::Implicit => {
            let Some(acceptor) = shared.tls_acceptor() else {
                return;
            };
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    crate::metrics::tls_handshake(Handshake::Ok);
                    Session::new(tls, shared, origin, true).run(true).await;
                }
                Ok(Err(e)) => {
                    crate::metrics::tls_handshake(Handshake::Failed);
                    tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed")
                }
                Err(_) => {
                    crate::metrics::tls_handshake(Handshake::Timeout);
                    tracing::debug!(client = %peer.ip(), "TLS handshake timed out")
                }
            }
        }
        ListenerTls::Starttls | ListenerTls::None => {
            let mut session = Session::new(tcp, Arc::clone(&shared), origin.clone(), false);
            if let Outcome::StartTls = session.run(true).await {
                let tcp = session.into_stream();
                let Some(acceptor) = shared.tls_acceptor() else {
                    return;
                };
                match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        crate::metrics::tls_handshake(Handshake::Ok);
                        // A fresh session: nothing from before STARTTLS survives.
                        Session::new(tls, shared, origin, true).run(false).await;
                    }
                    Ok(Err(e)) => {
                        crate::metrics::tls_handshake(Handshake::Failed);
                        tracing::debug!(client = %peer.ip(), error = %e, "STARTTLS handshake failed")
                    }
                    Err(_) => {
                        crate::metrics::tls_handshake(Handshake::Timeout);
                        tracing::debug!(client = %peer.ip(), "STARTTLS handshake timed out")
                    }
                }
            }
        }
    }
}
