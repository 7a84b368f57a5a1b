//! Attachments → links (SPEC §7): take every attachment out of a message
//! and put a link block in its place.
//!
//! Two pure steps over the raw message (CRLF line endings, header + body):
//!
//! 1. [`scan`] parses the message once (mail-parser), decides what is an
//!    attachment and returns a [`Plan`]: the extracted [`Document`]s and the
//!    byte ranges to cut, the text parts to extend, and whether a text part
//!    must be created. The caller stores each document and gets a link.
//! 2. [`rewrite`] builds the new message from the plan and a
//!    [`Block`](super::linkblock::Block) listing those links, by copying
//!    ranges of `raw` once and splicing in the changes.
//!
//! Every byte outside the removed parts and the extended text parts stays
//! as sent: untouched parts are never re-encoded. A part is removed together
//! with the delimiter line in front of it, so each multipart stays valid and
//! keeps its close delimiter.
//!
//! What is an attachment:
//! - any part with `Content-Disposition: attachment` (text parts included);
//! - any other non-text leaf (not `text/*`, `multipart/*`, `message/*`) that
//!   has a file name or is not empty: SPEC §7 says documents never travel,
//!   so an unnamed `application/pdf` is a document too. Kept: empty unnamed
//!   parts and signature/key-exchange parts without a name;
//! - images shown inline (Content-ID or inside `multipart/related`, no
//!   attachment disposition) larger than [`ExtractOptions::inline_image_max`];
//!   smaller ones stay so logos and signatures still render;
//! - parts inside a nested `message/rfc822` that mail-parser parsed in place
//!   (7bit/8bit/binary): cut by offset, the forwarded text stays. A nested
//!   message that is base64/QP-encoded (or unparseable) cannot be spliced:
//!   the whole `message/rfc822` part becomes one `.eml` document, so none of
//!   its attachment bytes travel. The same happens when cutting would leave
//!   the nested message without any body (its root is itself an attachment,
//!   or every part of its root multipart goes).
//!
//! Signed and encrypted content is never altered ([`Scan::Sealed`]): at the
//! top level, and also a `multipart/signed` part elsewhere in the message
//! that holds attachments, or any nested `multipart/encrypted` (cutting
//! inside would break the signature; a rule decides pass or reject). Inside
//! a nested `message/rfc822` such a part makes the whole nested message one
//! document instead, which keeps its signature intact.

use std::fmt;

use base64::Engine as _;
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::linkblock::{Block, is_bidi_control};

/// Deeper nesting than this is refused rather than recursed into: the walk
/// is recursive and the message is attacker-controlled.
const MAX_DEPTH: usize = 64;

/// Inline images up to this decoded size stay in the message by default
/// (logos, signature images).
pub const DEFAULT_INLINE_IMAGE_MAX: usize = 100 * 1024;

/// Stored file names are cut to this many characters (extension kept).
const MAX_FILE_NAME_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Inline images (Content-Disposition inline or none, in
    /// `multipart/related` or with a Content-ID) up to this decoded size
    /// stay in the message; larger ones are extracted.
    pub inline_image_max: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            inline_image_max: DEFAULT_INLINE_IMAGE_MAX,
        }
    }
}

/// One document taken out of the message.
#[derive(Clone, PartialEq, Eq)]
pub struct Document {
    /// Decoded (RFC 2231 / RFC 2047 by mail-parser) and sanitised: no path
    /// separators, control or bidi-override characters, trimmed, at most
    /// 200 characters. When the message gives none: `dokument-N.ext` from
    /// the content type (`nachricht-N.eml` for messages), N counting from 1
    /// in document order.
    pub file_name: String,
    /// `type/subtype`, lowercase, e.g. `application/pdf`.
    pub content_type: String,
    /// The content exactly as the sender attached it (transfer encoding
    /// removed, no charset conversion).
    pub data: Vec<u8>,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("data", &format_args!("[{} bytes]", self.data.len()))
            .finish()
    }
}

/// What [`scan`] found.
#[derive(Debug)]
pub enum Scan {
    /// Nothing to take out.
    Clean,
    /// `multipart/signed`, `multipart/encrypted` or
    /// `application/pkcs7-mime` at the top level (or a signed part holding
    /// attachments, or an encrypted part, further down): altering it would
    /// break it. `has_attachments` says whether anything would have been
    /// extracted; for encrypted content it is unknown and assumed `true`.
    Sealed {
        has_attachments: bool,
    },
    Extract(Plan),
}

/// How to turn the scanned message into one without attachments.
///
/// `documents` is public so the caller can move them out
/// (`std::mem::take`) to store them; [`rewrite`] does not need them, only
/// one [`Entry`](super::linkblock::Entry) per document, in the same order.
#[derive(Debug)]
pub struct Plan {
    pub documents: Vec<Document>,
    doc_count: usize,
    raw_len: usize,
    /// Byte ranges of `raw` to drop (parts with their delimiter lines), and
    /// what replaces them (only ever a missing close delimiter).
    cuts: Vec<(usize, usize, Vec<u8>)>,
    /// The displayed plain-text body that gets the plain block.
    plain: Option<TextTarget>,
    /// The displayed HTML body that gets the HTML block.
    html: Option<TextTarget>,
    /// A text/plain part to create for the block.
    new_text: Option<NewText>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("the message has no header and cannot be parsed")]
    Unparseable,
    #[error("the MIME structure is nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    #[error("the MIME structure is inconsistent; the message cannot be rewritten safely")]
    Malformed,
    #[error("the plan was made for a different message")]
    PlanMismatch,
    #[error("the link block lists {got} documents, the plan extracted {expected}")]
    BlockMismatch { expected: usize, got: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cte {
    SevenBit,
    /// 8bit or binary.
    EightBit,
    QuotedPrintable,
    Base64,
    Unknown,
}

/// How text can be written into a part, by its declared charset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    /// US-ASCII, missing, or a charset we do not write (ISO-2022-JP,
    /// KOI8-R, GB2312, …): ASCII transliteration, valid in all of them.
    Ascii,
    Utf8,
    Latin1,
    Latin9,
    Windows1252,
    /// UTF-16/32/7: ASCII bytes are not text there; never modified.
    Incompatible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    /// The root of the message or of a nested message.
    Root,
    Related,
    Digest,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    /// The whole part goes (its documents, if any, are already recorded).
    Remove,
}

/// A body part that receives a block. Offsets index `raw`.
#[derive(Debug, Clone)]
struct TextTarget {
    start: usize,
    end: usize,
    cte: Cte,
    charset: Charset,
}

