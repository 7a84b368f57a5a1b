//! Metrics of the documents taken out of messages and the link service,
//! and the age of the oldest record held (retention).

use ::metrics::{counter, gauge};

use crate::store::now_ms;

pub const DOCUMENTS_STORED: &str = "schleuse_documents_stored_total";
pub const DOCUMENTS_PURGED: &str = "schleuse_documents_purged_total";
pub const LINK_DOWNLOADS: &str = "schleuse_link_downloads_total";
pub const OLDEST_RECORD_AGE: &str = "schleuse_oldest_record_age_seconds";

/// Every `outcome` of [`LINK_DOWNLOADS`] (`crate::links::DownloadOutcome`).
pub const DOWNLOAD_OUTCOMES: [&str; 4] = ["downloaded", "wrong_password", "rate_limited", "gone"];

/// Documents sealed for one accepted message.
pub fn documents_stored(n: usize) {
    counter!(DOCUMENTS_STORED).increment(n as u64);
}

pub fn documents_purged(expired: usize, orphans: usize) {
    counter!(DOCUMENTS_PURGED, "reason" => "expired").increment(expired as u64);
    counter!(DOCUMENTS_PURGED, "reason" => "orphan").increment(orphans as u64);
}

/// The age of the oldest record held, from its write time (Unix ms).
pub fn oldest_record(at: Option<i64>) {
    let age_ms = at.map_or(0, |at| now_ms().saturating_sub(at).max(0));
    gauge!(OLDEST_RECORD_AGE).set(age_ms as f64 / 1000.0);
}

pub fn link_download(outcome: &'static str) {
    counter!(LINK_DOWNLOADS, "outcome" => outcome).increment(1);
}
