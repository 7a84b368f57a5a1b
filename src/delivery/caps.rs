//! Rate caps per group of recipient domains (`[[delivery.domain_limit]]`,
//! SPEC §6): a provider that sees too much mail from one sender at once
//! defers it or starts to distrust the sender, so a few domains that get a
//! large share of the county's mail (gmx.de, web.de, t-online.de) can be
//! held to a pace of their own.
//!
//! Each group is a GCRA limiter from `governor` (burst, then the steady
//! rate); one recipient handed to the upstream takes one cell. Recipients
//! that find no cell stay pending: when nothing of a message may go, its
//! next attempt is put off until a cell is free without counting as an
//! attempt ([`crate::store::QueueStore::postpone`]); when part of it may go, the
//! rest is recorded as deferred and tried again at that time.
//!
//! The limiters live in memory, per instance: a restart hands out a full
//! burst again, and N instances together allow N times the cap. They are
//! rebuilt when a reload changes `domain_limit` (which also resets them).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::DomainLimit;

struct Group {
    config: DomainLimit,
    /// The first domain, for the log and the deferral text.
    label: String,
    limiter: DefaultDirectRateLimiter,
}

/// The caps of one configuration.
pub struct DomainCaps {
    groups: Vec<Group>,
}

/// What may go now.
#[derive(Debug, Default, PartialEq)]
pub struct Admission {
    pub now: Vec<String>,
    /// Held back, each with the reply recorded for it.
    pub held: Vec<(String, String)>,
    /// When the first held recipient may go.
    pub wait: Option<Duration>,
}

impl DomainCaps {
    pub fn new(limits: &[DomainLimit]) -> DomainCaps {
        let groups = limits
            .iter()
            .map(|l| {
                let rate = NonZeroU32::new(l.recipients_per_minute).unwrap_or(NonZeroU32::MIN);
                let burst = l.burst.and_then(NonZeroU32::new).unwrap_or(rate);
                Group {
                    config: l.clone(),
                    label: l.domains.first().cloned().unwrap_or_default(),
                    limiter: RateLimiter::direct(Quota::per_minute(rate).allow_burst(burst)),
                }
            })
            .collect();
        DomainCaps { groups }
    }

    /// Whether these caps were made from `limits`.
    pub fn is_for(&self, limits: &[DomainLimit]) -> bool {
        self.groups.len() == limits.len()
            && self.groups.iter().zip(limits).all(|(g, l)| g.config == *l)
    }

    /// Takes a cell for every recipient that may go now.
    pub fn admit(&self, recipients: &[String]) -> Admission {
        let mut out = Admission::default();
        if self.groups.is_empty() {
            out.now = recipients.to_vec();
            return out;
        }
        let clock = DefaultClock::default();
        for rcpt in recipients {
            let domain = rcpt
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            let Some(group) = self.groups.iter().find(|g| g.config.matches(&domain)) else {
                out.now.push(rcpt.clone());
                continue;
            };
            match group.limiter.check() {
                Ok(()) => out.now.push(rcpt.clone()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(clock.now());
                    out.wait = Some(out.wait.map_or(wait, |w| w.min(wait)));
                    out.held.push((
                        rcpt.clone(),
                        format!(
                            "451 4.7.0 not sent yet: rate cap for {} ({} recipients per minute)",
                            group.label, group.config.recipients_per_minute
                        ),
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(rate: u32, burst: Option<u32>) -> DomainCaps {
        DomainCaps::new(&[DomainLimit {
            domains: vec!["gmx.de".into(), "*.web.de".into()],
            recipients_per_minute: rate,
            burst,
        }])
    }

    #[test]
    fn a_group_shares_one_burst_and_others_are_free() {
        let c = caps(60, Some(2));
        let rcpts: Vec<String> = ["a@gmx.de", "b@mail.web.de", "c@GMX.DE", "d@example.org"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = c.admit(&rcpts);
        assert_eq!(a.now, ["a@gmx.de", "b@mail.web.de", "d@example.org"]);
        assert_eq!(a.held.len(), 1);
        assert_eq!(a.held[0].0, "c@GMX.DE");
        assert!(a.held[0].1.starts_with("451 4.7.0 "), "{}", a.held[0].1);
        // One per second after the burst: the wait is at most a second.
        let wait = a.wait.expect("a wait");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn no_groups_lets_everything_through() {
        let c = DomainCaps::new(&[]);
        let rcpts = vec!["a@gmx.de".to_string()];
        assert_eq!(c.admit(&rcpts).now, rcpts);
        assert!(c.is_for(&[]));
    }
}
