//! Real-world messages from other MIME parsers' test corpora
//! (`../shared/fixtures/`): multipart, 8-bit, odd charsets, S/MIME and PGP,
//! DSNs and deliberately malformed MIME. Each must get a clear answer,
//! nothing may crash; a message without documents reaches the upstream byte
//! for byte apart from the gateway's own header at the top; a message with
//! documents arrives without their bytes, with a link per document in its
//! text and HTML parts, and each link serves the original bytes (SPEC §7).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

/// The corpus keeps its sources' line endings; SMTP needs CRLF.
fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn has_from(message: &[u8]) -> bool {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    message[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.len() > 5 && line[..5].eq_ignore_ascii_case(b"from:"))
}

#[test]
fn real_world_messages_arrive_with_links_instead_of_documents() {
    let mut dir: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("../shared/fixtures is present beside the repository")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    dir.sort();
    assert!(
        dir.len() >= 30,
        "expected the fixture corpus, found {}",
        dir.len()
    );

    let mut env = Env::new();
    // Some of the corpus has lines far over 998 octets; the gateway relays
    // them unchanged, so the stand-in here is a tolerant relay.
    let up = env.start_upstream(&UpstreamOpts {
        line_limit: Some(1 << 20),
        ..UpstreamOpts::default()
    });
    let mut conf = GatewayConf::relay(up.port);
    conf.listeners = vec![ListenerConf::trusted_plain("corpus")];
    conf.max_message_size = "2MB";
    env.write_config(&conf);
    env.add_user("corpus", "corpus-Passw0rd!", &["*"]);
    let gw = env.start_gateway();

    let link_port = conf.link_port;
    let mut smtp = Smtp::connect(gw.port());
    smtp.ehlo();
    let mut accepted = Vec::new();
    let mut sealed = Vec::new();
    for path in &dir {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut message = to_crlf(&std::fs::read(path).expect("read fixture"));
        // As the corpus README says: a few are bare MIME entities; the
        // gateway requires a From: (DKIM signs it), so give them one.
        if !has_from(&message) {
            message.splice(0..0, b"From: sender@example.com\r\n".iter().copied());
        }
        // To find each one among the relayed messages, changed or not.
        let tag = format!("X-Fixture: {name}\r\n");
        message.splice(0..0, tag.bytes());
        let r = smtp.send("sender@example.com", &["r@example.org"], &message);
        match r.code {
            250 => accepted.push((name, message)),
            // Signed or encrypted mail with documents cannot be changed, and
            // `[attachments] signed = "reject"` (the default) refuses it.
            554 if r.text().contains("signed or encrypted") => sealed.push(name),
            500..=599 => panic!("{name}: refused: {r}\n{}", gw.log()),
            _ => panic!("{name}: unexpected reply {r}\n{}", gw.log()),
        }
    }
    smtp.quit();
    assert!(
        sealed.len() <= 5,
        "too many refused as signed: {sealed:?}\n{}",
        gw.log()
    );

    let delivered = up.wait_for(accepted.len(), Duration::from_secs(60));
    assert_eq!(delivered.len(), accepted.len(), "{}", gw.log());
    let mut with_documents = 0;
    for (name, message) in &accepted {
        let relayed = delivered
            .iter()
            .find(|d| d.header("X-Fixture").as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name}: not relayed"));
        let originals = documents_of(message);
        if originals.is_empty() {
            // Nothing to take out: byte for byte, apart from our headers.
            assert!(
                added_headers(&relayed.eml, message).is_ok(),
                "{name}: changed although it has no documents"
            );
            continue;
        }
        with_documents += 1;
        check_links(name, message, &relayed.eml, &originals, link_port);
    }
    assert!(
        with_documents >= 8,
        "only {with_documents} fixtures had documents"
    );
}

/// One document as an independent reading of the original sees it.
struct Original {
    /// A few of its encoded body lines (must not be relayed).
    lines: Vec<String>,
    /// mail-parser's decoded contents (lossy UTF-8 for text parts).
    contents: Vec<u8>,
    /// The encoded body as sent.
    raw: Vec<u8>,
}

impl Original {
    /// The download is this document: mail-parser's reading, or (for text
    /// parts, which mail-parser returns as lossy UTF-8, and for a part whose
    /// closing boundary is missing, which it leaves undecoded) the base64
    /// decoding of the body as sent.
    fn is(&self, downloaded: &[u8]) -> bool {
        use base64::Engine;
        self.contents == downloaded
            || String::from_utf8_lossy(downloaded).as_bytes() == self.contents
            // Not base64 at all ("This is an attachment" under a base64
            // label): any decoding is garbage; mail-parser's lenient one is
            // what its own contents() would have given for a binary part.
            || mail_parser::decoders::base64::base64_decode(&self.raw).as_deref() == Some(downloaded)
            || [&self.contents, &self.raw].iter().any(|encoded| {
                let compact: Vec<u8> = encoded
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .is_ok_and(|d| d == downloaded)
            })
    }
}

/// What an independent reading (mail-parser's own attachment list) calls a
/// document: every attachment with a file name or an attachment
/// disposition, and every non-text part over 100 KB, except inline images
/// up to the default threshold.
fn documents_of(message: &[u8]) -> Vec<Original> {
    let Some(parsed) = mail_parser::MessageParser::new().parse(message) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect_documents(&parsed, message, &mut out);
    out
}