#[derive(Debug, Clone)]
enum NewText {
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

/// Where a document's bytes come from, resolved after the walk.
struct DocSpec {
    name: Option<String>,
    stem: &'static str,
    content_type: String,
    /// Path of part ids (through nested messages) whose decoded body
    /// mail-parser already holds: moved out instead of decoded again.
    take: Option<Vec<u32>>,
    /// Otherwise (or if taking fails): decode `raw[start..end]` by `cte`.
    start: usize,
    end: usize,
    cte: Cte,
}

/// The MIME facts about one part that the decisions need.
struct Info<'p> {
    ty: String,
    sub: String,
    attachment: bool,
    has_name: bool,
    name: Option<&'p str>,
    cid: Option<&'p str>,
    cte: Cte,
    charset: Charset,
}

impl<'p> Info<'p> {
    fn of(part: &'p MessagePart<'_>, parent: Parent) -> Info<'p> {
        let ct = part.content_type();
        let (ty, sub) = match ct {
            Some(ct) => (
                ct.ctype().trim().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").trim().to_ascii_lowercase(),
            ),
            // RFC 2046 §5.1.5: the default inside a digest.
            None if parent == Parent::Digest => ("message".into(), "rfc822".into()),
            None => ("text".into(), "plain".into()),
        };
        let disp = part.content_disposition();
        let filename = disp.and_then(|d| d.attribute("filename"));
        let ct_name = ct.and_then(|c| c.attribute("name"));
        let name = [filename, ct_name]
            .into_iter()
            .flatten()
            .find(|n| !n.trim().is_empty());
        Info {
            ty,
            sub,
            attachment: disp.is_some_and(|d| d.is_attachment()),
            has_name: filename.is_some() || ct_name.is_some(),
            name,
            cid: part.content_id(),
            cte: cte_of(part),
            charset: charset_of(ct.and_then(|c| c.attribute("charset"))),
        }
    }

    fn is_message(&self) -> bool {
        self.ty == "message" && (self.sub == "rfc822" || self.sub == "global")
    }

    /// `type/subtype` safe to hand on (it ends up in an HTTP header).
    fn mime(&self) -> String {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        };
        if token(&self.ty) && token(&self.sub) {
            format!("{}/{}", self.ty, self.sub)
        } else {
            "application/octet-stream".into()
        }
    }
}

fn cte_of(part: &MessagePart<'_>) -> Cte {
    let Some(v) = part.content_transfer_encoding() else {
        return Cte::SevenBit;
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "7bit" => Cte::SevenBit,
        "8bit" | "binary" => Cte::EightBit,
        "quoted-printable" => Cte::QuotedPrintable,
        "base64" => Cte::Base64,
        _ => Cte::Unknown,
    }
}

fn charset_of(charset: Option<&str>) -> Charset {
    let Some(c) = charset else {
        return Charset::Ascii;
    };
    let c = c.trim().to_ascii_lowercase();
    match c.as_str() {
        "utf-8" | "utf8" => Charset::Utf8,
        "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin1" | "latin-1" | "l1" | "cp819"
        | "ibm819" => Charset::Latin1,
        "iso-8859-15" | "iso8859-15" | "iso_8859-15" | "latin9" | "latin-9" => Charset::Latin9,
        "windows-1252" | "cp1252" | "x-cp1252" => Charset::Windows1252,
        c if [
            "utf-16", "utf16", "utf-32", "utf32", "ucs-2", "ucs-4", "utf-7", "unicode",
        ]
        .iter()
        .any(|p| c.starts_with(p)) =>
        {
            Charset::Incompatible
        }
        _ => Charset::Ascii,
    }
}

/// Types that belong to the MIME machinery, not to the sender's documents,
/// when they carry no file name.
const STRUCTURAL: &[(&str, &str)] = &[
    ("application", "pgp-signature"),
    ("application", "pgp-encrypted"),
    ("application", "pkcs7-signature"),
    ("application", "x-pkcs7-signature"),
];

struct Walker<'r> {
    raw: &'r [u8],
    opts: ExtractOptions,
    docs: Vec<DocSpec>,
    cuts: Vec<(usize, usize, Vec<u8>)>,
    /// Per part of the top-level message: removed (for the body search).
    removed: Vec<bool>,
    /// A signed part with attachments, or an encrypted part, in the
    /// top-level message.
    sealed_inside: bool,
}

