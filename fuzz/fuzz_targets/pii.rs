//! The PII scanners (IBAN, tax id, phone, dates of birth, addresses, health
//! terms): on the input as a whole message (MIME parsed, HTML converted),
//! as plain text, and as HTML. Findings are never more than the text could
//! hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schleuse::privacy::pii::{Options, html_to_text, scan_message, scan_text};

fuzz_target!(|data: &[u8]| {
    let opts = Options::default();
    let _ = scan_message(data, &opts);
    let text = String::from_utf8_lossy(data);
    let findings = scan_text(&text, &opts);
    let total: usize = findings.counts.values().sum();
    assert!(
        total <= text.len(),
        "{total} findings in {} bytes",
        text.len()
    );
    let _ = scan_text(&html_to_text(&text), &opts);
});
