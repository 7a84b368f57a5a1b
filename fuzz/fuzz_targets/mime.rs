//! The MIME transform: attachment extraction (`scan`) and the rewrite that
//! puts the link block in their place. Besides never panicking, it holds
//! the transform's own promise (SPEC §7, "documents never travel"): a plan
//! rewrites, the result parses, and scanning it again finds nothing left
//! to take out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_parser::MessageParser;
use schleuse::links::Language;
use schleuse::transform::attachments::{ExtractOptions, Scan, rewrite, scan};
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

fuzz_target!(|data: &[u8]| {
    for inline_image_max in [0, 100 * 1024] {
        let opts = ExtractOptions { inline_image_max };
        let Ok(Scan::Extract(plan)) = scan(data, &opts) else {
            continue;
        };
        let out = rewrite(data, &plan, &block(&plan)).expect("a plan rewrites");
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
