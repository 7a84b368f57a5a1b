//! Documents in an S3-compatible bucket (`[documents] backend = "s3"`,
//! SPEC §11), against a real S3 server: moto (`tests/common/s3.rs`).
//!
//! First `ObjectFiles` on its own (the `DocumentFiles` contract), then the
//! real binary: a PDF becomes a link, its ciphertext lands in the bucket (and
//! nowhere on the local disk), the download gives the original bytes, a
//! second handle on the bucket reads the same object, and expiry and
//! revocation delete it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::s3::{ACCESS_KEY, Moto, SECRET_KEY};
use common::*;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use schleuse::config::{DocumentBackend, Documents};
use schleuse::store::document_files::{DocumentError, DocumentFiles};
use schleuse::store::objects::ObjectFiles;

const BUCKET: &str = "schleuse-docs";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The `[documents]` section a gateway pointed at `moto` would have.
fn documents(moto: &Moto, bucket: &str, prefix: &str) -> Documents {
    Documents {
        backend: DocumentBackend::S3,
        bucket: bucket.into(),
        endpoint: Some(moto.endpoint()),
        region: Some("eu-central-1".into()),
        prefix: prefix.into(),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        allow_http: true,
        timeout: Duration::from_secs(10),
        ..Documents::default()
    }
}

/// A plain object_store client on the bucket, to look behind `ObjectFiles`.
fn raw_bucket(moto: &Moto, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(moto.endpoint())
            .with_allow_http(true)
            .with_region("eu-central-1")
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("S3 client"),
    )
}

