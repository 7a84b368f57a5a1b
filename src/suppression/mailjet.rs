//! Mailjet Event API payloads (the "event tracking" webhook).
//!
//! Mailjet POSTs one JSON object per event, or, with "Version 2" grouping,
//! a JSON array of them. Every event has `event` and `time` (Unix seconds);
//! delivery events carry `email`, `MessageID` (a number), `Message_GUID`,
//! `CustomID` (our queue id, from `X-MJ-CustomID`), `Payload`, and by type
//! `hard_bounce`, `blocked`, `error_related_to`, `error`, `comment`
//! (`bounce`, `blocked`), `source` (`spam`), `smtp_reply` and
//! `mj_message_id` (`sent`), `ip`, `geo`, `agent`, `url` (`open`, `click`,
//! `unsub`). Fields come as numbers or strings depending on the account's
//! age, so both are read; unknown fields are ignored.
//!
//! Tracking data (`ip`, `geo`, `agent`, `url`) and `Payload` are never read
//! into anything that is stored.

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::Value;

use super::classify::{Verdict, classify};
use crate::config::MailjetRule;
use crate::store::RecipientState;

/// One event, reduced to what the gateway keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Lowercase: `sent`, `open`, `click`, `bounce`, `blocked`, `spam`,
    /// `unsub`, ...
    pub kind: String,
    /// Unix seconds as Mailjet gave it; `None` when absent.
    pub time: Option<i64>,
    pub email: String,
    pub custom_id: Option<String>,
    /// `MessageID`, else `mj_message_id`, else `Message_GUID`.
    pub message_id: Option<String>,
    pub hard_bounce: bool,
    /// Mailjet's error class and error of a `bounce`/`blocked` event
    /// (`recipient`, `user unknown`), as sent.
    pub error_related_to: Option<String>,
    pub error: Option<String>,
    /// What the recipient's server answered (`sent`).
    pub smtp_reply: Option<String>,
    /// The relay's diagnostic: error class and text, spam source, SMTP reply.
    pub detail: Option<String>,
}

/// Why one element of a batch was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotAnObject,
    NoEvent,
    NoEmail,
}

/// The body is not a JSON object or array of objects.
#[derive(Debug, thiserror::Error)]
#[error("the body is not a Mailjet event (a JSON object or an array of them): {0}")]
pub struct BodyError(String);

/// A field as text, whether Mailjet sent a string or a number.
fn text(v: &Value, name: &str) -> Option<String> {
    match v.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flag(v: &Value, name: &str) -> bool {
    match v.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
        Some(Value::String(s)) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1"),
        _ => false,
    }
}

/// Keeps stored text on one line and short.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Parses one event object.
pub fn parse(v: &Value) -> Result<Event, Skip> {
    if !v.is_object() {
        return Err(Skip::NotAnObject);
    }
    let kind = text(v, "event")
        .map(|k| clean(&k.to_ascii_lowercase(), 32))
        .filter(|k| !k.is_empty())
        .ok_or(Skip::NoEvent)?;
    let email = text(v, "email")
        .map(|e| clean(&e, 320))
        .filter(|e| e.contains('@'))
        .ok_or(Skip::NoEmail)?;
    let time = match v.get("time") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let hard_bounce = flag(v, "hard_bounce");
    let mut detail = Vec::new();
    if kind == "bounce" {
        detail.push(
            if hard_bounce {
                "hard bounce"
            } else {
                "soft bounce"
            }
            .to_string(),
        );
    }
    for name in [
        "error_related_to",
        "error",
        "comment",
        "source",
        "smtp_reply",
    ] {
        if let Some(t) = text(v, name) {
            detail.push(format!("{name}: {}", clean(&t, 300)));
        }
    }
    Ok(Event {
        kind,
        time,
        email,
        custom_id: text(v, "CustomID").map(|c| clean(&c, 100)),
        message_id: text(v, "MessageID")
            .or_else(|| text(v, "mj_message_id"))
            .or_else(|| text(v, "Message_GUID"))
            .map(|m| clean(&m, 100)),
        hard_bounce,
        error_related_to: text(v, "error_related_to").map(|t| clean(&t, 100)),
        error: text(v, "error").map(|t| clean(&t, 100)),
        smtp_reply: text(v, "smtp_reply").map(|t| clean(&t, 300)),
        detail: (!detail.is_empty()).then(|| detail.join("; ")),
    })
}

/// A request body: one event object or an array of them.
pub fn parse_body(body: &[u8]) -> Result<Vec<Result<Event, Skip>>, BodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BodyError(e.to_string()))?;
    match value {
        Value::Array(items) => Ok(items.iter().map(parse).collect()),
        v @ Value::Object(_) => Ok(vec![parse(&v)]),
        _ => Err(BodyError("neither an object nor an array".into())),
    }
}

impl Event {
    /// What a `bounce`/`blocked` event means (`None` for other kinds).
    pub fn verdict(&self, rules: &[MailjetRule]) -> Option<Verdict> {
        classify(
            &self.kind,
            self.hard_bounce,
            self.error_related_to.as_deref(),
            self.error.as_deref(),
            rules,
        )
    }

    /// The suppression reason, for the events that say the address is bad:
    /// a complaint, or a failure [`classify`] puts on the list.
    pub fn suppression_reason(&self, rules: &[MailjetRule]) -> Option<String> {
        if self.kind == "spam" {
            return Some("mailjet:spam".into());
        }
        let verdict = self.verdict(rules)?;
        verdict.suppress.then(|| {
            format!(
                "mailjet:{} {}/{}",
                self.kind,
                self.error_related_to
                    .as_deref()
                    .unwrap_or("-")
                    .to_lowercase(),
                self.error.as_deref().unwrap_or("-").to_lowercase()
            )
        })
    }

