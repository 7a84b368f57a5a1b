//! Budgets for wrong passwords whose cells can be handed back.
//!
//! A right password must not use up a try, yet the try has to be taken
//! before the password is checked, or parallel guesses would all pass the
//! check at once. governor alone cannot undo a take; this wrapper can.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};

/// A keyed GCRA limiter (governor) whose cells can be given back.
///
/// governor can only take a cell or refuse; the service needs "take one
/// now, return it if the password was right". The state store is therefore
/// our own map, shared with the limiter, so that [`Limiter::give_back`] can
/// undo a take. Burst `n` per `window` means: `n` wrong passwords at once,
/// then one more per `window / n`.
pub(super) struct Limiter<K: Hash + Eq + Clone> {
    cells: Cells<K>,
    limiter: RateLimiter<K, Cells<K>, DefaultClock>,
    /// The time one cell stands for, in the limiter's terms.
    cell: Nanos,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(super) fn new(burst: u32, window: Duration) -> Self {
        // Zero attempts would lock out the right password too; one is the
        // least that still lets the owner in.
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let period = (window / burst.get()).max(Duration::from_millis(1));
        let quota = Quota::with_period(period)
            .unwrap_or(Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let cells = Cells::default();
        Limiter {
            limiter: RateLimiter::new(quota, cells.clone(), DefaultClock::default()),
            cells,
            cell: Nanos::from(quota.replenish_interval()),
        }
    }

    /// Takes a cell, or tells how long until one is free.
    pub(super) fn take(&self, key: &K) -> Result<(), Duration> {
        match self.limiter.check_key(key) {
            Ok(_) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(self.limiter.clock().now())),
        }
    }

    /// Undoes one [`Limiter::take`]. Taking moved the key's theoretical
    /// arrival time one cell later (from `max(tat, now)`); moving it back is
    /// exact, or lands in the past, which GCRA treats as a full budget.
    pub(super) fn give_back(&self, key: &K) {
        if let Some(tat) = self.cells.lock().get_mut(key) {
            *tat = tat.saturating_sub(self.cell);
        }
    }

    pub(super) fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// governor's keyed state: key → theoretical arrival time of the next cell.
struct Cells<K>(Arc<Mutex<HashMap<K, Nanos>>>);

impl<K> Clone for Cells<K> {
    fn clone(&self) -> Self {
        Cells(Arc::clone(&self.0))
    }
}

impl<K> Default for Cells<K> {
    fn default() -> Self {
        Cells(Arc::new(Mutex::new(HashMap::new())))
    }
}

impl<K> Cells<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Nanos>> {
        // A panic elsewhere while holding the lock leaves a valid map.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> StateStore for Cells<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(tat) => {
                let (out, next) = f(Some(*tat))?;
                *tat = next;
                Ok(out)
            }
            None => {
                let (out, next) = f(None)?;
                map.insert(key.clone(), next);
                Ok(out)
            }
        }
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for Cells<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.lock().retain(|_, tat| *tat > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.lock().shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_gives_cells_back_and_forgets_old_keys() {
        let limiter: Limiter<String> = Limiter::new(2, Duration::from_millis(200));
        let key = "k".to_owned();
        assert!(limiter.take(&key).is_ok());
        assert!(limiter.take(&key).is_ok());
        assert!(limiter.take(&key).is_err());
        limiter.give_back(&key);
        assert!(limiter.take(&key).is_ok());
        assert!(limiter.take(&key).is_err());
        for i in 0..100 {
            let _ = limiter.take(&format!("other{i}"));
        }
        assert_eq!(limiter.len(), 101);
        std::thread::sleep(Duration::from_millis(350));
        limiter.housekeeping();
        assert_eq!(limiter.len(), 0);

        // Zero configured attempts still let the right password in once.
        let strict: Limiter<String> = Limiter::new(0, Duration::from_secs(60));
        assert!(strict.take(&key).is_ok());
        assert!(strict.take(&key).is_err());
    }
}
