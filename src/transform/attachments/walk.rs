//! The walk over the MIME tree: which parts go, and which byte ranges of
//! `raw` that means cutting.
//!
//! One recursive pass decides every part's fate bottom-up, because whether
//! a multipart can be cut into or must go whole depends on what happens to
//! all of its children, and a nested message's fate on everything inside.

use mail_parser::decoders::base64::base64_decode;
use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::classify::{Charset, Cte, Info, Parent, is_attachment};
use super::document::DocSpec;
use super::{ExtractError, ExtractOptions, MAX_DEPTH};

/// A body part that receives a block. Offsets index `raw`.
#[derive(Debug, Clone)]
pub(super) struct TextTarget {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) cte: Cte,
    pub(super) charset: Charset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Keep,
    /// The whole part goes (its documents, if any, are already recorded).
    Remove,
}

pub(super) struct Walker<'r> {
    raw: &'r [u8],
    opts: ExtractOptions,
    pub(super) docs: Vec<DocSpec>,
    pub(super) cuts: Vec<(usize, usize, Vec<u8>)>,
    /// Per part of the top-level message: removed (for the body search).
    removed: Vec<bool>,
    /// A signed part with attachments, or an encrypted part, in the
    /// top-level message.
    pub(super) sealed_inside: bool,
}

impl<'r> Walker<'r> {
    pub(super) fn new(raw: &'r [u8], opts: &ExtractOptions, parts: usize) -> Self {
        Walker {
            raw,
            opts: *opts,
            docs: Vec::new(),
            cuts: Vec::new(),
            removed: vec![false; parts],
            sealed_inside: false,
        }
    }

    /// (header start, body start, end) of a part, checked against `raw`.
    pub(super) fn bounds(
        &self,
        part: &MessagePart<'_>,
    ) -> Result<(usize, usize, usize), ExtractError> {
        let (oh, ob, oe) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        if oh > oe || oe > self.raw.len() {
            return Err(ExtractError::Malformed);
        }
        Ok((oh, ob.clamp(oh, oe), oe))
    }

    /// Decides the fate of part `id` of `msg` (and everything under it).
    /// `path` leads from the top-level message to `msg` through nested
    /// message parts; `nest` counts those nested messages.
    pub(super) fn visit(
        &mut self,
        msg: &Message<'_>,
        path: &mut Vec<u32>,
        id: u32,
        parent: Parent,
        nest: usize,
        depth: usize,
    ) -> Result<Fate, ExtractError> {
        if depth > MAX_DEPTH {
            return Err(ExtractError::TooDeep);
        }
        let part = msg.parts.get(id as usize).ok_or(ExtractError::Malformed)?;
        let info = Info::of(part, parent);
        let fate = if let PartType::Multipart(children) = &part.body {
            self.visit_multipart(msg, path, part, children, &info, nest, depth)?
        } else if info.is_message() {
            // Walked into even with attachment disposition: the forward
            // stays, only its attachments go.
            self.visit_message(path, id, part, &info, parent, nest, depth)?
        } else if is_attachment(part, &info, parent, &self.opts) {
            let (_, ob, oe) = self.bounds(part)?;
            let decoded = matches!(part.body, PartType::Binary(_) | PartType::InlineBinary(_))
                && !part.is_encoding_problem;
            self.docs.push(DocSpec {
                name: info.name.map(str::to_string),
                stem: "dokument",
                content_type: info.mime(),
                take: decoded.then(|| child_path(path, id)),
                start: ob,
                end: oe,
                cte: info.cte,
            });
            Fate::Remove
        } else {
            Fate::Keep
        };
        if nest == 0
            && fate == Fate::Remove
            && let Some(r) = self.removed.get_mut(id as usize)
        {
            *r = true;
        }
        Ok(fate)
    }

