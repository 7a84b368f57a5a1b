//! DKIM: `schleuse dkim keygen`, `schleuse dkim check` against a DNS
//! stand-in on loopback, and signatures checked by an independent verifier
//! (python3-dkim, with the public keys served from a dnsfunc).

mod common;

use std::collections::HashMap;
use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use common::dns::{Answer, DnsStandIn, Zone};
use common::*;
use schleuse::config::DkimKey;
use schleuse::dkim::Signer;

// ---------------------------------------------------------------------------
// Helpers

/// What `dkim keygen` printed and wrote.
struct Generated {
    path: PathBuf,
    name: String,
    value: String,
    stdout: String,
}

fn keygen(env: &Env, domain: &str, selector: &str, algorithm: &str) -> Generated {
    let out = env.cli(
        &[
            "dkim",
            "keygen",
            "--domain",
            domain,
            "--selector",
            selector,
            "--algorithm",
            algorithm,
        ],
        None,
    );
    assert!(out.status.success(), "dkim keygen\n{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label:?} line in\n{stdout}"))
    };
    Generated {
        path: env
            .path()
            .join(format!("certs/dkim/{domain}.{selector}.{algorithm}.pem")),
        name: field("name:"),
        value: field("value:"),
        stdout,
    }
}

/// `(tag, value)` pairs of a DKIM record.
fn tags(record: &str) -> HashMap<String, String> {
    record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(t, v)| (t.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {s}"))
}

/// The DER SubjectPublicKeyInfo of a key file, as OpenSSL computes it.
fn openssl_spki(path: &Path) -> Vec<u8> {
    let out = run_bounded(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(path),
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl pkey\n{}", output_text(&out));
    out.stdout
}

/// Appends raw TOML to the test's config file.
fn append_config(env: &Env, text: &str) {
    let mut conf = fs::read_to_string(&env.config_path).expect("read config");
    conf.push_str(text);
    fs::write(&env.config_path, conf).expect("write config");
}

fn dkim_block(domain: &str, selector: &str, key: &Path) -> String {
    format!(
        "\n[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nkey = \"{}\"\n",
        key.display()
    )
}

/// Verifies every DKIM-Signature of `message` with python3-dkim; the
/// public keys come from `records` (name → TXT value). One bool per
/// signature, top to bottom.
fn python_verify(env: &Env, message: &[u8], records: &[(&str, &str)]) -> Vec<bool> {
    const SCRIPT: &str = r#"
import dkim, json, sys
msg = open(sys.argv[1], 'rb').read()
records = json.loads(sys.argv[2])
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip('.').lower(), '').encode()
def check(i):
    try:
        return bool(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc))
    except dkim.ValidationError as e:
        print('signature %d: %s' % (i, e), file=sys.stderr)
        return False
count = sum(1 for n, _ in dkim.DKIM(msg).headers if n.lower() == b'dkim-signature')
print(json.dumps([check(i) for i in range(count)]))
"#;
    let path = env.write_file("to-verify.eml", message);
    let map: HashMap<&str, &str> = records.iter().copied().collect();
    let out = run_bounded(
        Command::new(PYTHON)
            .arg("-c")
            .arg(SCRIPT)
            .arg(&path)
            .arg(serde_json::to_string(&map).expect("json")),
        None,
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "python3-dkim\n{}", output_text(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("python output ({e})\n{}", output_text(&out)))
}

/// A ~10 KB message with raw UTF-8 in its headers and body, folded headers,
/// trailing white space and empty lines at the end (all of which relaxed
/// canonicalization must treat as verifiers do).
fn big_utf8_message(from: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Jörg Müller <{from}>\r\n\
         To: Familie Özdemir <eltern@example.org>,\r\n\
         \tSchule am Hang <sekretariat@schule.example>\r\n\
         Cc: sb@landkreis.example\r\n\
         Subject: Schülerbeförderung 2026 — Bescheid für Ihr Kind   \r\n\
         Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
         Message-ID: <bescheid-4711@landkreis.example>\r\n\
         X-Other: not signed\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0;
    while m.len() < 10 * 1024 {
        i += 1;
        m.extend_from_slice(
            format!(
                "Zeile {i}: Grüße aus dem Landratsamt — Straße, Maß, Öl.  \t \r\n{}",
                if i % 7 == 0 { "\r\n" } else { "" }
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(b"\r\n\r\n\r\n");
    m
}

// ---------------------------------------------------------------------------
// keygen

#[test]
fn keygen_writes_pkcs8_0600_and_prints_the_record() {
    let env = Env::new();
    for (alg, selector) in [("ed25519", "ed2026"), ("rsa", "rsa2026")] {
        let g = keygen(&env, "landkreis.example", selector, alg);
        let meta = fs::metadata(&g.path).expect("key file exists");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            g.path.display()
        );
        let pem = fs::read_to_string(&g.path).expect("read key");
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n")
                && pem.ends_with("-----END PRIVATE KEY-----\n"),
            "not PKCS#8 PEM:\n{pem}"
        );
        assert_eq!(g.name, format!("{selector}._domainkey.landkreis.example"));

        let t = tags(&g.value);
        assert!(g.value.starts_with("v=DKIM1; "), "{}", g.value);
        assert_eq!(t["k"], alg);
        let p = b64(&t["p"]);
        let spki = openssl_spki(&g.path);
        match alg {
            // RFC 8463: the raw 32-byte key (the end of OpenSSL's SPKI).
            "ed25519" => {
                assert_eq!(p.len(), 32);
                assert_eq!(p.as_slice(), &spki[spki.len() - 32..]);
            }
            // SubjectPublicKeyInfo, byte for byte what OpenSSL derives.
            _ => assert_eq!(p, spki, "RSA p= must be the SubjectPublicKeyInfo"),
        }
        // The zone-file line splits the value into strings of <= 255 bytes.
        let zone = g
            .stdout
            .lines()
            .find(|l| l.contains(" IN TXT "))
            .expect("zone line");
        let strings: Vec<&str> = zone.split('"').skip(1).step_by(2).collect();
        assert!(strings.iter().all(|s| s.len() <= 255), "{zone}");
        assert_eq!(strings.concat(), g.value);
        if alg == "rsa" {
            assert!(strings.len() >= 2, "{zone}");
        }
        assert!(
            g.stdout.contains(&format!(
                "[[dkim]]\n  domain = \"landkreis.example\"\n  selector = \"{selector}\"\n  \
                 key = \"certs/dkim/landkreis.example.{selector}.{alg}.pem\""
            )),
            "{}",
            g.stdout
        );

        // A second run must not overwrite the key.
        let before = fs::read(&g.path).expect("read");
        let out = env.cli(
            &[
                "dkim",
                "keygen",
                "--domain",
                "landkreis.example",
                "--selector",
                selector,
                "--algorithm",
                alg,
            ],
            None,
        );
        assert!(!out.status.success(), "{}", output_text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("schleuse: error: ") && err.contains("already exists"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert_eq!(fs::read(&g.path).expect("read"), before);
    }
}

// ---------------------------------------------------------------------------
// check

#[test]
fn check_against_a_dns_stand_in() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    let ed = keygen(&env, "good.example", "ed", "ed25519");
    let rsa = keygen(&env, "good.example", "rsa", "rsa");
    let wrong = keygen(&env, "mismatch.example", "s1", "ed25519");
    let missing = keygen(&env, "missing.example", "s1", "ed25519");
    let malformed = keygen(&env, "malformed.example", "s1", "ed25519");
    let other = keygen(&env, "other.example", "s1", "ed25519");

    let mut zone = Zone::new();
    zone.insert(ed.name.clone(), Answer::txt(&[&ed.value]));
    // Over 255 bytes: served as two strings, joined by the resolver.
    assert!(rsa.value.len() > 255);
    zone.insert(rsa.name.clone(), Answer::txt(&[&rsa.value]));
    // mismatch.example publishes other.example's key.
    zone.insert(wrong.name.clone(), Answer::txt(&[&other.value]));
    zone.insert(
        malformed.name.clone(),
        Answer::txt(&["v=DKIM1; k=ed25519; p=not*base64!"]),
    );
    let dns = DnsStandIn::start(zone);

    let mut blocks = format!(
        "\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n",
        dns.nameserver()
    );
    for (domain, selector, g) in [
        ("good.example", "ed", &ed),
        ("good.example", "rsa", &rsa),
        ("mismatch.example", "s1", &wrong),
        ("missing.example", "s1", &missing),
        ("malformed.example", "s1", &malformed),
    ] {
        let relative = g.path.strip_prefix(env.path()).expect("under the temp dir");
        blocks.push_str(&dkim_block(domain, selector, relative));
    }
    append_config(&env, &blocks);

    let check = |args: &[&str]| {
        let mut all = vec!["dkim", "check"];
        all.extend_from_slice(args);
        let out = env.cli(&all, None);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            output_text(&out),
        )
    };

    // Both selectors of good.example match.
    let (ok, stdout, _, all) = check(&["--domain", "good.example"]);
    assert!(ok, "{all}");
    assert_eq!(stdout.lines().count(), 2, "{all}");
    assert!(stdout.lines().all(|l| l.contains(": matches")), "{all}");
    assert!(
        stdout.contains("ed: matches") && stdout.contains("rsa: matches"),
        "{all}"
    );

    // --selector narrows it to one.
    let (ok, stdout, _, all) = check(&["--domain", "good.example", "--selector", "rsa"]);
    assert!(
        ok && stdout.lines().count() == 1 && stdout.starts_with("rsa: matches"),
        "{all}"
    );

    for (domain, want) in [
        (
            "mismatch.example",
            format!(
                "s1: published key does not match {}",
                wrong.path.strip_prefix(env.path()).unwrap().display()
            ),
        ),
        (
            "missing.example",
            "s1: no TXT record at s1._domainkey.missing.example".to_string(),
        ),
        (
            "malformed.example",
            "s1: malformed record at s1._domainkey.malformed.example: p= is not valid base64"
                .to_string(),
        ),
    ] {
        let (ok, stdout, stderr, all) = check(&["--domain", domain]);
        assert!(!ok, "{domain} must fail\n{all}");
        assert!(stdout.starts_with(&want), "{domain}: want {want:?}\n{all}");
        assert_eq!(stdout.lines().count(), 1, "{all}");
        assert!(
            stderr.starts_with("schleuse: error: ") && stderr.trim_end().lines().count() == 1,
            "{all}"
        );
    }

    // A domain without [[dkim]] entries: one clear error line.
    let (ok, _, stderr, all) = check(&["--domain", "nokey.example"]);
    assert!(!ok, "{all}");
    assert!(
        stderr.contains("no [[dkim]] key for nokey.example"),
        "{all}"
    );

    // A selector not in the config yet: the file keygen wrote is used.
    let (ok, stdout, _, all) = check(&["--domain", "other.example", "--selector", "s1"]);
    assert!(!ok, "{all}");
    assert!(
        stdout.starts_with("s1: no TXT record at s1._domainkey.other.example"),
        "{all}"
    );
}

#[test]
fn check_reports_an_unreachable_name_server() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    let g = keygen(&env, "good.example", "ed", "ed25519");
    // A bound UDP socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let relative = g.path.strip_prefix(env.path()).unwrap().to_path_buf();
    append_config(
        &env,
        &format!(
            "\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n{}",
            silent.local_addr().unwrap(),
            dkim_block("good.example", "ed", &relative)
        ),
    );
    let out = env.cli(&["dkim", "check", "--domain", "good.example"], None);
    assert!(!out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("ed: DNS lookup of ed._domainkey.good.example failed"),
        "{}",
        output_text(&out)
    );
}

// ---------------------------------------------------------------------------
// Signatures, checked by python3-dkim

#[test]
fn signatures_verify_with_python3_dkim() {
    let env = Env::new();
    let ed = keygen(&env, "landkreis.example", "ed", "ed25519");
    let rsa = keygen(&env, "landkreis.example", "rsa", "rsa");
    let records = [
        (ed.name.as_str(), ed.value.as_str()),
        (rsa.name.as_str(), rsa.value.as_str()),
    ];
    let entry = |selector: &str, path: &Path| DkimKey {
        domain: "landkreis.example".into(),
        selector: selector.into(),
        key: path.to_path_buf(),
    };
    let message = big_utf8_message("joerg.mueller@landkreis.example");
    assert!(message.len() >= 10 * 1024);

    for (keys, n) in [
        (vec![entry("ed", &ed.path)], 1),
        (vec![entry("rsa", &rsa.path)], 1),
        (vec![entry("ed", &ed.path), entry("rsa", &rsa.path)], 2),
    ] {
        let signer = Signer::load(&keys).expect("load keys");
        let headers = signer
            .sign(&message)
            .expect("sign")
            .expect("a key for landkreis.example");
        let mut signed = headers.clone();
        signed.extend_from_slice(&message);
        let text = String::from_utf8_lossy(&headers);
        assert_eq!(text.matches("DKIM-Signature:").count(), n, "{text}");
        assert_eq!(
            python_verify(&env, &signed, &records),
            vec![true; n],
            "python3-dkim rejects\n{text}"
        );

        // The verifier really checks: a changed body fails every signature.
        let mut tampered = signed.clone();
        let at = tampered.len() - 20;
        tampered[at] ^= 0x01;
        assert_eq!(python_verify(&env, &tampered, &records), vec![false; n]);
    }

    // No key for the From: domain: nothing to sign with.
    let signer = Signer::load(&[entry("ed", &ed.path)]).expect("load");
    assert!(
        signer
            .sign(&big_utf8_message("a@example.com"))
            .expect("sign")
            .is_none()
    );
}

// ---------------------------------------------------------------------------
// Keys at start and on SIGHUP

#[test]
fn a_missing_key_stops_the_start_naming_the_file() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    env.add_default_user();
    append_config(
        &env,
        &dkim_block("example.com", "s1", Path::new("certs/dkim/absent.pem")),
    );
    let out = env.cli(&["run"], None);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schleuse: error: ") && err.contains("certs/dkim/absent.pem: cannot read"),
        "{}",
        output_text(&out)
    );

    // Not PKCS#8: named too, with the reason.
    fs::create_dir_all(env.path().join("certs/dkim")).expect("mkdir");
    fs::write(env.path().join("certs/dkim/absent.pem"), "not a key\n").expect("write");
    let out = env.cli(&["check-config"], None);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certs/dkim/absent.pem") && err.contains("BEGIN PRIVATE KEY"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn keys_reload_on_sighup_and_a_bad_key_keeps_the_old_ones() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    env.add_default_user();
    let first = keygen(&env, "example.com", "first", "ed25519");
    let base = fs::read_to_string(&env.config_path).expect("read config");
    let rel = |g: &Generated| g.path.strip_prefix(env.path()).unwrap().to_path_buf();
    append_config(&env, &dkim_block("example.com", "first", &rel(&first)));
    let gw = env.start_gateway();
    let loaded = |needle: &str| {
        wait_until(Duration::from_secs(20), || {
            gw.log().contains(needle).then_some(())
        })
        .unwrap_or_else(|| panic!("log never said {needle:?}\n{}", gw.log()))
    };
    loaded("first._domainkey.example.com (Ed25519)");

    let hup = || {
        let pid = gw.pid().expect("running").to_string();
        let ok = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    };

    // A second key (RSA) for the same domain: loaded on SIGHUP.
    let second = keygen(&env, "example.com", "second", "rsa");
    fs::write(
        &env.config_path,
        format!(
            "{base}{}{}",
            dkim_block("example.com", "first", &rel(&first)),
            dkim_block("example.com", "second", &rel(&second))
        ),
    )
    .expect("write config");
    hup();
    loaded("second._domainkey.example.com (RSA)");

    // A key that cannot be read: the reload is refused, naming the file.
    fs::write(
        &env.config_path,
        format!(
            "{base}{}",
            dkim_block("example.com", "third", Path::new("certs/dkim/gone.pem"))
        ),
    )
    .expect("write config");
    hup();
    loaded("reload refused");
    loaded("certs/dkim/gone.pem");
    // Still serving.
    let mut c = Smtp::connect_auth(gw.port(), &env.certs.ca_crt, USER, PASSWORD);
    c.ehlo();
    c.quit();
}

