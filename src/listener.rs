//! Listeners: accept connections, enforce connection caps, run sessions.
//!
//! Caps (SPEC §5): `limits.max_connections` in total,
//! `limits.max_connections_per_ip` per client address and
//! `limits.max_unauthenticated_connections` for sessions that have not
//! logged in. A client over its address's cap gets `421 4.7.0` and is
//! disconnected. At either of the other two a newcomer is still greeted:
//! an idle not-logged-in session is shed for it, the oldest of the address
//! holding the most (anvil-style fairness: a flood from a few addresses
//! sheds its own connections first); only when every session has logged in
//! is the newcomer refused. `accept` errors (e.g. out of file
//! descriptors) back off instead of spinning. Implicit-TLS listeners
//! handshake before the greeting; STARTTLS listeners upgrade on request.
//! The counting and shedding is `crate::state::connections`.
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::config::{Listener, ListenerTls};
use crate::metrics::{Handshake, ProxyRefusal};
use crate::reply;
use crate::session::{Origin, Outcome, Session, SessionLimits};
use crate::state::Shared;
use crate::state::connections::try_acquire;

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
        let connected = Instant::now();
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
            let trusted_account = lcfg
                .trusted_networks
                .iter()
                .any(|net| net.contains(&client.ip()))
                .then(|| lcfg.account.clone())
                .flatten();
            let Some(guard) = try_acquire(&shared, client.ip(), trusted_account.is_some()) else {
                refuse(tcp, client).await;
                return;
            };
            let origin = Origin {
                peer: client,
                listener_tls: lcfg.tls,
                trusted_account,
                session_id: format!("{:x}", SESSION_COUNTER.fetch_add(1, Ordering::Relaxed)),
            };
            let limits = SessionLimits {
                slot: guard.slot.clone(),
                connected,
            };
            handle(tcp, origin, limits, &lcfg, Arc::clone(&shared)).await;
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

async fn handle(
    tcp: TcpStream,
    origin: Origin,
    limits: SessionLimits,
    lcfg: &Listener,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    let peer = origin.peer;
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
                    Session::new(tls, shared, origin, true)
                        .with_limits(limits)
                        .run(true)
                        .await;
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
            let mut session = Session::new(tcp, Arc::clone(&shared), origin.clone(), false)
                .with_limits(limits.clone());
            if let Outcome::StartTls = session.run(true).await {
                let tcp = session.into_stream();
                let Some(acceptor) = shared.tls_acceptor() else {
                    return;
                };
                match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        crate::metrics::tls_handshake(Handshake::Ok);
                        // A fresh session: nothing from before STARTTLS survives.
                        Session::new(tls, shared, origin, true)
                            .with_limits(limits)
                            .run(false)
                            .await;
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
