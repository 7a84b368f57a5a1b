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
//!
//! The submodules follow the two steps. For [`scan`]: `classify` tells
//! what each part is, `walk` decides per part what stays and what goes,
//! `plan` picks where the block will go, `document` turns the parts that
//! go into [`Document`]s. For [`rewrite`]: `splice` copies and cuts,
//! `encode` writes the block in each part's own terms.

use std::fmt;

mod classify;
mod document;
mod encode;
mod plan;
mod splice;
mod walk;

#[cfg(test)]
mod tests;

pub use plan::scan;
pub use splice::rewrite;

use plan::NewText;
use walk::TextTarget;

/// Deeper nesting than this is refused rather than recursed into: the walk
/// is recursive and the message is attacker-controlled.
const MAX_DEPTH: usize = 64;

/// Inline images up to this decoded size stay in the message by default
/// (logos, signature images).
pub const DEFAULT_INLINE_IMAGE_MAX: usize = 100 * 1024;

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
    /// What the scan went by; [`rewrite`] checks its result with them.
    opts: ExtractOptions,
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

impl Plan {
    /// The first byte of the scanned message that [`rewrite`] changes:
    /// every byte before it is copied as it is. Past the header block, the
    /// header can be rewritten before or after the documents come out, to
    /// the same result.
    pub fn first_edit(&self) -> usize {
        let text = [&self.plain, &self.html]
            .into_iter()
            .flatten()
            .map(|t| t.start);
        let new = match &self.new_text {
            None => None,
            Some(NewText::Insert { at, .. }) => Some(*at),
            Some(NewText::ReplaceAll { start, .. }) => Some(*start),
            Some(NewText::SinglePart { .. }) => Some(0),
        };
        self.cuts
            .iter()
            .map(|c| c.0)
            .chain(text)
            .chain(new)
            .min()
            .unwrap_or(self.raw_len)
    }
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
