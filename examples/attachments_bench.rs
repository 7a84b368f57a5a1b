//! Attachments → links, in process: where the time goes for one large PDF.
//! Run by `bench/attachments.sh` (release build), which adds the end-to-end
//! figures (gateway with `mode = "link"` against `mode = "keep"`).
//!
//!     cargo run --release --example attachments_bench -- [--mb 10] [--iterations 11]
//!
//! The message: multipart/mixed with a small text+HTML alternative and one
//! random "PDF" of `--mb` MB (10^6 bytes; base64, 76-character lines, CRLF).
//! Single-threaded: every step runs on this thread (the store's `put`, which
//! the library runs on tokio's blocking pool, on a current-thread runtime).
//! Each step runs `--iterations` times after one warm-up; the median is
//! reported, as MB/s of document bytes (the decoded PDF) and of message
//! bytes (what the client sends).
//!
//! Steps, as the gateway runs them (`pipeline::execute`, its documents step, and
//! `links::vault::Vault::seal`):
//! (a) `attachments::scan` (mail-parser parse + base64 decode + plan),
//! (b) `DocumentKey::derive(token, None, salt)` + `seal` (AES-256-GCM),
//! (c) `LocalFiles::put` (write + fsync file + rename + fsync directory),
//! (d) `attachments::rewrite` with a one-entry link block,
//! (e) the whole chain (a)–(d) with a fresh token and salt.
//! Baselines: memcpy of the message, mail-parser's parse alone (which `scan`
//! calls, and which decodes every part while parsing), and base64 decoding
//! of the attachment body alone: mail-parser's slice decoder, and the base64
//! crate's per 76-character line and in one call on the body with its line
//! breaks stripped.

use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use schleuse::config::Language;
use schleuse::links::crypto::{DocumentKey, new_salt, new_token};
use schleuse::store::document_files::{DocumentFiles as _, LocalFiles};
use schleuse::transform::attachments::{self, ExtractOptions, Plan, Scan};
use schleuse::transform::linkblock::{Block, Entry};

const MB: f64 = 1e6;

/// The message, and the byte range of the attachment's base64 body.
fn message(doc_bytes: usize) -> (Vec<u8>, std::ops::Range<usize>, Vec<u8>) {
    let mut pdf = vec![0u8; doc_bytes];
    rand::rng().fill_bytes(&mut pdf);
    let head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";
    let n = head.len().min(pdf.len());
    pdf[..n].copy_from_slice(&head[..n]);

    let mut m = Vec::with_capacity(doc_bytes * 4 / 3 + doc_bytes / 38 + 4096);
    m.extend_from_slice(
        b"From: Sachbearbeitung <sb@landkreis.example>\r\n\
          To: Eltern <eltern@example.org>\r\n\
          Subject: =?utf-8?q?Ihr_Bescheid?=\r\n\
          Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
          Message-ID: <attachments-bench@landkreis.example>\r\n\
          MIME-Version: 1.0\r\n\
          Content-Type: multipart/mixed; boundary=\"==outer==\"\r\n\
          \r\n\
          This is a multi-part message in MIME format.\r\n\
          --==outer==\r\n\
          Content-Type: multipart/alternative; boundary=\"==alt==\"\r\n\
          \r\n\
          --==alt==\r\n\
          Content-Type: text/plain; charset=utf-8\r\n\
          Content-Transfer-Encoding: 8bit\r\n\
          \r\n\
          Sehr geehrte Eltern,\r\n\
          \r\n\
          anbei erhalten Sie den Bescheid zur Sch\xc3\xbclerbef\xc3\xb6rderung.\r\n\
          \r\n\
          Mit freundlichen Gr\xc3\xbc\xc3\x9fen\r\n\
          Ihr Landkreis\r\n\
          --==alt==\r\n\
          Content-Type: text/html; charset=utf-8\r\n\
          Content-Transfer-Encoding: 8bit\r\n\
          \r\n\
          <html><body><p>Sehr geehrte Eltern,</p>\r\n\
          <p>anbei erhalten Sie den Bescheid zur Sch&uuml;lerbef&ouml;rderung.</p>\r\n\
          <p>Mit freundlichen Gr&uuml;&szlig;en<br>Ihr Landkreis</p></body></html>\r\n\
          --==alt==--\r\n\
          \r\n\
          --==outer==\r\n\
          Content-Type: application/pdf; name=\"Bescheid.pdf\"\r\n\
          Content-Disposition: attachment; filename=\"Bescheid.pdf\"\r\n\
          Content-Transfer-Encoding: base64\r\n\
          \r\n",
    );
    let start = m.len();
    let encoded = STANDARD.encode(&pdf);
    for line in encoded.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    let end = m.len();
    m.extend_from_slice(b"--==outer==--\r\n");
    (m, start..end, pdf)
}