/// A forwarded message (message/rfc822) stays where the gateway can cut
/// inside it, and its own documents count; when it is base64/QP-encoded
/// (parsed from a decoded copy) it is one document as a whole.
fn collect_documents(parsed: &mail_parser::Message<'_>, outer: &[u8], out: &mut Vec<Original>) {
    use mail_parser::MimeHeaders;
    let sealed = parsed.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("signed") || s.eq_ignore_ascii_case("encrypted")
            })
    });
    if sealed {
        return;
    }
    let range = outer.as_ptr_range();
    let in_outer = range.contains(&parsed.raw_message.as_ptr());
    let base = if in_outer {
        parsed.raw_message.as_ptr() as usize - outer.as_ptr() as usize
    } else {
        0
    };
    // A message that is one binary part (a scanner's PDF, an image) has no
    // "attachments" in mail-parser's sense: its body is the document.
    let root_binary = parsed.parts.first().filter(|p| {
        parsed.parts.len() == 1
            && p.content_type().is_some_and(|ct| {
                !ct.ctype().eq_ignore_ascii_case("text")
                    && !ct.ctype().eq_ignore_ascii_case("multipart")
            })
    });
    for part in root_binary.into_iter().chain(parsed.attachments()) {
        if let mail_parser::PartType::Message(inner) = &part.body
            && range.contains(&inner.raw_message.as_ptr())
        {
            collect_documents(inner, outer, out);
            continue;
        }
        let named = part.attachment_name().is_some_and(|n| !n.trim().is_empty());
        let disposition = part
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
        let is_text = part
            .content_type()
            .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("text"));
        let big = part.contents().len() > 100 * 1024;
        // Inline images (a Content-ID, no attachment disposition) up to the
        // default `inline_image_max` stay in the message.
        let small_inline_image = !disposition
            && !big
            && part.content_id().is_some()
            && part
                .content_type()
                .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("image"));
        if (is_text && !disposition) || small_inline_image || !(named || disposition || big) {
            continue;
        }
        let start = base + part.offset_body as usize;
        let end = (base + part.offset_end as usize).min(outer.len());
        let raw = if in_outer && start < end {
            &outer[start..end]
        } else {
            &[][..]
        };
        let lines: Vec<String> = String::from_utf8_lossy(raw)
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= 60)
            .take(5)
            .map(str::to_owned)
            .collect();
        let contents = match &part.body {
            mail_parser::PartType::Message(inner) => inner.raw_message.to_vec(),
            _ => part.contents().to_vec(),
        };
        out.push(Original {
            lines,
            contents,
            raw: raw.to_vec(),
        });
    }
}

/// The relayed copy carries none of a document's encoded lines, lists a
/// link per document in the text (and HTML) part, and every link serves
/// exactly one original document's bytes.
fn check_links(
    name: &str,
    original: &[u8],
    relayed: &[u8],
    documents: &[Original],
    link_port: u16,
) {
    let text = String::from_utf8_lossy(relayed);
    for doc in documents {
        for l in &doc.lines {
            assert!(
                !text.contains(l.as_str()),
                "{name}: attachment bytes still relayed: {l}"
            );
        }
    }
    let parsed = mail_parser::MessageParser::new()
        .parse(relayed)
        .unwrap_or_else(|| panic!("{name}: relayed copy does not parse"));
    let plain = parsed
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let prefix = format!("http://127.0.0.1:{link_port}/d/");
    let tokens = link_tokens(&plain, &prefix);
    assert!(
        tokens.len() >= documents.len(),
        "{name}: {} links in the text part for {} documents:\n{plain}",
        tokens.len(),
        documents.len()
    );
    let has_html = mail_parser::MessageParser::new()
        .parse(original)
        .is_some_and(|m| {
            m.html_body.iter().any(|&i| {
                use mail_parser::MimeHeaders;
                m.part(i).is_some_and(|p| {
                    p.content_type().is_some_and(|ct| {
                        ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("html"))
                    })
                })
            })
        });
    if has_html {
        let html = parsed
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let in_html = link_tokens(&html, &prefix);
        assert_eq!(
            in_html, tokens,
            "{name}: HTML and text list different links"
        );
    }
    for token in &tokens {
        let r = http_post_form(link_port, &format!("/d/{token}"), &[], &[])
            .unwrap_or_else(|e| panic!("{name}: download: {e}"));
        assert_eq!(
            r.status, 200,
            "{name}: download answered {}: {}",
            r.status, r.body
        );
        assert!(
            documents.iter().any(|doc| doc.is(&r.bytes)) || is_extra_document(original, &r.bytes),
            "{name}: a download ({:?}) matches none of the {} original documents",
            String::from_utf8_lossy(&r.bytes[..r.bytes.len().min(80)]),
            documents.len()
        );
    }
}

/// A document the gateway took out that the independent reading above does
/// not count (e.g. a whole encoded message/rfc822 part): it must still be
/// the decoded content of some part of the original.
fn is_extra_document(original: &[u8], data: &[u8]) -> bool {
    fn walk(m: &mail_parser::Message<'_>, data: &[u8]) -> bool {
        m.parts.iter().any(|p| match &p.body {
            mail_parser::PartType::Message(inner) => {
                inner.raw_message.as_ref() == data || walk(inner, data)
            }
            _ => p.contents() == data,
        })
    }
    mail_parser::MessageParser::new()
        .parse(original)
        .is_some_and(|m| walk(&m, data))
}

fn link_tokens(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect()
        })
        .collect()
}
