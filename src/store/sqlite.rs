//! The embedded store: SQLite in WAL mode, `synchronous = FULL`.
//!
//! Why SQLite rather than redb: the admin CLI (`schleuse queue …`) must work
//! while the gateway runs, from another process; SQLite's file locking makes
//! that safe, redb allows one process per file. WAL gives readers a snapshot
//! while the writer commits, and `synchronous = FULL` fsyncs the WAL on every
//! commit, which is what "250 only after fsync" needs.
//!
//! Group commit: every write goes to one writer thread. It takes the first
//! job, then whatever else is already waiting (up to [`MAX_BATCH`]), runs each
//! in its own savepoint inside one transaction, commits once, and only then
//! answers all of them. Under load one fsync covers many messages; a lone
//! message is committed at once, with no added delay.
//!
//! Reads (due, content, list) use a separate connection so a large message
//! being loaded never stalls commits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    AttemptUpdate, BoxFuture, DownloadNotice, LinkRecord, MessageInfo, MessageState, NewMessage,
    QueueId, QueueStats, RecipientInfo, RecipientState, StoreError, now_ms,
};

mod limits;
mod links;
mod liveness;
mod log;
mod suppression;

use super::pseudonym::Pseudonymizer;
use super::{
    Erased, LimitStore, LinkStore, LogStore, QueueStore, SubjectRecords, SuppressionStore,
};
use std::sync::atomic::{AtomicBool, Ordering};

/// Upper bound of jobs per transaction: keeps one batch's latency bounded.
const MAX_BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL,
    account      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error   TEXT,
    finished_at  INTEGER,
    note         TEXT,
    dsn_to       TEXT
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(state, next_attempt, seq);
CREATE TABLE IF NOT EXISTS recipients (
    message_seq INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    address     TEXT NOT NULL,
    state       TEXT NOT NULL,
    reply       TEXT,
    PRIMARY KEY (message_seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contents (
    message_seq INTEGER PRIMARY KEY REFERENCES messages(seq) ON DELETE CASCADE,
    data        BLOB NOT NULL
);
-- One row, rewritten by every readiness check: proof that a commit works.
CREATE TABLE IF NOT EXISTS ping (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
";

/// What a writer job hands back: whether its statements succeeded (and if
/// not, why, for the rest of its batch), and the callback that answers the
/// caller once the batch's commit is known.
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn WriteJob>;

trait WriteJob: Send {
    /// Runs the statements; the answer waits for the batch's commit.
    fn run(self: Box<Self>, conn: &Connection) -> (Result<(), BatchFailure>, Done);
    /// Answers without running: the batch could not even start.
    fn fail(self: Box<Self>, failure: BatchFailure);
}

struct Write<T, F> {
    f: F,
    answer: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (Result<(), BatchFailure>, Done) {
        let Write { f, answer } = *self;
        let result = f(conn);
        let status = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(BatchFailure::of_store(e)),
        };
        let done: Done = Box::new(move |commit| {
            let _ = answer.send(commit.and(result));
        });
        (status, done)
    }

    fn fail(self: Box<Self>, failure: BatchFailure) {
        let _ = self.answer.send(Err(failure.into_error()));
    }
}

/// Why a batch failed, given to every job in it: the real cause ("database
/// is locked", "database or disk is full"), never just "shut down".
#[derive(Debug, Clone)]
struct BatchFailure {
    out_of_space: bool,
    text: String,
}

impl BatchFailure {
    fn of(e: &rusqlite::Error) -> BatchFailure {
        BatchFailure {
            out_of_space: super::sqlite_out_of_space(e),
            text: e.to_string(),
        }
    }

    fn of_store(e: &StoreError) -> BatchFailure {
        BatchFailure {
            out_of_space: e.is_out_of_space(),
            text: e.to_string(),
        }
    }

    fn into_error(self) -> StoreError {
        if self.out_of_space {
            StoreError::NoSpace(self.text)
        } else {
            StoreError::Commit(self.text)
        }
    }
}

pub struct SqliteStore {
    jobs: Mutex<mpsc::Sender<Job>>,
    reader: Arc<Mutex<Connection>>,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpoint_stop: mpsc::Sender<()>,
    path: PathBuf,
    pseudonyms: Pseudonymizer,
    /// `log_recipients = "clear"`: keep recipients in clear once final.
    clear_recipients: Arc<AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating if needed) `DATA_DIR/queue.db`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        super::private::private_dir(data_dir).map_err(|cause| StoreError::Io {
            path: data_dir.to_owned(),
            cause,
        })?;
        let path = data_dir.join("queue.db");
        // A database from before files were private: SQLite gives its WAL
        // and shared-memory files the database file's mode.
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            super::private::private_file(Path::new(&name)).map_err(|cause| StoreError::Io {
                path: PathBuf::from(&name),
                cause,
            })?;
        }
        let writer = open_connection(&path)?;
        writer.execute_batch(SCHEMA)?;
        writer.execute_batch(links::SCHEMA)?;
        writer.execute_batch(log::SCHEMA)?;
        writer.execute_batch(suppression::SCHEMA)?;
        writer.execute_batch(limits::SCHEMA)?;
        migrate(&writer)?;
        let pseudonyms = Pseudonymizer::load_or_create(data_dir).map_err(|e| StoreError::Io {
            path: data_dir.join(super::pseudonym::KEY_FILE),
            cause: std::io::Error::other(e.to_string()),
        })?;
        let reader = open_connection(&path)?;
        let checkpointer = open_connection(&path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let spawn_err = |cause| StoreError::Io {
            path: path.clone(),
            cause,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(spawn_err)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .map_err(spawn_err)?;
        Ok(SqliteStore {
            jobs: Mutex::new(tx),
            reader: Arc::new(Mutex::new(reader)),
            _checkpoint_stop: stop,
            path,
            pseudonyms,
            clear_recipients: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's next batch and resolves after the commit.
    fn write<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(Write { f, answer: tx });
        let sent = self
            .jobs
            .lock()
            .map_err(|_| StoreError::Closed)
            .and_then(|jobs| jobs.send(job).map_err(|_| StoreError::Closed));
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// Runs a read on the reader connection in a blocking thread.
    fn read<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().map_err(|_| StoreError::Closed)?;
                f(&conn)
            })
            .await
            .map_err(|_| StoreError::Closed)?
        })
    }
}

