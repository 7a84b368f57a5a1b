//! What the PII check's findings mean for one message (`[privacy] pii`).
//!
//! The decision names categories only: neither the log, nor the notice to
//! the staff member, nor the SMTP reply ever repeats the data found.

use super::pii::{self, Category, Findings};
use crate::config::{Language, PiiPolicy, Privacy};

/// The check's outcome for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing found, or the check is off.
    Pass,
    /// Relay; the note goes into the delivery log.
    Tag { note: String },
    /// Relay, note it, and tell the staff member.
    Warn {
        note: String,
        categories: Vec<Category>,
    },
    /// Accept and hold for an admin.
    Hold { note: String },
    /// Refuse (`550 5.7.1`) with this text.
    Reject { text: String },
}

impl Decision {
    pub fn note(&self) -> Option<String> {
        match self {
            Decision::Tag { note } | Decision::Warn { note, .. } | Decision::Hold { note } => {
                Some(note.clone())
            }
            Decision::Pass | Decision::Reject { .. } => None,
        }
    }
}

fn names(categories: &[Category]) -> String {
    categories
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Labels for people (the notice), in the configured language.
pub fn labels(categories: &[Category], language: Language) -> String {
    categories
        .iter()
        .map(|c| match language {
            Language::De => c.label_de(),
            Language::En => c.label_en(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Scans the message (as the client sent it) and decides. CPU-bound but
/// linear; the caller runs it off the async workers for large messages.
pub fn decide(raw: &[u8], privacy: &Privacy) -> Decision {
    if privacy.pii == PiiPolicy::Off {
        return Decision::Pass;
    }
    let opts = pii::Options {
        signature_marker: privacy.signature_marker.clone(),
    };
    let found: Findings = pii::scan_message(raw, &opts);
    let categories: Vec<Category> = found.categories.iter().copied().collect();
    if categories.is_empty() {
        return Decision::Pass;
    }
    let note = format!("pii: {}", names(&categories));
    match privacy.pii {
        PiiPolicy::Off => Decision::Pass,
        PiiPolicy::Tag => Decision::Tag { note },
        PiiPolicy::Warn => Decision::Warn { note, categories },
        PiiPolicy::Hold => Decision::Hold { note },
        PiiPolicy::Reject => Decision::Reject {
            text: format!(
                "Message refused: it appears to contain personal data ({}); send such data as a document (attachment) instead",
                labels(&categories, Language::En)
            ),
        },
    }
}
