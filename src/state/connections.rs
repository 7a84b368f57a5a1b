//! Live connection counts (SPEC §5): total and per client IP, and the
//! sessions that have not logged in yet, which a newcomer may shed. The
//! listener takes a slot per connection ([`try_acquire`]); the session
//! holds its [`Slot`] and reports the login. Beside [`Shared`], which holds
//! the counts, so neither the listener nor the session imports the other
//! for them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::Shared;
use crate::config::Limits;

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
    pub slot: Slot,
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
pub fn try_acquire(shared: &Arc<Shared>, ip: IpAddr, logged_in: bool) -> Option<ConnectionGuard> {
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
