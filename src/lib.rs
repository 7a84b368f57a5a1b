//! schleuse — a self-hosted SMTP submission gateway.
//!
//! Every message passes the stages below in this order, like a ship through
//! a lock:
//!
//! ```text
//! app --SMTP+TLS+AUTH--> listener -> session --DATA--> pipeline -> queue
//!                                                        |          |
//!      policy -> privacy -> transform (links) -> dkim  <-+          v
//!                                                               delivery
//!   Mailjet events -> suppression                  upstream relay / outbox
//!                                                    \-> DSN to the sender
//! ```
//!
//! In the order a message meets them:
//! - [`listener`]: accepts connections, caps them, PROXY protocol, TLS.
//! - [`session`]: the SMTP dialogue (smtp-proto), AUTH, envelope, DATA;
//!   turns every refusal into a [`reply`].
//! - [`pipeline`]: what happens to a message between DATA and the queue: a
//!   pure plan (every decision, no I/O) and the step that executes it; the
//!   session and `rules test` share it.
//! - its stages: [`policy`] (relay rules: what an account may send),
//!   [`privacy`] (the PII check), [`transform`] (From/Reply-To, header
//!   privacy, attachments to [`links`], `Received:`), [`dkim`] (signs the
//!   final message); [`limits`] and [`anomaly`] (rates, bans, unusual
//!   sending) before them.
//! - [`queue`] / [`store`]: durable hand-over; `250` only after fsync.
//! - [`delivery`]: relay through mail-send, retries, pauses, [`dsn`]s, outbox
//!   mode; [`suppression`] learns from bounces and Mailjet's events;
//!   [`reputation`] watches the blocklists; [`retention`] purges.
//! - [`admin`]: the command line and the HTTP endpoint (`/metrics`,
//!   `/healthz`, `/readyz`); [`server`] wires it all.
//!
//! The declarations below run bottom-up by layer: a module imports only
//! modules declared in groups above its own or in its own group, never
//! below, and there are no import cycles (`.ci/run` checks with
//! `modgraph.py`). The README's Layout section has the same table.

// Ground: configuration and small shared types; they import no stage.
pub mod argon2_pool;
pub mod basic_auth;
pub mod blocking;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod html;
pub mod logfmt;
pub mod notice;
pub mod reply;
pub mod tls;

// Storage and the facts beside it.
pub mod accounts;
pub mod dns;
pub mod dsn;
pub mod metrics;
pub mod store;

// The stages a message passes.
pub mod anomaly;
pub mod dkim;
pub mod limits;
pub mod links;
pub mod policy;
pub mod privacy;
pub mod queue;
pub mod transform;

// Their order, for DATA, `rules test` and the `sendmail` command.
pub mod pipeline;

// What a running gateway shares.
pub mod state;

// After the hand-over.
pub mod delivery;
pub mod reputation;
pub mod retention;
pub mod suppression;

// The SMTP front.
pub mod listener;
pub mod session;

// Commands and wiring.
pub mod admin;
pub mod server;
