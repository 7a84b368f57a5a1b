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

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::config::{Limits, Listener, ListenerTls};
use crate::metrics::{Handshake, ProxyRefusal};
use crate::reply;
use crate::server::Shared;
use crate::session::{Origin, Outcome, Session, SessionLimits};

/// Live connection counts, total and per client IP, and the sessions that
/// have not logged in yet (the ones a new client may shed).
#[derive(Default)]
pub struct Connections {
    inner: Mutex<ConnCounts>,
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct ConnCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Not logged in, by slot id (ids grow, so the oldest comes first).
    unauth: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    unauth_per_ip: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// One session's place among the live connections, as its session sees it.
/// The default is a slot outside any count (never shed).
#[derive(Debug, Clone, Default)]
pub struct Slot {
    id: u64,
    /// Notified when a new client took this (unauthenticated) slot's place.
    shed: Arc<Notify>,
}

impl Slot {
    /// Resolves once this session has been chosen to make room.
    pub async fn shed(&self) {
        self.shed.notified().await
    }
}

/// Holds one connection slot; releases it on drop.
pub struct ConnectionGuard {
    owner: Arc<Shared>,
    ip: IpAddr,
    slot: Slot,
}

impl Connections {
    pub fn active(&self) -> usize {
        self.inner.lock().map(|c| c.total).unwrap_or(0)
    }

    /// The session of `slot` has logged in: it no longer counts against
    /// `max_unauthenticated_connections` and is never shed.
    pub fn logged_in(&self, slot: &Slot) {
        if let Ok(mut counts) = self.inner.lock() {
            counts.forget_unauth(slot.id);
        }
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

impl ConnCounts {
    /// Counts a new client in, or refuses it (`None`). `logged_in`: it
    /// needs no AUTH (trusted network). At `max_connections`, or for a
    /// client that must log in at `max_unauthenticated_connections`, an
    /// idle session that has not logged in is shed for the newcomer; the
    /// total may then run over the cap by the shed sessions not closed yet.
    /// Over `max_connections_per_ip` a client is refused.
    fn admit(&mut self, ip: IpAddr, logged_in: bool, limits: &Limits) -> Option<Slot> {
        let per_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        if per_ip >= limits.max_connections_per_ip {
            return None;
        }
        let unauth_full = !logged_in && self.unauth.len() >= limits.max_unauthenticated_connections;
        if (self.total >= limits.max_connections || unauth_full) && !self.shed_one() {
            return None;
        }
        self.total += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        // Ids start at 1: 0 is the default slot, counted nowhere.
        self.next_id += 1;
        let slot = Slot {
            id: self.next_id,
            shed: Arc::new(Notify::new()),
        };
        if !logged_in {
            self.unauth.insert(slot.id, (ip, Arc::clone(&slot.shed)));
            *self.unauth_per_ip.entry(ip).or_insert(0) += 1;
        }
        Some(slot)
    }

    fn forget_unauth(&mut self, id: u64) -> Option<Arc<Notify>> {
        let (ip, shed) = self.unauth.remove(&id)?;
        if let Some(n) = self.unauth_per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.unauth_per_ip.remove(&ip);
            }
        }
        Some(shed)
    }

    /// Picks the session to close for a newcomer: the oldest not-logged-in
    /// one of the address holding the most. A flood from a few addresses
    /// then only ever sheds its own connections, while a client from a
    /// fresh address, holding one, is the last to go.
    fn shed_one(&mut self) -> bool {
        let Some(most) = self.unauth_per_ip.values().copied().max() else {
            return false;
        };
        let victim = self
            .unauth
            .iter()
            .find(|(_, (ip, _))| self.unauth_per_ip.get(ip) == Some(&most))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.forget_unauth(id)) {
            Some(shed) => {
                shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A slot for a client, or `None` when it is to be refused (see
/// [`ConnCounts::admit`]).
fn try_acquire(shared: &Arc<Shared>, ip: IpAddr, logged_in: bool) -> Option<ConnectionGuard> {
    let config = shared.config();
    let mut counts = shared.connections.inner.lock().ok()?;
    let slot = counts.admit(ip, logged_in, &config.limits)?;
    Some(ConnectionGuard {
        owner: Arc::clone(shared),
        ip,
        slot,
    })
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let conns = &self.owner.connections;
        if let Ok(mut counts) = conns.inner.lock() {
            counts.forget_unauth(self.slot.id);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize, unauth: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            max_unauthenticated_connections: unauth,
            ..Limits::default()
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    /// True if the slot was chosen to make room.
    fn was_shed(slot: &Slot) -> bool {
        use std::future::Future;
        let shed = slot.shed();
        let mut shed = std::pin::pin!(shed);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        shed.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_newcomer_sheds_the_busiest_address_oldest_first() {
        let l = limits(5, 5, 5);
        let mut c = ConnCounts::default();
        let flood: Vec<Slot> = (0..4)
            .map(|_| c.admit(ip(2), false, &l).expect("room"))
            .collect();
        let mine = c.admit(ip(3), false, &l).expect("room");
        // Full: the next one sheds the oldest of 127.0.0.2, never 127.0.0.3.
        let next = c.admit(ip(4), false, &l).expect("shed for it");
        assert!(was_shed(&flood[0]));
        assert!(!flood[1..].iter().any(was_shed) && !was_shed(&mine) && !was_shed(&next));
        assert_eq!(c.total, 6, "the shed session counts until it closes");
        c.admit(ip(5), false, &l).expect("shed for it");
        assert!(was_shed(&flood[1]) && !was_shed(&mine));
    }

    #[test]
    fn logged_in_sessions_are_never_shed() {
        let l = limits(3, 3, 3);
        let mut c = ConnCounts::default();
        let trusted = c.admit(ip(2), true, &l).expect("room");
        let a = c.admit(ip(2), false, &l).expect("room");
        let b = c.admit(ip(3), false, &l).expect("room");
        c.forget_unauth(a.id);
        c.forget_unauth(b.id);
        assert!(c.admit(ip(4), false, &l).is_none(), "nobody to shed");
        assert!(!was_shed(&trusted) && !was_shed(&a) && !was_shed(&b));
    }

    #[test]
    fn the_unauthenticated_budget_is_smaller_than_the_cap() {
        let l = limits(10, 10, 2);
        let mut c = ConnCounts::default();
        let first = c.admit(ip(2), false, &l).expect("room");
        c.admit(ip(2), false, &l).expect("room");
        c.admit(ip(3), true, &l)
            .expect("a trusted client is not counted there");
        c.admit(ip(4), false, &l).expect("shed for it");
        assert!(was_shed(&first));
        assert_eq!(c.unauth.len(), 2);
        assert!(
            c.admit(ip(5), false, &limits(10, 0, 2)).is_none(),
            "per-IP cap"
        );
    }
}
