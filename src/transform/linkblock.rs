//! The block that takes an extracted attachment's place in the message
//! (SPEC §7): one entry per document with name, size, link, expiry and
//! whether a password is needed, as plain text and as HTML.
//!
//! Both renderings are self-contained: [`crate::transform::attachments`]
//! decides where they go and how they are encoded for the part's charset
//! and transfer encoding. The HTML is pure ASCII (everything else as numeric
//! character references), so it can be spliced into an HTML part of any
//! ASCII-compatible charset without re-encoding that part.
//!
//! Dates are shown in UTC: the expiry is a whole-day promise to a reader,
//! and a date that is off by one near midnight in Germany is harmless
//! compared with carrying a time-zone database.

use std::fmt::Write as _;

use crate::config::Language;
use crate::html::{self, Target, is_bidi_control};
use crate::links::format::{date, human_size};

/// One stored document as the recipient is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub file_name: String,
    /// Plaintext size in bytes.
    pub size: u64,
    pub url: String,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub protected: bool,
}

/// The list that replaces a message's attachments, one [`Entry`] per
/// extracted document, in the order of `Plan::documents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub language: Language,
    pub entries: Vec<Entry>,
}

/// File names longer than this are shortened for display (the stored name
/// is untouched); it also bounds the HTML line that carries the name, which
/// must stay under SMTP's 998-octet limit even when every character becomes
/// a ten-byte character reference.
const DISPLAY_NAME_CHARS: usize = 80;

/// Lines of the block stay well under SMTP's 998 octets, with room for the
/// indentation and the QP or transliteration growth of the text around it.
const MAX_LINE: usize = 800;

struct Texts {
    intro: &'static str,
    valid_until: &'static str,
    protected: &'static str,
}

const DE: Texts = Texts {
    intro: "Dokumente zu dieser Nachricht (Download über den Link, gültig bis zum angegebenen Datum):",
    valid_until: "gültig bis",
    protected: "passwortgeschützt",
};

const EN: Texts = Texts {
    intro: "Documents for this message (download via the link, valid until the date shown):",
    valid_until: "valid until",
    protected: "password protected",
};

impl Block {
    fn texts(&self) -> &'static Texts {
        match self.language {
            Language::De => &DE,
            Language::En => &EN,
        }
    }

    /// Plain text, CRLF line breaks, ending with CRLF. It starts with a rule
    /// line rather than the "-- " signature separator: this is not a
    /// signature, and clients hide or strip what follows "-- ".
    pub fn plain(&self) -> String {
        let t = self.texts();
        let mut out = String::with_capacity(200 + self.entries.len() * 200);
        out.push_str(&"-".repeat(60));
        out.push_str("\r\n");
        out.push_str(t.intro);
        out.push_str("\r\n");
        for e in &self.entries {
            out.push_str("\r\n* ");
            out.push_str(&display_name(&e.file_name));
            let _ = write!(out, " ({})\r\n", human_size(e.size, self.language));
            out.push_str(&plain_url(&e.url));
            out.push_str("\r\n  ");
            out.push_str(&self.validity(e));
            out.push_str("\r\n");
        }
        out
    }

    /// A small HTML fragment (a `div` with a paragraph and a list), no
    /// scripts, no styles, no external resources. Every text and URL is
    /// escaped; the result is ASCII only and ends with CRLF. Line breaks sit
    /// inside tags or between elements, where they do not change rendering.
    pub fn html(&self) -> String {
        let t = self.texts();
        let mut out = String::with_capacity(200 + self.entries.len() * 300);
        out.push_str("<div class=\"schleuse-dokumente\">\r\n<p>");
        escape_into(&mut out, t.intro, usize::MAX);
        out.push_str("</p>\r\n<ul>\r\n");
        for e in &self.entries {
            out.push_str("<li>");
            let name = display_name(&e.file_name);
            if is_web_url(&e.url) {
                out.push_str("<a\r\nhref=\"");
                // Browsers drop line breaks inside a URL (WHATWG URL
                // parsing), so an over-long link can be wrapped safely.
                escape_into(&mut out, &clean_url(&e.url), MAX_LINE);
                out.push_str("\"\r\n>");
                escape_into(&mut out, &name, usize::MAX);
                out.push_str("</a>");
            } else {
                // Not a web link: show it, but never make it clickable
                // (a `javascript:` or `data:` URL must not become a link).
                escape_into(&mut out, &name, usize::MAX);
                out.push_str("\r\n");
                escape_into(&mut out, &clean_url(&e.url), MAX_LINE);
            }
            out.push_str("\r\n(");
            escape_into(&mut out, &human_size(e.size, self.language), usize::MAX);
            out.push_str(") &#8211; ");
            escape_into(&mut out, &self.validity(e), usize::MAX);
            out.push_str("</li>\r\n");
        }
        out.push_str("</ul>\r\n</div>\r\n");
        out
    }

    fn validity(&self, e: &Entry) -> String {
        let t = self.texts();
        let mut s = format!("{} {}", t.valid_until, date(e.expires_at, self.language));
        if e.protected {
            s.push_str(", ");
            s.push_str(t.protected);
        }
        s
    }
}