impl<'r> Walker<'r> {
    fn new(raw: &'r [u8], opts: &ExtractOptions, parts: usize) -> Self {
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
    fn bounds(&self, part: &MessagePart<'_>) -> Result<(usize, usize, usize), ExtractError> {
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
    fn visit(
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
        } else if self.is_attachment(part, &info, parent) {
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
                if prev_end > first_start {
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
                if last_end > next_start {
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

    fn is_attachment(&self, part: &MessagePart<'_>, info: &Info<'_>, parent: Parent) -> bool {
        if info.attachment {
            return true;
        }
        match info.ty.as_str() {
            "text" | "multipart" | "message" => false,
            "image" if info.cid.is_some() || parent == Parent::Related => {
                self.decoded_len(part) > self.opts.inline_image_max
            }
            _ if !info.has_name
                && STRUCTURAL
                    .iter()
                    .any(|(t, s)| info.ty == *t && info.sub == *s) =>
            {
                false
            }
            _ => info.has_name || self.decoded_len(part) > 0,
        }
    }

    fn decoded_len(&self, part: &MessagePart<'_>) -> usize {
        match &part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) if !part.is_encoding_problem => b.len(),
            _ => {
                let raw_len = (part.offset_end as usize).saturating_sub(part.offset_body as usize);
                if cte_of(part) == Cte::Base64 {
                    raw_len / 4 * 3
                } else {
                    raw_len
                }
            }
        }
    }

    /// The displayed body of the top-level message: the first text/plain
    /// and first text/html that are not attachments, looking into
    /// alternatives, the root of a related, and the first part of a mixed
    /// (or other multipart) that has one. Never into nested messages,
    /// signed or encrypted parts, or digests.
    fn find_body(
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
    fn target(&self, part: &MessagePart<'_>) -> Option<TextTarget> {
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

fn delimiter(part: &MessagePart<'_>) -> Result<Vec<u8>, ExtractError> {
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

/// Whether a delimiter line follows the part ending at `end`.
fn closed_after(raw: &[u8], end: usize, delimiter: &[u8]) -> bool {
    let rest = raw.get(end..).unwrap_or_default();
    [&b"\r\n"[..], b"\n"].iter().any(|nl| {
        rest.strip_prefix(*nl)
            .is_some_and(|r| r.starts_with(delimiter))
    })
}

fn materialize(raw: &[u8], msg: &mut Message<'_>, spec: DocSpec, index: usize) -> Document {
    let data = spec
        .take
        .as_deref()
        .and_then(|p| take_body(&mut msg.parts, p))
        .unwrap_or_else(|| {
            decode_body(raw.get(spec.start..spec.end).unwrap_or_default(), spec.cte)
        });
    let file_name = spec
        .name
        .as_deref()
        .map(sanitize_file_name)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{}-{index}.{}", spec.stem, extension(&spec.content_type)));
    Document {
        file_name,
        content_type: spec.content_type,
        data,
    }
}

/// Moves a decoded body out of the parsed message instead of copying it
/// (a 25 MB message must not be held three times).
fn take_body(parts: &mut [MessagePart<'_>], path: &[u32]) -> Option<Vec<u8>> {
    let (&first, rest) = path.split_first()?;
    let part = parts.get_mut(first as usize)?;
    if rest.is_empty() {
        match std::mem::replace(&mut part.body, PartType::Multipart(Vec::new())) {
            PartType::Binary(b) | PartType::InlineBinary(b) => Some(b.into_owned()),
            PartType::Message(m) => Some(m.raw_message.into_owned()),
            other => {
                part.body = other;
                None
            }
        }
    } else if let PartType::Message(inner) = &mut part.body {
        take_body(&mut inner.parts, rest)
    } else {
        None
    }
}

/// The transfer-decoded bytes; what cannot be decoded is kept as sent.
fn decode_body(body: &[u8], cte: Cte) -> Vec<u8> {
    match cte {
        Cte::Base64 => base64_decode(body).unwrap_or_else(|| body.to_vec()),
        Cte::QuotedPrintable => quoted_printable_decode(body).unwrap_or_else(|| body.to_vec()),
        _ => body.to_vec(),
    }
}

fn sanitize_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter_map(|c| match c {
            '/' | '\\' => Some('_'),
            '\r' | '\n' | '\t' => Some(' '),
            c if c.is_control() || is_bidi_control(c) => None,
            c => Some(c),
        })
        .collect();
    // Leading dots would make a hidden file or a relative path component.
    let cleaned = cleaned.trim().trim_start_matches('.').trim_start();
    if cleaned.chars().count() <= MAX_FILE_NAME_CHARS {
        return cleaned.to_string();
    }
    let ext = cleaned
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| (1..=10).contains(&e.chars().count()) && !e.contains(' '));
    match ext {
        Some(ext) => {
            let keep = MAX_FILE_NAME_CHARS - ext.chars().count() - 1;
            let stem: String = cleaned.chars().take(keep).collect();
            format!("{}.{ext}", stem.trim_end())
        }
        None => cleaned
            .chars()
            .take(MAX_FILE_NAME_CHARS)
            .collect::<String>()
            .trim_end()
            .to_string(),
    }
}

fn extension(content_type: &str) -> &'static str {
    match content_type {
        "application/pdf" => "pdf",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.ms-powerpoint" => "ppt",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        "application/vnd.oasis.opendocument.text" => "odt",
        "application/vnd.oasis.opendocument.spreadsheet" => "ods",
        "application/vnd.oasis.opendocument.presentation" => "odp",
        "application/rtf" | "text/rtf" => "rtf",
        "application/zip" | "application/x-zip-compressed" => "zip",
        "application/xml" | "text/xml" => "xml",
        "application/json" => "json",
        "image/png" => "png",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/gif" => "gif",
        "image/tiff" => "tif",
        "image/bmp" => "bmp",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "text/plain" => "txt",
        "text/html" => "html",
        "text/csv" => "csv",
        "text/calendar" => "ics",
        "message/rfc822" | "message/global" => "eml",
        _ => "bin",
    }
}

// ---------------------------------------------------------------------------
// Rewriting

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
/// given to [`scan`], `block` must list one entry per extracted document.
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
    Ok(out)
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

fn trim_crlf(s: &str) -> &str {
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

/// The block's text as bytes for a part: in a 7bit part (or an unknown or
/// ASCII charset) pure ASCII with German transliteration; UTF-8 as is;
/// the Latin-1 family as single bytes.
fn encode_text(s: &str, charset: Charset, cte: Cte) -> Vec<u8> {
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
    match c {
        'ä' => "ae",
        'ö' => "oe",
        'ü' => "ue",
        'Ä' => "Ae",
        'Ö' => "Oe",
        'Ü' => "Ue",
        'ß' => "ss",
        '…' => "...",
        '–' | '—' => "-",
        '„' | '“' | '”' | '«' | '»' => "\"",
        '‚' | '‘' | '’' => "'",
        '€' => "EUR",
        '\u{A0}' => " ",
        _ => "?",
    }
}

/// Quoted-printable (RFC 2045 §6.7): lines of at most 76 characters with
/// soft breaks, CRLF (or LF) in the input as hard line breaks, whitespace
/// before a line end escaped.
fn qp_encode(input: &[u8]) -> Vec<u8> {
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
fn base64_lines(data: &[u8]) -> Vec<u8> {
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
    use super::*;
    use crate::links::Language;
    use crate::transform::linkblock::Entry;

    fn crlf(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(b.len() + b.len() / 20);
        let mut last = 0u8;
        for &c in b {
            if c == b'\n' && last != b'\r' {
                out.push(b'\r');
            }
            out.push(c);
            last = c;
        }
        out
    }

    fn fixtures_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = fixtures_dir().join(name);
        crlf(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    fn url(i: usize) -> String {
        format!("https://links.example/dokumente/d/tok{i}x{}", i * 7919)
    }

    fn block_for(docs: &[Document]) -> Block {
        Block {
            language: Language::De,
            entries: docs
                .iter()
                .enumerate()
                .map(|(i, d)| Entry {
                    file_name: d.file_name.clone(),
                    size: d.data.len() as u64,
                    url: url(i),
                    expires_at: 1_796_551_200_000,
                    protected: i % 2 == 0,
                })
                .collect(),
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        memchr::memmem::find(hay, needle).is_some()
    }

    fn count(hay: &str, needle: &str) -> usize {
        hay.matches(needle).count()
    }

    fn plan_of(raw: &[u8], opts: &ExtractOptions) -> Plan {
        match scan(raw, opts) {
            Ok(Scan::Extract(plan)) => plan,
            other => panic!("expected Extract, got {other:?}"),
        }
    }

    /// Scan + rewrite with made-up links; returns documents and output.
    fn extract(raw: &[u8], opts: &ExtractOptions) -> (Vec<Document>, Vec<u8>) {
        let mut plan = plan_of(raw, opts);
        let docs = std::mem::take(&mut plan.documents);
        let out = rewrite(raw, &plan, &block_for(&docs)).expect("rewrite");
        (docs, out)
    }

    /// Every part of `msg`, also inside nested messages parsed in place,
    /// with the raw bytes of its body.
    fn parts_with_bodies<'a>(
        msg: &'a Message<'a>,
        raw: &'a [u8],
        out: &mut Vec<(&'a MessagePart<'a>, &'a [u8])>,
    ) {
        for p in &msg.parts {
            let body = raw
                .get(p.offset_body as usize..p.offset_end as usize)
                .unwrap_or_default();
            out.push((p, body));
            if let PartType::Message(inner) = &p.body
                && inner.raw_message.as_ptr() == raw.as_ptr()
            {
                parts_with_bodies(inner, raw, out);
            }
        }
    }

    /// Text of the top-level text/plain and text/html parts of `raw`.
    fn bodies(raw: &[u8]) -> (String, String) {
        let msg = MessageParser::default().parse(raw).expect("re-parses");
        let (mut plain, mut html) = (String::new(), String::new());
        for p in &msg.parts {
            match &p.body {
                PartType::Text(t) => plain.push_str(t),
                PartType::Html(t) => html.push_str(t),
                _ => {}
            }
        }
        (plain, html)
    }

    /// The checks every extraction must pass (brief, test 1).
    fn check_extraction(name: &str, raw: &[u8], opts: &ExtractOptions) -> (Vec<Document>, Vec<u8>) {
        let (docs, out) = extract(raw, opts);
        // (a) re-parses, and nothing is left to take out.
        assert!(
            MessageParser::default().parse(&out).is_some(),
            "{name}: output does not parse"
        );
        assert!(
            matches!(scan(&out, opts), Ok(Scan::Clean)),
            "{name}: output still has attachments: {:?}",
            scan(&out, opts)
        );
        // (d) each document is the decoded content of a part of the
        // original, and (b) that part's encoded lines are gone.
        let orig = MessageParser::default()
            .parse(raw)
            .expect("original parses");
        let mut parts = Vec::new();
        parts_with_bodies(&orig, raw, &mut parts);
        for doc in &docs {
            let matching: Vec<_> = parts
                .iter()
                .filter(|(p, body)| match &p.body {
                    PartType::Binary(b) | PartType::InlineBinary(b) if !p.is_encoding_problem => {
                        b.as_ref() == doc.data.as_slice()
                    }
                    PartType::Message(m) => m.raw_message() == doc.data.as_slice(),
                    PartType::Multipart(_) => false,
                    _ => decode_body(body, cte_of(p)) == doc.data,
                })
                .collect();
            assert!(!matching.is_empty(), "{name}: {doc:?} is no part's content");
            if doc.data.len() < 40 {
                continue;
            }
            for (_, body) in matching {
                let lines: Vec<&[u8]> = body
                    .split(|&b| b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .filter(|l| l.len() >= 24)
                    .collect();
                assert!(!lines.is_empty(), "{name}: no lines to look for");
                for line in [lines[0], lines[lines.len() / 2], lines[lines.len() - 1]] {
                    assert!(
                        !contains(&out, line),
                        "{name}: {} still in the output",
                        String::from_utf8_lossy(line)
                    );
                }
            }
        }
        // (c) each link exactly once in the plain body and in the HTML body
        // (when the message has one).
        let (plain, html) = bodies(&out);
        let (_, orig_html) = bodies(raw);
        for i in 0..docs.len() {
            let u = url(i);
            if !plain.is_empty() || orig_html.is_empty() {
                assert_eq!(
                    count(&plain, &u),
                    1,
                    "{name}: {u} in the plain body:\n{plain}"
                );
            }
            if !orig_html.is_empty() {
                assert_eq!(
                    count(&html, &format!("href=\"{u}\"")),
                    1,
                    "{name}: {u} in the HTML body:\n{html}"
                );
            }
        }
        (docs, out)
    }

    #[derive(Debug, PartialEq)]
    enum Expect {
        Clean,
        Sealed(bool),
        Extract(usize),
    }

    const FIXTURES: &[(&str, Expect)] = &[
        ("cpython-msg_07-gif-attachment.eml", Expect::Extract(1)),
        ("cpython-msg_16-dsn-report.eml", Expect::Clean),
        (
            "cpython-msg_33-rfc2231-params-signed.eml",
            Expect::Sealed(false),
        ),
        // Its octet-stream parts are empty and nameless.
        ("cpython-msg_38-nested-mixed-alternative.eml", Expect::Clean),
        ("cpython-msg_45-pgp-signed.eml", Expect::Sealed(false)),
        ("dovecot-malformed-boundary-prefix.eml", Expect::Clean),
        ("dovecot-malformed-long-boundary.eml", Expect::Clean),
        (
            "dovecot-malformed-multipart-signed.eml",
            Expect::Sealed(false),
        ),
        ("dovecot-malformed-nested-rfc822.eml", Expect::Clean),
        ("dovecot-signed-in-mixed.eml", Expect::Clean),
        ("dovecot-unterminated-quoted-boundary.eml", Expect::Clean),
        ("mimekit-8bit-bytes-in-body.eml", Expect::Extract(1)),
        ("mimekit-deeply-nested.eml", Expect::Clean),
        ("mimekit-gmail-dkim-signed.eml", Expect::Clean),
        ("mimekit-invalid-cte-multipart.eml", Expect::Clean),
        ("mimekit-japanese-headers.eml", Expect::Clean),
        ("mimekit-missing-end-boundary.eml", Expect::Extract(1)),
        ("mimekit-null-bytes-in-headers.eml", Expect::Clean),
        ("mimekit-pgp-signed-gnupg-announce.eml", Expect::Clean),
        ("mimekit-raw-koi8r-header.eml", Expect::Clean),
        ("mimekit-raw-utf8-header.eml", Expect::Clean),
        ("mimekit-related-inline-images.eml", Expect::Extract(1)),
        ("mimekit-related-mhtml.eml", Expect::Clean),
        ("mimekit-smime-thunderbird-signed.eml", Expect::Sealed(true)),
        ("phpmmp-dsn-gb2312.eml", Expect::Clean),
        ("phpmmp-five-text-attachments.eml", Expect::Extract(10)),
        ("phpmmp-iso-2022-jp-alternative.eml", Expect::Clean),
        ("phpmmp-ks_c_5601-korean-jpeg.eml", Expect::Extract(2)),
        ("phpmmp-mixed-related-inline-images.eml", Expect::Extract(1)),
        ("phpmmp-msword-rfc2047-filename.eml", Expect::Extract(1)),
        ("phpmmp-nested-message-rfc822.eml", Expect::Clean),
        ("phpmmp-pdf-empty-filename.eml", Expect::Extract(1)),
        ("phpmmp-singlepart-png-attachment.eml", Expect::Extract(1)),
        (
            "phpmmp-swiftmailer-docx-pdf-odt-png-rfc822.eml",
            Expect::Extract(5),
        ),
        ("phpmmp-x-mac-cyrillic-alternative.eml", Expect::Clean),
    ];

    #[test]
    fn every_fixture_is_listed() {
        for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".eml") {
                assert!(
                    FIXTURES.iter().any(|(n, _)| *n == name),
                    "{name} has no expectation"
                );
            }
        }
    }

    #[test]
    fn fixtures_scan_and_rewrite() {
        let opts = ExtractOptions::default();
        for (name, expect) in FIXTURES {
            let raw = fixture(name);
            let got = match scan(&raw, &opts) {
                Ok(Scan::Clean) => Expect::Clean,
                Ok(Scan::Sealed { has_attachments }) => Expect::Sealed(has_attachments),
                Ok(Scan::Extract(plan)) => Expect::Extract(plan.documents.len()),
                Err(e) => panic!("{name}: {e}"),
            };
            assert_eq!(&got, expect, "{name}");
            if let Expect::Extract(_) = expect {
                check_extraction(name, &raw, &opts);
            }
        }
    }

    /// With every inline image extracted, more paths run (related roots,
    /// image-only parts); the same checks must hold.
    #[test]
    fn fixtures_with_all_images_extracted() {
        let opts = ExtractOptions {
            inline_image_max: 0,
        };
        for (name, _) in FIXTURES {
            let raw = fixture(name);
            if let Ok(Scan::Extract(_)) = scan(&raw, &opts) {
                check_extraction(name, &raw, &opts);
            }
        }
        let raw = fixture("phpmmp-mixed-related-inline-images.eml");
        let (docs, _) = check_extraction("mixed-related", &raw, &opts);
        let names: Vec<_> = docs.iter().map(|d| d.file_name.as_str()).collect();
        assert_eq!(names, ["logo.jpg", "background.jpg", "attachment.txt"]);
    }

    #[test]
    fn swiftmailer_names_types_and_encoded_rfc822() {
        let raw = fixture("phpmmp-swiftmailer-docx-pdf-odt-png-rfc822.eml");
        let (docs, out) = extract(&raw, &ExtractOptions::default());
        let got: Vec<_> = docs
            .iter()
            .map(|d| (d.file_name.as_str(), d.content_type.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "Hello from SwiftMailer.docx",
                    "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
                ),
                ("Hello from SwiftMailer.pdf", "application/pdf"),
                (
                    "Hello from SwiftMailer.odt",
                    "application/vnd.oasis.opendocument.text"
                ),
                ("Cours-Tutoriels-Serge-Tahé-1568x268.png", "image/png"),
                ("test-localhost.eml", "message/rfc822"),
            ]
        );
        // The base64 message/rfc822 is one document: its decoded bytes, a
        // message that itself still holds the four attachments.
        let nested = MessageParser::default()
            .parse(&docs[4].data)
            .expect("nested parses");
        assert_eq!(nested.attachments.len(), 4);
        assert!(docs[0].data.starts_with(b"PK"));
        assert!(docs[1].data.starts_with(b"%PDF"));
        assert!(out.len() < 6_000, "output is {} bytes", out.len());
        // Both QP bodies are still there byte for byte, before the block.
        let orig = MessageParser::default().parse(&raw).expect("parses");
        for id in [2usize, 3] {
            let p = &orig.parts[id];
            let body = &raw[p.offset_body as usize..p.offset_end as usize];
            assert!(contains(&out, body));
        }
    }

    fn b64_lines(data: &[u8]) -> String {
        String::from_utf8(base64_lines(data)).expect("ascii")
    }

    fn pdf_bytes(len: usize) -> Vec<u8> {
        let mut pdf = b"%PDF-1.4\n".to_vec();
        let mut x: u32 = 12345 ^ len as u32;
        while pdf.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            pdf.push((x >> 16) as u8);
        }
        pdf
    }

    const QP_BODY: &str = "Sehr geehrte Frau M=C3=BCller,\r\n\r\nanbei der Bescheid f=C3=BCr Ihr Kind. Diese Zeile ist l=C3=A4nger und wird=\r\n umgebrochen.\r\n\r\nMit freundlichen Gr=C3=BC=C3=9Fen\r\nIhr Landratsamt";
    const HTML: &str = "<html><head><meta charset=\"utf-8\"></head><body>\r\n<p>Sehr geehrte Frau Müller,</p>\r\n<p>anbei der Bescheid.</p>\r\n</body>\r\n</html>\r\n";

    fn handwritten(pdf: &[u8]) -> Vec<u8> {
        format!(
            "From: Amt <amt@landkreis.example>\r\nTo: eltern@example.org\r\nSubject: Ihr Bescheid\r\nDate: Mon, 2 Mar 2026 10:00:00 +0100\r\nMessage-ID: <1@landkreis.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--mix\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{QP_BODY}\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--alt--\r\n\r\n--mix\r\nContent-Type: application/pdf; name=\"Bescheid.pdf\"\r\nContent-Disposition: attachment; filename=\"Bescheid.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--mix--\r\n",
            b64_lines(HTML.as_bytes()),
            b64_lines(pdf),
        )
        .into_bytes()
    }

    #[test]
    fn handwritten_alternative_with_pdf() {
        let pdf = pdf_bytes(5000);
        let raw = handwritten(&pdf);
        let mut plan = plan_of(&raw, &ExtractOptions::default());
        let docs = std::mem::take(&mut plan.documents);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].file_name, "Bescheid.pdf");
        assert_eq!(docs[0].content_type, "application/pdf");
        assert_eq!(docs[0].data, pdf);
        let block = block_for(&docs);
        let out = rewrite(&raw, &plan, &block).expect("rewrite");
        check_extraction("handwritten", &raw, &ExtractOptions::default());

        // The QP body is untouched, byte for byte, and so is everything up
        // to its end (headers, preamble, part headers).
        let qp_end = memchr::memmem::find(&raw, QP_BODY.as_bytes()).expect("qp") + QP_BODY.len();
        assert_eq!(&out[..qp_end], &raw[..qp_end]);
        // The HTML decodes to the original with the block before </body>.
        let (plain, html) = bodies(&out);
        let at = HTML.find("</body>").expect("body");
        assert_eq!(
            html,
            format!("{}{}{}", &HTML[..at], block.html(), &HTML[at..])
        );
        // The plain text decodes to the original, a blank line, the block.
        let orig_plain =
            String::from_utf8(quoted_printable_decode(QP_BODY.as_bytes()).expect("qp decodes"))
                .expect("utf-8");
        assert_eq!(
            plain,
            format!("{orig_plain}\r\n\r\n{}", trim_crlf(&block.plain()))
        );
        assert!(plain.contains("gültig bis 06.12.2026, passwortgeschützt"));
        // The PDF is gone, its part header too; the structure is intact.
        assert!(!contains(&out, b"Bescheid.pdf\"\r\n"));
        assert!(!contains(&out, b"application/pdf"));
        assert!(out.ends_with(b"--alt--\r\n\r\n--mix--\r\n"));
        assert!(!contains(&out, b"--mix\r\n\r\n"));
        // QP lines stay within 76 characters.
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= 78, "{}", String::from_utf8_lossy(line));
        }
    }

    const SINGLE_HEADERS: &str = "Received: from app.landkreis.example by gw; Mon, 2 Mar 2026 10:00:00 +0100\r\nFrom: Scanner <scan@landkreis.example>\r\nTo: amt@landkreis.example\r\nSubject: Scan vom Kopierer\r\nContent-Type: application/pdf;\r\n\tname=\"scan 0815.pdf\"\r\nDate: Mon, 2 Mar 2026 10:00:00 +0100\r\nContent-Transfer-Encoding: base64\r\nMIME-Version: 1.0\r\nContent-Disposition: attachment; filename=\"scan 0815.pdf\"\r\nX-Custom: bleibt   so\r\n";

    #[test]
    fn single_part_attachment_becomes_text() {
        let pdf = pdf_bytes(3000);
        let raw = format!("{SINGLE_HEADERS}\r\n{}\r\n", b64_lines(&pdf)).into_bytes();
        let (docs, out) = check_extraction("single", &raw, &ExtractOptions::default());
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].file_name, "scan 0815.pdf");
        assert_eq!(docs[0].data, pdf);
        let text = String::from_utf8(out.clone()).expect("ascii output");
        let (head, body) = text.split_once("\r\n\r\n").expect("header block");
        let kept = |h: &str| -> Vec<String> {
            let mut fields: Vec<String> = Vec::new();
            for line in h.split("\r\n") {
                if line.starts_with([' ', '\t']) {
                    if let Some(last) = fields.last_mut() {
                        last.push_str(line);
                    }
                } else {
                    fields.push(line.to_string());
                }
            }
            fields
                .into_iter()
                .filter(|f| !f.to_ascii_lowercase().starts_with("content-"))
                .collect()
        };
        assert_eq!(kept(head), kept(SINGLE_HEADERS.trim_end()));
        assert!(head.ends_with(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        ));
        assert_eq!(count(head, "Content-"), 2);
        let msg = MessageParser::default().parse(&out).expect("parses");
        assert!(msg.root_part().is_content_type("text", "plain"));
        assert!(
            msg.body_text(0)
                .is_some_and(|t| t.contains(&url(0)) && t.contains("scan 0815.pdf"))
        );
        assert!(body.is_ascii());
    }

