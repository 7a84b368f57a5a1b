//! The Mailjet event webhook: the input is a request body, parsed on its
//! own and POSTed (with the right credentials) through the real route into
//! the store. A body is answered 200 (stored), 400 (not JSON) or 413
//! (too large); never a panic, never a 500.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schleuse::suppression::mailjet::parse_body;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = parse_body(data) {
        for event in events.into_iter().flatten() {
            let _ = event.suppression_reason(&[]);
            let _ = event.verdict(&[]);
            let _ = event.recipient_state();
            assert_eq!(event.key().len(), 64);
            let _ = event.at_ms(i64::MAX);
        }
    }
    let answer = schleuse_fuzz::webhook(data);
    assert!(
        matches!(answer.status, 200 | 400 | 413),
        "webhook answered {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
});