/// Columns added after a database may already exist: added in place, so an
/// upgrade keeps the queue.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    for column in ["note", "dsn_to"] {
        let has = conn
            .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = ?1")?
            .exists([column])?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {column} TEXT"))?;
        }
    }
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL + FULL: every commit fsyncs the log before returning.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted message content is overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    // No connection checkpoints on commit: that would stall the group
    // commit (and every waiting 250) for the length of a database fsync.
    // The checkpoint thread does it beside the writer instead.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// WAL frames (pages) after which the log is truncated even under load.
const WAL_TRUNCATE_FRAMES: i64 = 16_384;

/// PASSIVE checkpoints run concurrently with the writer (they never take
/// the write lock), so commits keep their latency. Once one has caught up,
/// a TRUNCATE empties the log file (a writer waits for that only briefly). Under unbroken
/// load it never catches up, so past [`WAL_TRUNCATE_FRAMES`] (64 MB at 4 KB
/// pages) one TRUNCATE checkpoint briefly waits for the writer: a rare
/// latency bump instead of an ever-growing file.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    let mut trouble = CheckpointTrouble::default();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        let result = match passive {
            // Caught up (the queue is idle or between bursts): empty the
            // log file too. Its old frames hold delivered messages, link
            // tokens included, which must not outlive the delivery on disk.
            Ok((frames, done)) if frames > 0 && frames == done => {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            }
            Ok((frames, _)) if frames > WAL_TRUNCATE_FRAMES => {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            }
            other => other.map(|_| ()),
        };
        trouble.note(result.err());
    }
}

/// How often a lasting checkpoint failure is logged again.
const CHECKPOINT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Checkpoint failures as the log tells them: a full disk makes every
/// checkpoint fail, twice a second, and one line a minute says as much.
#[derive(Default)]
struct CheckpointTrouble {
    /// Failures since the last line, and when that line was written.
    failing: Option<(u64, std::time::Instant)>,
}