    #[test]
    fn single_part_without_mime_version_gets_one() {
        // A raw 8-bit header name must not trip the Content-* match.
        let raw = "From: a@example.org\r\nSubject: x\r\nContent\u{e4}x: y\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n";
        let (docs, out) = check_extraction("png", raw.as_bytes(), &ExtractOptions::default());
        assert_eq!(docs[0].file_name, "dokument-1.png");
        assert_eq!(docs[0].data, b"\x89PNG\r\n\x1a\n");
        let head = "From: a@example.org\r\nSubject: x\r\nContent\u{e4}x: y\r\nMIME-Version: 1.0\r\nContent-Type: text/plain";
        assert!(out.starts_with(head.as_bytes()));
    }

    #[test]
    fn only_attachments_get_a_text_part() {
        let (a, b) = (pdf_bytes(2000), pdf_bytes(3000));
        let raw = format!(
            "From: a@example.org\r\nSubject: Anlagen\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
            b64_lines(&a),
            b64_lines(&b)
        )
        .into_bytes();
        let (docs, out) = check_extraction("only-attachments", &raw, &ExtractOptions::default());
        assert_eq!(
            docs.iter()
                .map(|d| d.file_name.as_str())
                .collect::<Vec<_>>(),
            ["a.pdf", "dokument-2.bin"]
        );
        let msg = MessageParser::default().parse(&out).expect("parses");
        assert_eq!(msg.root_part().sub_parts().map(<[u32]>::len), Some(1));
        assert!(msg.parts[1].is_content_type("text", "plain"));
        assert!(out.ends_with(b"\r\n--b1--\r\n"));
        // Same with the close delimiter missing: it is added.
        let cut = raw.len() - b"--b1--\r\n".len();
        let (_, out) = check_extraction("unclosed", &raw[..cut], &ExtractOptions::default());
        assert!(out.ends_with(b"\r\n--b1--\r\n"));
    }