/// CPU time of the whole process (all threads, so the work tokio's
/// blocking pool does for `put` counts), in nanoseconds:
/// `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, which is exact to the
/// nanosecond (unlike `/proc/*/schedstat` or `/proc/*/stat`, which lag by
/// up to a scheduler tick). Linux, 64-bit.
fn process_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on
    // 64-bit Linux), the clock id is a constant.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Median wall-clock and median CPU seconds of one step.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// Times `iterations` runs of `run` after one warm-up; `prepare` runs
/// untimed before each (inputs that the step consumes). `cpu_overhead` is
/// what reading the CPU clock itself costs (subtracted).
fn time<I, O>(
    iterations: usize,
    cpu_overhead: f64,
    mut prepare: impl FnMut() -> I,
    mut run: impl FnMut(I) -> O,
) -> Timing {
    let mut walls = Vec::with_capacity(iterations);
    let mut cpus = Vec::with_capacity(iterations);
    for i in 0..=iterations {
        let input = prepare();
        let c0 = process_cpu_ns();
        let t = Instant::now();
        let out = run(std::hint::black_box(input));
        let wall = t.elapsed().as_secs_f64();
        let cpu = process_cpu_ns().saturating_sub(c0) as f64 / 1e9;
        // Dropping the output (freeing megabytes) is not part of the step.
        drop(std::hint::black_box(out));
        if i > 0 {
            walls.push(wall);
            cpus.push((cpu - cpu_overhead).max(0.0));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Timing {
        wall: median(walls),
        cpu: median(cpus),
    }
}

fn plan_of(msg: &[u8]) -> Plan {
    match attachments::scan(msg, &ExtractOptions::default()).expect("scan") {
        Scan::Extract(plan) => plan,
        other => panic!("expected one document, got {other:?}"),
    }
}

fn block(size: u64, token: &str) -> Block {
    Block {
        language: Language::De,
        entries: vec![Entry {
            file_name: "Bescheid.pdf".into(),
            size,
            url: format!("https://via.landkreis.example/dokumente/d/{token}"),
            expires_at: 1_767_225_600_000,
            protected: false,
        }],
    }
}

/// Base64 body with CRLF line breaks, decoded line by line with the base64
/// crate (which does not skip line breaks itself) into a fresh buffer.
fn base64_crate_decode(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; body.len() / 4 * 3];
    let mut n = 0;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            n += STANDARD.decode_slice(line, &mut out[n..]).expect("base64");
        }
    }
    out.truncate(n);
    out
}

/// The same, with the line breaks removed first and one decode call: what
/// a bulk decoder does with this body.
fn base64_crate_decode_stripped(body: &[u8]) -> Vec<u8> {
    let mut flat = Vec::with_capacity(body.len());
    for line in body.split(|&b| b == b'\n') {
        flat.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
    }
    STANDARD.decode(&flat).expect("base64")
}

