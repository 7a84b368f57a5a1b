//! Text preparation shared by the scanners: signature cut, normalisation of
//! Unicode look-alikes to ASCII, a same-length lowercase copy, and small
//! byte-level helpers (word boundaries, neighbouring words).
//!
//! All scanners work on the normalised text, so they only have to know ASCII
//! spaces, hyphens and digits. Offsets are byte offsets into that text.

/// Removes the staff member's signature block.
///
/// A signature starts at a line that equals `marker` (compared without
/// trailing whitespace, so `"-- "` also matches `"--"`). It ends where quoted
/// or forwarded text begins (a line starting with `>`, `Am … schrieb …:`,
/// `On … wrote:`, `-----Ursprüngliche Nachricht-----`, a forwarded-message
/// line): that text is scanned again, because it is not the sender's own.
/// An empty marker disables the cut.
pub(crate) fn cut_signature(text: &str, marker: &str) -> String {
    let marker = marker.trim_end();
    if marker.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut in_signature = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if in_signature {
            if is_quote_start(bare) {
                in_signature = false;
            } else {
                continue;
            }
        } else if bare == marker {
            in_signature = true;
            continue;
        }
        out.push_str(line);
    }
    out
}

fn is_quote_start(line: &str) -> bool {
    let l = line.trim_start();
    if l.starts_with('>') {
        return true;
    }
    let lower = l.to_lowercase();
    (lower.starts_with("am ") && lower.contains("schrieb") && lower.ends_with(':'))
        || (lower.starts_with("on ") && lower.ends_with("wrote:"))
        || lower.contains("ursprüngliche nachricht")
        || lower.contains("original message")
        || lower.contains("weitergeleitete nachricht")
        || lower.contains("forwarded message")
}

/// Maps Unicode spaces, dashes, bullets and quotes to ASCII, drops invisible
/// characters (zero-width, soft hyphen) and turns CRLF/CR into LF.
pub(crate) fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Mail text is mostly ASCII without CR: copy such runs whole and look at
    // characters one by one only where a run ends.
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let run = bytes[start..]
            .iter()
            .position(|&b| b >= 0x80 || b == b'\r')
            .unwrap_or(bytes.len() - start);
        out.push_str(&text[start..start + run]);
        start += run;
        if start == bytes.len() {
            break;
        }
        // The special character (and a CRLF's LF) or one non-ASCII char.
        let end = text[start..]
            .char_indices()
            .nth(1)
            .map_or(bytes.len(), |(i, _)| start + i);
        let end = if bytes[start] == b'\r' && bytes.get(end) == Some(&b'\n') {
            end + 1
        } else {
            end
        };
        normalize_chars(&text[start..end], &mut out);
        start = end;
    }
    out
}

fn normalize_chars(text: &str, out: &mut String) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\u{a0}' | '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}' => {
                out.push(' ')
            }
            '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{ad}' => {}
            '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{fe63}' | '\u{ff0d}' => out.push('-'),
            '\u{b7}' | '\u{2022}' | '\u{2027}' | '\u{2219}' => out.push(','),
            '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{ab}' | '\u{bb}' => out.push('"'),
            '\u{2018}' | '\u{2019}' | '\u{201a}' => out.push('\''),
            '\u{2026}' => out.push('.'),
            c => out.push(c),
        }
    }
}

/// A lowercase copy with exactly the same byte offsets: characters whose
/// lowercase form has another UTF-8 length are kept as they are.
pub(crate) fn lowercase_same_len(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let run = bytes[start..]
            .iter()
            .position(|&b| b >= 0x80)
            .unwrap_or(bytes.len() - start);
        // ASCII runs are copied here and lowered in one go at the end; a
        // non-ASCII character never lowers to ASCII at the same length.
        out.push_str(&text[start..start + run]);
        start += run;
        let end = text[start..]
            .char_indices()
            .find(|&(_, c)| c.is_ascii())
            .map_or(bytes.len(), |(i, _)| start + i);
        lowercase_chars(&text[start..end], &mut out);
        start = end;
    }
    out.make_ascii_lowercase();
    out
}

fn lowercase_chars(text: &str, out: &mut String) {
    for c in text.chars() {
        let mut lower = c.to_lowercase();
        match (lower.next(), lower.next()) {
            (Some(l), None) if l.len_utf8() == c.len_utf8() => out.push(l),
            _ => out.push(c),
        }
    }
}

/// Letters and digits, plus every non-ASCII byte (after [`normalize`] the
/// remaining non-ASCII characters are nearly all letters such as umlauts).
pub(crate) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

pub(crate) fn is_letter_byte(b: u8) -> bool {
    b.is_ascii_alphabetic() || b >= 0x80
}

/// The lowercase letter words ending before `pos` on the same line, nearest
/// first, at most `max` of them and no further back than `reach` bytes.
/// Punctuation and digits between them are skipped.
pub(crate) fn words_before(lower: &str, pos: usize, max: usize, reach: usize) -> Vec<&str> {
    collect_before(lower, pos, max, reach, false)
}

/// Like [`words_before`], but across line breaks (hard-wrapped sentences).
pub(crate) fn words_before_wrapped(lower: &str, pos: usize, max: usize, reach: usize) -> Vec<&str> {
    collect_before(lower, pos, max, reach, true)
}

