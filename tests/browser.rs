//! A real browser on the link page (SPEC §7): headless Chromium (Debian's
//! `chromium`) opens the link from a relayed message, a wrong password shows
//! the error, the right one downloads the document, byte for byte.
//!
//! `tests/support/browser.py` drives Chromium over the DevTools protocol
//! (stdlib only) and reports what it saw as JSON; the asserting is done
//! here. The screenshots are kept in `target/test-artifacts/`.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const LINK_PASSWORD: &str = "Sommer-2026";
const WRONG_PASSWORD: &str = "Winter-2026";

/// A PDF-like document of `len` bytes with binary content.
fn document(len: usize) -> Vec<u8> {
    let mut d = b"%PDF-1.4\n% schleuse browser test\n1 0 obj << /Type /Catalog >> endobj\n\
                  trailer << /Root 1 0 R >>\n%%EOF\n"
        .to_vec();
    fill_pseudo_random(&mut d, 0x9e37_79b9, len);
    d
}

/// multipart/mixed { text/plain, the PDF }, the link password in a header.
fn message_with_pdf(pdf: &[u8]) -> Vec<u8> {
    format!(
        "From: Sachbearbeitung <app@example.com>\r\n\
         To: eltern@example.org\r\n\
         Subject: Bescheid Schuelerbefoerderung\r\n\
         Message-ID: <browser-{n}@example.com>\r\n\
         MIME-Version: 1.0\r\n\
         X-Schleuse-Link-Password: {LINK_PASSWORD}\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
         \r\n\
         --outer\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Sehr geehrte Familie Müller,\r\n\
         anbei der Bescheid.\r\n\
         --outer\r\n\
         Content-Type: application/pdf; name=\"Bescheid M=?utf-8?q?=C3=BC?=ller.pdf\"\r\n\
         Content-Disposition: attachment; filename*=utf-8''Bescheid%20M%C3%BCller.pdf\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {pdf_b64}\r\n\
         --outer--\r\n",
        n = pdf.len(),
        pdf_b64 = wrap76(&base64(pdf)),
    )
    .into_bytes()
}