#[test]
fn object_files_keep_the_document_contract_on_s3() {
    let env = Env::new();
    let moto = Moto::start(env.path());
    moto.create_bucket(BUCKET);
    let rt = rt();
    let files = ObjectFiles::open(&documents(&moto, BUCKET, "documents/")).expect("open");
    rt.block_on(files.probe()).expect("probe");

    rt.block_on(files.put("abc", b"cipher".to_vec()))
        .expect("put");
    rt.block_on(files.put("def-2", vec![0u8; 300_000]))
        .expect("put");
    assert_eq!(
        rt.block_on(files.get("abc")).expect("get"),
        Some(b"cipher".to_vec())
    );
    assert_eq!(
        rt.block_on(files.get("def-2"))
            .expect("get")
            .map(|d| d.len()),
        Some(300_000)
    );
    assert_eq!(rt.block_on(files.get("nope")).expect("get missing"), None);
    let raw = raw_bucket(&moto, BUCKET);
    assert_eq!(moto.keys(BUCKET), ["documents/abc", "documents/def-2"]);

    // Ids cannot leave the prefix; objects that are not ours are never
    // listed (the purge would delete them).
    for bad in ["../x", "a/b", "", ".hidden", "a.b", "_probe", "%2e%2e"] {
        assert!(
            matches!(
                rt.block_on(files.put(bad, vec![1])),
                Err(DocumentError::BadId(_))
            ),
            "{bad:?}"
        );
        assert!(matches!(
            rt.block_on(files.get(bad)),
            Err(DocumentError::BadId(_))
        ));
    }
    for other in [
        "documents/sub/abc",
        "documents/a.b",
        "documents-x/abc",
        "abc",
    ] {
        rt.block_on(raw.put(&ObjectPath::from(other), PutPayload::from_static(b"x")))
            .expect("put foreign object");
    }
    let mut listed = rt.block_on(files.list()).expect("list");
    listed.sort();
    let ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["abc", "def-2"]);
    let age = listed[0]
        .1
        .elapsed()
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    assert!(age < 300.0, "last_modified is the upload time ({age}s ago)");

    rt.block_on(files.delete("abc")).expect("delete");
    rt.block_on(files.delete("abc")).expect("delete twice");
    assert_eq!(rt.block_on(files.get("abc")).expect("get"), None);
    assert!(!moto.keys(BUCKET).contains(&"documents/abc".to_string()));

    // A missing bucket is found by the start-up probe, not at the first
    // attachment; an unreachable endpoint fails within the timeout.
    let missing =
        ObjectFiles::open(&documents(&moto, "no-such-bucket", "documents/")).expect("open");
    let err = rt.block_on(missing.probe()).expect_err("missing bucket");
    assert!(matches!(err, DocumentError::Probe(_)), "{err}");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    let mut moto = moto;
    let conf = documents(&moto, BUCKET, "documents/");
    moto.kill();
    let gone = ObjectFiles::open(&Documents {
        timeout: Duration::from_secs(2),
        ..conf
    })
    .expect("open");
    let started = std::time::Instant::now();
    let err = rt
        .block_on(gone.put("x", vec![1]))
        .expect_err("server gone");
    assert!(matches!(err, DocumentError::Object { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a put to a dead store took {:?}",
        started.elapsed()
    );
}

const PDF_HEAD: &[u8] =
    b"%PDF-1.4\n% schleuse test document\n1 0 obj << /Type /Catalog >> endobj\n";
const SECRET_PHRASE: &[u8] = b"Bescheid fuer Max Mustermann, Schuelerbefoerderung 2026\n";

fn document(len: usize, seed: u32) -> Vec<u8> {
    let mut d = PDF_HEAD.to_vec();
    d.extend_from_slice(SECRET_PHRASE);
    fill_pseudo_random(&mut d, seed, len);
    d
}

/// text/plain + a PDF attachment; `marker` goes into the Message-ID.
fn message_with_pdf(extra_headers: &str, pdf: &[u8], marker: &str) -> Vec<u8> {
    let pdf_b64 = wrap76(&base64(pdf));
    format!(
        "From: Sachbearbeitung <app@example.com>\r\n\
         To: eltern@example.org\r\n\
         Subject: Bescheid\r\n\
         Message-ID: <s3-{marker}@example.com>\r\n\
         MIME-Version: 1.0\r\n\
         {extra_headers}\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
         \r\n\
         --outer\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Sehr geehrte Familie Mueller, anbei der Bescheid.\r\n\
         --outer\r\n\
         Content-Type: application/pdf; name=\"Bescheid.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"Bescheid.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {pdf_b64}\r\n\
         --outer--\r\n"
    )
    .into_bytes()
}

fn link_token(relayed: &Delivered, link_port: u16) -> String {
    let text = mail_parser::MessageParser::new()
        .parse(&relayed.eml)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default();
    link_tokens(&text, link_port)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no link in the relayed text:\n{text}"))
}

fn download(port: u16, token: &str) -> HttpResponse {
    http_post_form(port, &format!("/d/{token}"), &[], &[]).expect("link service answers")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A gateway whose documents go to `prefix` in the moto bucket.
fn s3_world(moto: &Moto, prefix: &str, attachments_extra: &str) -> World {
    let toml = moto.documents_toml(BUCKET, prefix);
    let extra = attachments_extra.to_owned();
    World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml = toml;
        c.attachments_extra = extra;
    })
}

