//! schleuse — a self-hosted SMTP submission gateway.
//!
//! Every message passes the stages below in this order, like a ship through
//! a lock; the modules are declared in the same order.
//!
//! ```text
//! app --SMTP+TLS+AUTH--> listener -> session -> policy -> transform -> dkim
//!                                                                   |
//!          upstream relay / outbox <- delivery <- queue <-----------+
//!                                         \-> DSN to the sender
//! ```
//!
//! - [`listener`]: accepts connections, caps them, runs TLS.
//! - [`session`]: the SMTP dialogue (smtp-proto), AUTH, envelope, DATA.
//! - [`pipeline`]: what happens to a message between DATA and the queue:
//!   a pure plan (every decision) and the step that executes it; `rules
//!   test` prints the same plan. [`blocking`]: when CPU-bound work leaves
//!   the async workers.
//! - [`policy`]: what an account may send.
//! - [`transform`]: changes made to the message (the `Received:` header).
//! - [`dkim`]: signs the final message, the last step before the queue;
//!   also the `dkim keygen` / `dkim check` key tools.
//! - [`queue`] / [`store`]: durable hand-over; `250` only after fsync.
//! - [`delivery`]: relay through mail-send, retries, DSNs, outbox mode.
//! - [`reputation`]: the blocklist watch (DNSBL/RHSBL), which can pause
//!   delivery.
//! - [`admin`]: the `user` and `queue` commands and the HTTP endpoint
//!   (`/metrics`, `/healthz`, `/readyz`); [`metrics`] names what is counted;
//!   [`server`] wires it all.
//! - shared ground, below the stages that use it: [`state`] (what
//!   `schleuse run` shares: config snapshots, queue, connections, limits,
//!   vault), [`reply`] (SMTP replies), [`dsn`] (the DSNs sent), [`dns`]
//!   (the resolver), [`basic_auth`]. The modules import one another
//!   without cycles (`.ci/run` checks with `modgraph.py`).

pub mod accounts;
pub mod admin;
pub mod anomaly;
pub mod argon2_pool;
pub mod basic_auth;
pub mod blocking;
pub mod config;
pub mod delivery;
pub mod dkim;
pub mod dns;
pub mod dsn;
#[doc(hidden)]
pub mod fuzzing;
pub mod html;
pub mod limits;
pub mod links;
pub mod listener;
pub mod logfmt;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod privacy;
pub mod queue;
pub mod reply;
pub mod reputation;
pub mod retention;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod suppression;
pub mod tls;
pub mod transform;
