//! PII check, in process: how many MB of text per second one core scans.
//!
//!     cargo run --release --example pii_bench -- [--iterations 11]
//!
//! Two inputs, each scanned with `privacy::pii::scan_text` at the default
//! options, one message at a time as the gateway does:
//! - `german`: every body of the labelled corpus in `tests/pii/*.toml`
//!   (real-world German mails between the county, parents, schools and
//!   companies, dense with numbers, addresses and health words);
//! - `german-60k`: the same bodies joined into one 60 KB text (no
//!   signature cut), for the per-byte cost without the per-message one;
//! - `smtp-source`: a 200 KiB body of the 'X' lines `smtp-source -l` sends,
//!   the peer benchmark's message (long words, no digits).
//!
//! Each input is scanned `--iterations` times after one warm-up; the median
//! is reported as MB/s (10^6 bytes of text per second of this thread's CPU
//! time, so a busy machine slows the run but not the figure). The last line is a
//! digest of every finding, so two builds can be compared for equal results
//! (`--digest-only` prints just that line; `--only NAME` runs one input).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::path::Path;

use schleuse::privacy::pii::{Options, scan_text};

#[derive(serde::Deserialize)]
struct CorpusFile {
    message: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    body: String,
}

fn corpus() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pii");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    let mut bodies = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        match toml::from_str::<CorpusFile>(&text) {
            Ok(file) => bodies.extend(file.message.into_iter().map(|m| m.body)),
            Err(e) => eprintln!("skipping {}: {e}", path.display()),
        }
    }
    bodies
}

/// smtp-source's body: lines of 'X' (its default line length is 80 with
/// CRLF, so 78 characters).
fn smtp_source_body(bytes: usize) -> String {
    let line = format!("{}\r\n", "X".repeat(78));
    line.repeat(bytes / line.len() + 1)
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn median_mb_s(texts: &[String], opts: &Options, iterations: usize) -> f64 {
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut rates = Vec::with_capacity(iterations);
    for i in 0..=iterations {
        let start = thread_cpu();
        for t in texts {
            std::hint::black_box(scan_text(std::hint::black_box(t), opts));
        }
        if i > 0 {
            rates.push(bytes as f64 / 1e6 / (thread_cpu() - start));
        }
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(11usize)
        .max(1);
    let digest_only = args.iter().any(|a| a == "--digest-only");
    // `--only NAME` runs one input (for a profile of just that one).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let opts = Options::default();
    let german = corpus();
    let x = vec![smtp_source_body(200 * 1024)];

    let mut digest = DefaultHasher::new();
    for t in german.iter().chain(&x) {
        let f = scan_text(t, &opts);
        f.counts.iter().collect::<Vec<_>>().hash(&mut digest);
    }
    if !digest_only {
        let joined = vec![german.join("\n")];
        let no_cut = Options {
            signature_marker: String::new(),
        };
        for (name, texts, opts) in [
            ("german", &german, &opts),
            ("german-60k", &joined, &no_cut),
            ("smtp-source", &x, &opts),
        ] {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let size: usize = texts.iter().map(String::len).sum();
            println!(
                "{name:<12} {:>4} text(s), {size:>7} bytes: {:>8.1} MB/s",
                texts.len(),
                median_mb_s(texts, opts, iterations)
            );
        }
    }
    println!("findings digest {:016x}", digest.finish());
}
