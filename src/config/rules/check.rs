//! Validation of `[[rule]]` and `[categories]` at load: every error names
//! its key (`rule[3].reject_reply`), so a broken rule file never loads.

use super::{Action, Categories, List, Match, Rule};
use crate::config::{AttachmentMode, Attachments};

/// Fields a rule may neither add nor remove: the message's structure, what
/// DKIM signs, and what the gateway itself sets (use `tracking` for the
/// Mailjet tracking fields).
const PROTECTED: [&str; 17] = [
    "From",
    "Sender",
    "To",
    "Cc",
    "Bcc",
    "Reply-To",
    "Date",
    "Message-ID",
    "Subject",
    "MIME-Version",
    "Content-*",
    "Received",
    "Return-Path",
    "DKIM-Signature",
    "X-MJ-CustomID",
    "X-Mailjet-TrackOpen",
    "X-Mailjet-TrackClick",
];

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Does `name` (or, for `Prefix-*`, any name with that prefix) hit a
/// protected field?
fn protected(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    PROTECTED.iter().copied().find(|p| {
        let p = p.to_ascii_lowercase();
        match (p.strip_suffix('*'), lower.strip_suffix('*')) {
            (Some(pp), _) => lower.starts_with(pp),
            (None, Some(np)) => p.starts_with(np),
            (None, None) => p == lower,
        }
    })
}

fn valid_domain(d: &str) -> bool {
    let literal = d.len() > 2 && d.starts_with('[') && d.ends_with(']');
    literal
        || (!d.is_empty()
            && !d.starts_with(['.', '-'])
            && !d.ends_with('.')
            && !d.contains("..")
            && d.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_')))
}

/// `*`, `domain` or `*.domain`.
fn check_domain_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let d = p.strip_prefix("*.").unwrap_or(p);
    if d.contains('*') {
        return Err(format!(
            "{p:?}: a wildcard may only be \"*\" or a leading \"*.\" (\"*.schule.example\")"
        ));
    }
    if !valid_domain(d) {
        return Err(format!("{p:?} is not a domain like \"schule.example\""));
    }
    Ok(())
}

/// `*`, `*@domain`, `*@*.domain` or `local@domain`.
fn check_sender_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let Some((local, domain)) = p.rsplit_once('@') else {
        return Err(format!(
            "{p:?} is not an address or a pattern like \"*@landkreis.example\""
        ));
    };
    if local.is_empty() || (local.contains('*') && local != "*") || local.contains(' ') {
        return Err(format!(
            "{p:?}: the part before @ must be an address's or \"*\""
        ));
    }
    check_domain_pattern(domain).map_err(|e| format!("{p:?}: {e}"))?;
    if domain == "*" {
        return Err(format!("{p:?}: write \"*\" for any sender"));
    }
    Ok(())
}