#[test]
fn the_gateway_keeps_documents_in_the_bucket_as_ciphertext_only() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(scratch.path());
    moto.create_bucket(BUCKET);
    let rt = rt();
    let raw = raw_bucket(&moto, BUCKET);

    let w = s3_world(&moto, "documents/", "");
    let link_port = w.env.conf().link_port;
    assert!(
        w.gw.log().contains("s3://schleuse-docs/documents/"),
        "the start-up log names the bucket\n{}",
        w.gw.log()
    );
    let pdf = document(200 * 1024, 0x5eed_0001);
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message_with_pdf("", &pdf, "one"),
    );
    assert_eq!(r.code, 250, "{r}\n{}", w.gw.log());
    c.quit();
    let relayed = w.up().wait_for(1, Duration::from_secs(30));
    assert_eq!(relayed.len(), 1, "{}", w.gw.log());
    let token = link_token(&relayed[0], link_port);
    assert!(
        !relayed[0].text().contains(&wrap76(&base64(&pdf))[..76]),
        "the attachment was relayed"
    );

    // The one object in the bucket is the document, and it is ciphertext.
    let stored = moto.keys(BUCKET);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let id = stored[0]
        .strip_prefix("documents/")
        .expect("under the prefix")
        .to_owned();
    let object = rt
        .block_on(async {
            raw.get(&ObjectPath::from(stored[0].as_str()))
                .await?
                .bytes()
                .await
        })
        .expect("object readable");
    assert!(object.len() >= pdf.len(), "the whole document is stored");
    assert!(!contains(&object, SECRET_PHRASE), "plaintext in the bucket");
    assert!(!contains(&object, &pdf[..64]), "plaintext in the bucket");
    assert!(
        !contains(&object, &pdf[pdf.len() - 64..]),
        "plaintext in the bucket"
    );
    // Nothing on the local disk.
    let local = w.env.data_dir.join("documents");
    let local_files = std::fs::read_dir(&local).map(|d| d.count()).unwrap_or(0);
    assert_eq!(local_files, 0, "documents written to {}", local.display());

    // The link gives the original bytes back.
    let got = download(link_port, &token);
    assert_eq!(got.status, 200, "{}\n{}", got.body, w.gw.log());
    assert!(
        got.bytes == pdf,
        "downloaded bytes differ from the attachment"
    );

    // A second handle on the bucket (another instance's) reads the same
    // object. The link itself (token hash, salt) lives in this instance's
    // embedded store, so only an instance sharing that store (PostgreSQL)
    // could open it.
    let other = ObjectFiles::open(&documents(&moto, BUCKET, "documents/")).expect("open");
    assert_eq!(
        rt.block_on(other.get(&id)).expect("get").as_deref(),
        Some(&object[..])
    );
    let listed = rt.block_on(other.list()).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, id);

    // A second gateway with its own data dir on the same bucket: with the
    // embedded store it needs a prefix of its own (its purge would delete
    // the first one's documents after an hour). Both live side by side.
    let w2 = s3_world(&moto, "instance-b/documents/", "");
    let link_port2 = w2.env.conf().link_port;
    assert_eq!(
        http_get(link_port2, &format!("/d/{token}"), None)
            .expect("get")
            .status,
        404,
        "the second instance does not know the first one's links"
    );
    let pdf2 = document(30_000, 0x5eed_0002);
    let mut c = w2.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message_with_pdf("", &pdf2, "two"),
    );
    assert_eq!(r.code, 250, "{r}\n{}", w2.gw.log());
    c.quit();
    let relayed2 = w2.up().wait_for(1, Duration::from_secs(30));
    assert_eq!(relayed2.len(), 1, "{}", w2.gw.log());
    let token2 = link_token(&relayed2[0], link_port2);
    assert!(download(link_port2, &token2).bytes == pdf2);
    let stored = moto.keys(BUCKET);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored
            .iter()
            .any(|k| k.starts_with("instance-b/documents/"))
    );
    assert!(download(link_port, &token).bytes == pdf, "first one intact");
}