    #[test]
    fn mixed_without_text_body_gets_a_first_part() {
        let pdf = pdf_bytes(2000);
        let raw = format!(
            "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: image/gif\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\nR0lGODlhAQABAAAAACw=\r\n--b1\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
            b64_lines(&pdf)
        )
        .into_bytes();
        let (_, out) = check_extraction("no-text", &raw, &ExtractOptions::default());
        let msg = MessageParser::default().parse(&out).expect("parses");
        assert!(msg.parts[1].is_content_type("text", "plain"));
        assert!(msg.parts[2].is_content_type("image", "gif"));
        assert_eq!(msg.root_part().sub_parts().map(<[u32]>::len), Some(2));
    }

    fn simple(text_headers: &str, body: &str) -> Vec<u8> {
        format!(
            "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n{text_headers}\r\n\r\n{body}\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"Antrag.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
        )
        .into_bytes()
    }

    fn inserted(raw: &[u8], out: &[u8]) -> Vec<u8> {
        // Everything up to the cut PDF is unchanged; what the block added
        // sits between the text body and the close delimiter.
        let body_end =
            memchr::memmem::find(raw, b"\r\n--b1\r\nContent-Type: application/pdf").expect("pdf");
        assert_eq!(&out[..body_end], &raw[..body_end]);
        let close = memchr::memmem::rfind(out, b"\r\n--b1--").expect("close");
        out[body_end..close].to_vec()
    }