impl CheckpointTrouble {
    fn note(&mut self, error: Option<rusqlite::Error>) {
        match (error, &mut self.failing) {
            (None, None) => {}
            (None, Some(_)) => {
                self.failing = None;
                tracing::info!("store: WAL checkpoints work again");
            }
            (Some(e), None) => {
                self.failing = Some((0, std::time::Instant::now()));
                tracing::warn!(error = %e, "store: WAL checkpoint failed (repeated failures are logged once a minute)");
            }
            (Some(e), Some((count, logged))) => {
                *count += 1;
                if logged.elapsed() >= CHECKPOINT_LOG_EVERY {
                    tracing::warn!(error = %e, failures = *count, "store: WAL checkpoints still failing");
                    *count = 0;
                    *logged = std::time::Instant::now();
                }
            }
        }
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

fn run_batch(conn: &Connection, batch: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Nothing of the batch runs; every caller learns why (the session
        // answers 451 or 452, delivery keeps its outcome for later).
        let failure = BatchFailure::of(&e);
        tracing::debug!(error = %e, jobs = batch.len(), "store: cannot begin a transaction");
        batch.into_iter().for_each(|j| j.fail(failure.clone()));
        return;
    }
    let mut dones = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            // Without a savepoint a failing job could not be undone alone:
            // leave it unrun, its caller gets the error.
            job.fail(BatchFailure::of(&e));
            continue;
        }
        let (status, done) = job.run(conn);
        let end = if status.is_ok() {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute_batch(end) {
            tracing::debug!(error = %e, "store: cannot end savepoint");
        }
        dones.push(done);
        if conn.is_autocommit() {
            // Some errors (disk full, I/O) make SQLite roll back the whole
            // transaction. Then nothing of this batch is stored: answer every
            // job run so far with the error that did it, and run none of the
            // rest.
            let failure = status.err().unwrap_or_else(|| BatchFailure {
                out_of_space: false,
                text: "the transaction was rolled back by the database".into(),
            });
            for d in dones {
                d(Err(failure.clone().into_error()));
            }
            jobs.for_each(|j| j.fail(failure.clone()));
            tracing::debug!(error = %failure.text, "store: transaction rolled back mid-batch");
            return;
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => dones.into_iter().for_each(|d| d(Ok(()))),
        Err(e) => {
            tracing::debug!(error = %e, "store: commit failed, batch rolled back");
            let _ = conn.execute_batch("ROLLBACK");
            let failure = BatchFailure::of(&e);
            for d in dones {
                d(Err(failure.clone().into_error()));
            }
        }
    }
}

fn insert_message(conn: &Connection, msg: &NewMessage) -> Result<QueueId, StoreError> {
    let now = now_ms();
    let state = if msg.held {
        MessageState::Held
    } else {
        MessageState::Queued
    };
    conn.prepare_cached(
        "INSERT INTO messages (id, received_at, account, sender, size, state, next_attempt, note,
             dsn_to)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?2, ?7, ?8)",
    )?
    .execute(params![
        msg.id,
        now,
        msg.account,
        msg.sender,
        msg.content.len() as i64,
        state.as_str(),
        msg.note,
        crate::store::dsn_to_column(msg.dsn_to.as_deref()),
    ])?;
    let seq = conn.last_insert_rowid();
    let mut rcpt = conn.prepare_cached(
        "INSERT INTO recipients (message_seq, idx, address, state) VALUES (?1, ?2, ?3, 'pending')",
    )?;
    for (i, r) in msg.recipients.iter().enumerate() {
        rcpt.execute(params![seq, i as i64, r])?;
    }
    // Reserve the space, then write through the incremental blob API:
    // binding the bytes as a parameter would make SQLite take a private
    // copy of the whole message first.
    conn.prepare_cached("INSERT INTO contents (message_seq, data) VALUES (?1, zeroblob(?2))")?
        .execute(params![seq, msg.content.len() as i64])?;
    let mut blob = conn.blob_open(rusqlite::MAIN_DB, "contents", "data", seq, false)?;
    blob.write_at(&msg.content, 0)?;
    for link in &msg.links {
        links::insert(conn, &msg.id, link)?;
    }
    for companion in &msg.companions {
        insert_message(conn, companion)?;
    }
    limits::add(conn, &msg.counters)?;
    Ok(msg.id.clone())
}

const INFO_COLUMNS: &str = "seq, id, received_at, account, sender, size, state, attempts, next_attempt, last_error, note, \
     dsn_to";

