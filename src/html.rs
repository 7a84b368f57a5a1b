//! Escaping text for HTML: the one escaper behind the link pages
//! (`crate::links::page`) and the link block spliced into messages
//! (`crate::transform::linkblock`), and the bidirectional controls that
//! must never reach a reader in a file name.
//!
//! The five markup characters `& < > " '` always become entities, so the
//! result is safe in element content and in quoted attribute values. What
//! happens to the other characters depends on where the text goes
//! ([`Target`]).

use std::fmt::Write as _;

/// Where escaped text ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A UTF-8 page: non-ASCII as is, LF and TAB kept. Other control
    /// characters (which HTML does not allow in text) and bidirectional
    /// controls become U+FFFD: a file name like `Rechnung<U+202E>fdp.exe`
    /// would otherwise be shown as `Rechnungexe.pdf`.
    Page,
    /// A MIME part of any ASCII-compatible charset, spliced in without
    /// re-encoding the part: ASCII only, every non-ASCII character as a
    /// numeric character reference, control characters dropped. A CRLF is
    /// inserted after every `wrap` output bytes (between references, never
    /// inside one), so long text stays under SMTP's line limit.
    Part { wrap: usize },
}

/// Characters that reorder displayed text: in a file name they can make
/// `rechnung<U+202E>fdp.exe` look like `rechnungexe.pdf`.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// `text` escaped for `target`.
pub fn escape(text: &str, target: Target) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    escape_into(&mut out, text, target);
    out
}

/// Appends `text`, escaped for `target`, to `out`.
pub fn escape_into(out: &mut String, text: &str, target: Target) {
    let wrap = match target {
        Target::Page => usize::MAX,
        Target::Part { wrap } => wrap,
    };
    let mut line = 0usize;
    for c in text.chars() {
        let before = out.len();
        match (c, target) {
            ('&', _) => out.push_str("&amp;"),
            ('<', _) => out.push_str("&lt;"),
            ('>', _) => out.push_str("&gt;"),
            ('"', _) => out.push_str("&quot;"),
            ('\'', _) => out.push_str("&#39;"),
            ('\n' | '\t', Target::Page) => out.push(c),
            (c, Target::Page) if c.is_control() || is_bidi_control(c) => out.push('\u{FFFD}'),
            (c, Target::Page) => out.push(c),
            (c, Target::Part { .. }) if c.is_control() => {}
            (c, Target::Part { .. }) if c.is_ascii() => out.push(c),
            (c, Target::Part { .. }) => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
        }
        line += out.len() - before;
        if line >= wrap {
            out.push_str("\r\n");
            line = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PART: Target = Target::Part { wrap: usize::MAX };

    #[test]
    fn markup_characters_become_entities_for_both_targets() {
        for target in [Target::Page, PART] {
            assert_eq!(
                escape("<b>&\"x'.pdf", target),
                "&lt;b&gt;&amp;&quot;x&#39;.pdf"
            );
            assert_eq!(escape("&amp;", target), "&amp;amp;");
        }
    }

    #[test]
    fn non_ascii_stays_on_a_page_and_becomes_references_in_a_part() {
        assert_eq!(
            escape("Bescheid für Müller €", Target::Page),
            "Bescheid für Müller €"
        );
        assert_eq!(
            escape("Bescheid für Müller €", PART),
            "Bescheid f&#252;r M&#252;ller &#8364;"
        );
        assert_eq!(escape("漢字😀", PART), "&#28450;&#23383;&#128512;");
        assert!(escape("ü漢😀<", PART).is_ascii());
    }

    #[test]
    fn controls_and_bidi_overrides() {
        assert_eq!(
            escape("a\u{202E}fdp.exe\u{0007}", Target::Page),
            "a\u{FFFD}fdp.exe\u{FFFD}"
        );
        assert_eq!(escape("a\nb\tc\r", Target::Page), "a\nb\tc\u{FFFD}");
        assert_eq!(escape("a\r\nb\t\u{0}c", PART), "abc");
        assert!(is_bidi_control('\u{202E}') && is_bidi_control('\u{061C}'));
        assert!(!is_bidi_control('a'));
    }

    #[test]
    fn a_part_wraps_between_references() {
        assert_eq!(escape("ab&cd", Target::Part { wrap: 3 }), "ab&amp;\r\ncd");
        assert_eq!(
            escape("üü", Target::Part { wrap: 6 }),
            "&#252;\r\n&#252;\r\n"
        );
        assert_eq!(escape("abcdef", Target::Page), "abcdef");
    }
}