    #[test]
    fn seven_bit_text_gets_ascii_only() {
        let raw = simple(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit",
            "Guten Tag.",
        );
        let (_, out) = check_extraction("7bit", &raw, &ExtractOptions::default());
        let added = inserted(&raw, &out);
        assert!(added.is_ascii());
        let added = String::from_utf8(added).expect("ascii");
        assert!(added.starts_with("\r\n\r\n----"));
        assert!(added.contains("passwortgeschuetzt"));
        assert!(added.contains("Download ueber den Link, gueltig bis"));
        // No charset at all: us-ascii, the same.
        let raw = simple("Content-Type: text/plain", "Hallo");
        let (_, out) = check_extraction("no charset", &raw, &ExtractOptions::default());
        assert!(inserted(&raw, &out).is_ascii());
    }

    #[test]
    fn eight_bit_charsets() {
        // Latin-1: single bytes for the umlauts.
        let raw = simple(
            "Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit",
            "Gr\u{fc}\u{df}e",
        );
        let (_, out) = check_extraction("latin1", &raw, &ExtractOptions::default());
        let added = inserted(&raw, &out);
        assert!(contains(&added, b"g\xfcltig bis"));
        assert!(contains(&added, b"passwortgesch\xfctzt"));
        // UTF-8: as is.
        let raw = simple(
            "Content-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: 8bit",
            "Grüße",
        );
        let (_, out) = check_extraction("utf8", &raw, &ExtractOptions::default());
        assert!(contains(&inserted(&raw, &out), "gültig bis".as_bytes()));
        // 8bit without a charset, and charsets we do not write: ASCII.
        for headers in [
            "Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit",
            "Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit",
            "Content-Type: text/plain; charset=iso-2022-jp\r\nContent-Transfer-Encoding: quoted-printable",
        ] {
            let raw = simple(headers, "Text");
            let (_, out) = check_extraction(headers, &raw, &ExtractOptions::default());
            let added = inserted(&raw, &out);
            assert!(added.is_ascii() && !contains(&added, b"=C3"), "{headers}");
            assert!(contains(&added, b"gueltig"), "{headers}");
        }
    }