/// The name as shown: no control or bidi-override characters (a name must
/// not break the block's lines or reorder what the reader sees), shortened
/// with "…".
fn display_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !is_bidi_control(*c))
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().count() <= DISPLAY_NAME_CHARS {
        return cleaned.to_string();
    }
    let mut short: String = cleaned.chars().take(DISPLAY_NAME_CHARS - 1).collect();
    short.push('…');
    short
}

/// URLs cannot contain whitespace or controls; whatever slipped in is
/// dropped so it cannot break the block's layout.
fn clean_url(url: &str) -> String {
    url.chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .collect()
}

fn is_web_url(url: &str) -> bool {
    let lower = url.trim_start().get(..8).unwrap_or("").to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// The URL line of the plain block. A URL too long for one line is wrapped
/// inside angle brackets, the RFC 3986 (appendix C) convention readers and
/// clients use to re-join a wrapped URL.
fn plain_url(url: &str) -> String {
    let url = clean_url(url);
    if url.len() <= MAX_LINE {
        return format!("  {url}");
    }
    let mut out = String::from("  <");
    let mut line = 0;
    for c in url.chars() {
        if line + c.len_utf8() > MAX_LINE {
            out.push_str("\r\n  ");
            line = 0;
        }
        out.push(c);
        line += c.len_utf8();
    }
    out.push('>');
    out
}

/// HTML-escapes `s` into `out` as ASCII ([`Target::Part`]), with a CRLF
/// after every `wrap` output bytes.
fn escape_into(out: &mut String, s: &str, wrap: usize) {
    html::escape_into(out, s, Target::Part { wrap });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64, url: &str, protected: bool) -> Entry {
        Entry {
            file_name: name.into(),
            size,
            url: url.into(),
            // 2026-12-06 10:00 UTC
            expires_at: 1_796_551_200_000,
            protected,
        }
    }

    #[test]
    fn german_plain_block() {
        let b = Block {
            language: Language::De,
            entries: vec![entry(
                "Bescheid.pdf",
                245 * 1024,
                "https://via.landkreis.example/dokumente/d/abc",
                true,
            )],
        };
        let p = b.plain();
        assert!(p.contains("Dokumente zu dieser Nachricht"));
        assert!(p.contains("* Bescheid.pdf (245 KB)\r\n"));
        assert!(p.contains("  https://via.landkreis.example/dokumente/d/abc\r\n"));
        assert!(p.contains("  gültig bis 06.12.2026, passwortgeschützt\r\n"));
        assert!(!p.contains("-- \r\n"));
        assert!(p.ends_with("\r\n"));
        assert!(!p.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn english_block_unprotected() {
        let b = Block {
            language: Language::En,
            entries: vec![entry("a.pdf", 10, "https://x.example/d/1", false)],
        };
        let p = b.plain();
        assert!(p.contains("Documents for this message"));
        assert!(p.contains("valid until 2026-12-06\r\n"));
        assert!(!p.contains("password"));
        assert!(b.html().contains("valid until 2026-12-06</li>"));
    }

    #[test]
    fn html_is_escaped_ascii() {
        let b = Block {
            language: Language::De,
            entries: vec![entry(
                "<script>&\"x.pdf",
                1,
                "https://x.example/d/a?b=1&c=\"'<>",
                true,
            )],
        };
        let h = b.html();
        assert!(h.is_ascii());
        assert!(!h.contains("<script>"));
        assert!(h.contains("&lt;script&gt;&amp;&quot;x.pdf"));
        assert!(h.contains("href=\"https://x.example/d/a?b=1&amp;c=&quot;&#39;&lt;&gt;\""));
        assert!(h.contains("g&#252;ltig bis 06.12.2026, passwortgesch&#252;tzt"));
        assert!(h.starts_with("<div class=\"schleuse-dokumente\">"));
        assert!(h.ends_with("</div>\r\n"));
    }

    #[test]
    fn non_web_urls_are_not_links() {
        let b = Block {
            language: Language::De,
            entries: vec![entry("a.pdf", 1, "javascript:alert(1)", false)],
        };
        assert!(!b.html().contains("href"));
    }

    #[test]
    fn long_names_and_urls_keep_lines_short() {
        let long_url = format!("https://x.example/d/{}", "a".repeat(3000));
        let long_name = format!("{}\u{202E}fdp.exe\r\nBcc: x", "名".repeat(500));
        let b = Block {
            language: Language::De,
            entries: vec![entry(&long_name, 1, &long_url, false)],
        };
        for text in [b.plain(), b.html()] {
            for line in text.split("\r\n") {
                assert!(line.len() <= 998, "line of {} octets", line.len());
                assert!(!line.contains('\n') && !line.contains('\r'));
            }
            assert!(!text.contains('\u{202E}'));
        }
        let p = b.plain();
        assert!(p.contains('…'));
        assert!(p.contains("  <https://x.example/d/"));
        // The wrapped URL re-joins to the original.
        let joined: String = p
            .split("  <")
            .nth(1)
            .and_then(|s| s.split('>').next())
            .unwrap_or_default()
            .replace("\r\n  ", "");
        assert_eq!(joined, long_url);
        let h = b.html();
        let href: String = h
            .split("href=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .replace("\r\n", "");
        assert_eq!(href, long_url);
    }
}
