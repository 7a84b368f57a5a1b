//! PII check (SPEC §7): finds personal data in the text of a message that
//! should travel as a document instead.
//!
//! The scan reports only *categories and counts*, never the matched data,
//! so that a finding can be logged, shown in a notice or put into a `550`
//! reply without repeating the personal data it is about.
//!
//! Pipeline for one text ([`scan_text`]):
//! 1. cut the staff member's signature block (a line equal to
//!    [`Options::signature_marker`], by default `-- `; quoted text after it
//!    is scanned again);
//! 2. normalise Unicode spaces, dashes and quotes to ASCII;
//! 3. IBANs (`iban`) are found first and masked, so their digits cannot
//!    look like phone numbers or tax IDs;
//! 4. tax IDs (`taxid`), phone numbers (`phone`), dates of birth
//!    (`dates`), postal addresses (`address`) and health terms (`health`)
//!    are counted. Each submodule documents its rule.
//!
//! Every scanner is a hand-written single pass over the bytes with bounded
//! look-around, so the cost is linear in the size of the text.
//! [`scan_message`] parses MIME with mail-parser and scans every text/plain
//! and text/html body part (HTML through [`html_to_text`]); attachments,
//! including attached messages, are not scanned.

use std::collections::{BTreeMap, BTreeSet};

use mail_parser::{MessageParser, PartType};

mod address;
mod dates;
mod health;
mod health_terms;
mod html;
mod iban;
mod phone;
mod table;
mod taxid;
#[cfg(test)]
mod tests;
mod text;

pub use html::html_to_text;

/// A category of personal data.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Iban,
    Phone,
    DateOfBirth,
    Address,
    TaxId,
    Health,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Iban,
        Category::Phone,
        Category::DateOfBirth,
        Category::Address,
        Category::TaxId,
        Category::Health,
    ];

    /// The machine name (`"iban"`, `"phone"`, `"date_of_birth"`, ...), the
    /// same as the serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Iban => "iban",
            Category::Phone => "phone",
            Category::DateOfBirth => "date_of_birth",
            Category::Address => "address",
            Category::TaxId => "tax_id",
            Category::Health => "health",
        }
    }

    /// Parses [`Category::as_str`].
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn label_de(self) -> &'static str {
        match self {
            Category::Iban => "Bankverbindung (IBAN)",
            Category::Phone => "Telefonnummer",
            Category::DateOfBirth => "Geburtsdatum",
            Category::Address => "Postanschrift",
            Category::TaxId => "Steuer-Identifikationsnummer",
            Category::Health => "Gesundheitsdaten / Behinderung (Art. 9 DSGVO)",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            Category::Iban => "bank account (IBAN)",
            Category::Phone => "phone number",
            Category::DateOfBirth => "date of birth",
            Category::Address => "postal address",
            Category::TaxId => "tax identification number",
            Category::Health => "health or disability data (GDPR Art. 9)",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scan options.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// A line equal to this (ignoring trailing whitespace, so `"-- "` also
    /// matches `"--"`) starts the sender's own signature, which is not
    /// scanned. Empty: no cut.
    pub signature_marker: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            signature_marker: "-- ".to_owned(),
        }
    }
}

/// What was found: categories and how often — never the data itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Findings {
    pub categories: BTreeSet<Category>,
    pub counts: BTreeMap<Category, usize>,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }

    pub fn count(&self, category: Category) -> usize {
        self.counts.get(&category).copied().unwrap_or(0)
    }

    fn add(&mut self, category: Category, n: usize) {
        if n > 0 {
            self.categories.insert(category);
            *self.counts.entry(category).or_insert(0) += n;
        }
    }

    /// Union: categories of both, per category the larger count (the text
    /// and HTML alternatives of one message say the same thing twice).
    pub fn merge_max(&mut self, other: &Findings) {
        for (&c, &n) in &other.counts {
            let mine = self.counts.entry(c).or_insert(0);
            *mine = (*mine).max(n);
            self.categories.insert(c);
        }
    }

    /// Comma-separated machine names, e.g. `"iban,health"` (for logs and
    /// SMTP replies; contains no personal data).
    pub fn summary(&self) -> String {
        self.categories
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Scans plain text; the signature block is cut first.
pub fn scan_text(text: &str, opts: &Options) -> Findings {
    let cut = text::cut_signature(text, &opts.signature_marker);
    let mut normal = text::normalize(&cut);
    let mut findings = Findings::default();

    let ibans = iban::find(&normal);
    findings.add(Category::Iban, ibans.len());
    text::mask(&mut normal, &ibans);

    let lower = text::lowercase_same_len(&normal);
    let tax = taxid::find(&normal, &lower);
    findings.add(Category::TaxId, tax.len());
    findings.add(Category::Phone, phone::find(&normal, &lower).len());
    findings.add(Category::DateOfBirth, dates::find(&lower).len());
    findings.add(Category::Address, address::find(&normal, &lower).len());
    findings.add(Category::Health, health::find(&normal, &lower).len());
    findings
}

/// Scans every text/plain and text/html body part of a raw message
/// (decoded by mail-parser; HTML converted with [`html_to_text`]).
/// Attachments are not scanned. The text view and the HTML view of the
/// message are summed separately and merged with [`Findings::merge_max`].
pub fn scan_message(raw: &[u8], opts: &Options) -> Findings {
    let Some(message) = MessageParser::new().parse(raw) else {
        return Findings::default();
    };
    let mut result = Findings::default();
    for view in [&message.text_body, &message.html_body] {
        let mut findings = Findings::default();
        for &id in view {
            let Some(part) = message.parts.get(id as usize) else {
                continue;
            };
            let part_findings = match &part.body {
                PartType::Text(t) => scan_text(t, opts),
                PartType::Html(h) => scan_text(&html_to_text(h), opts),
                _ => continue,
            };
            for (&c, &n) in &part_findings.counts {
                findings.add(c, n);
            }
        }
        result.merge_max(&findings);
    }
    result
}