// ---------------------------------------------------------------------------
// End to end: signed by the gateway, verified from what the upstream received

/// A relay world (upstream stand-in with TLS + AUTH) whose gateway signs for
/// example.com with the given keys (`(selector, "ed25519" | "rsa")`).
/// Returns the world and the TXT records to verify with.
fn signing_world(
    keys: &[(&str, &str)],
    before_start: impl FnOnce(&Env),
) -> (World, Vec<(String, String)>) {
    let mut env = Env::new();
    let up = env.start_upstream(&UpstreamOpts::default());
    env.write_config(&GatewayConf::relay(up.port));
    let mut blocks = String::new();
    let mut records = Vec::new();
    for (selector, alg) in keys {
        let g = keygen(&env, "example.com", selector, alg);
        let rel = g.path.strip_prefix(env.path()).unwrap().to_path_buf();
        blocks.push_str(&dkim_block("example.com", selector, &rel));
        records.push((g.name, g.value));
    }
    append_config(&env, &blocks);
    env.add_default_user();
    before_start(&env);
    let gw = env.start_gateway();
    (
        World {
            gw,
            up: Some(up),
            env,
        },
        records,
    )
}

#[test]
fn relayed_messages_verify_with_python3_dkim() {
    for (keys, n) in [
        (vec![("ed", "ed25519")], 1),
        (vec![("rsa", "rsa")], 1),
        (vec![("ed", "ed25519"), ("rsa", "rsa")], 2),
    ] {
        let (w, records) = signing_world(&keys, |_| {});
        let records: Vec<(&str, &str)> = records
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let message = big_utf8_message("app@example.com");
        let mut c = w.client();
        let r = c.send("app@example.com", &["r@example.org"], &message);
        assert_eq!(r.code, 250, "{r}");
        c.quit();
        let got = w.up().wait_for(1, Duration::from_secs(30));
        let eml = &got[0].eml;
        let sigs = header_fields(eml)
            .into_iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("DKIM-Signature"))
            .count();
        assert_eq!(sigs, n, "{}", got[0].text());
        assert_eq!(
            python_verify(&w.env, eml, &records),
            vec![true; n],
            "python3-dkim rejects what the upstream received\n{}",
            got[0].text()
        );
    }
}

