//! Log output a client cannot forge (SPEC §5, §10).
//!
//! Much of what a client sends can reach a log field: user names, HELO
//! names, addresses, error texts that quote them. In the human format every
//! field value and the message pass through [`EscapedFields`], which writes
//! control characters as escapes (`\n`, `\r`, `\t`, `\0`, `\x1b`, `\u{85}`,
//! and the Unicode line separators and bidi overrides as `\u{...}`), so a
//! value can neither start a forged log line nor drive the terminal.
//! Escaping in the formatter rather than with a wrapper at each log site
//! means a log line added later cannot forget it.
//!
//! The JSON format escapes C0 controls itself (serde_json); [`JsonEscaped`]
//! also writes DEL, C1 controls, the line separators and bidi overrides as
//! `\uXXXX`, which leaves every JSON value the same. Colours are for
//! terminals only (`init`).

use std::fmt::{self, Write as _};
use std::io;

use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

/// True for what must not reach a log unescaped: C0, DEL and C1 controls,
/// U+2028/U+2029 (line breaks to some viewers) and the bidi controls that
/// can make a line display differently from what it says.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `s` with every [`is_unsafe`] character escaped.
pub fn write_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let mut rest = s;
    while let Some(at) = rest.find(is_unsafe) {
        out.write_str(&rest[..at])?;
        let Some(c) = rest[at..].chars().next() else {
            break;
        };
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\0' => out.write_str("\\0")?,
            c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32)?,
            c => write!(out, "\\u{{{:x}}}", c as u32)?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

/// A `fmt::Write` that escapes everything written through it.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s)
    }
}

/// The human format's field formatter: tracing-subscriber's default
/// layout (`key=value`, the message first), every character escaped.
#[derive(Debug, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut escaping = Escaping(&mut writer);
        let mut visitor = DefaultVisitor::new(Writer::new(&mut escaping), true);
        fields.record(&mut visitor);
        visitor.finish()
    }
}

/// Wraps the JSON format's writer; see the module documentation.
pub struct JsonEscaped<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JsonEscaped<M> {
    type Writer = JsonEscapedWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        JsonEscapedWriter(self.0.make_writer())
    }
}

pub struct JsonEscapedWriter<W>(W);

impl<W: io::Write> io::Write for JsonEscapedWriter<W> {
    /// Takes the whole buffer (tracing-subscriber writes one formatted event
    /// per call), so a character is never split between two calls.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) if text.contains(is_unsafe) => {
                let mut escaped = String::with_capacity(text.len() + 16);
                for c in text.chars() {
                    // serde_json has escaped C0 already; a raw one here is
                    // the event's own final newline.
                    if is_unsafe(c) && c != '\n' {
                        let _ = write!(escaped, "\\u{:04x}", c as u32);
                    } else {
                        escaped.push(c);
                    }
                }
                self.0.write_all(escaped.as_bytes())?;
            }
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_escaped(&mut out, s).expect("write to a String");
        out
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("plain täxt"), "plain täxt");
        assert_eq!(
            escaped("a\nb\r\t\0\u{1b}[31m\u{7f}"),
            "a\\nb\\r\\t\\0\\x1b[31m\\x7f"
        );
        assert_eq!(
            escaped("\u{85}\u{9b}\u{2028}\u{202e}x"),
            "\\u{85}\\u{9b}\\u{2028}\\u{202e}x"
        );
        assert!(!escaped("\u{1}\u{1f}\u{80}\u{9f}\u{2069}").contains(is_unsafe));
    }

    #[test]
    fn json_stays_the_same_value() {
        let value = "a\u{7f}b\u{85}c\u{2028}d\u{202e}";
        let line = format!("{}\n", serde_json::json!({ "user": value }));
        let mut out = Vec::new();
        io::Write::write_all(&mut JsonEscapedWriter(&mut out), line.as_bytes()).expect("write");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(text.ends_with("}\n"));
        assert!(!text.trim_end().contains(is_unsafe), "{text:?}");
        let back: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(back["user"], value);
    }
}
