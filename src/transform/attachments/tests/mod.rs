//! Scan and rewrite end to end, on real-world fixtures and on messages
//! written here for one case each. The helpers check what every extraction
//! must keep true, whatever the message.

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::classify::cte_of;
use super::document::decode_body;
use super::encode::base64_lines;
use super::{
    DEFAULT_INLINE_IMAGE_MAX, Document, ExtractError, ExtractOptions, Plan, Scan, rewrite, scan,
};
use crate::config::Language;
use crate::transform::linkblock::{Block, Entry};

mod fixtures;
mod fuzzed;
mod structure;
mod text;

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

fn simple(text_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n{text_headers}\r\n\r\n{body}\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"Antrag.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
    )
    .into_bytes()
}
