//! Real-world messages from other MIME parsers' test corpora
//! (`../shared/fixtures/`): multipart, 8-bit, odd charsets, S/MIME and PGP,
//! DSNs and deliberately malformed MIME. Each must get a clear answer
//! (250, or a 5xx with an enhanced status code), nothing may crash, and
//! every accepted message must reach the upstream byte for byte, apart
//! from the gateway's own header at the top.

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
fn real_world_messages_relay_unchanged_or_get_a_clear_refusal() {
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

    let mut smtp = Smtp::connect(gw.port());
    smtp.ehlo();
    let mut accepted = Vec::new();
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
        let r = smtp.send("sender@example.com", &["r@example.org"], &message);
        match r.code {
            250 => accepted.push((name, message)),
            500..=599 => assert!(
                r.enhanced().is_some() && !r.text().trim().is_empty(),
                "{name}: refusal without a clear text: {r}"
            ),
            _ => panic!("{name}: unexpected reply {r}\n{}", gw.log()),
        }
    }
    smtp.quit();
    // Nearly all of the corpus is ordinary mail that must pass.
    assert!(
        accepted.len() + 2 >= dir.len(),
        "only {} of {} accepted\n{}",
        accepted.len(),
        dir.len(),
        gw.log()
    );

    let delivered = up.wait_for(accepted.len(), Duration::from_secs(60));
    assert_eq!(delivered.len(), accepted.len(), "{}", gw.log());
    for (name, message) in &accepted {
        let found = delivered
            .iter()
            .any(|d| added_headers(&d.eml, message).is_ok());
        assert!(found, "{name}: not relayed byte for byte");
    }
}
