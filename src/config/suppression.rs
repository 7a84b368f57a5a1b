//! `[suppression]`: addresses that bounced hard are not mailed again for a
//! while (SPEC §6, `crate::suppression`).
//!
//! The Mailjet event webhook is off until `webhook_path` is set. Mailjet
//! signs nothing, so the path must carry a secret (one segment of at least
//! 16 random-looking characters) and HTTP basic auth is required; TLS is the
//! reverse proxy's job in front of the admin endpoint.

use std::time::Duration;

use serde::Deserialize;

use super::values::{LENIENT_ENV, duration, expand_opt, size};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Suppression {
    /// How long an automatic entry lasts (upstream `5xx 5.1.x`, DSNs,
    /// Mailjet `bounce`/`blocked`/`spam` events).
    #[serde(deserialize_with = "duration")]
    pub hard_bounce_duration: Duration,
    /// The webhook's path on the admin endpoint, e.g.
    /// `/hooks/mailjet/${WEBHOOK_SECRET_PATH}`; unset: no webhook. Changing
    /// it takes a restart.
    #[serde(deserialize_with = "expand_opt")]
    pub webhook_path: Option<String>,
    /// HTTP basic auth Mailjet must send (`https://user:password@host/path`
    /// in Mailjet's settings); required with `webhook_path`.
    #[serde(deserialize_with = "expand_opt")]
    pub webhook_user: Option<String>,
    #[serde(deserialize_with = "expand_opt")]
    pub webhook_password: Option<String>,
    /// Larger request bodies get `413`.
    #[serde(deserialize_with = "size")]
    pub webhook_max_body: u64,
    /// With the webhook set and relay mode: alert (log, metric) when mail
    /// relayed longer ago than this has produced no event since. Mailjet
    /// suspends a webhook that failed for 24 h; zero turns the alert off.
    #[serde(deserialize_with = "duration")]
    pub webhook_silence_alert: Duration,
    /// `[[suppression.mailjet_rule]]`: add to or override the built-in
    /// mapping of Mailjet failure events (`crate::suppression::classify`).
    pub mailjet_rule: Vec<MailjetRule>,
}

/// One `error_related_to`/`error` pair of a Mailjet `bounce` or `blocked`
/// event, and whether it puts the address on the suppression list.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MailjetRule {
    /// `bounce` or `blocked`.
    pub event: String,
    pub error_related_to: String,
    /// Unset: every error of the class without a rule of its own.
    #[serde(default)]
    pub error: Option<String>,
    /// For `bounce` only: unset applies to hard and soft bounces alike.
    #[serde(default)]
    pub hard_bounce: Option<bool>,
    pub suppress: bool,
}

impl Default for Suppression {
    fn default() -> Self {
        Self {
            hard_bounce_duration: Duration::from_secs(30 * 86_400),
            webhook_path: None,
            webhook_user: None,
            webhook_password: None,
            webhook_max_body: 1024 * 1024,
            webhook_silence_alert: Duration::from_secs(6 * 3600),
            mailjet_rule: Vec::new(),
        }
    }
}

/// The paths the admin endpoint serves itself.
const RESERVED: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// Whether a path segment looks like a secret: at least 16 characters, two
/// kinds of them (lower, upper, digit) and 8 different ones, as a hex or
/// base64url random string has (`openssl rand -hex 16`).
fn random_looking(segment: &str) -> bool {
    let kinds = [
        segment.chars().any(|c| c.is_ascii_lowercase()),
        segment.chars().any(|c| c.is_ascii_uppercase()),
        segment.chars().any(|c| c.is_ascii_digit()),
    ];
    let mut distinct: Vec<char> = segment.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    segment.chars().count() >= 16
        && kinds.iter().filter(|k| **k).count() >= 2
        && distinct.len() >= 8
}

