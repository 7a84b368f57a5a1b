//! Privacy (SPEC §7).
//!
//! - [`pii`]: the PII check — scans the text and HTML parts of a message for
//!   personal data that should travel as a document (IBAN, phone numbers,
//!   dates of birth, postal addresses, tax IDs, health and disability terms)
//!   and reports categories and counts, never the data itself.
//! - [`decision`]: what the findings mean for a message (`[privacy] pii`).
//! - [`notice`]: the warning to the staff member (`pii = "warn"`).

pub mod decision;
pub mod notice;
pub mod pii;
