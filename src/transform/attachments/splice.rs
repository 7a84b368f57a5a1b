//! [`rewrite`]: the new message as `raw` copied range by range, with the
//! planned cuts left out and the block spliced into the text parts.
//!
//! Only the text parts that take the block are touched, and only where the
//! block goes: untouched bytes are copied, never re-encoded, so whatever
//! the sender's client wrote stays as it was.

use mail_parser::decoders::base64::base64_decode;

use super::classify::Cte;
use super::encode::{base64_lines, encode_text, qp_encode};
use super::plan::NewText;
use super::walk::TextTarget;
use super::{ExtractError, Plan, Scan};
use crate::transform::linkblock::Block;

struct Edit {
    start: usize,
    end: usize,
    bytes: Vec<u8>,
}

impl Edit {
    fn insert(at: usize, bytes: Vec<u8>) -> Edit {
        Edit {
            start: at,
            end: at,
            bytes,
        }
    }
}

/// Builds the message without its attachments: `raw` must be the message
/// given to [`scan`](super::scan), `block` must list one entry per extracted
/// document.
///
/// The output is `raw` copied range by range with the cuts left out and the
/// block spliced into the text parts (or into a new text/plain part).
pub fn rewrite(raw: &[u8], plan: &Plan, block: &Block) -> Result<Vec<u8>, ExtractError> {
    if raw.len() != plan.raw_len {
        return Err(ExtractError::PlanMismatch);
    }
    if block.entries.len() != plan.doc_count {
        return Err(ExtractError::BlockMismatch {
            expected: plan.doc_count,
            got: block.entries.len(),
        });
    }
    let plain = block.plain();
    let html = block.html();

    let mut edits: Vec<Edit> = plan
        .cuts
        .iter()
        .map(|(start, end, bytes)| Edit {
            start: *start,
            end: *end,
            bytes: bytes.clone(),
        })
        .collect();
    if let Some(t) = &plan.plain {
        edits.push(plain_edit(raw, t, &plain)?);
    }
    if let Some(t) = &plan.html {
        edits.push(html_edit(raw, t, &html)?);
    }
    match &plan.new_text {
        None => {}
        Some(NewText::Insert {
            at,
            delimiter,
            last,
        }) => {
            let mut bytes = Vec::new();
            if *last {
                bytes.extend_from_slice(b"\r\n");
                bytes.extend_from_slice(delimiter);
                bytes.extend_from_slice(b"\r\n");
                bytes.extend(new_text_part(&plain));
            } else {
                bytes.extend(new_text_part(&plain));
                bytes.extend_from_slice(b"\r\n");
                bytes.extend_from_slice(delimiter);
                bytes.extend_from_slice(b"\r\n");
            }
            edits.push(Edit::insert(*at, bytes));
        }
        Some(NewText::ReplaceAll { start, end, close }) => {
            let mut bytes = new_text_part(&plain);
            if let Some(close) = close {
                bytes.extend_from_slice(close);
            }
            edits.push(Edit {
                start: *start,
                end: *end,
                bytes,
            });
        }
        Some(NewText::SinglePart {
            header_cuts,
            header_end,
            add_mime_version,
            needs_crlf,
        }) => {
            edits.extend(header_cuts.iter().map(|&(start, end)| Edit {
                start,
                end,
                bytes: Vec::new(),
            }));
            let mut bytes = Vec::with_capacity(plain.len() * 2);
            if *needs_crlf {
                bytes.extend_from_slice(b"\r\n");
            }
            if *add_mime_version {
                bytes.extend_from_slice(b"MIME-Version: 1.0\r\n");
            }
            bytes.extend_from_slice(TEXT_PART_HEADER);
            bytes.extend(qp_encode(plain.as_bytes()));
            edits.push(Edit {
                start: *header_end,
                end: raw.len(),
                bytes,
            });
        }
    }

    // Stable: an insertion at a position comes before a cut starting there
    // (it belongs to the kept part that ends at that position).
    edits.sort_by_key(|e| (e.start, e.end));
    let added: usize = edits.iter().map(|e| e.bytes.len()).sum();
    let mut out = Vec::with_capacity(raw.len() + added);
    let mut pos = 0;
    for e in &edits {
        let kept = raw.get(pos..e.start).ok_or(ExtractError::Malformed)?;
        if e.end < e.start || e.end > raw.len() {
            return Err(ExtractError::Malformed);
        }
        out.extend_from_slice(kept);
        out.extend_from_slice(&e.bytes);
        pos = e.end;
    }
    out.extend_from_slice(raw.get(pos..).unwrap_or_default());
    // The promise, checked: nothing is left to take out. mail-parser finds
    // delimiters in the middle of lines and is lenient in other ways, so a
    // hostile structure can parse differently once parts are gone (found
    // by fuzz/mime). Such a message is refused, never relayed with an
    // attachment in it. The result is small (the documents are out), so
    // this second scan costs little.
    match super::scan(&out, &plan.opts) {
        Ok(Scan::Clean) => Ok(out),
        _ => Err(ExtractError::Malformed),
    }
}

const TEXT_PART_HEADER: &[u8] =
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";

/// A text/plain part (header and body, no trailing CRLF: the delimiter's
/// CRLF follows) carrying the plain block.
fn new_text_part(plain: &str) -> Vec<u8> {
    let mut part = TEXT_PART_HEADER.to_vec();
    part.extend(qp_encode(trim_crlf(plain).as_bytes()));
    part
}

