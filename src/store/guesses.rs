//! Wrong link passwords, as the store keeps them (SPEC §7).
//!
//! Before a link password is tried, one attempt is taken from each of three
//! budgets, in one store transaction: parallel guesses cannot all slip
//! through, and a restart forgets nothing. A right password hands its
//! attempts back.
//!
//! | budget | rule |
//! |---|---|
//! | the link, from one client (IPv4 address or IPv6 /64) | `free` wrong passwords, then exponential back-off: the next try waits `backoff`, then twice that, … up to `backoff_max`; forgotten [`FORGET_MS`] after the last wait ended |
//! | the client, across all links | `per_client` an hour (a GCRA burst, then one every hour / n) |
//! | the link, from all clients together | `per_link` an hour, likewise: the ceiling that a stranger with many addresses meets |
//!
//! Why this shape: the per-client back-off keeps one client's guessing slow
//! (about ten tries in the first hour, fewer after) and touches no one
//! else, so a stranger who has the link cannot lock the recipient out. The
//! per-link ceiling bounds what many addresses together can try; a single
//! client cannot reach it on its own (with the defaults), and even when it
//! is reached it is never a lock, only a wait of `hour / per_link` per
//! attempt. Client keys are stored pseudonymised (keyed hash), like
//! recipients in the delivery log.

use std::time::Duration;

use crate::config::Attachments;

/// A back-off row whose wait ended this long ago is forgotten: the next
/// wrong password starts a fresh budget.
pub const FORGET_MS: i64 = 24 * 3600 * 1000;

const HOUR_MS: i64 = 3600 * 1000;

/// The limits (`[attachments] password_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessPolicy {
    /// Wrong passwords per link and client before the back-off starts.
    pub free: u32,
    /// The first back-off wait; each further wrong password doubles it.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Wrong passwords per client an hour, across links.
    pub per_client: u32,
    /// Wrong passwords per link an hour, from all clients together.
    pub per_link: u32,
    /// The window of `per_client` and `per_link` (an hour; tests shorten it).
    pub window: Duration,
}

impl Default for GuessPolicy {
    fn default() -> Self {
        GuessPolicy {
            free: 5,
            backoff: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
            per_client: 20,
            per_link: 20,
            window: Duration::from_millis(HOUR_MS as u64),
        }
    }
}

impl From<&Attachments> for GuessPolicy {
    /// The limits on wrong link passwords.
    fn from(cfg: &Attachments) -> GuessPolicy {
        GuessPolicy {
            free: cfg.password_attempts_per_link,
            per_client: cfg.password_attempts_per_ip,
            per_link: cfg.password_ceiling_per_link,
            ..GuessPolicy::default()
        }
    }
}

/// One budget's state. A missing row is `GuessRow::default()`, and a row
/// is deleted once `expires` has passed, as it then limits nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuessRow {
    /// Back-off rows: wrong passwords so far. Unused in GCRA rows.
    pub count: i64,
    /// Back-off rows: no try before this time. GCRA rows: the theoretical
    /// arrival time of the next attempt. Unix milliseconds.
    pub at: i64,
    /// When the row may be deleted (Unix milliseconds).
    pub expires: i64,
}