fn row_to_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, MessageInfo)> {
    let state: String = row.get(6)?;
    Ok((
        row.get(0)?,
        MessageInfo {
            id: row.get(1)?,
            received_at: row.get(2)?,
            account: row.get(3)?,
            sender: row.get(4)?,
            size: row.get::<_, i64>(5)? as u64,
            state: MessageState::parse(&state).unwrap_or(MessageState::Queued),
            attempts: row.get::<_, i64>(7)? as u32,
            next_attempt: row.get(8)?,
            last_error: row.get(9)?,
            note: row.get(10)?,
            dsn_to: crate::store::dsn_to_of(row.get(11)?, &row.get::<_, String>(4)?),
            recipients: Vec::new(),
        },
    ))
}

fn with_recipients(
    conn: &Connection,
    rows: Vec<(i64, MessageInfo)>,
) -> Result<Vec<MessageInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT address, state, reply FROM recipients WHERE message_seq = ?1 ORDER BY idx",
    )?;
    rows.into_iter()
        .map(|(seq, mut info)| {
            info.recipients = stmt
                .query_map([seq], |r| {
                    let state: String = r.get(1)?;
                    Ok(RecipientInfo {
                        address: r.get(0)?,
                        state: RecipientState::parse(&state).unwrap_or(RecipientState::Pending),
                        reply: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(info)
        })
        .collect()
}

fn query_infos(
    conn: &Connection,
    where_clause: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<MessageInfo>, StoreError> {
    let sql = format!("SELECT {INFO_COLUMNS} FROM messages {where_clause}");
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params, row_to_info)?
        .collect::<Result<Vec<_>, _>>()?;
    with_recipients(conn, rows)
}

fn lookup(conn: &Connection, id: &str) -> Result<(i64, MessageState), StoreError> {
    let row: Option<(i64, String)> = conn
        .query_row("SELECT seq, state FROM messages WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match row {
        Some((seq, state)) => Ok((
            seq,
            MessageState::parse(&state).unwrap_or(MessageState::Queued),
        )),
        None => Err(StoreError::NotFound(id.into())),
    }
}

fn set_state(
    conn: &Connection,
    id: &str,
    from: MessageState,
    to: MessageState,
) -> Result<(), StoreError> {
    let (seq, state) = lookup(conn, id)?;
    if state != from {
        return Err(StoreError::WrongState {
            id: id.into(),
            state,
            expected: from.as_str(),
        });
    }
    conn.execute(
        "UPDATE messages SET state = ?1, next_attempt = ?2 WHERE seq = ?3",
        params![to.as_str(), now_ms(), seq],
    )?;
    Ok(())
}

fn apply_attempt(
    conn: &Connection,
    id: &str,
    update: &AttemptUpdate,
    pseudonyms: Option<&Pseudonymizer>,
) -> Result<MessageState, StoreError> {
    let (seq, state) = lookup(conn, id)?;
    if !matches!(state, MessageState::Queued | MessageState::Held) {
        return Ok(state);
    }
    let attempts: i64 =
        conn.query_row("SELECT attempts FROM messages WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })?;
    if attempts != i64::from(update.expected_attempts) {
        return Err(StoreError::Conflict(id.into()));
    }
    if let Some(notice) = &update.bounce_notice {
        insert_message(conn, notice)?;
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE recipients SET state = ?1, reply = ?2 WHERE message_seq = ?3 AND address = ?4",
    )?;
    for (address, rstate, reply) in &update.recipients {
        stmt.execute(params![rstate.as_str(), reply, seq, address])?;
    }
    let count = |want: RecipientState| update.recipients.iter().filter(|r| r.1 == want).count();
    let summary = update
        .error
        .as_deref()
        .or_else(|| update.recipients.first().map(|r| r.2.as_str()));
    log::record_attempt(
        conn,
        seq,
        now_ms(),
        (
            count(RecipientState::Delivered),
            count(RecipientState::Pending),
            count(RecipientState::Failed),
        ),
        summary,
    )?;
    let pending: i64 = conn.query_row(
        "SELECT count(*) FROM recipients WHERE message_seq = ?1 AND state = 'pending'",
        [seq],
        |r| r.get(0),
    )?;
    let now = now_ms();
    let new_state = match (pending, update.next_attempt) {
        (p, Some(next)) if p > 0 => {
            conn.execute(
                "UPDATE messages SET attempts = attempts + 1, next_attempt = ?1, last_error = ?2
                 WHERE seq = ?3",
                params![next, update.error, seq],
            )?;
            // An admin's hold during the attempt stays in force.
            state
        }
        _ => {
            // Nothing pending (or no further attempt): the message is final.
            conn.execute(
                "UPDATE recipients SET state = 'failed', reply = coalesce(reply, ?1)
                 WHERE message_seq = ?2 AND state = 'pending'",
                params![update.error, seq],
            )?;
            let failed: i64 = conn.query_row(
                "SELECT count(*) FROM recipients WHERE message_seq = ?1 AND state = 'failed'",
                [seq],
                |r| r.get(0),
            )?;
            let fin = if failed > 0 {
                MessageState::Bounced
            } else {
                MessageState::Delivered
            };
            conn.execute(
                "UPDATE messages SET attempts = attempts + 1, state = ?1, last_error = ?2,
                 finished_at = ?3 WHERE seq = ?4",
                params![fin.as_str(), update.error, now, seq],
            )?;
            conn.execute("DELETE FROM contents WHERE message_seq = ?1", [seq])?;
            if let Some(p) = pseudonyms {
                log::pseudonymise(conn, seq, p)?;
            }
            fin
        }
    };
    Ok(new_state)
}

impl QueueStore for SqliteStore {
    fn enqueue(&self, msg: NewMessage) -> BoxFuture<'_, Result<QueueId, StoreError>> {
        self.write(move |conn| insert_message(conn, &msg))
    }

    fn due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<MessageInfo>, StoreError>> {
        self.read(move |conn| {
            query_infos(
                conn,
                "WHERE state = 'queued' AND next_attempt <= ?1 ORDER BY next_attempt, seq LIMIT ?2",
                params![now_ms, limit as i64],
            )
        })
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT min(next_attempt) FROM messages WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )?)
        })
    }

    fn content(&self, id: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let id = id.to_owned();
        self.read(move |conn| {
            // Read through the incremental blob API straight into one
            // buffer: a column read would first assemble SQLite's own copy
            // of a 25 MB value, then copy it again.
            let row: Option<(i64, i64)> = conn
                .prepare_cached(
                    "SELECT c.message_seq, length(c.data) FROM contents c
                     JOIN messages m ON m.seq = c.message_seq WHERE m.id = ?1",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((rowid, len)) = row else {
                return Ok(None);
            };
            let mut blob = conn.blob_open(rusqlite::MAIN_DB, "contents", "data", rowid, true)?;
            let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            std::io::Read::read_to_end(&mut blob, &mut data).map_err(StoreError::ContentRead)?;
            Ok(Some(data))
        })
    }

    fn record_attempt(
        &self,
        id: &str,
        update: AttemptUpdate,
    ) -> BoxFuture<'_, Result<MessageState, StoreError>> {
        let id = id.to_owned();
        let pseudonyms =
            (!self.clear_recipients.load(Ordering::Relaxed)).then(|| self.pseudonyms.clone());
        self.write(move |conn| apply_attempt(conn, &id, &update, pseudonyms.as_ref()))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<MessageInfo>, StoreError>> {
        self.read(|conn| query_infos(conn, "WHERE state IN ('queued', 'held') ORDER BY seq", []))
    }

    fn get(&self, id: &str) -> BoxFuture<'_, Result<Option<MessageInfo>, StoreError>> {
        let id = id.to_owned();
        self.read(move |conn| Ok(query_infos(conn, "WHERE id = ?1", [id])?.into_iter().next()))
    }

    fn hold(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| set_state(conn, &id, MessageState::Queued, MessageState::Held))
    }

    fn release(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| set_state(conn, &id, MessageState::Held, MessageState::Queued))
    }

    fn retry(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| set_state(conn, &id, MessageState::Queued, MessageState::Queued))
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| {
            let (seq, state) = lookup(conn, &id)?;
            if !matches!(state, MessageState::Queued | MessageState::Held) {
                return Err(StoreError::WrongState {
                    id,
                    state,
                    expected: "queued or held",
                });
            }
            conn.execute("DELETE FROM messages WHERE seq = ?1", [seq])?;
            // Its documents were never sent: their links go with it (the
            // purge deletes the files of links that are no longer active).
            links::revoke_for_message(conn, &id)?;
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(|conn| {
            Ok(conn.execute(
                "UPDATE messages SET next_attempt = ?1 WHERE state = 'queued'",
                [now_ms()],
            )?)
        })
    }

    fn postpone(
        &self,
        id: &str,
        expected_attempts: u32,
        until_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE messages SET next_attempt = ?1
                 WHERE id = ?2 AND state = 'queued' AND attempts = ?3",
            )?
            .execute(rusqlite::params![until_ms, id, expected_attempts])?;
            Ok(())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // Through the writer thread like an enqueue, so a stuck writer, a
        // lock held elsewhere or a file that cannot be written all show.
        self.write(|conn| {
            conn.prepare_cached("INSERT OR REPLACE INTO ping (id, at) VALUES (1, ?1)")?
                .execute([now_ms()])?;
            Ok(())
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>> {
        // Both queries use the (state, …) index: the cost follows the
        // queue's size, not the delivery log's.
        self.read(|conn| {
            let mut stats = QueueStats::default();
            let mut counts = conn.prepare_cached(
                "SELECT state, count(*) FROM messages WHERE state IN ('queued', 'held')
                 GROUP BY state",
            )?;
            let rows =
                counts.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (state, n) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                match MessageState::parse(&state) {
                    Some(MessageState::Queued) => stats.queued = n,
                    Some(MessageState::Held) => stats.held = n,
                    _ => {}
                }
            }
            stats.oldest_queued_at = conn
                .prepare_cached("SELECT min(received_at) FROM messages WHERE state = 'queued'")?
                .query_row([], |r| r.get(0))?;
            Ok(stats)
        })
    }
}