    #[allow(clippy::too_many_arguments)]
    fn visit_multipart(
        &mut self,
        msg: &Message<'_>,
        path: &mut Vec<u32>,
        part: &MessagePart<'_>,
        children: &[u32],
        info: &Info<'_>,
        nest: usize,
        depth: usize,
    ) -> Result<Fate, ExtractError> {
        if info.sub == "signed" || info.sub == "encrypted" {
            let holds_attachments = info.sub == "encrypted" || {
                let (d0, c0) = (self.docs.len(), self.cuts.len());
                if let Some(&content) = children.first() {
                    self.visit(msg, path, content, Parent::Other, nest, depth + 1)?;
                }
                let found = self.docs.len() > d0;
                self.docs.truncate(d0);
                self.cuts.truncate(c0);
                found
            };
            if !holds_attachments {
                return Ok(Fate::Keep);
            }
            if nest == 0 {
                self.sealed_inside = true;
                return Ok(Fate::Keep);
            }
            // Inside a nested message: returning Remove makes the caller
            // take that whole message out, signature intact.
            return Ok(Fate::Remove);
        }
        let child_parent = match info.sub.as_str() {
            "related" => Parent::Related,
            "digest" => Parent::Digest,
            _ => Parent::Other,
        };
        let mut fates = Vec::with_capacity(children.len());
        for &child in children {
            fates.push(self.visit(msg, path, child, child_parent, nest, depth + 1)?);
        }
        if fates.iter().all(|f| *f == Fate::Keep) {
            return Ok(Fate::Keep);
        }
        if fates.iter().all(|f| *f == Fate::Remove) {
            // Emptied: the caller removes this multipart as a whole, or, at
            // a root, puts a text part in (top) or takes the nested message
            // out whole. This also covers an emptied multipart/related: it
            // goes like any other container.
            return Ok(Fate::Remove);
        }
        let bounds = |i: usize| -> Result<(usize, usize), ExtractError> {
            let id = *children.get(i).ok_or(ExtractError::Malformed)?;
            let p = msg.parts.get(id as usize).ok_or(ExtractError::Malformed)?;
            let (oh, _, oe) = self.bounds(p)?;
            Ok((oh, oe))
        };
        let mut i = 0;
        let mut runs = Vec::new();
        while i < fates.len() {
            if fates[i] == Fate::Keep {
                i += 1;
                continue;
            }
            let a = i;
            while i < fates.len() && fates[i] == Fate::Remove {
                i += 1;
            }
            let b = i - 1;
            let (start, end) = if a > 0 {
                // From the end of the kept part before (the CRLF in front of
                // the next delimiter) to the end of the run: drops
                // "CRLF--boundary CRLF part…" and leaves the delimiter that
                // follows the run for whatever comes next.
                let (_, prev_end) = bounds(a - 1)?;
                let (first_start, _) = bounds(a)?;
                let (_, last_end) = bounds(b)?;
                if prev_end > first_start
                    || !line_break_at(self.raw, prev_end)
                    || !(last_end == self.raw.len() || line_break_at(self.raw, last_end))
                {
                    return Err(ExtractError::Malformed);
                }
                (prev_end, last_end)
            } else {
                // A leading run: from the first part's header to the next
                // kept part's header. The first delimiter line stays and now
                // introduces that kept part.
                let (first_start, _) = bounds(0)?;
                let (_, last_end) = bounds(b)?;
                let (next_start, _) = bounds(b + 1)?;
                if last_end > next_start
                    || !line_start(self.raw, first_start)
                    || !line_start(self.raw, next_start)
                {
                    return Err(ExtractError::Malformed);
                }
                (first_start, next_start)
            };
            if start > end {
                return Err(ExtractError::Malformed);
            }
            // A trailing run of a multipart the sender never closed: close
            // it, or the kept part before the run would become an
            // unterminated last part and read differently.
            let mut close = Vec::new();
            if b + 1 == fates.len() && !closed_after(self.raw, end, &delimiter(part)?) {
                close.extend_from_slice(b"\r\n");
                close.extend_from_slice(&delimiter(part)?);
                close.extend_from_slice(b"--");
            }
            runs.push((start, end, close));
        }
        self.cuts.extend(runs);
        Ok(Fate::Keep)
    }

    #[allow(clippy::too_many_arguments)]
    fn visit_message(
        &mut self,
        path: &mut Vec<u32>,
        id: u32,
        part: &MessagePart<'_>,
        info: &Info<'_>,
        parent: Parent,
        nest: usize,
        depth: usize,
    ) -> Result<Fate, ExtractError> {
        let (d0, c0) = (self.docs.len(), self.cuts.len());
        if let PartType::Message(inner) = &part.body
            && inner.raw_message.as_ptr() == self.raw.as_ptr()
            && inner.raw_message.len() == self.raw.len()
        {
            // Parsed in place: its offsets index `raw`, parts can be cut.
            path.push(id);
            let fate = self.visit(inner, path, 0, Parent::Root, nest + 1, depth + 1);
            path.pop();
            let fate = fate?;
            // A top-level message/rfc822 has no text part to carry the
            // block: anything inside makes it one document.
            let top = parent == Parent::Root && nest == 0;
            if fate == Fate::Keep && !(top && self.docs.len() > d0) {
                return Ok(Fate::Keep);
            }
        }
        // Encoded, unparseable, or nothing would be left: one document.
        self.docs.truncate(d0);
        self.cuts.truncate(c0);
        let (_, ob, oe) = self.bounds(part)?;
        let subject = match &part.body {
            PartType::Message(m) => m.subject(),
            _ => None,
        };
        let name = info.name.map(str::to_string).or_else(|| {
            subject
                .filter(|s| !s.trim().is_empty())
                .map(|s| format!("{}.eml", s.trim()))
        });
        let decoded = matches!(part.body, PartType::Message(_))
            && part.encoding != mail_parser::Encoding::None
            && !part.is_encoding_problem;
        self.docs.push(DocSpec {
            name,
            stem: "nachricht",
            content_type: "message/rfc822".into(),
            take: decoded.then(|| child_path(path, id)),
            start: ob,
            end: oe,
            cte: info.cte,
        });
        Ok(Fate::Remove)
    }

