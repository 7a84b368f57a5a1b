//! Outcomes the upstream gave that the store could not take yet (SPEC §9).
//!
//! Once the upstream has accepted a message, offering it again would relay
//! it twice: the one thing a submission gateway must never do because its
//! own disk is full or its database is locked. So when an attempt cannot be
//! recorded, its outcome is kept here, delivery pauses (no new attempts:
//! each would only add another outcome the store cannot take), `/readyz`
//! says why, and a recorder task writes the kept outcomes as soon as the
//! store takes writes again; then delivery resumes. Each kept outcome is
//! also written to [`super::journal`], so a restart meanwhile does not
//! forget it either.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::journal::{Journal, JournalError};

// Defined beside the journal, which reads and writes it.
pub use super::journal::Kept;

#[derive(Default)]
struct State {
    kept: Vec<Kept>,
    /// The store's last answer, for `/readyz` and the log.
    cause: Option<String>,
    since: Option<Instant>,
}

/// The kept outcomes of this process; empty while the store takes writes.
#[derive(Default)]
pub struct Unrecorded {
    state: Mutex<State>,
    added: Notify,
    journal: Mutex<Option<Journal>>,
}

impl Unrecorded {
    /// Opens the journal in `data_dir` and keeps what a previous run left
    /// in it (recorded before any new attempt); returns how many.
    pub fn open_journal(&self, data_dir: &std::path::Path) -> Result<usize, JournalError> {
        let (journal, left) = Journal::open(data_dir)?;
        if let Ok(mut j) = self.journal.lock() {
            *j = Some(journal);
        }
        let n = left.len();
        if n > 0 {
            if let Ok(mut s) = self.state.lock() {
                s.kept.extend(left);
                s.cause = Some("outcomes of the previous run not recorded yet".into());
                s.since.get_or_insert_with(Instant::now);
                crate::metrics::unrecorded(s.kept.len());
            }
            self.added.notify_one();
        }
        Ok(n)
    }

    /// Keeps `kept`, which the store refused with `cause`; delivery pauses.
    pub fn keep(&self, kept: Kept, cause: String) {
        if let Ok(mut j) = self.journal.lock()
            && let Some(journal) = j.as_mut()
            && let Err(e) = journal.append(&kept)
        {
            tracing::error!(queue_id = %kept.queue_id, error = %e, "cannot journal a kept delivery outcome: a restart before it is recorded would relay the message again");
        }
        if let Ok(mut s) = self.state.lock() {
            s.kept.push(kept);
            s.cause = Some(cause);
            s.since.get_or_insert_with(Instant::now);
            crate::metrics::unrecorded(s.kept.len());
        }
        self.added.notify_one();
    }

    /// True while any outcome waits: delivery makes no new attempts.
    pub fn is_pausing(&self) -> bool {
        self.state.lock().map_or(true, |s| !s.kept.is_empty())
    }

    /// A copy of what waits, oldest first.
    pub fn snapshot(&self) -> Vec<Kept> {
        self.state
            .lock()
            .map(|s| s.kept.clone())
            .unwrap_or_default()
    }

    /// The outcome for `queue_id` is in the store now (or was refused for
    /// good): forget it. True when nothing waits any more.
    pub fn recorded(&self, queue_id: &str) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if let Some(i) = s.kept.iter().position(|k| k.queue_id == queue_id) {
            s.kept.remove(i);
        }
        crate::metrics::unrecorded(s.kept.len());
        if s.kept.is_empty() {
            s.cause = None;
            s.since = None;
            if let Ok(mut j) = self.journal.lock()
                && let Some(journal) = j.as_mut()
                && let Err(e) = journal.clear()
            {
                // Harmless: replaying recorded outcomes changes nothing.
                tracing::warn!(error = %e, "cannot clear the delivery outcome journal");
            }
            true
        } else {
            false
        }
    }

    /// Notes the store's latest refusal.
    pub fn still_failing(&self, cause: String) {
        if let Ok(mut s) = self.state.lock() {
            s.cause = Some(cause);
        }
    }

    /// One line for `/readyz` while delivery is paused; `None` otherwise.
    pub fn status(&self) -> Option<String> {
        let s = self.state.lock().ok()?;
        if s.kept.is_empty() {
            return None;
        }
        let since = s.since.map_or(Duration::ZERO, |t| t.elapsed());
        Some(format!(
            "delivery: paused for {}s, {} delivery outcome(s) cannot be recorded: {}",
            since.as_secs(),
            s.kept.len(),
            s.cause.as_deref().unwrap_or("the store refuses writes"),
        ))
    }

    /// Resolves when an outcome was kept (the recorder's wake-up).
    pub async fn added(&self) {
        self.added.notified().await
    }
}

/// Says "still failing" at most once per `every`, so a store that stays
/// unwritable for an hour gives sixty lines, not thousands.
pub struct LogEvery {
    every: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl LogEvery {
    pub fn new(every: Duration) -> LogEvery {
        LogEvery {
            every,
            last: None,
            skipped: 0,
        }
    }

    /// `Some(skipped)` when a line is due now (how many were left out since
    /// the last one).
    pub fn due(&mut self) -> Option<u64> {
        match self.last {
            Some(t) if t.elapsed() < self.every => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(Instant::now());
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }

    pub fn reset(&mut self) {
        self.last = None;
        self.skipped = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AttemptUpdate;

    fn kept(id: &str) -> Kept {
        Kept {
            queue_id: id.into(),
            update: AttemptUpdate {
                expected_attempts: 0,
                recipients: vec![],
                next_attempt: None,
                error: None,
                bounce_notice: None,
            },
        }
    }

    #[test]
    fn pauses_until_every_outcome_is_recorded() {
        let u = Unrecorded::default();
        assert!(!u.is_pausing());
        assert!(u.status().is_none());
        u.keep(kept("a"), "database is locked".into());
        u.keep(kept("b"), "database or disk is full".into());
        assert!(u.is_pausing());
        let status = u.status().unwrap_or_default();
        assert!(status.contains("2 delivery outcome(s)"), "{status}");
        assert!(status.contains("disk is full"), "{status}");
        assert!(!u.recorded("a"));
        assert!(u.is_pausing());
        assert!(u.recorded("b"));
        assert!(!u.is_pausing());
        assert!(u.status().is_none());
    }

    #[test]
    fn log_every_says_it_once_per_period() {
        let mut l = LogEvery::new(Duration::from_secs(3600));
        assert_eq!(l.due(), Some(0));
        assert_eq!(l.due(), None);
        assert_eq!(l.due(), None);
        l.reset();
        assert_eq!(l.due(), Some(0));
        let mut fast = LogEvery::new(Duration::ZERO);
        assert_eq!(fast.due(), Some(0));
        assert_eq!(fast.due(), Some(0));
    }
}
