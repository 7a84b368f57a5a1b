//! Which upstream refusals are about the account rather than the message
//! (SPEC §9): the rules, and the "same reply for many recipients in a row"
//! detector. No I/O here; [`super`] applies the verdicts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use regex::{RegexSet, RegexSetBuilder};

use crate::config::AccountPause as Config;
use crate::delivery::relay::Stage;

/// Appended to a reply kept pending because the account is refused; the
/// recipient is not bounced.
pub const ACCOUNT_MARK: &str = " [schleuse: account-wide refusal, delivery paused]";
/// Appended to a `5xx` held back once: it bounces if the next attempt gets
/// the same reply without the account being paused meanwhile.
pub const HELD_MARK: &str = " [schleuse: held once, bounced if refused the same way again]";
/// Where the gateway's own notes start in a stored reply.
const MARK_START: &str = " [schleuse: ";

/// Why a refusal counts as account-wide; also the `cause` label of the
/// pause metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `4xx`/`5xx` to the greeting, EHLO, STARTTLS or AUTH.
    Connect,
    /// `5xx` to `MAIL FROM` with the system address as the sender.
    SystemSender,
    /// A configured reply pattern matched.
    Pattern,
    /// The same `5xx` for `same_reply_recipients` recipients in a row.
    SameReply,
}

impl Cause {
    pub const ALL: [Cause; 4] = [
        Cause::Connect,
        Cause::SystemSender,
        Cause::Pattern,
        Cause::SameReply,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Cause::Connect => "connect",
            Cause::SystemSender => "system_sender",
            Cause::Pattern => "pattern",
            Cause::SameReply => "same_reply",
        }
    }

    /// For the log and the notice.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Connect => "refused at the greeting or AUTH",
            Cause::SystemSender => "5xx to MAIL FROM with the system address as the sender",
            Cause::Pattern => "the reply matches a pattern of [delivery.account_pause] patterns",
            Cause::SameReply => "the same 5xx reply for many different recipients in a row",
        }
    }
}

/// The configured rules, compiled once per configuration.
pub struct Rules {
    config: Config,
    patterns: RegexSet,
}

impl Rules {
    pub fn new(config: &Config) -> Rules {
        // Validated at load; a pattern that would not compile anyway is
        // left out rather than taking every other one with it.
        let valid: Vec<&String> = config
            .patterns
            .iter()
            .filter(|p| {
                regex::RegexBuilder::new(p)
                    .case_insensitive(true)
                    .build()
                    .is_ok()
            })
            .collect();
        let patterns = RegexSetBuilder::new(valid)
            .case_insensitive(true)
            .build()
            .unwrap_or_else(|_| RegexSet::empty());
        Rules {
            config: config.clone(),
            patterns,
        }
    }

    pub fn is_for(&self, config: &Config) -> bool {
        self.config == *config
    }

    /// Whether a configured pattern matches `text`.
    pub fn matches_reply(&self, text: &str) -> bool {
        self.patterns.is_match(text)
    }
}

/// One reply of an attempt as the detector sees it.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub recipient: &'a str,
    pub stage: Stage,
    /// The reply as recorded, `550 5.7.1 text`.
    pub text: &'a str,
    /// This recipient's reply from the previous attempt, if any.
    pub prev: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered, deferred or bounced as the reply says.
    AsIs,
    /// A first `5xx` that may be the start of a run of the same refusal:
    /// deferred once instead of bounced.
    HoldOnce,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Set when the attempt shows an account-wide refusal: then every
    /// refusal of the attempt is kept pending, whatever its verdict.
    pub account_wide: Option<(Cause, String)>,
    /// One per reply, in order.
    pub verdicts: Vec<Verdict>,
}

/// The run of identical `5xx` replies seen last.
#[derive(Default)]
pub struct Detector {
    /// The normalised reply text of the run.
    key: String,
    /// Distinct recipients with the time each was last refused, oldest first.
    recipients: VecDeque<(String, Instant)>,
}

impl Detector {
    pub fn reset(&mut self) {
        self.key.clear();
        self.recipients.clear();
    }

    /// Feeds one refusal; how many different recipients the run now has
    /// within `window`.
    fn add(&mut self, key: &str, recipient: &str, now: Instant, window: Duration) -> usize {
        if self.key != key {
            self.reset();
            self.key = key.to_owned();
        }
        self.recipients
            .retain(|(r, t)| now.saturating_duration_since(*t) <= window && r != recipient);
        self.recipients.push_back((recipient.to_owned(), now));
        self.recipients.len()
    }

