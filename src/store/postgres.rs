//! The PostgreSQL store (SPEC §11): several gateway instances share one
//! queue, delivery log, link table, suppression list and limit counters.
//!
//! Selected with `[store] backend = "postgres"` and `url` (see
//! `crate::config::StoreSection`). The schema lives in
//! `migrations/postgres/V*__*.sql` and is applied by refinery when a store
//! is opened; concurrent starts serialise on an advisory lock, so two
//! instances never migrate at once.
//!
//! # Schema
//!
//! The same tables as the embedded store, with the same meaning (times are
//! Unix milliseconds in `bigint` columns):
//! `messages` (queue and delivery log; plus `lease_owner`, `lease_until`),
//! `recipients`, `contents` (the message bytes as `bytea`, deleted when the
//! message becomes final), `attempts`, `links`, `downloads`,
//! `suppressions`, `relay_events`, `limit_counters`, `bans`, `ping`, and
//! `settings` (values every instance must share).
//!
//! # Durability
//!
//! Every write is one transaction; [`QueueStore::enqueue`] returns after its
//! `COMMIT` (message row, recipients, content, links, companions and limit
//! counters together), so a `250` means the message is in the database's
//! WAL. Each connection is opened with `synchronous_commit=on`, whatever
//! the server's or role's default: `off` would answer before the WAL is
//! flushed. PostgreSQL batches the WAL flushes of concurrent commits by
//! itself, which replaces the embedded store's group commit. Deleted
//! content stays in dead tuples (and the WAL) until autovacuum reclaims
//! them; unlike SQLite's `secure_delete` nothing overwrites it at once.
//!
//! # Pseudonyms
//!
//! The delivery log's HMAC key (see `crate::store::pseudonym`) must be the
//! same on every instance, or the log of one could not be matched by
//! another's `gdpr export`. It is therefore kept in the `settings` table
//! (created once with `INSERT … ON CONFLICT DO NOTHING`, then read by every
//! instance), not in `data_dir/log.key`. Deleting that row makes every
//! pseudonym in the log unlinkable, as deleting the key file does for the
//! embedded store.
//!
//! # The lease contract
//!
//! Each store handle has an instance id (host name, process id and a random
//! part). [`QueueStore::due`] claims the rows it returns in one statement: an
//! `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)` that sets
//! `lease_owner` to the instance and `lease_until` to the database's
//! `now() + lease_time`, for queued, due rows whose lease is null, expired,
//! or already this instance's (so a message the scheduler passed over, e.g.
//! while delivery was paused, comes back to it). Two instances calling
//! `due()` at once therefore never get the same message, and neither waits
//! for the other's rows.
//!
//! While the process runs, a background task renews the leases it took,
//! every `lease_time / 3`, as long as the message is not final and the
//! lease is still its own. A lease that is not renewed (the instance died,
//! or hung longer than `lease_time`) expires, and the next `due()` of any
//! instance picks the message up. Recording an attempt, postponing and
//! deleting end a lease; a final message has none. `hold`, `release`,
//! `retry` and `flush` leave it alone: a worker may be in the middle of
//! that message's SMTP transaction, and the lease keeps other instances
//! off it until the attempt is recorded.
//!
//! [`QueueStore::record_attempt`] refuses ([`StoreError::Conflict`]) when the
//! lease is another instance's (it was taken over after expiring) or when
//! the attempt count moved (the other instance already recorded): the
//! same attempt is never recorded twice. Delivery is at least once, as
//! with any queue: an instance that hangs past its lease while its
//! upstream transaction still succeeds can cause a second delivery.
//!
//! # Limit counters
//!
//! `limit_counters` rows are shared, so quotas hold across instances. An
//! accepted message adds to them with `INSERT … ON CONFLICT DO UPDATE SET
//! count = count + excluded.count` inside its enqueue transaction (keys in
//! sorted order, so concurrent enqueues cannot deadlock). Each counter is
//! spread over 16 rows (`shard`) and a transaction adds to one of them at
//! random: one row per counter would hold every other enqueue of the same
//! account until this one's commit is flushed. A read sums the shards. The
//! check at
//! MAIL/RCPT reads the counters before the message commits, as in the
//! embedded store: sessions submitting at the same moment, on any number of
//! instances, may together pass a limit by at most their number.
//!
//! [`QueueStore::enqueue`]: crate::store::QueueStore::enqueue
//! [`QueueStore::due`]: crate::store::QueueStore::due
//! [`QueueStore::record_attempt`]: crate::store::QueueStore::record_attempt