fn collect_before(
    lower: &str,
    pos: usize,
    max: usize,
    reach: usize,
    cross_lines: bool,
) -> Vec<&str> {
    let bytes = lower.as_bytes();
    let floor = pos.saturating_sub(reach);
    let mut words = Vec::new();
    let mut i = pos.min(bytes.len());
    while i > floor && words.len() < max {
        let b = bytes[i - 1];
        if b == b'\n' && !cross_lines {
            break;
        }
        if is_letter_byte(b) {
            let end = i;
            while i > floor && is_letter_byte(bytes[i - 1]) {
                i -= 1;
            }
            if let Some(w) = lower.get(i..end) {
                words.push(w);
            }
        } else {
            i -= 1;
        }
    }
    words
}

/// Like [`words_before`], but the lowercase letter words starting at `pos`.
pub(crate) fn words_after(lower: &str, pos: usize, max: usize, reach: usize) -> Vec<&str> {
    let bytes = lower.as_bytes();
    let ceil = pos.saturating_add(reach).min(bytes.len());
    let mut words = Vec::new();
    let mut i = pos;
    while i < ceil && words.len() < max {
        let b = bytes[i];
        if b == b'\n' {
            break;
        }
        if is_letter_byte(b) {
            let start = i;
            while i < ceil && is_letter_byte(bytes[i]) {
                i += 1;
            }
            if let Some(w) = lower.get(start..i) {
                words.push(w);
            }
        } else {
            i += 1;
        }
    }
    words
}

/// The first position at or after `from` whose byte is `wanted`, or the
/// length of `bytes`. Most of a text holds none of the bytes a scanner
/// starts at (digits, `+`): 32-byte blocks are tested without an early exit,
/// which the compiler turns into vector compares.
pub(crate) fn skip_to(bytes: &[u8], from: usize, wanted: impl Fn(u8) -> bool) -> usize {
    let mut i = from.min(bytes.len());
    while let Some(block) = bytes.get(i..i + 32) {
        if block.iter().fold(false, |any, &b| any | wanted(b)) {
            break;
        }
        i += 32;
    }
    while i < bytes.len() && !wanted(bytes[i]) {
        i += 1;
    }
    i
}

/// Start of the line containing `pos`.
pub(crate) fn line_start(bytes: &[u8], pos: usize) -> usize {
    let pos = pos.min(bytes.len());
    memchr::memrchr(b'\n', &bytes[..pos]).map_or(0, |i| i + 1)
}

/// Replaces the given byte ranges (ASCII only) with `X`, so that later
/// scanners do not see the digits again.
pub(crate) fn mask(text: &mut String, spans: &[std::ops::Range<usize>]) {
    if spans.is_empty() {
        return;
    }
    let mut bytes = std::mem::take(text).into_bytes();
    for span in spans {
        let end = span.end.min(bytes.len());
        for b in bytes
            .get_mut(span.start.min(end)..end)
            .into_iter()
            .flatten()
        {
            if b.is_ascii() && !b.is_ascii_whitespace() {
                *b = b'X';
            }
        }
    }
    // Only ASCII bytes were replaced by ASCII, so the text is still UTF-8.
    *text = String::from_utf8(bytes).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_cut_until_quoted_text() {
        let t = "Hallo\n-- \nTel. 05121 309-0\n> zitiert 0171 2345678\n";
        assert_eq!(cut_signature(t, "-- "), "Hallo\n> zitiert 0171 2345678\n");
        assert_eq!(cut_signature("a\r\n--\r\nb\r\n", "-- "), "a\r\n");
        assert_eq!(cut_signature("a\n-- x\nb", "-- "), "a\n-- x\nb");
        assert_eq!(cut_signature("a\n-- \nb", ""), "a\n-- \nb");
        assert_eq!(cut_signature("a\n###\nb", "###"), "a\n");
    }

    #[test]
    fn normalisation_keeps_meaning() {
        assert_eq!(normalize("05121\u{a0}309\u{2011}0\r\n"), "05121 309-0\n");
        assert_eq!(normalize("Stra\u{ad}ße 1 \u{b7} 3"), "Straße 1 , 3");
        let l = lowercase_same_len("ÄÖÜ İx Straße");
        assert_eq!(l.len(), "ÄÖÜ İx Straße".len());
        assert!(l.starts_with("äöü"));
    }

    #[test]
    fn skip_to_finds_the_first_wanted_byte() {
        let mut t = vec![b'x'; 100];
        assert_eq!(skip_to(&t, 0, |b| b.is_ascii_digit()), 100);
        t[70] = b'7';
        t[99] = b'9';
        for from in [0, 31, 32, 69, 70] {
            assert_eq!(skip_to(&t, from, |b| b.is_ascii_digit()), 70);
        }
        assert_eq!(skip_to(&t, 71, |b| b.is_ascii_digit()), 99);
        assert_eq!(skip_to(&t, 200, |b| b.is_ascii_digit()), 100);
    }

    #[test]
    fn neighbouring_words() {
        let t = "tel.-nr.: 0171 und fax\n05121";
        assert_eq!(words_before(t, 10, 3, 40), vec!["nr", "tel"]);
        assert_eq!(words_after(t, 14, 3, 40), vec!["und", "fax"]);
    }
}
