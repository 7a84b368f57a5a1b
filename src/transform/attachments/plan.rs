//! [`scan`]: from a parsed message to a [`Plan`], and where in the message
//! the link block will go.
//!
//! Deciding where the block goes belongs to the plan, not to the rewrite:
//! whether a text part can take it depends on its transfer encoding and
//! charset, and a message that has no such part needs a new one, which
//! changes what has to be cut.

use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::classify::{Info, Parent};
use super::document::materialize;
use super::walk::{Fate, Walker, closed_after, delimiter};
use super::{ExtractError, ExtractOptions, Plan, Scan};

#[derive(Debug, Clone)]
pub(super) enum NewText {
    /// A new part right after a delimiter line at `at` (first part of the
    /// top multipart), or, with `last`, before the close delimiter.
    Insert {
        at: usize,
        delimiter: Vec<u8>,
        last: bool,
    },
    /// Every part of the top multipart goes: the new part takes the place
    /// of all of them. `close` is a close delimiter to add when the sender
    /// left it out.
    ReplaceAll {
        start: usize,
        end: usize,
        close: Option<Vec<u8>>,
    },
    /// The whole single-part body was the attachment: drop the Content-*
    /// header fields and the body, the message becomes text/plain.
    SinglePart {
        header_cuts: Vec<(usize, usize)>,
        header_end: usize,
        add_mime_version: bool,
        needs_crlf: bool,
    },
}