/// Runs `$body` (an expression using the transaction `$tx`) in one
/// transaction on a pooled connection and commits it. An error leaves the
/// transaction to be rolled back when it is dropped.
macro_rules! in_tx {
    ($pool:expr, |$tx:ident| $body:expr) => {{
        let mut client = $pool.get().await?;
        let $tx = client.transaction().await?;
        let out = $body;
        $tx.commit().await?;
        Ok::<_, StoreError>(out)
    }};
}

mod lease;
mod limits;
mod links;
mod liveness;
mod log;
mod messages;
mod queue;
mod suppression;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use super::StoreError;
use super::pseudonym::Pseudonymizer;

/// A pooled connection's transaction; statements are prepared once per
/// connection (deadpool's statement cache).
type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The `settings` row holding the delivery log's pseudonym key.
pub(crate) const PSEUDONYM_KEY: &str = "log_pseudonym_key";
const PSEUDONYM_KEY_LEN: usize = 32;

/// Per connection: commits reach disk before `250`; no statement or idle
/// transaction holds rows (and leases) for more than a minute.
const SESSION_SETTINGS: &str = "-c synchronous_commit=on -c statement_timeout=60000 \
     -c idle_in_transaction_session_timeout=60000";
/// Taken around migrations so instances starting together apply them once
/// (any constant unique to this application; "schleuse" in ASCII).
const MIGRATION_LOCK: i64 = 0x7363_686c_6575_7365;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// A PostgreSQL failure ([`StoreError::Postgres`]). Opaque, so that no
/// caller depends on the driver's, the pool's or refinery's types; it reads,
/// causes and all, as the failure inside does.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PgError(PgFailure);

#[derive(Debug, thiserror::Error)]
enum PgFailure {
    #[error("{}", with_causes(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("connection pool: {}", with_causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("cannot set up the connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("schema migration failed: {0}")]
    Migration(#[from] refinery::Error),
    #[error("store.url: {0}")]
    Url(String),
    #[error("store.ca_file: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "the settings row {PSEUDONYM_KEY} holds {0} bytes, expected {PSEUDONYM_KEY_LEN}; \
         delete it only if you accept that older log entries can no longer be matched"
    )]
    BadKey(usize),
    #[error("the system random generator failed")]
    Random,
}

impl PgError {
    /// `[store] url` cannot be used, for the reason given.
    pub(crate) fn url(why: String) -> PgError {
        PgError(PgFailure::Url(why))
    }

    /// The server's `disk_full` (SQLSTATE 53100).
    pub fn is_out_of_space(&self) -> bool {
        matches!(&self.0, PgFailure::Db(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL))
    }
}

/// An error with the causes its own text leaves out: tokio-postgres says
/// "error performing TLS handshake" and keeps the why (an unknown CA, a
/// wrong host name) in its source.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

impl From<PgFailure> for StoreError {
    fn from(e: PgFailure) -> Self {
        StoreError::Postgres(PgError(e))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgFailure::Db(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgFailure::Pool(e).into()
    }
}

/// How to reach the database and how to behave there.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq-style URL or key=value string (`sslmode=disable|prefer|require`).
    pub url: String,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// How long a claim on a message lasts unless renewed.
    pub lease_time: Duration,
    /// Extra CA certificates for `sslmode=require` (besides the WebPKI roots).
    pub ca_file: Option<PathBuf>,
    /// The instance id; `None`: host name, process id and a random part.
    /// Only tests give one, to play a second process.
    pub instance: Option<String>,
}