    #[test]
    fn base64_plain_text_is_reencoded() {
        let raw = simple(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64",
            &b64_lines("Grüße aus dem Amt\r\n".as_bytes()),
        );
        let (_, out) = check_extraction("b64 plain", &raw, &ExtractOptions::default());
        let (plain, _) = bodies(&out);
        assert!(plain.starts_with("Grüße aus dem Amt\r\n\r\n-----"));
        assert!(plain.contains("passwortgeschützt"));
    }

    #[test]
    fn qp_html_block_goes_before_body_close() {
        let html = "<html><body><p>Gr=C3=BC=C3=9Fe</p>\r\n<p>Eine lange Zeile, die umgebrochen werden muss, damit sie nicht zu lang =\r\nwird.</p></BODY></html>";
        let raw = simple(
            "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable",
            html,
        );
        let (_, out) = check_extraction("qp html", &raw, &ExtractOptions::default());
        assert!(contains(&out, b"<p>Eine lange Zeile, die umgebrochen werden muss, damit sie nicht zu lang =\r\nwird.</p>=\r\n<div"));
        let (_, decoded) = bodies(&out);
        assert!(decoded.contains("wird.</p><div class=\"schleuse-dokumente\">"));
        assert!(decoded.ends_with("</div>\r\n</BODY></html>"));
        // No </body>: the block goes at the end.
        let raw = simple(
            "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit",
            "<p>Hallo</p>",
        );
        let (_, out) = check_extraction("no body tag", &raw, &ExtractOptions::default());
        let (_, decoded) = bodies(&out);
        assert!(decoded.starts_with("<p>Hallo</p>\r\n<div class="));
        assert!(decoded.ends_with("</div>"));
    }