pub(super) fn trim_crlf(s: &str) -> &str {
    s.strip_suffix("\r\n").unwrap_or(s)
}

/// What separates the existing text from the block: nothing in an empty
/// part, else one blank line.
fn separator(text: &[u8], qp: bool) -> &'static str {
    if text.is_empty() {
        return "";
    }
    let ends_with_newline = text.ends_with(b"\n") && {
        // In QP "=\r\n" is a soft break, not a line end.
        let before = text.len() - if text.ends_with(b"\r\n") { 2 } else { 1 };
        !(qp && before > 0 && text.get(before - 1) == Some(&b'='))
    };
    if ends_with_newline {
        "\r\n"
    } else {
        "\r\n\r\n"
    }
}

/// What to put in front of QP-encoded bytes inserted at `pos` so the line
/// there ends without adding a character: a soft line break, unless `pos`
/// already starts a line, or the line ends in a lone `=` (whose CRLF was
/// the delimiter's), which only needs its CRLF back.
fn qp_soft_break(raw: &[u8], start: usize, pos: usize) -> &'static [u8] {
    if pos <= start {
        return b"";
    }
    match raw.get(pos - 1) {
        Some(b'\n') => b"",
        Some(b'=') => b"\r\n",
        _ => b"=\r\n",
    }
}

fn plain_edit(raw: &[u8], t: &TextTarget, plain: &str) -> Result<Edit, ExtractError> {
    let body = raw.get(t.start..t.end).ok_or(ExtractError::Malformed)?;
    match t.cte {
        // The only case where a body part is re-encoded: base64 cannot be
        // extended in place. Text parts are small; the rest stays as sent.
        Cte::Base64 => {
            let mut text = base64_decode(body).ok_or(ExtractError::Malformed)?;
            text.extend_from_slice(separator(&text, false).as_bytes());
            text.extend(encode_text(plain, t.charset, t.cte));
            Ok(Edit {
                start: t.start,
                end: t.end,
                bytes: base64_lines(&text),
            })
        }
        Cte::QuotedPrintable => {
            let mut text = separator(body, true).as_bytes().to_vec();
            text.extend(encode_text(trim_crlf(plain), t.charset, t.cte));
            let mut bytes = qp_soft_break(raw, t.start, t.end).to_vec();
            bytes.extend(qp_encode(&text));
            Ok(Edit::insert(t.end, bytes))
        }
        Cte::SevenBit | Cte::EightBit => {
            let mut bytes = separator(body, false).as_bytes().to_vec();
            bytes.extend(encode_text(trim_crlf(plain), t.charset, t.cte));
            Ok(Edit::insert(t.end, bytes))
        }
        Cte::Unknown => Err(ExtractError::Malformed),
    }
}

fn html_edit(raw: &[u8], t: &TextTarget, html: &str) -> Result<Edit, ExtractError> {
    let body = raw.get(t.start..t.end).ok_or(ExtractError::Malformed)?;
    match t.cte {
        Cte::Base64 => {
            let mut text = base64_decode(body).ok_or(ExtractError::Malformed)?;
            let pos = find_body_close(&text).unwrap_or(text.len());
            let mut ins = Vec::with_capacity(html.len() + 2);
            if pos > 0 && text.get(pos - 1) != Some(&b'\n') {
                ins.extend_from_slice(b"\r\n");
            }
            ins.extend_from_slice(html.as_bytes());
            text.splice(pos..pos, ins);
            Ok(Edit {
                start: t.start,
                end: t.end,
                bytes: base64_lines(&text),
            })
        }
        Cte::QuotedPrintable => {
            // Searched in the encoded bytes: tags are ASCII and `<` cannot
            // be part of an `=XX` escape, so the position is between
            // encoded characters. A `</body>` split by a soft break is not
            // found; the block then goes at the end, which is fine.
            let pos = find_body_close(body).unwrap_or(body.len());
            let at_end = pos == body.len();
            let pos = t.start + pos;
            let text = if at_end { trim_crlf(html) } else { html };
            let mut bytes = qp_soft_break(raw, t.start, pos).to_vec();
            bytes.extend(qp_encode(text.as_bytes()));
            Ok(Edit::insert(pos, bytes))
        }
        Cte::SevenBit | Cte::EightBit => {
            let pos = find_body_close(body).unwrap_or(body.len());
            let at_end = pos == body.len();
            let mut bytes = Vec::with_capacity(html.len() + 2);
            if pos > 0 && body.get(pos - 1) != Some(&b'\n') {
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(if at_end { trim_crlf(html) } else { html }.as_bytes());
            Ok(Edit::insert(t.start + pos, bytes))
        }
        Cte::Unknown => Err(ExtractError::Malformed),
    }
}

/// Position of the last `</body>` (any case), searched backwards from the
/// end so only the tail of the part is looked at.
fn find_body_close(text: &[u8]) -> Option<usize> {
    memchr::memrchr_iter(b'<', text).find(|&i| {
        text.get(i + 1..i + 6)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"/body"))
            && matches!(text.get(i + 6), Some(b'>' | b' ' | b'\t' | b'\r' | b'\n'))
    })
}