/// The one link to this link service in the relayed message's text part.
fn link_in(relayed: &Delivered, port: u16) -> String {
    let parsed = mail_parser::MessageParser::new()
        .parse(&relayed.eml)
        .expect("relayed message parses");
    let text = parsed
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let prefix = format!("http://127.0.0.1:{port}/d/");
    let at = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link in the text part:\n{text}"));
    let token: String = text[at + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(token.len() >= 20, "short token in {text}");
    format!("{prefix}{token}")
}

fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

fn check_png(path: &Path) {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(
        png.len() > 1024,
        "{} is only {} bytes",
        path.display(),
        png.len()
    );
}

#[test]
fn chromium_opens_the_link_page_and_downloads_with_the_password() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test needs a real browser. Install Debian's \
         `chromium` package (apt-get install chromium; .ci/run installs it in CI)."
    );
    let started = Instant::now();
    let w = World::relay_with(UpstreamOpts::default(), |_| {});
    let port = w.env.conf().link_port;
    let pdf = document(200 * 1024);
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message_with_pdf(&pdf),
    );
    assert_eq!(r.code, 250, "{r}\n{}", w.gw.log());
    c.quit();
    let relayed = w
        .up()
        .wait_for(1, Duration::from_secs(30))
        .into_iter()
        .next()
        .expect("one message");
    assert!(!relayed.text().contains(LINK_PASSWORD));
    let url = link_in(&relayed, port);
    let origin = format!("http://127.0.0.1:{port}/");

    let screenshot = artifacts_dir().join("link-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let work = w.env.path().join("browser");
    let out = run_bounded(
        Command::new(PYTHON)
            .arg(support_dir().join("browser.py"))
            .args(["--chromium", CHROMIUM, "--url", &url])
            .args(["--password", LINK_PASSWORD])
            .args(["--wrong-password", WRONG_PASSWORD])
            .arg("--work")
            .arg(&work)
            .arg("--screenshot")
            .arg(&screenshot)
            .args(["--timeout", "50"]),
        None,
        Duration::from_secs(60),
    );
    let report = output_text(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("browser.py printed no JSON ({e})\n{report}"));
    assert!(
        v["ok"] == true && out.status.success(),
        "driving Chromium failed\n{report}"
    );
    eprintln!(
        "link page screenshot: {} ({} in total, browser {}, timings {})",
        screenshot.display(),
        v["screenshots"].as_array().map_or(0, Vec::len),
        v["browser"],
        v["timings"]
    );
    // Straight to the file descriptor, past the test harness's capture, so
    // the path shows in the output of a passing `cargo test` too.
    let _ = writeln!(
        std::io::stderr(),
        "browser test: link page screenshot at {}",
        screenshot.display()
    );
    for shot in v["screenshots"].as_array().expect("screenshots") {
        check_png(Path::new(shot["path"].as_str().expect("path")));
    }
    check_png(&screenshot);

    // 1. The page as the browser shows it.
    let page = &v["page"];
    assert_eq!(page["status"], 200, "{report}");
    assert_eq!(page["url"], url.as_str());
    assert_eq!(page["lang"], "de", "<html lang=\"de\">");
    assert_eq!(page["title"], "Dokument herunterladen");
    assert_eq!(page["h1"], serde_json::json!(["Dokument herunterladen"]));
    let text = page["text"].as_str().unwrap_or_default();
    for shown in ["Bescheid Müller.pdf", "Größe", "200 KB", "Verfügbar bis"] {
        assert!(text.contains(shown), "{shown:?} not on the page:\n{text}");
    }
    assert_eq!(page["password_type"], "password");
    assert_eq!(
        page["password_labels"],
        serde_json::json!(["Passwort"]),
        "the password field has its <label>"
    );
    assert_eq!(page["password_required"], true);
    assert_eq!(page["form_method"], "post");
    assert_eq!(
        page["form_action"],
        url.as_str(),
        "posts to the page itself"
    );
    assert_eq!(page["button"], "Herunterladen");
    assert_eq!(page["button_type"], "submit");
    // The inline style is allowed by its hash in the CSP: had the browser
    // refused it, the button would not be blue.
    assert_eq!(
        page["button_background"], "rgb(10, 77, 140)",
        "style applied"
    );
    assert_eq!(page["scripts"], 0);
    assert!(page["error"].is_null(), "{page}");
    assert_eq!(page["cookie"], "");
    assert_eq!(page["resources"], serde_json::json!([]), "no subresources");

    // 2. A wrong password: 403 and the form again, with the error tied to it.
    let wrong = &v["wrong_password"];
    assert_eq!(wrong["status"], 403, "{report}");
    assert_eq!(wrong["url"], url.as_str());
    assert_eq!(wrong["lang"], "de");
    assert_eq!(wrong["error"], "Das Passwort ist falsch.");
    assert_eq!(wrong["title"], "Fehler: Dokument herunterladen");
    assert_eq!(wrong["aria_invalid"], "true");
    assert_eq!(wrong["aria_describedby"], wrong["error_id"]);
    assert_eq!(wrong["password_labels"], serde_json::json!(["Passwort"]));

    // 3. The right password: the download arrives, the very bytes sent.
    let dl = &v["download"];
    assert_eq!(dl["state"], "completed", "{report}");
    assert_eq!(dl["statuses"], serde_json::json!([200]), "{report}");
    assert_eq!(dl["suggested_filename"], "Bescheid Müller.pdf");
    let path = PathBuf::from(dl["path"].as_str().expect("download path"));
    let got = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "downloaded file {}: {e} (downloads: {})",
            path.display(),
            dl["files"]
        )
    });
    assert_eq!(got.len(), pdf.len(), "download size");
    assert!(got == pdf, "downloaded bytes differ from the attachment");
    assert_eq!(
        v["after_download"]["url"],
        url.as_str(),
        "the page stays on a download"
    );

    // Nothing but the link service was asked; no cookies; no console errors
    // (a CSP violation would be one) but the wrong password's 403.
    let requests = v["requests"].as_array().expect("requests");
    let methods: Vec<&str> = requests
        .iter()
        .map(|r| r["method"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(methods, ["GET", "POST", "POST"], "{requests:#?}");
    for r in requests {
        let u = r["url"].as_str().unwrap_or_default();
        assert!(u.starts_with(&origin), "request to another origin: {u}");
    }
    assert_eq!(v["cookies"], serde_json::json!([]), "cookies were set");
    assert_eq!(v["after_download"]["cookie"], "");
    let console = v["console"].as_array().expect("console");
    let errors: Vec<_> = console
        .iter()
        .filter(|e| e["level"] == "error" || e["level"] == "exception")
        .filter(|e| {
            !(e["source"] == "network"
                && e["url"] == url.as_str()
                && e["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("status of 403")))
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    eprintln!("browser test took {:?}", started.elapsed());
}
