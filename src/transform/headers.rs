//! Header edits (SPEC §7 "From / Reply-To", "Header privacy").
//!
//! Works on the raw header block with mail-parser's field offsets: a field
//! that is kept is copied byte for byte, a removed one is skipped, a
//! replaced one is written anew (RFC 2047-encoded by mail-builder where its
//! display name needs it). New fields go on top.
//!
//! - Removed: `[privacy] remove_headers` (`X-Foo-*` is a prefix), always
//!   the gateway's control headers `X-Schleuse-*` and `X-VIA-*`, and
//!   client-supplied `X-Mailjet-*` / `X-MJ-*` unless
//!   `allow_mailjet_headers`.
//! - `From:` with `[sender] from = "rewrite"` becomes `system_address`,
//!   keeping the display name; further `From:` fields are dropped.
//! - `Reply-To:` with `reply_to = "account"`: the client's is replaced by
//!   the staff member's address (the account's trusted per-message header
//!   if present and allowed, else the account's `reply_to`, else the
//!   original `From:` address).
//! - Added: `X-Mailjet-TrackOpen: 0`, `X-Mailjet-TrackClick: 0` (unless
//!   `tracking`), `X-MJ-CustomID: <queue id>` (opaque, no personal data).

use mail_builder::headers::Header as _;
use mail_builder::headers::address::Address;
use mail_parser::{HeaderName, HeaderValue, MessageParser};

use super::{Context, TransformError};
use crate::config::{FromMode, Privacy, ReplyToMode};

/// Always removed: they steer the gateway and must not leave the house.
const CONTROL_PREFIXES: [&str; 2] = ["x-schleuse-", "x-via-"];
/// Steer the relay; only the gateway may set them.
const MAILJET_PREFIXES: [&str; 2] = ["x-mailjet-", "x-mj-"];

/// The rewritten header block, to be put in place of `message[..replaces]`
/// (the body is not copied: a 25 MB message stays in its one buffer).
pub struct Edited {
    pub header: Vec<u8>,
    pub replaces: usize,
    pub staff_address: String,
}

/// Case-insensitive match of a field name against `Name` or `Prefix-*`.
/// Compared as bytes: a client's field name may hold non-ASCII characters,
/// and the prefix's length can end inside one of them.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes())),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Whether the header step removes every field of this name
/// (`[privacy] remove_headers`, with a rule's removals and `add_headers`).
pub fn removes(privacy: &Privacy, name: &str) -> bool {
    privacy.remove_headers.iter().any(|p| name_matches(p, name))
}

fn has_prefix(name: &str, prefixes: &[&str]) -> bool {
    prefixes
        .iter()
        .any(|p| name_matches(&format!("{p}*"), name))
}

/// Writes `Name: <address>` with mail-builder's encoding and folding.
fn address_field(out: &mut Vec<u8>, name: &str, display: Option<&str>, email: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    Address::new_address(display.filter(|d| !d.trim().is_empty()), email)
        .write_header(out, name.len() + 2);
}