/// Checks the rules and switches; the error is (key, reason).
pub fn check(
    rules: &[Rule],
    categories: &Categories,
    global: &Attachments,
) -> Result<(), (String, String)> {
    if !is_field_name(&categories.header) {
        return Err((
            "categories.header".into(),
            format!("{:?} is not a header name", categories.header),
        ));
    }
    for (list, key) in [
        (&categories.disabled, "disabled"),
        (&categories.paused, "paused"),
    ] {
        for (i, c) in list.iter().enumerate() {
            if c.trim().is_empty() || c.contains(['\r', '\n']) {
                return Err((
                    format!("categories.{key}[{i}]"),
                    "must be a category name".into(),
                ));
            }
        }
    }
    if let Some(c) = categories.disabled.iter().find(|c| {
        categories
            .paused
            .iter()
            .any(|p| p.trim().eq_ignore_ascii_case(c.trim()))
    }) {
        return Err((
            "categories.paused".into(),
            format!("{c:?} is also disabled"),
        ));
    }
    let mut catch_all: Option<(usize, &str)> = None;
    for (i, rule) in rules.iter().enumerate() {
        let key = |k: &str| format!("rule[{i}].{k}");
        if let Some((j, name)) = catch_all {
            return Err((
                format!("rule[{i}]"),
                format!(
                    "can never match: rule[{j}] {name:?} before it has no conditions and matches everything"
                ),
            ));
        }
        let name = rule.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err((
                key("name"),
                format!(
                    "{:?}: letters, digits, '-', '_' and '.' only (at most 64)",
                    rule.name
                ),
            ));
        }
        if rules[..i]
            .iter()
            .any(|r| r.name.trim().eq_ignore_ascii_case(name))
        {
            return Err((key("name"), format!("{name:?} is used by an earlier rule")));
        }
        if let Some(m) = &rule.when {
            check_match(m).map_err(|(k, r)| (key(&format!("match.{k}")), r))?;
        }
        if rule.when.as_ref().is_none_or(Match::is_empty) {
            catch_all = Some((i, name));
        }
        if rule.reject_reply.is_some() && rule.action != Some(Action::Reject) {
            return Err((
                key("reject_reply"),
                "is only used with action = \"reject\"".into(),
            ));
        }
        if rule.max_recipients == Some(0) {
            return Err((key("max_recipients"), "must be at least 1".into()));
        }
        if rule.max_expiry.is_some_and(|d| d.is_zero()) {
            return Err((key("max_expiry"), "must be longer than zero".into()));
        }
        if rule.attachments == Some(AttachmentMode::Link) && global.mode != AttachmentMode::Link {
            return Err((
                key("attachments"),
                "\"link\" needs the link service, which runs only with [attachments] mode = \"link\"".into(),
            ));
        }
        for (n, v) in &rule.add_headers {
            let k = key(&format!("add_headers.{n}"));
            if !is_field_name(n) || n.contains('*') {
                return Err((k, format!("{n:?} is not a header name")));
            }
            if let Some(p) = protected(n) {
                return Err((
                    k,
                    format!("{p} is set by the message or the gateway, not by a rule"),
                ));
            }
            if v.trim().is_empty()
                || v.len() > 900
                || !v.bytes().all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
            {
                return Err((
                    k,
                    "the value must be one line of printable ASCII (no CR/LF; RFC 2047-encode other text), at most 900 characters".into(),
                ));
            }
        }
        for (j, h) in rule.remove_headers.iter().enumerate() {
            let k = key(&format!("remove_headers[{j}]"));
            let bare = h.strip_suffix('*').unwrap_or(h);
            if !is_field_name(bare) || bare.contains('*') {
                return Err((
                    k,
                    format!("{h:?} is not a header name (a trailing * matches a prefix)"),
                ));
            }
            if let Some(p) = protected(h) {
                return Err((k, format!("{p} cannot be removed by a rule")));
            }
        }
    }
    Ok(())
}