    #[test]
    fn file_names_are_escaped_in_html() {
        let raw = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<html><body><p>Hi</p></body></html>\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''%3Cscript%3E%26%22x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n".to_vec();
        let (docs, out) = check_extraction("escape", &raw, &ExtractOptions::default());
        assert_eq!(docs[0].file_name, "<script>&\"x.pdf");
        assert!(!contains(&out, b"<script>"));
        assert!(contains(&out, b"&lt;script&gt;&amp;&quot;x.pdf</a>"));
        // HTML-only message: a 7bit HTML part gets the ASCII block only,
        // no text part is added.
        let msg = MessageParser::default().parse(&out).expect("parses");
        assert_eq!(msg.parts.len(), 2);
    }

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(
            sanitize_file_name(" a\r\nb\u{0}\u{202E}c.pdf "),
            "a  bc.pdf"
        );
        assert_eq!(sanitize_file_name("C:\\x\\y.doc"), "C:_x_y.doc");
        let long = format!("{}.pdf", "ä".repeat(500));
        let s = sanitize_file_name(&long);
        assert_eq!(s.chars().count(), 200);
        assert!(s.ends_with("ä.pdf"));
        assert_eq!(sanitize_file_name("..."), "");
    }

    #[test]
    fn signed_and_encrypted_are_sealed() {
        let signed = |inner: &str| {
            format!("From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=s1\r\n\r\n--s1\r\n{inner}\r\n--s1\r\nContent-Type: application/pgp-signature; name=signature.asc\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\nxyz\r\n-----END PGP SIGNATURE-----\r\n--s1--\r\n").into_bytes()
        };
        let opts = ExtractOptions::default();
        let plain = signed("Content-Type: text/plain\r\n\r\nHallo");
        assert!(matches!(
            scan(&plain, &opts),
            Ok(Scan::Sealed {
                has_attachments: false
            })
        ));
        let with_pdf = signed(
            "Content-Type: multipart/mixed; boundary=m1\r\n\r\n--m1\r\nContent-Type: text/plain\r\n\r\nHallo\r\n--m1\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m1--",
        );
        assert!(matches!(
            scan(&with_pdf, &opts),
            Ok(Scan::Sealed {
                has_attachments: true
            })
        ));
        let encrypted = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e1\r\n\r\n--e1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e1\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n--e1--\r\n";
        assert!(matches!(
            scan(encrypted, &opts),
            Ok(Scan::Sealed {
                has_attachments: true
            })
        ));
        let smime = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n";
        assert!(matches!(
            scan(smime, &opts),
            Ok(Scan::Sealed {
                has_attachments: true
            })
        ));
        // A signed part with attachments further down: not altered either.
        let nested = format!(
            "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o1\r\n\r\n--o1\r\n{}\r\n--o1\r\nContent-Type: text/plain\r\n\r\nListen-Fu\u{df}zeile\r\n--o1--\r\n",
            String::from_utf8_lossy(&with_pdf)
                .split_once("MIME-Version: 1.0\r\n")
                .map(|x| x.1)
                .unwrap_or_default()
        );
        assert!(matches!(
            scan(nested.as_bytes(), &opts),
            Ok(Scan::Sealed {
                has_attachments: true
            })
        ));
    }

    fn related(image_len: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let small = pdf_bytes(300);
        let large = pdf_bytes(image_len);
        let raw = format!(
            "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/related; type=\"text/html\"; boundary=r1\r\n\r\n--r1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><body><img src=3D\"cid:logo\"><img src=3D\"cid:foto\"></body></html>\r\n--r1\r\nContent-Type: image/png; name=logo.png\r\nContent-ID: <logo>\r\nContent-Disposition: inline; filename=logo.png\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--r1\r\nContent-Type: image/jpeg\r\nContent-ID: <foto>\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--r1--\r\n",
            b64_lines(&small),
            b64_lines(&large)
        )
        .into_bytes();
        (raw, small, large)
    }

    #[test]
    fn small_inline_images_stay_large_ones_go() {
        let (raw, small, large) = related(300 * 1024);
        let (docs, out) = check_extraction("related", &raw, &ExtractOptions::default());
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].data, large);
        assert_eq!(docs[0].file_name, "dokument-1.jpg");
        assert!(contains(&out, b64_lines(&small).as_bytes()));
        // Both small: nothing to do.
        let (raw, _, _) = related(1000);
        assert!(matches!(
            scan(&raw, &ExtractOptions::default()),
            Ok(Scan::Clean)
        ));
    }

    #[test]
    fn nested_rfc822_parts_are_cut_in_place() {
        let pdf = pdf_bytes(4000);
        let raw = format!(
            "From: a@example.org\r\nSubject: Fwd: Antrag\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o1\r\n\r\n--o1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSiehe unten.\r\n--o1\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\nFrom: b@example.org\r\nSubject: Antrag\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=i1\r\n\r\n--i1\r\nContent-Type: text/plain\r\n\r\nDer weitergeleitete Text.\r\n--i1\r\nContent-Type: application/pdf; name=antrag.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--i1--\r\n--o1--\r\n",
            b64_lines(&pdf)
        )
        .into_bytes();
        let (docs, out) = check_extraction("nested", &raw, &ExtractOptions::default());
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].file_name, "antrag.pdf");
        assert_eq!(docs[0].data, pdf);
        let msg = MessageParser::default().parse(&out).expect("parses");
        let inner = msg.parts[2].message().expect("forward stays");
        assert!(
            inner
                .body_text(0)
                .is_some_and(|t| t.contains("Der weitergeleitete Text."))
        );
        assert!(inner.attachments.is_empty());
    }

    #[test]
    fn nested_rfc822_without_body_left_is_one_document() {
        let pdf = pdf_bytes(4000);
        let raw = format!(
            "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o1\r\n\r\n--o1\r\nContent-Type: text/plain\r\n\r\nSiehe Anhang.\r\n--o1\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@example.org\r\nSubject: Scan / Kopierer\r\nMIME-Version: 1.0\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--o1--\r\n",
            b64_lines(&pdf)
        )
        .into_bytes();
        let (docs, _) = check_extraction("nested single", &raw, &ExtractOptions::default());
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].file_name, "Scan _ Kopierer.eml");
        assert_eq!(docs[0].content_type, "message/rfc822");
        assert!(docs[0].data.starts_with(b"From: b@example.org\r\n"));
    }

    #[test]
    fn nested_rfc822_fixtures() {
        let opts = ExtractOptions::default();
        for name in [
            "phpmmp-nested-message-rfc822.eml",
            "dovecot-malformed-nested-rfc822.eml",
        ] {
            // Their forwarded messages hold no attachments: nothing to do.
            assert!(
                matches!(scan(&fixture(name), &opts), Ok(Scan::Clean)),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_transfer_encoding_gets_a_new_text_part() {
        let raw = simple(
            "Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode",
            "begin 644 x\r\nend",
        );
        let (_, out) = check_extraction("x-uuencode", &raw, &ExtractOptions::default());
        assert!(contains(&out, b"begin 644 x\r\nend\r\n--b1--"));
        let msg = MessageParser::default().parse(&out).expect("parses");
        assert!(msg.parts[1].is_content_type("text", "plain"));
        assert_eq!(
            msg.parts[1].content_transfer_encoding(),
            Some("quoted-printable")
        );
        // UTF-16 HTML, no plain text: the HTML stays as it is, the block
        // goes into a new text part.
        let raw = simple(
            "Content-Type: text/html; charset=utf-16\r\nContent-Transfer-Encoding: base64",
            "//48AGgA",
        );
        let (_, out) = extract(&raw, &ExtractOptions::default());
        assert!(contains(&out, b"//48AGgA\r\n--b1--"));
        assert!(matches!(
            scan(&out, &ExtractOptions::default()),
            Ok(Scan::Clean)
        ));
        let (plain, _) = bodies(&out);
        assert_eq!(count(&plain, &url(0)), 1);
    }

    #[test]
    fn plan_and_block_must_match() {
        let raw = simple("Content-Type: text/plain", "Hallo");
        let plan = plan_of(&raw, &ExtractOptions::default());
        let empty = Block {
            language: Language::De,
            entries: Vec::new(),
        };
        assert!(matches!(
            rewrite(&raw, &plan, &empty),
            Err(ExtractError::BlockMismatch {
                expected: 1,
                got: 0
            })
        ));
        let block = block_for(&plan.documents);
        assert!(matches!(
            rewrite(&raw[1..], &plan, &block),
            Err(ExtractError::PlanMismatch)
        ));
        assert!(matches!(
            scan(b"", &ExtractOptions::default()),
            Err(ExtractError::Unparseable)
        ));
    }

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

    #[test]
    fn malformed_input_never_panics() {
        let opts = ExtractOptions::default();
        for (name, _) in FIXTURES {
            let raw = fixture(name);
            let len = raw.len().min(40_000);
            let raw = &raw[..len];
            let step = (len / 97).max(1);
            let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut variants: Vec<Vec<u8>> =
                (0..len).step_by(step).map(|n| raw[..n].to_vec()).collect();
            for _ in 0..60 {
                let mut v = raw.to_vec();
                for _ in 0..4 {
                    let at = (next() as usize) % len.max(1);
                    if let Some(b) = v.get_mut(at) {
                        *b = [b'-', b'\r', b'\n', b'=', b':', b'"', 0, 0xff][(next() % 8) as usize];
                    }
                }
                variants.push(v);
            }
            for v in variants {
                for opts in [
                    opts,
                    ExtractOptions {
                        inline_image_max: 0,
                    },
                ] {
                    if let Ok(Scan::Extract(plan)) = scan(&v, &opts) {
                        let block = block_for(&plan.documents);
                        let out = rewrite(&v, &plan, &block).expect("a plan rewrites");
                        assert!(MessageParser::default().parse(&out).is_some(), "{name}");
                        // Whatever the damage, nothing is left behind.
                        // Whatever the damage, nothing is left behind.
                        assert!(matches!(scan(&out, &opts), Ok(Scan::Clean)), "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_fixtures_rewrite() {
        let raw = fixture("mimekit-missing-end-boundary.eml");
        let (docs, out) = check_extraction("missing end", &raw, &ExtractOptions::default());
        // Its base64 body was never closed; it is decoded all the same, and
        // the multipart gets the close delimiter it lacked.
        assert_eq!(docs[0].data, b"This is the zip attachment.");
        assert!(
            out.ends_with(b"passwortgeschuetzt\r\n------=_NextPart_000_003F_01CE98CE.6E826F90--")
        );
        for name in [
            "dovecot-malformed-long-boundary.eml",
            "dovecot-malformed-boundary-prefix.eml",
            "dovecot-unterminated-quoted-boundary.eml",
            "mimekit-deeply-nested.eml",
        ] {
            assert!(
                scan(
                    &fixture(name),
                    &ExtractOptions {
                        inline_image_max: 0
                    }
                )
                .is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn ten_megabyte_pdf() {
        let pdf = pdf_bytes(10 * 1024 * 1024);
        let raw = handwritten(&pdf);
        let started = std::time::Instant::now();
        let mut plan = plan_of(&raw, &ExtractOptions::default());
        let docs = std::mem::take(&mut plan.documents);
        let out = rewrite(&raw, &plan, &block_for(&docs)).expect("rewrite");
        let took = started.elapsed();
        assert_eq!(docs[0].data.len(), pdf.len());
        assert!(out.len() < 5_000);
        // Generous for unoptimised test builds on a slow machine; quadratic
        // work would take minutes.
        assert!(took.as_secs() < 20, "took {took:?}");
    }
}