pub fn rewrite(ctx: &Context<'_>, message: &[u8]) -> Result<Edited, TransformError> {
    let parsed = MessageParser::new()
        .parse_headers(message)
        .ok_or(TransformError::Unparseable)?;
    let account = ctx.account;

    // The original From: (already checked against the account by policy).
    let (from_name, from_email) = parsed
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::From)
        .find_map(|h| match &h.value {
            HeaderValue::Address(a) => a.first().and_then(|addr| {
                addr.address()
                    .map(|e| (addr.name().map(str::to_owned), e.to_owned()))
            }),
            _ => None,
        })
        .ok_or(TransformError::NoFrom)?;

    // The staff member: a trusted per-message header the account may use
    // (only within its allowed senders), else the account's, else From.
    let from_header = account.reply_to_header.as_deref().and_then(|field| {
        parsed
            .headers()
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(field))
            .and_then(|h| match &h.value {
                HeaderValue::Address(a) => a.first().and_then(|x| x.address()).map(str::to_owned),
                HeaderValue::Text(t) => Some(t.trim().trim_matches(['<', '>']).to_owned()),
                _ => None,
            })
            .filter(|addr| account.may_send_as(addr))
    });
    let staff_address = from_header
        .or_else(|| account.reply_to.clone())
        .unwrap_or_else(|| from_email.clone());

    let rewrite_from = ctx.sender.from == FromMode::Rewrite;
    let final_from = if rewrite_from {
        ctx.sender.system_address.as_str()
    } else {
        from_email.as_str()
    };
    let set_reply_to = ctx.sender.reply_to == ReplyToMode::Account;

    let mut top = Vec::with_capacity(256);
    top.extend_from_slice(format!("X-MJ-CustomID: {}\r\n", ctx.queue_id).as_bytes());
    if !ctx.privacy.tracking {
        top.extend_from_slice(b"X-Mailjet-TrackOpen: 0\r\nX-Mailjet-TrackClick: 0\r\n");
    }
    if set_reply_to && !staff_address.eq_ignore_ascii_case(final_from) {
        address_field(&mut top, "Reply-To", None, &staff_address);
    }

    let mut out = Vec::with_capacity(top.len() + 1024);
    out.extend_from_slice(&top);
    let mut pos = 0usize;
    let mut from_done = false;
    for h in parsed.headers() {
        let (start, end) = (h.offset_field as usize, h.offset_end as usize);
        if start < pos || end > message.len() || start > end {
            continue;
        }
        // Bytes between fields (e.g. a malformed line) stay as they were.
        out.extend_from_slice(&message[pos..start]);
        pos = end;
        let name = h.name.as_str();
        let drop = removes(ctx.privacy, name)
            || has_prefix(name, &CONTROL_PREFIXES)
            || (!ctx.privacy.allow_mailjet_headers && has_prefix(name, &MAILJET_PREFIXES))
            || (set_reply_to && h.name == HeaderName::ReplyTo);
        if drop {
            continue;
        }
        if h.name == HeaderName::From && rewrite_from {
            if !from_done {
                address_field(&mut out, "From", from_name.as_deref(), final_from);
                from_done = true;
            }
            continue;
        }
        out.extend_from_slice(&message[start..end]);
    }
    Ok(Edited {
        header: out,
        replaces: pos,
        staff_address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Account;
    use crate::config::{Config, ReceivedHeader};
    use crate::transform::Stamp;

    fn account() -> Account {
        Account {
            name: "via".into(),
            allowed_senders: vec!["*@landkreis.example".into()],
            reply_to: Some("schuelerbefoerderung@landkreis.example".into()),
            reply_to_header: Some("X-VIA-User".into()),
            ..Account::default()
        }
    }

    fn run(config: &Config, account: &Account, msg: &[u8]) -> String {
        let ctx = Context {
            sender: &config.sender,
            privacy: &config.privacy,
            account,
            queue_id: "q123",
            stamp: Stamp {
                hostname: "gw.test",
                helo: "app",
                peer: std::net::IpAddr::from([192, 0, 2, 1]),
                tls: true,
                authenticated: true,
                queue_id: "q123",
                mode: ReceivedHeader::None,
            },
        };
        let edited = rewrite(&ctx, msg).expect("rewrite");
        let mut out = edited.header;
        out.extend_from_slice(&msg[edited.replaces..]);
        String::from_utf8(out).expect("utf8")
    }

    const MSG: &[u8] =
        b"From: =?utf-8?q?M=C3=BCller=2C_Anna_=28VIA=29?= <anna.mueller@landkreis.example>\r\n\
        To: eltern@example.org\r\n\
        Reply-To: someone@elsewhere.example\r\n\
        X-Mailer: PHPMailer 6\r\n\
        X-VIA-Category: manual\r\n\
        X-VIA-User: k.schmidt@landkreis.example\r\n\
        X-Mailjet-TrackOpen: 1\r\n\
        Subject: Bescheid\r\n\
        \r\n\
        Hallo\r\n";

    #[test]
    fn rewrite_keeps_display_name_and_sets_staff_reply_to() {
        let out = run(&Config::default(), &account(), MSG);
        let parsed = MessageParser::new().parse(out.as_bytes()).expect("parses");
        let from = parsed.from().and_then(|a| a.first()).expect("from");
        assert_eq!(from.address(), Some("via@landkreis.example"));
        assert_eq!(from.name(), Some("Müller, Anna (VIA)"));
        let reply: Vec<_> = parsed.header_values("Reply-To").collect();
        assert_eq!(reply.len(), 1, "{out}");
        assert!(
            out.contains("Reply-To: <k.schmidt@landkreis.example>"),
            "{out}"
        );
        for gone in ["X-Mailer", "X-VIA-", "elsewhere.example", "TrackOpen: 1"] {
            assert!(!out.contains(gone), "{gone} left in\n{out}");
        }
        assert!(out.contains("X-Mailjet-TrackOpen: 0\r\nX-Mailjet-TrackClick: 0\r\n"));
        assert!(out.contains("X-MJ-CustomID: q123\r\n"));
        assert!(
            out.ends_with("To: eltern@example.org\r\nSubject: Bescheid\r\n\r\nHallo\r\n"),
            "{out}"
        );
    }

    #[test]
    fn untrusted_reply_to_header_falls_back_to_account() {
        let msg = String::from_utf8_lossy(MSG)
            .replace("k.schmidt@landkreis.example", "boss@evil.example")
            .into_bytes();
        let out = run(&Config::default(), &account(), &msg);
        assert!(
            out.contains("Reply-To: <schuelerbefoerderung@landkreis.example>"),
            "{out}"
        );
    }

    #[test]
    fn keep_mode_leaves_from_and_body_bytes() {
        let mut config = Config::default();
        config.sender.from = FromMode::Keep;
        config.sender.reply_to = ReplyToMode::Keep;
        config.privacy.remove_headers.clear();
        config.privacy.allow_mailjet_headers = true;
        let plain = b"From: a@landkreis.example\r\nX-Mailer: x\r\nSubject: s\r\n\r\nbody\r\n";
        let out = run(&config, &Account::default(), plain);
        let original = String::from_utf8_lossy(plain);
        assert!(out.ends_with(original.as_ref()), "{out}");
        assert!(out.starts_with("X-MJ-CustomID: q123\r\n"));
    }

    #[test]
    fn patterns() {
        assert!(name_matches("X-VIA-*", "x-via-category"));
        assert!(name_matches("X-Mailer", "x-mailer"));
        assert!(!name_matches("X-Mailer", "X-Mailer-Version"));
        assert!(has_prefix("X-MJ-CustomID", &MAILJET_PREFIXES));
    }

    /// Found by fuzz/session: a field name with a multi-byte character
    /// where a prefix's length ends (`X-Schleuse-` is 11 bytes, the `ä`
    /// of `X-VIA-Cateägory` takes bytes 10 and 11) panicked the session.
    #[test]
    fn non_ascii_field_names() {
        assert!(!name_matches("X-Schleuse-*", "X-VIA-Cateägory"));
        assert!(name_matches("X-VIA-*", "X-VIA-Cateägory"));
        let msg = "From: a@landkreis.example\r\nX-VIA-Cateägory: manual\r\n\
            X-Mailjet-Träck: 1\r\nX-Ä: kept\r\nSubject: s\r\n\r\nbody\r\n";
        let out = run(&Config::default(), &account(), msg.as_bytes());
        assert!(
            !out.contains("Cateägory") && !out.contains("Träck"),
            "{out}"
        );
        assert!(out.contains("X-Ä: kept\r\n"), "{out}");
    }
}