impl LinkStore for SqliteStore {
    fn link_by_token(
        &self,
        token_hash: &str,
    ) -> BoxFuture<'_, Result<Option<LinkRecord>, StoreError>> {
        let hash = token_hash.to_owned();
        self.read(move |conn| links::by_token(conn, &hash))
    }

    fn links(&self, all: bool) -> BoxFuture<'_, Result<Vec<LinkRecord>, StoreError>> {
        self.read(move |conn| links::list(conn, all))
    }

    fn revoke_link(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| links::revoke(conn, &id))
    }

    fn expire_links(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.write(move |conn| links::expire(conn, now_ms))
    }

    fn active_link_ids(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.read(links::active_ids)
    }

    fn record_download(
        &self,
        link_id: &str,
        outcome: &'static str,
        ip: Option<String>,
    ) -> BoxFuture<'_, Result<Option<DownloadNotice>, StoreError>> {
        let id = link_id.to_owned();
        self.write(move |conn| links::record_download(conn, &id, outcome, ip.as_deref()))
    }

    fn purge_links(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| links::purge(conn, before_ms))
    }

    fn take_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: super::guesses::GuessPolicy,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Result<(), std::time::Duration>, StoreError>> {
        let keys = super::guesses::keys(link_id, &self.pseudonyms.of(client));
        self.write(move |conn| links::take_guess(conn, &keys, &policy, now_ms))
    }

    fn give_back_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: super::guesses::GuessPolicy,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let keys = super::guesses::keys(link_id, &self.pseudonyms.of(client));
        self.write(move |conn| links::give_back_guess(conn, &keys, &policy))
    }

    fn purge_guesses(&self, now_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| links::purge_guesses(conn, now_ms))
    }
}