impl Suppression {
    /// What is wrong, as (key, reason), if anything. The path is a secret:
    /// it is never quoted in the reason.
    pub(super) fn check(&self, admin_enabled: bool) -> Result<(), (&'static str, String)> {
        if self.hard_bounce_duration.is_zero() {
            return Err((
                "suppression.hard_bounce_duration",
                "must be longer than zero".into(),
            ));
        }
        for r in &self.mailjet_rule {
            let event = r.event.trim().to_ascii_lowercase();
            if event != "bounce" && event != "blocked" {
                return Err((
                    "suppression.mailjet_rule.event",
                    format!("must be \"bounce\" or \"blocked\", not {:?}", r.event),
                ));
            }
            if r.error_related_to.trim().is_empty() {
                return Err((
                    "suppression.mailjet_rule.error_related_to",
                    "must name Mailjet's error class (recipient, domain, spam, content, system, mailjet)"
                        .into(),
                ));
            }
            if event == "blocked" && r.hard_bounce.is_some() {
                return Err((
                    "suppression.mailjet_rule.hard_bounce",
                    "applies to bounce events only".into(),
                ));
            }
        }
        if self.webhook_max_body < 1024 {
            return Err((
                "suppression.webhook_max_body",
                "must be at least 1KB".into(),
            ));
        }
        if !self.webhook_silence_alert.is_zero()
            && self.webhook_silence_alert < Duration::from_secs(1)
        {
            return Err((
                "suppression.webhook_silence_alert",
                "must be at least 1s, or \"0s\" for no alert".into(),
            ));
        }
        let Some(path) = &self.webhook_path else {
            if self.webhook_user.is_some() || self.webhook_password.is_some() {
                return Err((
                    "suppression.webhook_path",
                    "webhook_user/webhook_password are set but webhook_path is not".into(),
                ));
            }
            return Ok(());
        };
        // Admin commands read unset ${VAR}s as empty (Config::load_for_admin):
        // the webhook's secrets live in the service's environment only.
        if LENIENT_ENV.with(|l| l.get()) {
            return Ok(());
        }
        if !admin_enabled {
            return Err((
                "suppression.webhook_path",
                "the webhook is served by the admin endpoint: set [admin] enabled = true".into(),
            ));
        }
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '/');
        if !path.starts_with('/')
            || !path.chars().all(allowed)
            || path.contains("//")
            || path.split('/').any(|s| s == "." || s == "..")
        {
            return Err((
                "suppression.webhook_path",
                "must be an absolute path of letters, digits and - _ . ~ (like /hooks/mailjet/<secret>)"
                    .into(),
            ));
        }
        if RESERVED
            .iter()
            .any(|r| path == r || path.starts_with(&format!("{r}/")))
        {
            return Err((
                "suppression.webhook_path",
                "must not be one of the admin endpoint's own paths".into(),
            ));
        }
        if !path.split('/').any(random_looking) {
            return Err((
                "suppression.webhook_path",
                "needs an unguessable segment of at least 16 random characters, e.g. \
                 /hooks/mailjet/<output of `openssl rand -hex 16`>"
                    .into(),
            ));
        }
        match (&self.webhook_user, &self.webhook_password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() && !u.contains(':') => Ok(()),
            (Some(u), Some(_)) if u.contains(':') => Err((
                "suppression.webhook_user",
                "must not contain ':' (HTTP basic auth)".into(),
            )),
            _ => Err((
                "suppression.webhook_password",
                "the webhook needs webhook_user and webhook_password (HTTP basic auth), both non-empty"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_path(path: &str) -> Suppression {
        Suppression {
            webhook_path: Some(path.into()),
            webhook_user: Some("mailjet".into()),
            webhook_password: Some("pw".into()),
            ..Suppression::default()
        }
    }

    #[test]
    fn mailjet_rules_are_checked() {
        let rule = |event: &str, hard_bounce| MailjetRule {
            event: event.into(),
            error_related_to: "spam".into(),
            error: None,
            hard_bounce,
            suppress: true,
        };
        let with = |r: MailjetRule| Suppression {
            mailjet_rule: vec![r],
            ..Suppression::default()
        };
        with(rule("Bounce", Some(true)))
            .check(false)
            .expect("bounce");
        with(rule("blocked", None)).check(false).expect("blocked");
        let err = with(rule("open", None)).check(false).unwrap_err();
        assert_eq!(err.0, "suppression.mailjet_rule.event");
        let err = with(rule("blocked", Some(true))).check(false).unwrap_err();
        assert_eq!(err.0, "suppression.mailjet_rule.hard_bounce");
        let parsed: Suppression = toml::from_str(
            "[[mailjet_rule]]\nevent = \"blocked\"\nerror_related_to = \"mailjet\"\nsuppress = false\n",
        )
        .expect("parses");
        assert_eq!(parsed.mailjet_rule[0].error, None);
    }

    #[test]
    fn webhook_path_must_be_secret_and_authenticated() {
        Suppression::default().check(false).expect("no webhook");
        with_path("/hooks/mailjet/3f9a0c27d1e84b6fa2c5")
            .check(true)
            .expect("hex secret");
        with_path("/hooks/mailjet/Xk2_pQ9-vLr7TzWm")
            .check(true)
            .expect("base64url secret");
        for bad in [
            "/hooks/mailjet/",
            "/hooks/mailjet/mailjetwebhookpath",
            "/hooks/mailjet/aaaaaaaaaaaaaaaa1",
            "/hooks/mailjet/1234",
            "hooks/mailjet/3f9a0c27d1e84b6fa2c5",
            "/hooks/{x}/3f9a0c27d1e84b6fa2c5",
            "/metrics/3f9a0c27d1e84b6fa2c5",
        ] {
            let err = with_path(bad).check(true).unwrap_err();
            assert_eq!(err.0, "suppression.webhook_path", "{bad}");
            assert!(!err.1.contains("3f9a0c27"), "the secret is not quoted");
        }
        let err = with_path("/hooks/mailjet/3f9a0c27d1e84b6fa2c5")
            .check(false)
            .unwrap_err();
        assert!(err.1.contains("[admin]"), "{}", err.1);
        let mut no_auth = with_path("/hooks/mailjet/3f9a0c27d1e84b6fa2c5");
        no_auth.webhook_password = None;
        assert_eq!(
            no_auth.check(true).unwrap_err().0,
            "suppression.webhook_password"
        );
    }
}