fn main() {
    let mut doc_mb = 10.0f64;
    let mut iterations = 11usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().and_then(|s| s.parse::<f64>().ok());
        match a.as_str() {
            "--mb" => doc_mb = value().expect("--mb N"),
            "--iterations" => iterations = value().expect("--iterations N").max(1.0) as usize,
            other => panic!("unknown argument {other}"),
        }
    }
    let doc_bytes = (doc_mb * MB) as usize;
    let (msg, body, pdf) = message(doc_bytes);
    let msg_bytes = msg.len();

    // Sanity: the scan finds exactly the PDF, the rewrite drops it.
    let plan = plan_of(&msg);
    assert_eq!(plan.documents.len(), 1);
    assert!(plan.documents[0].data == pdf, "decoded document differs");
    assert_eq!(plan.documents[0].file_name, "Bescheid.pdf");
    assert!(base64_crate_decode(&msg[body.clone()]) == pdf);
    assert!(base64_crate_decode_stripped(&msg[body.clone()]) == pdf);
    let out = attachments::rewrite(&msg, &plan, &block(doc_bytes as u64, "x")).expect("rewrite");
    assert!(out.len() < 8192, "rewritten message is {} bytes", out.len());
    drop((plan, out));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Under target/ (the crate's own disk), not a tmpfs /tmp: fsync must
    // reach the device the data directory would be on.
    let tmp_base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let tmp = tempfile::Builder::new()
        .prefix("attachments-bench-")
        .tempdir_in(&tmp_base)
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir");
    let files = LocalFiles::open(&tmp.path().join("documents")).expect("open store");
    let mut seq = 0u64;
    let mut next_id = || {
        seq += 1;
        format!("bench{seq}")
    };

    let token = new_token().expect("token");
    let salt = new_salt().expect("salt");
    let sealed = DocumentKey::derive(&token, None, &salt)
        .expect("key")
        .seal(&pdf)
        .expect("seal");
    let plan = plan_of(&msg);
    let one_block = block(doc_bytes as u64, &token);

    // What reading the CPU clock costs, measured on an empty step.
    let oh = time(iterations, 0.0, || (), |()| ()).cpu;
    let mut rows: Vec<(&str, Timing)> = Vec::new();
    let mut reused = vec![0u8; msg_bytes];
    rows.push((
        "memcpy of the message (reused buffer)",
        time(
            iterations,
            oh,
            || (),
            |()| {
                reused.copy_from_slice(&msg);
                std::hint::black_box(&mut reused);
            },
        ),
    ));
    rows.push((
        "memcpy of the message (fresh Vec)",
        time(iterations, oh, || (), |()| msg.to_vec()),
    ));
    rows.push((
        "base64 decode alone (base64 0.23, per line)",
        time(
            iterations,
            oh,
            || (),
            |()| base64_crate_decode(&msg[body.clone()]),
        ),
    ));
    rows.push((
        "base64 decode alone (base64 0.23, CRLF stripped)",
        time(
            iterations,
            oh,
            || (),
            |()| base64_crate_decode_stripped(&msg[body.clone()]),
        ),
    ));
    rows.push((
        "base64 decode alone (mail-parser base64_decode)",
        time(
            iterations,
            oh,
            || (),
            |()| mail_parser::decoders::base64::base64_decode(&msg[body.clone()]).expect("base64"),
        ),
    ));
    rows.push((
        "mail-parser parse alone",
        time(
            iterations,
            oh,
            || (),
            |()| {
                mail_parser::MessageParser::default()
                    .parse(&msg[..])
                    .map(|m| m.parts.len())
            },
        ),
    ));
    let t_scan = time(iterations, oh, || (), |()| plan_of(&msg));
    rows.push(("(a) attachments::scan", t_scan));
    let t_seal = time(
        iterations,
        oh,
        || (),
        |()| {
            DocumentKey::derive(&token, None, &salt)
                .expect("key")
                .seal(&pdf)
                .expect("seal")
        },
    );
    rows.push(("(b) DocumentKey::derive + seal", t_seal));
    let mut ids = Vec::new();
    let t_put = time(
        iterations,
        oh,
        || (next_id(), sealed.clone()),
        |(id, data)| {
            rt.block_on(files.put(&id, data)).expect("put");
            ids.push(id);
        },
    );
    rows.push(("(c) LocalFiles::put (fsync)", t_put));
    for id in ids.drain(..) {
        rt.block_on(files.delete(&id)).expect("delete");
    }
    let t_rewrite = time(
        iterations,
        oh,
        || (),
        |()| attachments::rewrite(&msg, &plan, &one_block).expect("rewrite"),
    );
    rows.push(("(d) attachments::rewrite", t_rewrite));
    let t_chain = time(iterations, oh, next_id, |id| {
        let mut plan = plan_of(&msg);
        let doc = plan.documents.pop().expect("document");
        let token = new_token().expect("token");
        let salt = new_salt().expect("salt");
        let sealed = DocumentKey::derive(&token, None, &salt)
            .expect("key")
            .seal(&doc.data)
            .expect("seal");
        drop(doc);
        rt.block_on(files.put(&id, sealed)).expect("put");
        ids.push(id);
        attachments::rewrite(&msg, &plan, &block(doc_bytes as u64, &token)).expect("rewrite")
    });
    rows.push(("(e) whole chain (a)+(b)+(c)+(d)", t_chain));
    for id in ids.drain(..) {
        rt.block_on(files.delete(&id)).expect("delete");
    }

    let doc_mb = doc_bytes as f64 / MB;
    let msg_mb = msg_bytes as f64 / MB;
    println!(
        "attachments_bench: one {doc_mb:.1} MB PDF (base64, 76-char lines, CRLF) in a {msg_mb:.2} MB message,"
    );
    println!(
        "one thread, median of {iterations} runs (after 1 warm-up); MB = 10^6 bytes; store under {}",
        tmp_base.display()
    );
    println!();
    let w = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "{:<w$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}  {:>9}",
        "step", "wall ms", "doc MB/s", "msg MB/s", "CPU ms", "doc MB/s", "msg MB/s"
    );
    println!(
        "{:<w$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}  {:>9}",
        "", "", "(wall)", "(wall)", "", "per core", "per core"
    );
    println!("{}", "-".repeat(w + 6 * 2 + 4 * 8 + 2 * 9));
    let line = |name: &str, t: Timing| {
        let rate = |mb: f64, secs: f64| {
            if secs > 0.0 {
                format!("{:.0}", mb / secs)
            } else {
                "-".into()
            }
        };
        println!(
            "{:<w$}  {:>8.3}  {:>8}  {:>8}  {:>8.3}  {:>9}  {:>9}",
            name,
            t.wall * 1e3,
            rate(doc_mb, t.wall),
            rate(msg_mb, t.wall),
            t.cpu * 1e3,
            rate(doc_mb, t.cpu),
            rate(msg_mb, t.cpu),
        );
    };
    for (name, t) in &rows {
        line(name, *t);
    }
    let cpu_only = Timing {
        wall: t_scan.wall + t_seal.wall + t_rewrite.wall,
        cpu: t_scan.cpu + t_seal.cpu + t_rewrite.cpu,
    };
    line("    sum (a)+(b)+(d): no I/O", cpu_only);
    println!();
    let target = 200.0;
    let verdict = |rate: f64| if rate >= target { "met" } else { "NOT met" };
    let scan_rate = doc_mb / t_scan.cpu;
    let cpu_rate = doc_mb / cpu_only.cpu;
    let chain_rate = doc_mb / t_chain.wall;
    println!(
        "verdict (>= {target:.0} MB/s of document per core for extraction): scan {scan_rate:.0} MB/s per CPU-second: {}; \
         scan+seal+rewrite {cpu_rate:.0}: {}; whole chain incl. fsync {chain_rate:.0} MB/s wall-clock: {}",
        verdict(scan_rate),
        verdict(cpu_rate),
        verdict(chain_rate)
    );
}