#[test]
fn expiry_and_revocation_delete_the_object() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(scratch.path());
    moto.create_bucket(BUCKET);
    let w = s3_world(&moto, "documents/", "purge_interval = \"1s\"\n");
    let link_port = w.env.conf().link_port;

    let mut c = w.client();
    let short = message_with_pdf(
        // Long enough to see both objects first, even on a busy machine.
        "X-Schleuse-Link-Expiry: 6s\r\n",
        &document(5000, 1),
        "short",
    );
    let long = message_with_pdf("", &document(6000, 2), "long");
    for m in [&short, &long] {
        let r = c.send("app@example.com", &["eltern@example.org"], m);
        assert_eq!(r.code, 250, "{r}\n{}", w.gw.log());
    }
    // Both objects are in the bucket once acknowledged: looked at now, not
    // after the relaying below, which a busy machine may stretch past the
    // short link's expiry.
    assert_eq!(moto.keys(BUCKET).len(), 2);
    c.quit();
    let relayed = w.up().wait_for(2, Duration::from_secs(30));
    assert_eq!(relayed.len(), 2, "{}", w.gw.log());
    let token_of = |marker: &str| {
        let d = relayed
            .iter()
            .find(|d| d.text().contains(&format!("<s3-{marker}@example.com>")))
            .expect("relayed");
        link_token(d, link_port)
    };
    let (short_token, long_token) = (token_of("short"), token_of("long"));

    // Expiry: the link answers 410 and the purge deletes the object.
    let one_left = wait_until(Duration::from_secs(20), || {
        (moto.keys(BUCKET).len() == 1).then_some(())
    });
    assert!(
        one_left.is_some(),
        "expired document not purged from the bucket\n{}",
        w.gw.log()
    );
    assert_eq!(download(link_port, &short_token).status, 410);
    assert_eq!(download(link_port, &long_token).status, 200);

    // Revocation through the CLI (which opens the same bucket).
    let listing = w.env.cli(&["links", "list"], None);
    let text = output_text(&listing);
    assert!(listing.status.success(), "{text}");
    let id = text
        .lines()
        .find(|l| l.contains("active"))
        .and_then(|l| l.split_whitespace().next())
        .expect("an active link")
        .to_owned();
    assert_eq!(moto.keys(BUCKET), [format!("documents/{id}")]);
    let revoked = w.env.cli(&["links", "revoke", &id], None);
    assert!(revoked.status.success(), "{}", output_text(&revoked));
    assert!(
        moto.keys(BUCKET).is_empty(),
        "revoked document kept in the bucket"
    );
    assert_eq!(download(link_port, &long_token).status, 410);
}

#[test]
fn a_gateway_refuses_to_start_on_a_missing_bucket() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(scratch.path());
    let mut env = Env::new();
    let mut conf = GatewayConf::outbox();
    conf.extra_toml = moto.documents_toml("no-such-bucket", "documents/");
    env.write_config(&conf);
    env.add_default_user();
    let out = run_bounded(
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&env.config_path)
            .arg("run")
            .current_dir(env.path()),
        None,
        Duration::from_secs(60),
    );
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("the object store refused a test listing") && text.contains("NoSuchBucket"),
        "{text}"
    );
    // check-config names the key for a plain-http endpoint off loopback.
    let mut bad = conf.clone();
    bad.extra_toml = bad
        .extra_toml
        .replace(&moto.endpoint(), "http://minio.landkreis.example:9000");
    env.write_config(&bad);
    let out = env.cli(&["check-config"], None);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("documents.allow_http"), "{text}");
}

#[test]
fn a_store_that_is_down_gets_451_never_250() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut moto = Moto::start(scratch.path());
    moto.create_bucket(BUCKET);
    let admin = free_port();
    let toml = format!(
        "{}\n[admin]\nbind = \"127.0.0.1:{admin}\"\n",
        moto.documents_toml(BUCKET, "documents/")
    );
    let w = World::relay_with(UpstreamOpts::default(), |c| c.extra_toml = toml);
    let ready = |status: u16| {
        wait_until(Duration::from_secs(30), || {
            http_get(admin, "/readyz", None)
                .ok()
                .filter(|r| r.status == status)
                .map(|r| r.body)
        })
    };
    assert!(
        ready(200).is_some(),
        "not ready with the bucket up\n{}",
        w.gw.log()
    );
    // `put` is Ok only once the store has acknowledged the object: with the
    // store gone, the message is refused for now, not accepted without it,
    // and the balancer is told so.
    moto.kill();
    let body =
        ready(503).unwrap_or_else(|| panic!("still ready without the bucket\n{}", w.gw.log()));
    assert!(body.contains("documents: "), "{body}");
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message_with_pdf("", &document(4000, 3), "down"),
    );
    assert_eq!(r.code, 451, "{r}\n{}", w.gw.log());
    c.quit();
    assert!(w.up().messages().is_empty(), "relayed without its document");
}
