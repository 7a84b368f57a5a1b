//! Validation of `[[rule]]` and `[categories]` at load: every error names
//! its key (`rule[3].reject_reply`), so a broken rule file never loads.

use super::*;

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Does `name` (or, for `Prefix-*`, any name with that prefix) hit a
/// protected field?
pub(super) fn protected(name: &str) -> Option<&'static str> {
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

impl Match {
    pub(super) fn is_empty(&self) -> bool {
        self.account.is_none()
            && self.header.is_empty()
            && self.sender.is_none()
            && self.recipient_domain.is_none()
            && self.min_size.is_none()
            && self.max_size.is_none()
            && self.has_attachments.is_none()
    }
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
