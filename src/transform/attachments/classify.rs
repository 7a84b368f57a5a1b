//! What a single MIME part is, and whether it is a document.
//!
//! Kept apart from the walk so the rules of SPEC §7 (what travels, what
//! becomes a link) can be read in one place, without the offsets and
//! nesting that the walk has to deal with.

use mail_parser::{MessagePart, MimeHeaders, PartType};

use super::ExtractOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cte {
    SevenBit,
    /// 8bit or binary.
    EightBit,
    QuotedPrintable,
    Base64,
    Unknown,
}

/// How text can be written into a part, by its declared charset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Charset {
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
pub(super) enum Parent {
    /// The root of the message or of a nested message.
    Root,
    Related,
    Digest,
    Other,
}

/// The MIME facts about one part that the decisions need.
pub(super) struct Info<'p> {
    pub(super) ty: String,
    pub(super) sub: String,
    pub(super) attachment: bool,
    pub(super) has_name: bool,
    pub(super) name: Option<&'p str>,
    pub(super) cid: Option<&'p str>,
    pub(super) cte: Cte,
    pub(super) charset: Charset,
}

impl<'p> Info<'p> {
    pub(super) fn of(part: &'p MessagePart<'_>, parent: Parent) -> Info<'p> {
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

    pub(super) fn is_message(&self) -> bool {
        self.ty == "message" && (self.sub == "rfc822" || self.sub == "global")
    }

    /// `type/subtype` safe to hand on (it ends up in an HTTP header).
    pub(super) fn mime(&self) -> String {
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

pub(super) fn cte_of(part: &MessagePart<'_>) -> Cte {
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

/// Whether a leaf part is a document to take out (the rules in the module
/// docs of [`super`]). `parent` matters for images: inline ones stay up to
/// [`ExtractOptions::inline_image_max`].
pub(super) fn is_attachment(
    part: &MessagePart<'_>,
    info: &Info<'_>,
    parent: Parent,
    opts: &ExtractOptions,
) -> bool {
    if info.attachment {
        return true;
    }
    match info.ty.as_str() {
        "text" | "multipart" | "message" => false,
        "image" if info.cid.is_some() || parent == Parent::Related => {
            decoded_len(part) > opts.inline_image_max
        }
        _ if !info.has_name
            && STRUCTURAL
                .iter()
                .any(|(t, s)| info.ty == *t && info.sub == *s) =>
        {
            false
        }
        _ => info.has_name || decoded_len(part) > 0,
    }
}

/// The size that counts against the inline-image limit; when mail-parser
/// could not decode the body, estimated from the encoded length (line
/// breaks included, so a little high).
fn decoded_len(part: &MessagePart<'_>) -> usize {
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
