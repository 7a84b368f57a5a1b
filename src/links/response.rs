//! The headers that let a browser do nothing with a document but save it,
//! and let a page load nothing but itself.
//!
//! The file name and type come from the sender of the mail, so they are
//! checked here before they become header values; the pages get one fixed
//! set of headers, built once.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;

use super::LinkView;
use super::page;

/// The document itself. Nothing in it may be rendered by the browser
/// (`attachment`, `nosniff`, a sandboxing CSP), whatever the sender
/// declared its type to be.
pub(super) fn file_response(view: &LinkView, data: Vec<u8>) -> Response {
    let len = data.len();
    let mut resp = Response::new(Body::from(data));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(&view.content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&view.file_name),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The declared type if it is a plain `type/subtype` (RFC 6838 names;
/// parameters dropped), else `application/octet-stream`.
fn content_type(declared: &str) -> HeaderValue {
    const FALLBACK: HeaderValue = HeaderValue::from_static("application/octet-stream");
    fn restricted_name(name: &str) -> bool {
        (1..=127).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    }
    let essence = declared.split(';').next().unwrap_or_default().trim();
    match essence.split_once('/') {
        Some((ty, sub)) if restricted_name(ty) && restricted_name(sub) => {
            HeaderValue::from_str(&essence.to_ascii_lowercase()).unwrap_or(FALLBACK)
        }
        _ => FALLBACK,
    }
}

/// `attachment` with an ASCII `filename` for old clients and the exact name
/// as `filename*` (RFC 6266, RFC 5987). Characters that could end the
/// quoted string, name a directory or reorder the displayed name are
/// replaced in both.
fn content_disposition(name: &str) -> HeaderValue {
    let unsafe_char =
        |c: char| c.is_control() || crate::html::is_bidi_control(c) || matches!(c, '/' | '\\');
    let name: String = name
        .trim()
        .chars()
        .map(|c| if unsafe_char(c) { '_' } else { c })
        .collect();
    let name = if name.is_empty() {
        "download".to_owned()
    } else {
        name
    };

    let mut ascii = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            // `%` too: some browsers decode `%xx` in the plain filename.
            '"' | '%' => ascii.push('_'),
            c if c == ' ' || c.is_ascii_graphic() => ascii.push(c),
            c => match super::format::transliterate(c) {
                Some(t) if !t.contains('"') => ascii.push_str(t),
                _ => ascii.push('_'),
            },
        }
    }

    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // RFC 5987 attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

/// The headers of every HTML page. The CSP allows exactly the one inline
/// style of [`page::STYLE`] by its hash, and nothing else.
pub(super) fn page_headers() -> HeaderMap {
    use base64::Engine as _;
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, page::STYLE.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ct = |s: &str| content_type(s).to_str().unwrap().to_owned();
        assert_eq!(ct("application/pdf"), "application/pdf");
        assert_eq!(ct("Text/Plain; charset=utf-8"), "text/plain");
        assert_eq!(
            ct("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        for bad in [
            "",
            "pdf",
            "/pdf",
            "application/",
            "a/b/c",
            "text/html\r\nX: y",
            "täxt/plain",
            "a b/c",
        ] {
            assert_eq!(ct(bad), "application/octet-stream", "{bad:?}");
        }
    }

    #[test]
    fn content_dispositions() {
        let cd = |s: &str| content_disposition(s).to_str().unwrap().to_owned();
        assert_eq!(
            cd("a.pdf"),
            "attachment; filename=\"a.pdf\"; filename*=UTF-8''a.pdf"
        );
        assert_eq!(
            cd("Größe 100%.pdf"),
            "attachment; filename=\"Groesse 100_.pdf\"; filename*=UTF-8''Gr%C3%B6%C3%9Fe%20100%25.pdf"
        );
        assert_eq!(
            cd("a\"b\\c/d\r\ne\u{202E}f.pdf"),
            "attachment; filename=\"a_b_c_d__e_f.pdf\"; filename*=UTF-8''a%22b_c_d__e_f.pdf"
        );
        assert_eq!(
            cd("  "),
            "attachment; filename=\"download\"; filename*=UTF-8''download"
        );
        assert_eq!(
            cd("日本.pdf"),
            "attachment; filename=\"__.pdf\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.pdf"
        );
    }
}