    /// The displayed body of the top-level message: the first text/plain
    /// and first text/html that are not attachments, looking into
    /// alternatives, the root of a related, and the first part of a mixed
    /// (or other multipart) that has one. Never into nested messages,
    /// signed or encrypted parts, or digests.
    pub(super) fn find_body(
        &self,
        msg: &Message<'_>,
        id: u32,
        found: &mut (Option<u32>, Option<u32>),
        depth: usize,
    ) {
        if depth > MAX_DEPTH || self.removed.get(id as usize).copied().unwrap_or(true) {
            return;
        }
        let Some(part) = msg.parts.get(id as usize) else {
            return;
        };
        let info = Info::of(part, Parent::Other);
        match &part.body {
            PartType::Multipart(children) => match info.sub.as_str() {
                "signed" | "encrypted" | "digest" => {}
                "alternative" => {
                    for &c in children {
                        self.find_body(msg, c, found, depth + 1);
                    }
                }
                "related" => {
                    // RFC 2387: the root is the `start` part, else the first.
                    let start = part
                        .content_type()
                        .and_then(|c| c.attribute("start"))
                        .map(|s| s.trim().trim_start_matches('<').trim_end_matches('>'));
                    let root = children
                        .iter()
                        .copied()
                        .find(|&c| {
                            start.is_some_and(|s| {
                                msg.parts
                                    .get(c as usize)
                                    .and_then(|p| p.content_id())
                                    .is_some_and(|cid| cid == s)
                            })
                        })
                        .or_else(|| children.first().copied());
                    let order = root
                        .into_iter()
                        .chain(children.iter().copied().filter(|&c| Some(c) != root));
                    for c in order {
                        self.find_body(msg, c, found, depth + 1);
                        if found.0.is_some() || found.1.is_some() {
                            break;
                        }
                    }
                }
                _ => {
                    for &c in children {
                        self.find_body(msg, c, found, depth + 1);
                        if found.0.is_some() || found.1.is_some() {
                            break;
                        }
                    }
                }
            },
            PartType::Text(_)
            | PartType::Html(_)
            | PartType::Binary(_)
            | PartType::InlineBinary(_)
                if info.ty == "text" && !info.attachment =>
            {
                if info.sub == "plain" && found.0.is_none() {
                    found.0 = Some(id);
                } else if info.sub == "html" && found.1.is_none() {
                    found.1 = Some(id);
                }
            }
            _ => {}
        }
    }

    /// A body part that can take the block without touching its other
    /// bytes; `None` when its transfer encoding or charset does not allow
    /// it.
    pub(super) fn target(&self, part: &MessagePart<'_>) -> Option<TextTarget> {
        let info = Info::of(part, Parent::Other);
        if info.cte == Cte::Unknown || info.charset == Charset::Incompatible {
            return None;
        }
        let (_, start, end) = self.bounds(part).ok()?;
        if info.cte == Cte::Base64 {
            base64_decode(self.raw.get(start..end)?)?;
        }
        Some(TextTarget {
            start,
            end,
            cte: info.cte,
            charset: info.charset,
        })
    }
}

fn child_path(path: &[u32], id: u32) -> Vec<u32> {
    let mut p = Vec::with_capacity(path.len() + 1);
    p.extend_from_slice(path);
    p.push(id);
    p
}

pub(super) fn delimiter(part: &MessagePart<'_>) -> Result<Vec<u8>, ExtractError> {
    // mail-parser matched the delimiter with these very bytes.
    let boundary = part
        .content_type()
        .and_then(|c| c.attribute("boundary"))
        .filter(|b| !b.is_empty())
        .ok_or(ExtractError::Malformed)?;
    let mut d = b"--".to_vec();
    d.extend_from_slice(boundary.as_bytes());
    Ok(d)
}

/// Cuts must fall on line boundaries: mail-parser also finds a delimiter
/// in the middle of a line, or a part's header right after the delimiter on
/// its line, and cutting there would join lines, so the rest of the message
/// would parse differently (a body line could become a part's header).
fn line_start(raw: &[u8], at: usize) -> bool {
    at > 0 && raw.get(at - 1) == Some(&b'\n')
}

/// Whether a line break starts at `at` (the one in front of a delimiter).
fn line_break_at(raw: &[u8], at: usize) -> bool {
    raw.get(at..)
        .is_some_and(|r| r.starts_with(b"\r\n") || r.starts_with(b"\n"))
}

/// Whether a delimiter line follows the part ending at `end`.
pub(super) fn closed_after(raw: &[u8], end: usize, delimiter: &[u8]) -> bool {
    let rest = raw.get(end..).unwrap_or_default();
    [&b"\r\n"[..], b"\n"].iter().any(|nl| {
        rest.strip_prefix(*nl)
            .is_some_and(|r| r.starts_with(delimiter))
    })
}
