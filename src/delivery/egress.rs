//! Egress source addresses (`[[upstream.egress]]`, SPEC §6): upstream
//! connections are made from a rotation of local addresses, each with its
//! own rate cap, so that the county's sending reputation is spread over
//! them and one that lands on a blocklist can be taken out.
//!
//! - A worker keeps its connection and its address while that address is
//!   in rotation and has room under its cap; otherwise it reconnects from
//!   the next address in round-robin order that has room. When none has,
//!   it waits for the earliest one (all workers would have to).
//! - The blocklist watch (`crate::reputation`) reports which public
//!   addresses are listed; those leave the rotation until they clear. When
//!   every address is listed there is nothing better to use: they all stay
//!   in, and `pause_on_listing` decides whether delivery holds.
//! - Caps are GCRA limiters (`governor`) in memory, per instance; a reload
//!   that changes `[[upstream.egress]]` rebuilds them.

use std::collections::HashSet;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::Egress;

struct Slot {
    config: Egress,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// The rotation of one configuration plus the listed addresses.
#[derive(Default)]
pub struct Rotation {
    slots: Mutex<Arc<Vec<Slot>>>,
    /// Public addresses the blocklist watch found listed.
    listed: Mutex<HashSet<IpAddr>>,
    next: AtomicUsize,
}

/// Where the next message goes out from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// No egress addresses configured: the system chooses.
    Any,
    Use(IpAddr),
    /// Every usable address is at its cap for this long.
    Wait(Duration),
}

impl Rotation {
    fn slots(&self, config: &[Egress]) -> Arc<Vec<Slot>> {
        let Ok(mut slots) = self.slots.lock() else {
            return Arc::new(Vec::new());
        };
        let same =
            slots.len() == config.len() && slots.iter().zip(config).all(|(s, c)| s.config == *c);
        if !same {
            *slots = Arc::new(
                config
                    .iter()
                    .map(|c| Slot {
                        config: c.clone(),
                        limiter: NonZeroU32::new(c.messages_per_minute)
                            .map(|n| RateLimiter::direct(Quota::per_minute(n))),
                    })
                    .collect(),
            );
            for c in config {
                crate::metrics::egress_in_rotation(c.address, true);
            }
        }
        Arc::clone(&slots)
    }

    /// Replaces the set of listed public addresses; returns the local
    /// addresses that left and that came back into the rotation.
    pub fn set_listed(
        &self,
        config: &[Egress],
        listed: HashSet<IpAddr>,
    ) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let Ok(mut current) = self.listed.lock() else {
            return (Vec::new(), Vec::new());
        };
        let was = |set: &HashSet<IpAddr>| -> HashSet<IpAddr> {
            usable(config, set).iter().map(|e| e.address).collect()
        };
        let before = was(&current);
        let after = was(&listed);
        *current = listed;
        let mut left: Vec<IpAddr> = before.difference(&after).copied().collect();
        let mut back: Vec<IpAddr> = after.difference(&before).copied().collect();
        left.sort();
        back.sort();
        for e in config {
            crate::metrics::egress_in_rotation(e.address, after.contains(&e.address));
        }
        (left, back)
    }

    /// Whether some configured egress is out of the rotation while others
    /// remain: then its listing does not need to hold delivery.
    pub fn covers(&self, config: &[Egress], public: IpAddr) -> bool {
        let Ok(listed) = self.listed.lock() else {
            return false;
        };
        let in_rotation = usable(config, &listed);
        config.iter().any(|e| e.public() == public)
            && !in_rotation.is_empty()
            && in_rotation.iter().all(|e| e.public() != public)
    }

    /// Takes a cell from `current`'s cap if it may still be used, else
    /// from the next address in turn.
    pub fn pick(&self, config: &[Egress], current: Option<IpAddr>) -> Pick {
        if config.is_empty() {
            return Pick::Any;
        }
        let slots = self.slots(config);
        let listed = self.listed.lock().map(|l| l.clone()).unwrap_or_default();
        let mut candidates: Vec<&Slot> = slots
            .iter()
            .filter(|s| !listed.contains(&s.config.public()))
            .collect();
        if candidates.is_empty() {
            candidates = slots.iter().collect();
        }
        let clock = DefaultClock::default();
        let mut wait: Option<Duration> = None;
        let mut take = |slot: &Slot| match &slot.limiter {
            None => true,
            Some(l) => match l.check() {
                Ok(()) => true,
                Err(not_until) => {
                    let w = not_until.wait_time_from(clock.now());
                    wait = Some(wait.map_or(w, |x| x.min(w)));
                    false
                }
            },
        };
        if let Some(slot) = candidates
            .iter()
            .find(|s| Some(s.config.address) == current)
            && take(slot)
        {
            return Pick::Use(slot.config.address);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..candidates.len() {
            let slot = candidates[(start + i) % candidates.len()];
            if Some(slot.config.address) != current && take(slot) {
                return Pick::Use(slot.config.address);
            }
        }
        Pick::Wait(wait.unwrap_or(Duration::from_millis(100)))
    }
}