/// Parses `raw` and decides what to take out. Never panics, whatever the
/// input; a message whose structure cannot be spliced safely is an error
/// (the caller should hold or reject it rather than send attachments).
pub fn scan(raw: &[u8], opts: &ExtractOptions) -> Result<Scan, ExtractError> {
    let mut msg = MessageParser::default()
        .parse(raw)
        .ok_or(ExtractError::Unparseable)?;
    if msg.raw_message.as_ptr() != raw.as_ptr() {
        return Err(ExtractError::Malformed);
    }
    let root = msg.parts.first().ok_or(ExtractError::Unparseable)?;
    let root_info = Info::of(root, Parent::Root);

    if let Some(has_attachments) = sealed(raw, opts, &msg, root, &root_info) {
        return Ok(Scan::Sealed { has_attachments });
    }

    let mut w = Walker::new(raw, opts, msg.parts.len());
    let fate = w.visit(&msg, &mut Vec::new(), 0, Parent::Root, 0, 0)?;
    if w.sealed_inside {
        return Ok(Scan::Sealed {
            has_attachments: true,
        });
    }
    if w.docs.is_empty() {
        return Ok(Scan::Clean);
    }

    let (plain, html, new_text) = match (&root.body, fate) {
        // Every part of the top multipart goes (whatever its subtype: a
        // top multipart/related or /alternative that loses everything is
        // left with the one text/plain part, which is a valid, displayable
        // related or alternative).
        (PartType::Multipart(children), Fate::Remove) => {
            let first = children.first().and_then(|&c| msg.parts.get(c as usize));
            let last = children.last().and_then(|&c| msg.parts.get(c as usize));
            let (Some(first), Some(last)) = (first, last) else {
                return Err(ExtractError::Malformed);
            };
            let (start, _, _) = w.bounds(first)?;
            let (_, _, end) = w.bounds(last)?;
            if start > end {
                return Err(ExtractError::Malformed);
            }
            let delimiter = delimiter(root)?;
            let close = (!closed_after(raw, end, &delimiter)).then(|| {
                let mut c = b"\r\n".to_vec();
                c.extend_from_slice(&delimiter);
                c.extend_from_slice(b"--\r\n");
                c
            });
            (None, None, Some(NewText::ReplaceAll { start, end, close }))
        }
        (PartType::Multipart(children), Fate::Keep) => {
            let mut found = (None, None);
            w.find_body(&msg, 0, &mut found, 0);
            let part = |id: Option<u32>| id.and_then(|i| msg.parts.get(i as usize));
            let plain = part(found.0).and_then(|p| w.target(p));
            let html = part(found.1).and_then(|p| w.target(p));
            // A plain body we may not touch still needs the block in plain
            // text; no body at all, or only an untouchable HTML one, too.
            let needs_text = plain.is_none() && (found.0.is_some() || html.is_none());
            let new_text = if needs_text {
                let delimiter = delimiter(root)?;
                // In a related root the first part is the one displayed:
                // the new part goes last there, so the HTML stays in view.
                let last = root_info.sub == "related";
                let anchor = if last {
                    children.last()
                } else {
                    children.first()
                };
                let anchor = anchor
                    .and_then(|&c| msg.parts.get(c as usize))
                    .ok_or(ExtractError::Malformed)?;
                let (oh, _, oe) = w.bounds(anchor)?;
                Some(NewText::Insert {
                    at: if last { oe } else { oh },
                    delimiter,
                    last,
                })
            } else {
                None
            };
            (plain, html, new_text)
        }
        (_, Fate::Remove) => {
            let mut header_cuts = Vec::new();
            let mut header_end = 0usize;
            let mut add_mime_version = true;
            for h in &root.headers {
                let (f, e) = (h.offset_field as usize, h.offset_end as usize);
                if f > e || e > raw.len() {
                    return Err(ExtractError::Malformed);
                }
                header_end = header_end.max(e);
                if h.name == HeaderName::MimeVersion {
                    add_mime_version = false;
                }
                let name = h.name.as_str().as_bytes();
                if name
                    .get(..8)
                    .is_some_and(|n| n.eq_ignore_ascii_case(b"content-"))
                {
                    header_cuts.push((f, e));
                }
            }
            // The new fields follow whatever is left of the header block:
            // if that does not end a line (a truncated last field), end it.
            let mut kept_end = header_end;
            while let Some(&(f, _)) = header_cuts.iter().find(|&&(f, e)| e == kept_end && f < e) {
                kept_end = f;
            }
            let needs_crlf = kept_end > 0 && raw.get(kept_end - 1) != Some(&b'\n');
            (
                None,
                None,
                Some(NewText::SinglePart {
                    header_cuts,
                    header_end,
                    add_mime_version,
                    needs_crlf,
                }),
            )
        }
        // Only a nested message at the top keeps its root with documents
        // inside, and visit_message already turns that into a removal.
        (_, Fate::Keep) => return Err(ExtractError::Malformed),
    };

    let Walker { docs, cuts, .. } = w;
    let doc_count = docs.len();
    let documents = docs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| materialize(raw, &mut msg, spec, i + 1))
        .collect();
    Ok(Scan::Extract(Plan {
        documents,
        doc_count,
        raw_len: raw.len(),
        opts: *opts,
        cuts,
        plain,
        html,
        new_text,
    }))
}

/// `Some(has_attachments)` when the message is signed or encrypted as a
/// whole.
fn sealed(
    raw: &[u8],
    opts: &ExtractOptions,
    msg: &Message<'_>,
    root: &MessagePart<'_>,
    info: &Info<'_>,
) -> Option<bool> {
    match (info.ty.as_str(), info.sub.as_str()) {
        ("multipart", "signed") => {
            let mut w = Walker::new(raw, opts, msg.parts.len());
            let content = root.sub_parts().and_then(|c| c.first().copied());
            let has = match content {
                // Whatever cannot be walked counts as holding attachments.
                Some(c) => w
                    .visit(msg, &mut Vec::new(), c, Parent::Other, 0, 1)
                    .map_or(true, |_| !w.docs.is_empty() || w.sealed_inside),
                None => false,
            };
            Some(has)
        }
        ("multipart", "encrypted") => Some(true),
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => {
            let smime_type = root
                .content_type()
                .and_then(|c| c.attribute("smime-type"))
                .map(|s| s.trim().to_ascii_lowercase());
            Some(smime_type.as_deref() != Some("certs-only"))
        }
        _ => None,
    }
}
