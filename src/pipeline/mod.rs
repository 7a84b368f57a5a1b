//! The message pipeline: what happens to one submitted message between the
//! end of DATA and the queue (SPEC §3, §7, §8), in two steps.
//!
//! 1. [`plan`]: pure. From the facts (account, envelope, the message, the
//!    configuration in force) it takes every decision — the rule and its
//!    settings, the PII verdict, the app's control headers, what happens to
//!    the documents, which staff notices follow — and returns them as a
//!    [`Plan`]. No I/O: `rules test` prints the same plan the DATA path
//!    acts on, so the dry run cannot drift from what DATA does.
//! 2. [`execute`]: applies an accepted plan. Header transform, documents
//!    sealed into the vault and replaced by links, `Received:`, DKIM last.
//!    It yields the bytes to queue and a [`Sealing`] guard that discards
//!    the sealed documents unless the caller commits the message.
//!
//! The session turns a [`Refusal`] or an [`ExecuteError`] into its SMTP
//! reply; nothing here knows SMTP. Committing (limits, anomaly check,
//! notices, the queue) stays with the caller, which owns the store.

mod execute;
mod plan;
mod seal;

pub use execute::{Dkim, ExecuteError, Executed, Job, execute, headers};
pub use plan::{Facts, Notice, Plan, Refusal, plan};
pub use seal::Sealing;

#[cfg(test)]
mod tests;
