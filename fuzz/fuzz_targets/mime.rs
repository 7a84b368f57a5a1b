//! The MIME transform: attachment extraction (`scan`) and the rewrite that
//! puts the link block in their place. Besides never panicking, it holds
//! the transform's own promise (SPEC §7, "documents never travel"): a plan
//! rewrites to a message that parses and in which a second scan finds
//! nothing left to take out, or the rewrite refuses the message as
//! malformed (it is then not relayed). The input is first given CRLF line endings throughout, as
//! every message has by the time it is transformed (DATA refuses bare CR
//! and LF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_parser::MessageParser;
use schleuse::config::Language;
use schleuse::session::wire::has_bare_line_ending;
use schleuse::transform::attachments::{ExtractError, ExtractOptions, Scan, rewrite, scan};
use schleuse::transform::linkblock::{Block, Entry};

fn block(plan: &schleuse::transform::attachments::Plan) -> Block {
    Block {
        language: Language::De,
        entries: plan
            .documents
            .iter()
            .enumerate()
            .map(|(i, d)| Entry {
                file_name: d.file_name.clone(),
                size: d.data.len() as u64,
                url: format!("https://dokumente.fuzz.example/d/token{i}"),
                expires_at: 1_767_139_200_000,
                protected: i % 2 == 1,
            })
            .collect(),
    }
}

/// Every lone CR or LF becomes CRLF.
fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    let mut i = 0;
    while i < data.len() {
        match (data[i], data.get(i + 1)) {
            (b'\r', Some(b'\n')) => i += 1,
            (b'\r' | b'\n', _) => {}
            (b, _) => {
                out.push(b);
                i += 1;
                continue;
            }
        }
        out.extend_from_slice(b"\r\n");
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let message = crlf(data);
    assert!(!has_bare_line_ending(&message));
    let data = &message[..];
    for inline_image_max in [0, 100 * 1024] {
        let opts = ExtractOptions { inline_image_max };
        let Ok(Scan::Extract(plan)) = scan(data, &opts) else {
            continue;
        };
        let out = match rewrite(data, &plan, &block(&plan)) {
            Ok(out) => out,
            Err(ExtractError::Malformed) => continue,
            Err(e) => panic!("the rewrite failed: {e}"),
        };
        assert!(
            MessageParser::default().parse(&out).is_some(),
            "the rewritten message does not parse"
        );
        let again = scan(&out, &opts);
        assert!(
            matches!(again, Ok(Scan::Clean)),
            "the rewritten message still has attachments: {again:?}"
        );
    }
});
