//! DKIM signing cost: µs per message through `schleuse::dkim::Signer`, for
//! Ed25519 and RSA-2048 (and both at once), on 10 KB and 1 MB messages.
//! Run by `bench/dkim.sh` (release build), which sets the figures next to
//! `openssl speed ed25519 rsa2048`.
//!
//!     cargo run --release --example dkim_bench -- [--seconds 2]
//!
//! Each case signs the same message in a loop for the given time (after a
//! short warm-up) and reports the mean and the median of the per-message
//! times. The cost is the From: parse, body + header canonicalization and
//! hashing (SHA-256) per signature, and one private-key operation per
//! signature.

use std::time::{Duration, Instant};

use schleuse::config::DkimKey;
use schleuse::dkim::{Algorithm, Signer, keygen};

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: Sachbearbeitung <sb@landkreis.example>\r\n\
        To: Eltern <eltern@example.org>\r\n\
        Subject: =?utf-8?q?Sch=C3=BClerbef=C3=B6rderung?=\r\n\
        Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
        Message-ID: <bench@landkreis.example>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    let line = "Sehr geehrte Eltern, die Fahrkarte Ihres Kindes liegt dem Bescheid bei.  \r\n";
    while m.len() < size {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

struct Stats {
    n: usize,
    mean_us: f64,
    median_us: f64,
}

fn measure(signer: &Signer, msg: &[u8], seconds: f64) -> Stats {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        std::hint::black_box(signer.sign(std::hint::black_box(msg)).expect("sign"));
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times.len() < 5 {
        let t = Instant::now();
        let out = signer.sign(std::hint::black_box(msg)).expect("sign");
        times.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(std::hint::black_box(out).is_some());
    }
    let n = times.len();
    let mean_us = times.iter().sum::<f64>() / n as f64;
    times.sort_by(f64::total_cmp);
    Stats {
        n,
        mean_us,
        median_us: times[n / 2],
    }
}

fn main() {
    let mut seconds = 2.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = |selector: &str, alg: Algorithm| -> DkimKey {
        let g = keygen::keygen(dir.path(), "landkreis.example", selector, alg).expect("keygen");
        DkimKey {
            domain: "landkreis.example".into(),
            selector: selector.into(),
            key: g.path,
        }
    };
    let ed = key("ed", Algorithm::Ed25519);
    let rsa = key("rsa", Algorithm::Rsa);
    let cases: [(&str, Vec<DkimKey>); 3] = [
        ("Ed25519", vec![ed.clone()]),
        ("RSA-2048", vec![rsa.clone()]),
        ("Ed25519 + RSA-2048", vec![ed, rsa]),
    ];
    let sizes = [("10 KB", 10 * 1024), ("1 MB", 1024 * 1024)];

    println!(
        "| keys | message | µs/message (mean) | µs/message (median) | messages/s (one core) | samples |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (name, keys) in &cases {
        let signer = Signer::load(keys).expect("load");
        for (label, size) in sizes {
            let msg = message(size);
            let s = measure(&signer, &msg, seconds);
            println!(
                "| {name} | {label} | {:.1} | {:.1} | {:.0} | {} |",
                s.mean_us,
                s.median_us,
                1e6 / s.mean_us,
                s.n
            );
        }
    }
}