/// The three budgets of one attempt: back-off of (link, client), ceiling
/// of the link, budget of the client. `client` is already pseudonymised.
pub fn keys(link_id: &str, client: &str) -> [String; 3] {
    [
        format!("lc:{link_id}:{client}"),
        format!("l:{link_id}"),
        format!("c:{client}"),
    ]
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Takes one attempt from each budget, or tells how long until all three
/// have one (then nothing is taken).
pub fn take(rows: [GuessRow; 3], now: i64, p: &GuessPolicy) -> Result<[GuessRow; 3], Duration> {
    let [pair, link, client] = rows;
    let window = ms(p.window).max(1);
    let results = [
        backoff_take(pair, now, p),
        gcra_take(link, now, window, p.per_link),
        gcra_take(client, now, window, p.per_client),
    ];
    match results {
        [Ok(a), Ok(b), Ok(c)] => Ok([a, b, c]),
        _ => {
            let wait = results.iter().filter_map(|r| r.err()).max().unwrap_or(1);
            Err(Duration::from_millis(wait.max(1).unsigned_abs()))
        }
    }
}

/// Hands back an attempt taken by [`take`]: the password was right (or
/// could not be tried). The client's back-off starts afresh: it proved it
/// has the password.
pub fn give_back(rows: [GuessRow; 3], p: &GuessPolicy) -> [GuessRow; 3] {
    let [_, link, client] = rows;
    let window = ms(p.window).max(1);
    [
        GuessRow::default(),
        gcra_give_back(link, window, p.per_link),
        gcra_give_back(client, window, p.per_client),
    ]
}

fn backoff_take(row: GuessRow, now: i64, p: &GuessPolicy) -> Result<GuessRow, i64> {
    let row = if row.expires <= now {
        GuessRow::default()
    } else {
        row
    };
    if now < row.at {
        return Err(row.at - now);
    }
    let count = row.count.saturating_add(1);
    let over = count - i64::from(p.free.max(1));
    let wait = if over < 0 {
        0
    } else {
        // 2^over, without overflowing on a long history.
        let factor = 1i64 << over.min(40);
        ms(p.backoff).saturating_mul(factor).min(ms(p.backoff_max))
    };
    let at = now.saturating_add(wait);
    Ok(GuessRow {
        count,
        at,
        expires: at.saturating_add(FORGET_MS),
    })
}

/// GCRA: `n` at once, then one every `window / n`.
fn gcra_take(row: GuessRow, now: i64, window: i64, n: u32) -> Result<GuessRow, i64> {
    let interval = (window / i64::from(n.max(1))).max(1);
    let next = row.at.max(now).saturating_add(interval);
    let over = next - now - window;
    if over > 0 {
        return Err(over);
    }
    Ok(GuessRow {
        count: 0,
        at: next,
        expires: next,
    })
}

fn gcra_give_back(row: GuessRow, window: i64, n: u32) -> GuessRow {
    let interval = (window / i64::from(n.max(1))).max(1);
    let at = row.at.saturating_sub(interval);
    GuessRow {
        count: 0,
        at,
        expires: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn policy() -> GuessPolicy {
        GuessPolicy::default()
    }

    /// Takes for one (link, client) pair against its own rows.
    fn try_take(rows: &mut [GuessRow; 3], now: i64, p: &GuessPolicy) -> Result<(), i64> {
        match take(*rows, now, p) {
            Ok(next) => {
                *rows = next;
                Ok(())
            }
            Err(wait) => Err(wait.as_millis() as i64),
        }
    }

    #[test]
    fn free_tries_then_doubling_waits_up_to_the_maximum() {
        let p = GuessPolicy {
            per_client: 1000,
            per_link: 1000,
            ..policy()
        };
        let mut rows = [GuessRow::default(); 3];
        let t0 = 1_000_000_000;
        for _ in 0..5 {
            try_take(&mut rows, t0, &p).expect("free try");
        }
        assert_eq!(try_take(&mut rows, t0, &p), Err(MIN));
        let mut now = t0;
        for wait in [1, 2, 4, 8, 16, 32, 60, 60] {
            now += wait * MIN;
            assert_eq!(
                try_take(&mut rows, now - 1, &p),
                Err(1),
                "before {wait} min"
            );
            try_take(&mut rows, now, &p).expect("after the wait");
        }
        // A day after the last wait ended, the pair starts afresh.
        now += 60 * MIN + FORGET_MS;
        for _ in 0..5 {
            try_take(&mut rows, now, &p).expect("fresh budget");
        }
        assert!(try_take(&mut rows, now, &p).is_err());
    }

    #[test]
    fn the_right_password_resets_the_pair_and_returns_the_shared_attempts() {
        let p = policy();
        let mut rows = [GuessRow::default(); 3];
        let now = 5_000_000;
        for _ in 0..4 {
            try_take(&mut rows, now, &p).expect("free try");
        }
        // The fifth attempt is the right password: taken, then handed back.
        let taken = take(rows, now, &p).expect("fifth try");
        let back = give_back(taken, &p);
        assert_eq!(back[0], GuessRow::default(), "the pair starts afresh");
        assert_eq!(back[1], rows[1], "the link's attempt is back");
        assert_eq!(back[2], rows[2], "the client's attempt is back");
        rows = back;
        for _ in 0..5 {
            try_take(&mut rows, now, &p).expect("five free tries again");
        }
    }

    #[test]
    fn the_link_ceiling_holds_for_many_clients_and_is_never_a_lock() {
        let p = policy();
        let now = 7_000_000;
        let mut link = GuessRow::default();
        let mut refused = None;
        for client in 0..30 {
            // Each client comes fresh: only the link's row is shared.
            let rows = [GuessRow::default(), link, GuessRow::default()];
            match take(rows, now, &p) {
                Ok(next) => link = next[1],
                Err(wait) => {
                    refused = Some((client, wait));
                    break;
                }
            }
        }
        let (after, wait) = refused.expect("the ceiling is reached");
        assert_eq!(after, 20, "per_link attempts an hour");
        assert_eq!(wait, Duration::from_secs(180), "one more every 3 minutes");
        let later = [GuessRow::default(), link, GuessRow::default()];
        assert!(take(later, now + 3 * MIN, &p).is_ok());
    }

    #[test]
    fn a_refusal_takes_nothing_and_reports_the_longest_wait() {
        let p = GuessPolicy {
            free: 1,
            per_client: 1,
            ..policy()
        };
        let mut rows = [GuessRow::default(); 3];
        try_take(&mut rows, 0, &p).expect("first");
        let before = rows;
        // Pair: 1 min back-off; client: 1 an hour.
        assert_eq!(try_take(&mut rows, 0, &p), Err(60 * MIN));
        assert_eq!(rows, before);
    }
}
