//! The blocklist watch's memory between rounds: what is known about each
//! (target, list) pair, the transitions that are logged, and the listings
//! that hold delivery or take an egress address out of the rotation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use super::blocklist::{Check, Verdict};

/// What is known about one (target, list) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Listed {
        codes: Vec<Ipv4Addr>,
        reason: Option<String>,
        since: SystemTime,
    },
    Clear,
    Unknown(String),
}

/// A listing, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub target: String,
    pub list: String,
    pub codes: Vec<Ipv4Addr>,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} ({})",
            self.target,
            self.list,
            codes(&self.codes)
        )
    }
}

fn codes(c: &[Ipv4Addr]) -> String {
    c.iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The state of every pair between rounds, in memory (a restart starts
/// over, which is why delivery waits for the first round when it pauses on
/// listings). A listing stays until a definite "not listed": an unknown
/// answer neither creates nor clears one.
#[derive(Debug, Default)]
pub struct Watch {
    states: BTreeMap<(String, String), State>,
    /// Whether delivery is held because of a listing (as last announced).
    pub paused: bool,
}

impl Watch {
    /// Takes a round's results: logs each change, sets the metrics. Pairs no
    /// longer configured are forgotten (their gauge goes to 0).
    pub fn apply(&mut self, results: &[(Check, Verdict)]) {
        let current: BTreeSet<(String, String)> = results
            .iter()
            .map(|(c, _)| (c.target.clone(), c.list.clone()))
            .collect();
        self.states.retain(|(target, list), _| {
            let keep = current.contains(&(target.clone(), list.clone()));
            if !keep {
                crate::metrics::blocklist_listed(list, target, false);
            }
            keep
        });
        for (check, verdict) in results {
            crate::metrics::blocklist_check(verdict.label());
            let key = (check.target.clone(), check.list.clone());
            let old = self.states.get(&key);
            let new = next_state(old, verdict, check);
            crate::metrics::blocklist_listed(
                &check.list,
                &check.target,
                matches!(new, State::Listed { .. }),
            );
            self.states.insert(key, new);
        }
    }

    /// Every pair in the `Listed` state.
    pub fn listings(&self) -> Vec<Listing> {
        self.states
            .iter()
            .filter_map(|((target, list), s)| match s {
                State::Listed { codes, .. } => Some(Listing {
                    target: target.clone(),
                    list: list.clone(),
                    codes: codes.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    pub fn state(&self, target: &str, list: &str) -> Option<&State> {
        self.states.get(&(target.to_string(), list.to_string()))
    }

    /// Forgets everything (the watch was switched off); true if anything
    /// was known.
    pub fn reset(&mut self) -> bool {
        for (target, list) in self.states.keys() {
            crate::metrics::blocklist_listed(list, target, false);
        }
        let had = !self.states.is_empty();
        self.states.clear();
        had
    }
}

/// The state after `verdict`, logging the transition.
fn next_state(old: Option<&State>, verdict: &Verdict, check: &Check) -> State {
    let (target, list, query) = (&check.target, &check.list, &check.query);
    match (old, verdict) {
        (
            Some(State::Listed {
                codes: was, since, ..
            }),
            Verdict::Listed { codes, reason },
        ) if was == codes => State::Listed {
            codes: codes.clone(),
            reason: reason.clone(),
            since: *since,
        },
        (_, Verdict::Listed { codes: c, reason }) => {
            tracing::error!(
                target = %target,
                list = %list,
                codes = %codes(c),
                reason = reason.as_deref().unwrap_or("-"),
                query = %query,
                "blocklist: LISTED"
            );
            State::Listed {
                codes: c.clone(),
                reason: reason.clone(),
                since: SystemTime::now(),
            }
        }
        (Some(State::Listed { since, .. }), Verdict::Clear) => {
            let listed_for = since.elapsed().unwrap_or_default().as_secs();
            tracing::info!(target = %target, list = %list, listed_for_s = listed_for, "blocklist: no longer listed");
            State::Clear
        }
        (_, Verdict::Clear) => {
            tracing::debug!(target = %target, list = %list, "blocklist: not listed");
            State::Clear
        }
        (
            Some(State::Listed {
                codes,
                reason,
                since,
            }),
            Verdict::Unknown(why),
        ) => {
            tracing::warn!(
                target = %target,
                list = %list,
                error = %why,
                "blocklist: listing could not be checked again; it stands until the list answers"
            );
            State::Listed {
                codes: codes.clone(),
                reason: reason.clone(),
                since: *since,
            }
        }
        (Some(State::Unknown(was)), Verdict::Unknown(why)) if was == why => {
            tracing::debug!(target = %target, list = %list, error = %why, "blocklist: still no answer");
            State::Unknown(why.clone())
        }
        (_, Verdict::Unknown(why)) => {
            tracing::warn!(
                target = %target,
                list = %list,
                query = %query,
                error = %why,
                "blocklist: no usable answer (unknown, not counted as listed)"
            );
            State::Unknown(why.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_neither_lists_nor_clears() {
        let check = Check {
            target: "203.0.113.25".into(),
            list: "bl.test".into(),
            query: "25.113.0.203.bl.test".into(),
            rhsbl: false,
        };
        let listed = Verdict::Listed {
            codes: vec![Ipv4Addr::new(127, 0, 0, 2)],
            reason: None,
        };
        let unknown = Verdict::Unknown("timeout".into());
        let mut w = Watch::default();
        w.apply(&[(check.clone(), unknown.clone())]);
        assert!(w.listings().is_empty());
        assert_eq!(
            w.state("203.0.113.25", "bl.test"),
            Some(&State::Unknown("timeout".into()))
        );
        w.apply(&[(check.clone(), listed.clone())]);
        assert_eq!(w.listings().len(), 1);
        let Some(State::Listed { since, .. }) = w.state("203.0.113.25", "bl.test").cloned() else {
            panic!("listed")
        };
        w.apply(&[(check.clone(), unknown)]);
        w.apply(&[(check.clone(), listed)]);
        assert!(matches!(
            w.state("203.0.113.25", "bl.test"),
            Some(State::Listed { since: s, .. }) if *s == since
        ));
        w.apply(&[(check.clone(), Verdict::Clear)]);
        assert!(w.listings().is_empty());
        // A pair no longer configured is forgotten.
        w.apply(&[]);
        assert_eq!(w.state("203.0.113.25", "bl.test"), None);
    }
}
