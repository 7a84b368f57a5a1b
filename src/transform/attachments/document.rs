//! Turning a part that goes into a [`Document`]: its bytes, decoded once,
//! and a file name that is safe to store and to offer for download.
//!
//! Names come from the sender and end up in a link page, a
//! `Content-Disposition` and an admin listing, so they are cleaned here,
//! once, before anything stores them.

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Message, MessagePart, PartType};

use super::Document;
use super::classify::Cte;
use crate::html::is_bidi_control;

/// Stored file names are cut to this many characters (extension kept).
const MAX_FILE_NAME_CHARS: usize = 200;

/// Where a document's bytes come from, resolved after the walk.
pub(super) struct DocSpec {
    pub(super) name: Option<String>,
    pub(super) stem: &'static str,
    pub(super) content_type: String,
    /// Path of part ids (through nested messages) whose decoded body
    /// mail-parser already holds: moved out instead of decoded again.
    pub(super) take: Option<Vec<u32>>,
    /// Otherwise (or if taking fails): decode `raw[start..end]` by `cte`.
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) cte: Cte,
}

pub(super) fn materialize(
    raw: &[u8],
    msg: &mut Message<'_>,
    spec: DocSpec,
    index: usize,
) -> Document {
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
pub(super) fn decode_body(body: &[u8], cte: Cte) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