pub struct PostgresStore {
    pool: Pool,
    instance: String,
    lease_secs: f64,
    pseudonyms: Pseudonymizer,
    /// `log_recipients = "clear"`: keep recipients in clear once final.
    clear_recipients: AtomicBool,
    /// The messages this instance leased and has not given back: what the
    /// renewal task renews.
    leases: Arc<Mutex<lease::Leases>>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Without a store nobody delivers these messages here any more: let
        // the leases run out so another instance takes them over.
        self.renewal.abort();
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations and loads the shared pseudonym
    /// key. Must run inside a Tokio runtime (it starts the lease renewal).
    pub async fn open(options: &PgOptions) -> Result<PostgresStore, StoreError> {
        let mut pg = crate::config::parse_postgres_url(&options.url).map_err(PgFailure::Url)?;
        let session = match pg.get_options() {
            Some(o) => format!("{o} {SESSION_SETTINGS}"),
            None => SESSION_SETTINGS.to_owned(),
        };
        pg.options(session);
        if pg.get_application_name().is_none() {
            pg.application_name("schleuse");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        // A database host that vanishes without a reset (failover, a cut
        // link) must fail calls within a minute, not after the kernel's
        // retransmission timeout of 15+ minutes: sessions answer 451 and
        // leases are not renewed past their time by a hung renewal.
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(20));
        pg.tcp_user_timeout(Duration::from_secs(30));
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if pg.get_ssl_mode() == SslMode::Require {
            let tls =
                crate::tls::client_config(options.ca_file.as_deref()).map_err(PgFailure::Tls)?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            Manager::from_config(pg, tls, manager_config)
        } else {
            // parse_postgres_url allowed plaintext: loopback or a Unix socket only.
            Manager::from_config(pg, NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            // A database that does not answer makes store calls fail (the
            // session answers 451) instead of hanging.
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(PgFailure::Build)?;
        migrate(&pool).await?;
        let pseudonyms = pseudonym_key(&pool).await?;
        check_durability(&pool).await?;
        let instance = options.instance.clone().unwrap_or_else(instance_id);
        let lease_secs = options.lease_time.as_secs_f64().max(0.001);
        let leases = Arc::new(Mutex::new(lease::Leases::default()));
        let renewal = tokio::spawn(lease::renew_leases(
            pool.clone(),
            instance.clone(),
            lease_secs,
            Arc::clone(&leases),
        ));
        Ok(PostgresStore {
            pool,
            instance,
            lease_secs,
            pseudonyms,
            clear_recipients: AtomicBool::new(false),
            leases,
            renewal,
        })
    }

    /// The connection pool, for `crate::store::migrate`, which writes a
    /// whole embedded store in one transaction of its own.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// This handle's instance id, as written to `lease_owner`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn pseudonyms_if_hidden(&self) -> Option<Pseudonymizer> {
        (!self.clear_recipients.load(Ordering::Relaxed)).then(|| self.pseudonyms.clone())
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, lease::Leases> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets a lease this instance no longer needs renewed.
    fn forget_lease(&self, id: &str) {
        self.leases().held.remove(id);
    }
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    // Session-level: held across refinery's own transactions, released by
    // the unlock below or, if this process dies, by the server.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner()
        .run_async(&mut **client)
        .await
        .map_err(PgFailure::Migration);
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    for m in report?.applied_migrations() {
        tracing::info!(migration = %m, "store: schema migration applied");
    }
    Ok(())
}

/// The shared HMAC key: created by the first instance, read by all.
async fn pseudonym_key(pool: &Pool) -> Result<Pseudonymizer, StoreError> {
    let client = pool.get().await?;
    let mut key = [0u8; PSEUDONYM_KEY_LEN];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| PgFailure::Random)?;
    client
        .execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&PSEUDONYM_KEY, &key.as_slice()],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT value FROM settings WHERE name = $1",
            &[&PSEUDONYM_KEY],
        )
        .await?;
    let stored: Vec<u8> = row.try_get(0)?;
    if stored.len() != PSEUDONYM_KEY_LEN {
        return Err(PgFailure::BadKey(stored.len()).into());
    }
    Ok(Pseudonymizer::from_key(&stored))
}

/// `250` relies on commits reaching disk: say so loudly when the server
/// was told not to flush at all (`synchronous_commit` is forced on per
/// connection; `fsync` is the server's alone).
async fn check_durability(pool: &Pool) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let fsync: String = client.query_one("SHOW fsync", &[]).await?.try_get(0)?;
    let sync: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .try_get(0)?;
    if fsync != "on" {
        tracing::warn!(
            "store: the PostgreSQL server runs with fsync = {fsync}: a crash of the database \
             host can lose messages already answered with 250"
        );
    }
    if sync == "off" || sync == "local" && fsync != "on" {
        tracing::warn!(synchronous_commit = %sync, "store: commits are not flushed before 250");
    }
    Ok(())
}

/// Host name, process id and 32 random bits: unique per process start, and
/// readable in `lease_owner` when an operator wonders who holds a message.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    let random: u32 = rand::random();
    format!("{host}/{}/{random:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_before_they_were_wrapped() {
        let url = StoreError::from(PgError::url("is empty".into()));
        assert_eq!(url.to_string(), "PostgreSQL: store.url: is empty");
        assert!(!url.is_out_of_space());
        let key = StoreError::from(PgFailure::BadKey(3));
        assert_eq!(
            key.to_string(),
            "PostgreSQL: the settings row log_pseudonym_key holds 3 bytes, expected 32; \
             delete it only if you accept that older log entries can no longer be matched"
        );
    }
}
