//! Writing the block's text into a part in that part's own terms: its
//! charset, its transfer encoding, and line lengths mail servers accept.
//!
//! The existing text is never converted; the block has to fit what is
//! already declared, so a Latin-1 or 7bit part stays valid as declared.

use base64::Engine as _;

use super::classify::{Charset, Cte};

/// The block's text as bytes for a part: in a 7bit part (or an unknown or
/// ASCII charset) pure ASCII with German transliteration; UTF-8 as is;
/// the Latin-1 family as single bytes.
pub(super) fn encode_text(s: &str, charset: Charset, cte: Cte) -> Vec<u8> {
    let charset = if cte == Cte::SevenBit {
        Charset::Ascii
    } else {
        charset
    };
    if charset == Charset::Utf8 {
        return s.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c as u8);
        } else if let Some(b) = single_byte(c, charset) {
            out.push(b);
        } else {
            out.extend_from_slice(transliterate(c).as_bytes());
        }
    }
    out
}

fn single_byte(c: char, charset: Charset) -> Option<u8> {
    let cp = u32::from(c);
    let latin = u8::try_from(cp).ok().filter(|b| *b >= 0xA0);
    match charset {
        Charset::Latin1 => latin,
        Charset::Latin9 => match c {
            '€' => Some(0xA4),
            'Š' => Some(0xA6),
            'š' => Some(0xA8),
            'Ž' => Some(0xB4),
            'ž' => Some(0xB8),
            'Œ' => Some(0xBC),
            'œ' => Some(0xBD),
            'Ÿ' => Some(0xBE),
            _ => latin.filter(|b| ![0xA4, 0xA6, 0xA8, 0xB4, 0xB8, 0xBC, 0xBD, 0xBE].contains(b)),
        },
        Charset::Windows1252 => match c {
            '€' => Some(0x80),
            '‚' => Some(0x82),
            '„' => Some(0x84),
            '…' => Some(0x85),
            '‘' => Some(0x91),
            '’' => Some(0x92),
            '“' => Some(0x93),
            '”' => Some(0x94),
            '–' => Some(0x96),
            '—' => Some(0x97),
            _ => latin,
        },
        _ => None,
    }
}

/// ASCII for the characters the block (German text, file names) commonly
/// has; anything else becomes `?`.
fn transliterate(c: char) -> &'static str {
    crate::links::format::transliterate(c).unwrap_or("?")
}

/// Quoted-printable (RFC 2045 §6.7): lines of at most 76 characters with
/// soft breaks, CRLF (or LF) in the input as hard line breaks, whitespace
/// before a line end escaped.
pub(super) fn qp_encode(input: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(input.len() * 3 / 2 + 8);
    let mut lines = input.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut len = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal =
                (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !last;
            let width = if literal { 1 } else { 3 };
            if len + width > 75 {
                out.extend_from_slice(b"=\r\n");
                len = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            len += width;
        }
        if lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Base64 in 76-character lines separated by CRLF (no final CRLF: the
/// delimiter's follows).
pub(super) fn base64_lines(data: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for (i, chunk) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use mail_parser::decoders::quoted_printable::quoted_printable_decode;

    use super::*;

    #[test]
    fn qp_encoding_round_trips() {
        let text = "Grüße\r\n\r\nEine sehr lange Zeile mit = Zeichen und Umlauten äöü, die länger als sechsundsiebzig Zeichen ist und umgebrochen wird.  \r\nEnde \t";
        let encoded = qp_encode(text.as_bytes());
        for line in encoded.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(line.len() <= 76);
            assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"));
        }
        assert_eq!(
            quoted_printable_decode(&encoded).expect("valid QP"),
            text.as_bytes()
        );
    }
}