impl LogStore for SqliteStore {
    fn set_clear_recipients(&self, clear: bool) {
        self.clear_recipients.store(clear, Ordering::Relaxed);
    }

    fn purge_log(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| log::purge(conn, before_ms))
    }

    fn oldest_record(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.read(log::oldest)
    }

    fn subject_records(&self, address: &str) -> BoxFuture<'_, Result<SubjectRecords, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        self.read(move |conn| log::subject(conn, &address, &pseudonym))
    }

    fn erase_subject(&self, address: &str) -> BoxFuture<'_, Result<Erased, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        self.write(move |conn| log::erase(conn, &address, &pseudonym))
    }
}

impl SuppressionStore for SqliteStore {
    fn suppress(
        &self,
        entry: super::suppression::Suppression,
        replace: bool,
    ) -> BoxFuture<'_, Result<super::suppression::SuppressOutcome, StoreError>> {
        self.write(move |conn| suppression::upsert(conn, &entry, replace, now_ms()))
    }

    fn suppressed(
        &self,
        address: &str,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<super::suppression::Suppression>, StoreError>> {
        let address = address.to_owned();
        self.read(move |conn| suppression::lookup(conn, &address, now_ms))
    }

    fn suppressions(
        &self,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<super::suppression::Suppression>, StoreError>> {
        self.read(move |conn| suppression::list(conn, now_ms))
    }

    fn unsuppress(&self, address: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let address = address.to_owned();
        self.write(move |conn| suppression::remove(conn, &address))
    }

    fn record_relay_event(
        &self,
        event: super::suppression::NewRelayEvent,
        suppress: Option<super::suppression::Suppression>,
    ) -> BoxFuture<'_, Result<super::suppression::EventOutcome, StoreError>> {
        let pseudonyms =
            (!self.clear_recipients.load(Ordering::Relaxed)).then(|| self.pseudonyms.clone());
        let pseudonym = self.pseudonyms.of(&event.recipient);
        self.write(move |conn| {
            suppression::record_event(
                conn,
                &event,
                suppress.as_ref(),
                pseudonyms.as_ref(),
                &pseudonym,
                now_ms(),
            )
        })
    }

    fn purge_suppressions(
        &self,
        now_ms: i64,
        events_before_ms: i64,
    ) -> BoxFuture<'_, Result<(usize, usize), StoreError>> {
        self.write(move |conn| suppression::purge(conn, now_ms, events_before_ms))
    }

    fn suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<super::suppression::SubjectSuppression, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        self.read(move |conn| suppression::subject(conn, &address, &pseudonym))
    }

    fn erase_suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<super::suppression::ErasedSuppression, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        self.write(move |conn| suppression::erase(conn, &address, &pseudonym))
    }

    fn event_silence(
        &self,
        no_event_since_ms: i64,
    ) -> BoxFuture<'_, Result<super::suppression::EventSilence, StoreError>> {
        self.read(move |conn| liveness::silence(conn, no_event_since_ms))
    }
}