#[test]
fn a_from_domain_without_a_key_is_relayed_unsigned_or_refused() {
    let other = |env: &Env| env.add_user("other", "other-Passw0rd-1", &["*@other.example"]);
    let send = |w: &World| {
        let mut c = Smtp::connect_auth(w.port(), w.ca(), "other", "other-Passw0rd-1");
        let r = c.send(
            "a@other.example",
            &["r@example.org"],
            &simple_message("a@other.example", "r@example.org", "nokey"),
        );
        c.quit();
        r
    };

    // "warn" (the default): relayed without a signature, and logged.
    let (w, _) = signing_world(&[("ed", "ed25519")], other);
    let r = send(&w);
    assert_eq!(r.code, 250, "{r}");
    let got = w.up().wait_for(1, Duration::from_secs(30));
    assert!(
        got[0].header("DKIM-Signature").is_none(),
        "{}",
        got[0].text()
    );
    assert!(w.gw.log().contains("relaying unsigned"), "{}", w.gw.log());

    // "refuse": 554 5.7.0, nothing relayed.
    let (w, _) = signing_world(&[("ed", "ed25519")], |env| {
        other(env);
        let conf = fs::read_to_string(&env.config_path).expect("read config");
        assert!(conf.contains("\n[sender]\n"), "{conf}");
        let conf = conf.replacen(
            "\n[sender]\n",
            "\n[sender]\nwithout_dkim_key = \"refuse\"\n",
            1,
        );
        fs::write(&env.config_path, conf).expect("write config");
    });
    let r = send(&w);
    assert!(r.is(554, "5.7.0"), "{r}");
    thread::sleep(Duration::from_millis(500));
    assert!(w.up().messages().is_empty());
}

/// A message large enough to be signed on the blocking pool (over 128 KB)
/// verifies just the same.
#[test]
fn a_large_relayed_message_verifies() {
    let (w, records) = signing_world(&[("ed", "ed25519"), ("rsa", "rsa")], |_| {});
    let records: Vec<(&str, &str)> = records
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut message = big_utf8_message("app@example.com");
    let line = "Anlage im Text: Fahrplan, Haltestellen, Zeiten und Hinweise.\r\n";
    while message.len() < 400 * 1024 {
        message.extend_from_slice(line.as_bytes());
    }
    let mut c = w.client();
    let r = c.send("app@example.com", &["r@example.org"], &message);
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    let got = w.up().wait_for(1, Duration::from_secs(30));
    assert_eq!(
        python_verify(&w.env, &got[0].eml, &records),
        vec![true; 2],
        "python3-dkim rejects the large message"
    );
}
