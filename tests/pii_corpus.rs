//! Measured quality of the PII check (SPEC §7) on the labelled German corpus
//! in `tests/pii/*.toml` (labelling rules: `tests/pii/README.md`).
//!
//! Message level: a category is predicted when the scan reports it, expected
//! when the corpus lists it. The test prints precision and recall per
//! category (`cargo test --test pii_corpus -- --nocapture`) and fails below
//! 0.95 precision or 0.90 recall in any category.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use schleuse::privacy::pii::{Category, Findings, Options, scan_message, scan_text};
use serde::Deserialize;

const MIN_PRECISION: f64 = 0.95;
const MIN_RECALL: f64 = 0.90;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    message: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    #[serde(skip)]
    file: String,
    expect: BTreeSet<Category>,
    #[serde(default)]
    format: Format,
    #[allow(dead_code)]
    note: Option<String>,
    body: String,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Text,
    Html,
    Eml,
}

fn load() -> Vec<Entry> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pii");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/pii exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut entries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable corpus file");
        let parsed: CorpusFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        entries.extend(parsed.message.into_iter().map(|mut e| {
            e.file = name.clone();
            e
        }));
    }
    entries
}

fn scan(entry: &Entry, opts: &Options) -> Findings {
    match entry.format {
        Format::Text => scan_text(&entry.body, opts),
        Format::Html => {
            let raw = format!(
                "From: a@example.org\r\nTo: b@example.org\r\nSubject: Test\r\n\
                 MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\n{}",
                entry.body.replace('\n', "\r\n")
            );
            scan_message(raw.as_bytes(), opts)
        }
        Format::Eml => scan_message(entry.body.replace('\n', "\r\n").as_bytes(), opts),
    }
}

#[derive(Default, Clone, Copy)]
struct Score {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Score {
    fn precision(self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

#[test]
fn corpus_precision_and_recall() {
    let entries = load();
    let opts = Options::default();

    // The corpus itself: large enough, unique ids, every category well
    // represented, and a good share of messages without personal data.
    let mut ids = HashSet::new();
    for e in &entries {
        assert!(ids.insert(e.id.as_str()), "duplicate id {}", e.id);
    }
    assert!(
        entries.len() >= 150,
        "corpus has {} messages",
        entries.len()
    );
    let negatives = entries.iter().filter(|e| e.expect.is_empty()).count();
    assert!(
        negatives * 10 >= entries.len() * 3,
        "{negatives} messages without findings"
    );

    let mut scores: BTreeMap<Category, Score> = Category::ALL
        .iter()
        .map(|&c| (c, Score::default()))
        .collect();
    let mut errors = Vec::new();
    // Per file: messages, and messages with any wrong category.
    let mut per_file: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in &entries {
        let got = scan(e, &opts).categories;
        let file = per_file.entry(e.file.as_str()).or_default();
        file.0 += 1;
        if got != e.expect {
            file.1 += 1;
        }
        for c in Category::ALL {
            let s = scores.entry(c).or_default();
            match (e.expect.contains(&c), got.contains(&c)) {
                (true, true) => s.tp += 1,
                (false, true) => {
                    s.fp += 1;
                    errors.push(format!("  FP {:<14} {}", c.as_str(), e.id));
                }
                (true, false) => {
                    s.fn_ += 1;
                    errors.push(format!("  FN {:<14} {}", c.as_str(), e.id));
                }
                (false, false) => {}
            }
        }
    }

    println!(
        "\nPII corpus: {} messages, {} without personal data\n",
        entries.len(),
        negatives
    );
    println!(
        "{:<14} {:>9} {:>4} {:>4} {:>4} {:>10} {:>8}",
        "category", "expected", "TP", "FP", "FN", "precision", "recall"
    );
    for (c, s) in &scores {
        println!(
            "{:<14} {:>9} {:>4} {:>4} {:>4} {:>10.3} {:>8.3}",
            c.as_str(),
            s.tp + s.fn_,
            s.tp,
            s.fp,
            s.fn_,
            s.precision(),
            s.recall()
        );
    }
    println!();
    for (file, (n, wrong)) in &per_file {
        println!("{file:<18} {n:>4} messages, {wrong:>2} with a wrong category");
    }
    if !errors.is_empty() {
        println!("\nmisclassified:\n{}", errors.join("\n"));
    }

    let mut failed = Vec::new();
    for (c, s) in &scores {
        assert!(
            s.tp + s.fn_ >= 20,
            "{c}: only {} positive messages",
            s.tp + s.fn_
        );
        if s.precision() < MIN_PRECISION || s.recall() < MIN_RECALL {
            failed.push(format!(
                "{c}: precision {:.3}, recall {:.3}",
                s.precision(),
                s.recall()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "below 0.95 precision / 0.90 recall: {failed:?}\n{}",
        errors.join("\n")
    );
}
