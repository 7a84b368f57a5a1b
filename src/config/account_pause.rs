//! `[delivery.account_pause]`: upstream refusals that cannot be about one
//! message pause the whole queue instead of bouncing it (SPEC §9,
//! `crate::delivery::account`).
//!
//! Always on: a `4xx`/`5xx` at the greeting or AUTH, and a `5xx` to
//! `MAIL FROM` when the envelope sender is `[sender] system_address`. These
//! keys tune the rest: the reply patterns that pause at their first match,
//! the "same refusal for many recipients in a row" detector, the probe
//! back-off and who gets the notice.

use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, expand_opt, plausible_recipient};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountPause {
    /// Who gets the notice (one per pause); unset: `[sender] system_address`.
    #[serde(deserialize_with = "expand_opt")]
    pub notify: Option<String>,
    /// Regular expressions (case-insensitive) matched against every `4xx`
    /// or `5xx` reply to MAIL FROM, RCPT TO or DATA: a match pauses at once.
    pub patterns: Vec<String>,
    /// The same `5xx` reply text for this many different recipients in a
    /// row pauses; 0 turns the detector off.
    pub same_reply_recipients: usize,
    /// ... all of them within this long.
    #[serde(deserialize_with = "duration")]
    pub same_reply_window: Duration,
    /// While paused, the first probe waits this long; each refused probe
    /// doubles the wait ...
    #[serde(deserialize_with = "duration")]
    pub probe_interval: Duration,
    /// ... up to this.
    #[serde(deserialize_with = "duration")]
    pub probe_max_interval: Duration,
}

/// What Mailjet documents for accounts it stops (help centre, "Blocked or
/// Limited Account: Reasons and How to Restore Full Functionality": a
/// sending limit or block "for 7 days"; "Why has my account been
/// blocked/limited/suspended?") and for senders it has not validated
/// ("this sender address has not been validated yet"; the Send API's
/// "is not an authorized sender email address for your account"). Its
/// exact SMTP relay wording is not documented, so the patterns match the
/// words, not one sentence.
pub fn default_patterns() -> Vec<String> {
    [
        r"sender\b.{0,60}\bnot\b.{0,20}\b(validated|verified|authori[sz]ed|allowed)",
        r"not an authori[sz]ed sender",
        r"account\b.{0,60}\b(blocked|suspended|disabled|deactivated|limited|restricted)",
        r"(sending|daily|monthly|hourly) (limit|quota)\b.{0,40}\b(reached|exceeded)",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl Default for AccountPause {
    fn default() -> Self {
        Self {
            notify: None,
            patterns: default_patterns(),
            same_reply_recipients: 5,
            same_reply_window: Duration::from_secs(600),
            probe_interval: Duration::from_secs(30),
            probe_max_interval: Duration::from_secs(600),
        }
    }
}

impl AccountPause {
    /// What is wrong, as (key, reason), if anything.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("delivery.account_pause.{k}");
        if let Some(n) = &self.notify
            && !plausible_recipient(n)
        {
            return Err((
                key("notify"),
                format!("{n:?} is not an address like postmaster@landkreis.example"),
            ));
        }
        for (i, p) in self.patterns.iter().enumerate() {
            if p.trim().is_empty() {
                return Err((format!("{}[{i}]", key("patterns")), "is empty".into()));
            }
            if let Err(e) = regex::RegexBuilder::new(p).case_insensitive(true).build() {
                return Err((
                    format!("{}[{i}]", key("patterns")),
                    format!("not a regular expression: {e}"),
                ));
            }
        }
        if self.same_reply_recipients == 1 {
            return Err((
                key("same_reply_recipients"),
                "must be at least 2 (one refusal is about its recipient; use patterns to pause at once) or 0 (off)".into(),
            ));
        }
        if self.same_reply_window < Duration::from_secs(1) {
            return Err((key("same_reply_window"), "must be at least 1s".into()));
        }
        if self.probe_interval < Duration::from_secs(1) {
            return Err((key("probe_interval"), "must be at least 1s".into()));
        }
        if self.probe_max_interval < self.probe_interval {
            return Err((
                key("probe_max_interval"),
                "must not be shorter than probe_interval".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_shipped() {
        assert_eq!(AccountPause::default().check(), Ok(()));
        let text = include_str!("../../conf/schleuse.toml");
        let c = super::super::Config::parse(text, std::path::Path::new("schleuse.toml"))
            .expect("conf/schleuse.toml");
        assert_eq!(c.delivery.account_pause, AccountPause::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |f: fn(&mut AccountPause)| {
            let mut a = AccountPause::default();
            f(&mut a);
            a.check().err().map(|(k, _)| k).unwrap_or_default()
        };
        assert_eq!(
            bad(|a| a.notify = Some("admin".into())),
            "delivery.account_pause.notify"
        );
        assert_eq!(
            bad(|a| a.patterns.push("account (blocked".into())),
            "delivery.account_pause.patterns[4]"
        );
        assert_eq!(
            bad(|a| a.same_reply_recipients = 1),
            "delivery.account_pause.same_reply_recipients"
        );
        assert_eq!(
            bad(|a| a.probe_max_interval = Duration::from_secs(5)),
            "delivery.account_pause.probe_max_interval"
        );
        assert_eq!(bad(|a| a.same_reply_recipients = 0), "");
    }
}