    /// What becomes of the recipient of one of our messages: the new state
    /// and the text `queue show` gives as its last reply.
    pub fn recipient_state(&self) -> Option<(RecipientState, String)> {
        let state = match self.kind.as_str() {
            "sent" => RecipientState::Sent,
            "spam" => RecipientState::Complained,
            "bounce" => RecipientState::Bounced,
            "blocked" => RecipientState::Blocked,
            _ => return None,
        };
        let text = match state {
            RecipientState::Sent => format!(
                "relay: sent{}",
                self.smtp_reply
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            RecipientState::Complained => "relay: spam complaint by the recipient".to_string(),
            _ => format!(
                "relay: {}{}",
                self.kind,
                self.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        };
        Some((state, text))
    }

    /// The idempotency key: Mailjet has no event id, but type, time,
    /// message and address together name one event; a retried batch
    /// repeats them exactly.
    pub fn key(&self) -> String {
        let input = format!(
            "mailjet\0{}\0{}\0{}\0{}\0{}",
            self.kind,
            self.time.map(|t| t.to_string()).unwrap_or_default(),
            self.message_id.as_deref().unwrap_or_default(),
            self.email.trim().to_lowercase(),
            self.custom_id.as_deref().unwrap_or_default(),
        );
        let hash = digest(&SHA256, input.as_bytes());
        hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Unix milliseconds of the event; `now` when Mailjet gave no time.
    pub fn at_ms(&self, now: i64) -> i64 {
        self.time.and_then(|t| t.checked_mul(1000)).unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &str = r#"[
      {"event":"bounce","time":1795170000,"MessageID":19421777835146490,
       "Message_GUID":"1ab23cd4-e567-8901-2345-6789f0gh1i2j","email":"Weg@Example.org",
       "mj_campaign_id":7257,"mj_contact_id":4,"customcampaign":"","CustomID":"abcdefghijklmnop",
       "Payload":"","blocked":false,"hard_bounce":true,"error_related_to":"recipient",
       "error":"user unknown","comment":"Host or domain name not found","new_field":{"x":1}},
      {"event":"bounce","time":"1795170001","MessageID":"1","email":"voll@example.org",
       "hard_bounce":false,"error_related_to":"mailbox inactive","error":"quota exceeded"},
      {"event":"open","time":1795170002,"MessageID":2,"email":"leser@example.org",
       "ip":"198.51.100.7","geo":"DE","agent":"Mozilla/5.0"},
      {"event":"spam","time":1795170003,"MessageID":3,"email":"genervt@example.org","source":"JMRPP"},
      {"event":"blocked","time":1795170004,"MessageID":4,"email":"gesperrt@example.org",
       "error_related_to":"recipient","error":"preblocked"},
      {"event":"sent","time":1795170005,"mj_message_id":"5","email":"ok@example.org",
       "smtp_reply":"250 OK"},
      "not an object",
      {"time":1},
      {"event":"click","time":1,"url":"https://via.landkreis.example/d/TOKEN"}
    ]"#;

    #[test]
    fn a_version_2_batch() {
        let events = parse_body(BATCH.as_bytes()).expect("parses");
        assert_eq!(events.len(), 9);
        let hard = events[0].as_ref().expect("hard bounce");
        assert_eq!(hard.kind, "bounce");
        assert!(hard.hard_bounce);
        assert_eq!(hard.time, Some(1_795_170_000));
        assert_eq!(hard.message_id.as_deref(), Some("19421777835146490"));
        assert_eq!(hard.custom_id.as_deref(), Some("abcdefghijklmnop"));
        assert_eq!(
            hard.suppression_reason(&[]).as_deref(),
            Some("mailjet:bounce recipient/user unknown")
        );
        let detail = hard.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("error: user unknown"), "{detail}");
        let soft = events[1].as_ref().expect("soft bounce");
        assert_eq!(soft.time, Some(1_795_170_001));
        assert_eq!(soft.suppression_reason(&[]), None);
        let open = events[2].as_ref().expect("open");
        assert_eq!(open.suppression_reason(&[]), None);
        assert_eq!(open.detail, None, "no ip, geo or agent kept");
        assert_eq!(
            events[3].as_ref().map(|e| e.suppression_reason(&[])),
            Ok(Some("mailjet:spam".into()))
        );
        assert_eq!(
            events[4].as_ref().map(|e| e.suppression_reason(&[])),
            Ok(Some("mailjet:blocked recipient/preblocked".into()))
        );
        assert_eq!(
            events[5].as_ref().map(Event::recipient_state),
            Ok(Some((RecipientState::Sent, "relay: sent (250 OK)".into())))
        );
        assert_eq!(
            events[5].as_ref().map(|e| e.message_id.clone()),
            Ok(Some("5".into()))
        );
        assert_eq!(events[6], Err(Skip::NotAnObject));
        assert_eq!(events[7], Err(Skip::NoEvent));
        assert_eq!(events[8], Err(Skip::NoEmail));
    }

    #[test]
    fn single_object_and_stable_keys() {
        let one = r#"{"event":"spam","time":5,"MessageID":9,"email":"a@example.org"}"#;
        let a = parse_body(one.as_bytes()).expect("object");
        let b = parse_body(one.as_bytes()).expect("object");
        let (a, b) = (a[0].as_ref().expect("ok"), b[0].as_ref().expect("ok"));
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key().len(), 64);
        let other =
            parse_body(br#"{"event":"spam","time":6,"MessageID":9,"email":"a@example.org"}"#)
                .expect("object");
        assert_ne!(a.key(), other[0].as_ref().expect("ok").key());
        assert!(parse_body(b"\"text\"").is_err());
        assert!(parse_body(b"{not json").is_err());
        assert!(parse_body(b"[]").expect("empty batch").is_empty());
    }
}