fn check_match(m: &Match) -> Result<(), (String, String)> {
    let nonempty = |list: &List, key: &str| -> Result<(), (String, String)> {
        if list.0.is_empty() {
            return Err((
                key.into(),
                "an empty list matches nothing; leave the condition out instead".into(),
            ));
        }
        Ok(())
    };
    if let Some(a) = &m.account {
        nonempty(a, "account")?;
        if let Some(i) = a.0.iter().position(|n| n.trim().is_empty()) {
            return Err((format!("account[{i}]"), "must be an account name".into()));
        }
    }
    for (name, values) in &m.header {
        let key = format!("header.{name}");
        if !is_field_name(name) || name.contains('*') {
            return Err((key, format!("{name:?} is not a header name")));
        }
        nonempty(values, &key)?;
        for v in &values.0 {
            if v.trim().is_empty()
                || v.contains(['\r', '\n'])
                || (v.contains('*') && v.trim() != "*")
            {
                return Err((key, format!("{v:?}: a value, or \"*\" alone for any value")));
            }
        }
    }
    if let Some(s) = &m.sender {
        nonempty(s, "sender")?;
        for (i, p) in s.0.iter().enumerate() {
            check_sender_pattern(p.trim()).map_err(|e| (format!("sender[{i}]"), e))?;
        }
    }
    if let Some(d) = &m.recipient_domain {
        nonempty(d, "recipient_domain")?;
        for (i, p) in d.0.iter().enumerate() {
            check_domain_pattern(p.trim()).map_err(|e| (format!("recipient_domain[{i}]"), e))?;
        }
    }
    if let (Some(min), Some(max)) = (m.min_size, m.max_size)
        && min > max
    {
        return Err((
            "max_size".into(),
            "must not be smaller than min_size".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::rules::RejectReply;

    fn config(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn reject_replies() {
        let ok = RejectReply::parse("451 4.7.1 Try again later").expect("ok");
        assert_eq!(
            (ok.code, ok.esc, ok.text.as_str()),
            (451, [4, 7, 1], "Try again later")
        );
        for bad in [
            "250 2.0.0 fine",
            "550 4.7.1 mixed",
            "550 5.7 short",
            "550 Refused",
            "550 5.7.1",
            "55 5.7.1 x",
            "550 5.7.1 Gr\u{fc}\u{df}e",
        ] {
            assert!(RejectReply::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (
                "[[rule]]\nname = \"a\"\naction = \"reject\"\nreject_reply = \"550 Refused\"\n",
                "rule[0].reject_reply",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.account = \"x\"\n[[rule]]\nname = \"b\"\nreject_reply = \"550 5.7.1 x\"\n",
                "rule[1].reject_reply",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.recipient_domain = [\"sch*le.example\"]\n",
                "rule[0].match.recipient_domain[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.recipient_domain = \"*.*.example\"\n",
                "rule[0].match.recipient_domain[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.sender = \"a*@x.example\"\n",
                "rule[0].match.sender[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.sender = \"*@*\"\n",
                "rule[0].match.sender[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.acount = \"x\"\n",
                "rule[0].match",
            ),
            ("[[rule]]\nname = \"a\"\npii = \"loud\"\n", "rule[0].pii"),
            (
                "[[rule]]\nname = \"a\"\nmax_expiry = \"soon\"\n",
                "rule[0].max_expiry",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.min_size = \"2MB\"\nmatch.max_size = \"1MB\"\n",
                "rule[0].match.max_size",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.account = []\n",
                "rule[0].match.account",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.account = 3\n",
                "rule[0].match.account",
            ),
            (
                "[[rule]]\nname = \"a\"\nadd_headers = { \"X-A\" = \"b\\r\\nBcc: x@y\" }\n",
                "rule[0].add_headers.X-A",
            ),
            (
                "[[rule]]\nname = \"a\"\nadd_headers = { \"Bcc\" = \"x@y\" }\n",
                "rule[0].add_headers.Bcc",
            ),
            (
                "[[rule]]\nname = \"a\"\nremove_headers = [\"Content-Type\"]\n",
                "rule[0].remove_headers[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nremove_headers = [\"X-Bad Name\"]\n",
                "rule[0].remove_headers[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmax_recipients = 0\n",
                "rule[0].max_recipients",
            ),
            ("[[rule]]\nname = \"a b\"\n", "rule[0].name"),
            (
                "[[rule]]\nname = \"a\"\nmatch.account = \"x\"\n[[rule]]\nname = \"A\"\n",
                "rule[1].name",
            ),
            (
                "[[rule]]\nname = \"all\"\n[[rule]]\nname = \"b\"\n",
                "rule[1]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.header.\"X-VIA-Category\" = \"lo*\"\n",
                "rule[0].match.header.X-VIA-Category",
            ),
            (
                "[attachments]\nmode = \"keep\"\n[[rule]]\nname = \"a\"\nattachments = \"link\"\n",
                "rule[0].attachments",
            ),
            (
                "[categories]\ndisabled = [\"a\"]\npaused = [\"A\"]\n",
                "categories.paused",
            ),
            ("[categories]\nenabled = [\"a\"]\n", "categories"),
        ];
        for (text, key) in cases {
            let err = config(text).expect_err(text);
            assert!(
                err.contains(&format!("{key}:")) || err.contains(&format!("{key}.")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn protected_fields() {
        assert!(protected("content-*").is_some() && protected("X-Mailjet-*").is_some());
        assert!(protected("X-Mailer").is_none());
    }
}
