//! The link service: one HTTP request (`METHOD PATH`, header lines, empty
//! line, body; `$OPEN`, `$PROT`, `$GONE` in the path are replaced by real
//! tokens) through the real router, vault and store, from the trusted
//! loopback proxy. Never a panic, never a 500, and the token appears in no
//! answer (SPEC §7: not in any page or header).
#![no_main]

use libfuzzer_sys::fuzz_target;
use schleuse_fuzz::contains;

fuzz_target!(|data: &[u8]| {
    let Some((answer, tokens)) = schleuse_fuzz::links(data) else {
        return;
    };
    assert_ne!(
        answer.status,
        500,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    for token in &tokens {
        assert!(
            !contains(&answer.body, token.as_bytes()),
            "token in the page"
        );
        assert!(
            !contains(&answer.headers, token.as_bytes()),
            "token in a header"
        );
    }
});