impl LimitStore for SqliteStore {
    fn counters(
        &self,
        keys: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreError>> {
        self.read(move |conn| limits::get(conn, &keys, now_ms))
    }

    fn ban(&self, ban: super::limits::Ban) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write(move |conn| limits::ban(conn, &ban))
    }

    fn banned(
        &self,
        ip: &str,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<super::limits::Ban>, StoreError>> {
        let ip = ip.to_owned();
        self.read(move |conn| limits::banned(conn, &ip, now_ms))
    }

    fn bans(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<super::limits::Ban>, StoreError>> {
        self.read(move |conn| limits::list(conn, now_ms))
    }

    fn unban(&self, ip: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let ip = ip.to_owned();
        self.write(move |conn| limits::unban(conn, &ip))
    }

    fn purge_limits(
        &self,
        now_ms: i64,
        keep_hourly_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| limits::purge(conn, now_ms, keep_hourly_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> NewMessage {
        NewMessage {
            id: crate::store::new_queue_id(),
            account: "via".into(),
            sender: "a@landkreis.example".into(),
            recipients: vec![format!("r{n}@example.org"), "x@example.org".into()],
            content: format!("Subject: {n}\r\n\r\nbody\r\n").into_bytes(),
            held: false,
            ..NewMessage::default()
        }
    }

    #[tokio::test]
    async fn concurrent_enqueues_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let mut tasks = Vec::new();
        for n in 0..50 {
            let s = Arc::clone(&store);
            tasks.push(tokio::spawn(async move { s.enqueue(msg(n)).await }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("join").expect("enqueue"));
        }
        drop(store);
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let listed = store.list().await.expect("list");
        assert_eq!(listed.len(), 50);
        for id in &ids {
            let content = store.content(id).await.expect("content");
            assert!(content.is_some());
        }
    }

    #[tokio::test]
    async fn attempt_lifecycle_deletes_content_when_final() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let id = store.enqueue(msg(1)).await.expect("enqueue");
        let due = store.due(now_ms() + 1, 10).await.expect("due");
        assert_eq!(due.len(), 1);

        // First recipient delivered, second deferred.
        let state = store
            .record_attempt(
                &id,
                AttemptUpdate {
                    expected_attempts: 0,
                    recipients: vec![(
                        "r1@example.org".into(),
                        RecipientState::Delivered,
                        "250 ok".into(),
                    )],
                    next_attempt: Some(now_ms() + 60_000),
                    error: Some("451 later".into()),
                    bounce_notice: None,
                },
            )
            .await
            .expect("attempt");
        assert_eq!(state, MessageState::Queued);
        assert!(store.due(now_ms(), 10).await.expect("due").is_empty());
        store.retry(&id).await.expect("retry");
        assert_eq!(store.due(now_ms() + 1, 10).await.expect("due").len(), 1);

        let state = store
            .record_attempt(
                &id,
                AttemptUpdate {
                    expected_attempts: 1,
                    recipients: vec![(
                        "x@example.org".into(),
                        RecipientState::Failed,
                        "550 5.1.1 no".into(),
                    )],
                    next_attempt: None,
                    error: None,
                    bounce_notice: None,
                },
            )
            .await
            .expect("attempt");
        assert_eq!(state, MessageState::Bounced);
        assert!(store.content(&id).await.expect("content").is_none());
        assert!(store.list().await.expect("list").is_empty());
        let info = store.get(&id).await.expect("get").expect("exists");
        assert_eq!(info.attempts, 2);
        assert_eq!(info.recipients[0].state, RecipientState::Delivered);
        assert_eq!(info.recipients[1].state, RecipientState::Failed);
    }

    #[tokio::test]
    async fn ping_writes_and_stats_count_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store.ping().await.expect("ping");
        store.ping().await.expect("ping again (one row, replaced)");
        assert_eq!(store.stats().await.expect("stats"), QueueStats::default());
        let before = now_ms();
        let a = store.enqueue(msg(1)).await.expect("enqueue");
        store.enqueue(msg(2)).await.expect("enqueue");
        let c = store.enqueue(msg(3)).await.expect("enqueue");
        store.hold(&c).await.expect("hold");
        let stats = store.stats().await.expect("stats");
        assert_eq!((stats.queued, stats.held), (2, 1));
        let oldest = stats.oldest_queued_at.expect("oldest");
        assert!(oldest >= before && oldest <= now_ms(), "{oldest}");
        let update = AttemptUpdate {
            expected_attempts: 0,
            recipients: vec![
                (
                    "r1@example.org".into(),
                    RecipientState::Delivered,
                    "250".into(),
                ),
                (
                    "x@example.org".into(),
                    RecipientState::Delivered,
                    "250".into(),
                ),
            ],
            next_attempt: None,
            error: None,
            bounce_notice: None,
        };
        store.record_attempt(&a, update).await.expect("attempt");
        let stats = store.stats().await.expect("stats");
        assert_eq!(
            (stats.queued, stats.held),
            (1, 1),
            "delivered ones are not counted"
        );
    }

    #[tokio::test]
    async fn wal_is_checkpointed_beside_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        for n in 0..20 {
            let mut m = msg(n);
            m.content.extend(std::iter::repeat_n(b'x', 10_000));
            store.enqueue(m).await.expect("enqueue");
        }
        // No connection checkpoints on commit; only the checkpoint thread
        // moves the ~200 KB from the WAL into the database file.
        let db = dir.path().join("queue.db");
        let copied = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::fs::metadata(&db).is_ok_and(|m| m.len() > 200_000)
        });
        assert!(
            copied,
            "the WAL was never checkpointed into {}",
            db.display()
        );
        assert_eq!(store.list().await.expect("list").len(), 20);
    }

    #[tokio::test]
    async fn hold_release_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let id = store.enqueue(msg(1)).await.expect("enqueue");
        store.hold(&id).await.expect("hold");
        assert!(store.due(now_ms() + 1, 10).await.expect("due").is_empty());
        assert!(matches!(
            store.hold(&id).await,
            Err(StoreError::WrongState { .. })
        ));
        store.release(&id).await.expect("release");
        assert_eq!(store.due(now_ms() + 1, 10).await.expect("due").len(), 1);
        store.delete(&id).await.expect("delete");
        assert!(store.get(&id).await.expect("get").is_none());
        assert!(matches!(
            store.delete("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