    /// Judges the replies of one attempt. `ongoing` is the normalised reply
    /// that started the current pause, if there is one: the same refusal
    /// again is account-wide too.
    pub fn judge(
        &mut self,
        rules: &Rules,
        sender_is_system: bool,
        ongoing: Option<&str>,
        replies: &[Seen<'_>],
        now: Instant,
    ) -> Judgement {
        let mut account_wide: Option<(Cause, String)> = None;
        let mut verdicts = vec![Verdict::AsIs; replies.len()];
        // A MAIL FROM or DATA reply is one reply for all recipients of the
        // message: it counts once towards a run.
        let mut shared_counted = false;
        for (i, seen) in replies.iter().enumerate() {
            if seen.stage == Stage::Local {
                continue;
            }
            let code = reply_code(seen.text);
            if (200..300).contains(&code) {
                // No longer "in a row".
                self.reset();
                continue;
            }
            if code < 400 || code == 421 {
                // 421 is "busy, closing": the circuit breaker's case.
                continue;
            }
            let wide = |cause| Some((cause, seen.text.to_owned()));
            if seen.stage == Stage::Connect {
                account_wide = account_wide.or(wide(Cause::Connect));
                continue;
            }
            if code >= 500 && seen.stage == Stage::MailFrom && sender_is_system {
                account_wide = account_wide.or(wide(Cause::SystemSender));
                continue;
            }
            if rules.matches_reply(seen.text) {
                account_wide = account_wide.or(wide(Cause::Pattern));
                continue;
            }
            if code < 500 {
                continue;
            }
            let key = normalise(seen.text);
            if let Some(started) = ongoing
                && started == key
            {
                // The cause is whatever started the pause; this is more of it.
                account_wide = account_wide.or(wide(Cause::SameReply));
                continue;
            }
            let needed = rules.config.same_reply_recipients;
            if needed == 0 {
                continue;
            }
            let shared_reply = matches!(seen.stage, Stage::MailFrom | Stage::Data);
            if shared_reply && std::mem::replace(&mut shared_counted, true) {
                verdicts[i] = verdicts[i - 1];
                continue;
            }
            if about_the_address(seen.text) {
                // Says the address itself is bad: never a sign of the
                // account, and it breaks the row.
                self.reset();
                continue;
            }
            let run = self.add(&key, seen.recipient, now, rules.config.same_reply_window);
            if run >= needed {
                account_wide = account_wide.or(wide(Cause::SameReply));
            } else if !confirmed(seen.prev, &key) {
                verdicts[i] = Verdict::HoldOnce;
            }
        }
        if account_wide.is_some() {
            // The pause starts (or goes on); a new run starts after it.
            self.reset();
        }
        Judgement {
            account_wide,
            verdicts,
        }
    }
}

/// Whether `prev` is the same refusal, held once already.
fn confirmed(prev: Option<&str>, key: &str) -> bool {
    prev.and_then(|p| p.strip_suffix(HELD_MARK))
        .is_some_and(|p| normalise(p) == key)
}

/// The reply code at the start of a recorded reply; 0 if there is none.
pub fn reply_code(text: &str) -> u16 {
    text.get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `5.1.1`, `5.1.2`, `5.1.3`, `5.1.6`, `5.1.10`: the destination address
/// is bad (RFC 3463), which is about that recipient only.
fn about_the_address(text: &str) -> bool {
    let Some(status) = text.split_whitespace().nth(1) else {
        return false;
    };
    let mut parts = status.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (
            Some("5"),
            Some("1"),
            Some("1" | "2" | "3" | "6" | "10"),
            None
        )
    )
}

/// The reply text with what differs between recipients and messages
/// (addresses, ids, numbers) taken out, so "the same reply" compares equal;
/// the code and enhanced status stay.
pub fn normalise(text: &str) -> String {
    let text = text.split(MARK_START).next().unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split_whitespace().enumerate() {
        if !out.is_empty() {
            out.push(' ');
        }
        let status = i == 1 && word.split('.').count() == 3;
        if i == 0 || status {
            out.push_str(word);
        } else if word.contains('@') {
            out.push_str("<addr>");
        } else if looks_like_id(word) {
            out.push_str("<id>");
        } else {
            let mut digits = false;
            for c in word.chars().flat_map(char::to_lowercase) {
                if c.is_ascii_digit() {
                    if !digits {
                        out.push('0');
                    }
                    digits = true;
                } else {
                    out.push(c);
                    digits = false;
                }
            }
        }
    }
    out.trim_end_matches(['.', ' ']).to_owned()
}

/// A queue id, hash or token: long, with letters and digits mixed.
fn looks_like_id(word: &str) -> bool {
    let word = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    word.len() >= 8
        && word.bytes().any(|b| b.is_ascii_digit())
        && word.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests;