/// The configured egresses not listed; all of them when every one is.
fn usable<'a>(config: &'a [Egress], listed: &HashSet<IpAddr>) -> Vec<&'a Egress> {
    let free: Vec<&Egress> = config
        .iter()
        .filter(|e| !listed.contains(&e.public()))
        .collect();
    if free.is_empty() {
        config.iter().collect()
    } else {
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(addr: &str, per_minute: u32) -> Egress {
        Egress {
            address: addr.parse().expect("ip"),
            public_address: None,
            messages_per_minute: per_minute,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn rotates_keeps_the_current_and_respects_caps() {
        let r = Rotation::default();
        let conf = [egress("127.0.0.2", 2), egress("127.0.0.3", 2)];
        assert_eq!(r.pick(&[], None), Pick::Any);
        let first = r.pick(&conf, None);
        let Pick::Use(a) = first else {
            panic!("{first:?}")
        };
        // Sticks to the current address while it has room.
        assert_eq!(r.pick(&conf, Some(a)), Pick::Use(a));
        // Its cap (2) is spent: the other one takes over, then both are full.
        let other = if a == ip("127.0.0.2") {
            ip("127.0.0.3")
        } else {
            ip("127.0.0.2")
        };
        assert_eq!(r.pick(&conf, Some(a)), Pick::Use(other));
        assert_eq!(r.pick(&conf, Some(other)), Pick::Use(other));
        assert!(
            matches!(r.pick(&conf, Some(other)), Pick::Wait(w) if w <= Duration::from_secs(30))
        );
    }

    #[test]
    fn a_listed_address_leaves_unless_all_are_listed() {
        let r = Rotation::default();
        let conf = [egress("127.0.0.2", 0), egress("127.0.0.3", 0)];
        let (left, back) = r.set_listed(&conf, HashSet::from([ip("127.0.0.2")]));
        assert_eq!((left, back), (vec![ip("127.0.0.2")], vec![]));
        for _ in 0..4 {
            assert_eq!(
                r.pick(&conf, Some(ip("127.0.0.2"))),
                Pick::Use(ip("127.0.0.3"))
            );
        }
        assert!(r.covers(&conf, ip("127.0.0.2")));
        assert!(!r.covers(&conf, ip("127.0.0.3")));
        // Both listed: nothing better, both are used again.
        let (left, back) = r.set_listed(&conf, HashSet::from([ip("127.0.0.2"), ip("127.0.0.3")]));
        assert_eq!((left, back), (vec![], vec![ip("127.0.0.2")]));
        assert!(!r.covers(&conf, ip("127.0.0.2")));
        assert_eq!(
            r.pick(&conf, Some(ip("127.0.0.2"))),
            Pick::Use(ip("127.0.0.2"))
        );
    }
}
