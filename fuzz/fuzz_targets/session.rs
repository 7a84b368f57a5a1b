//! The SMTP session: the input is everything a client sends on a plain-text
//! loopback listener (AUTH allowed; the account is fuzz/fuzz), through the
//! real session code into the real store. Never a panic, and every answer is
//! a well-formed reply: SMTP needs CRLF-terminated lines starting with a
//! three-digit code, or the client loses track.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let replies = schleuse_fuzz::session(data);
    assert!(
        replies.is_empty() || replies.ends_with(b"\r\n"),
        "unterminated reply"
    );
    for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").expect("reply line without CR");
        assert!(
            line.len() >= 3
                && line[..3].iter().all(u8::is_ascii_digit)
                && matches!(line.get(3), None | Some(b' ' | b'-')),
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
    }
});
