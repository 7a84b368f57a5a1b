//! The old embedded store, read-only: one SQLite connection opened with
//! `SQLITE_OPEN_READ_ONLY` and one read transaction held for the whole
//! migration, so every page below comes from the same snapshot (WAL mode
//! keeps it while anything else writes). Pages are keyset-paginated
//! (`WHERE key > last ORDER BY key LIMIT n`), so each read is an index
//! range, whatever the table's size.
//!
//! A gateway that closed the database cleanly leaves no `-wal` and `-shm`
//! files: everything is in the database file. A read-only connection would
//! create them (empty, but owned by whoever runs the migration, often
//! root, which the old gateway could then not open if it is ever started
//! again). Such a database is therefore opened `immutable=1`, which creates
//! nothing; since anything that opens it to write creates those files at
//! once, [`Snapshot::still_alone`] can tell before the commit whether the
//! file stayed as it was read. With the files present (a gateway was
//! killed, or still runs) the normal read-only connection reads the WAL
//! too.
//!
//! Tables that a store of an older version lacks read as empty; the
//! `messages.note` column, added in place by `SqliteStore`'s migration,
//! reads as `NULL` where it is missing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::FromSql;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, params};

use super::MigrateError;

pub(super) struct Snapshot {
    conn: Connection,
    path: PathBuf,
    tables: HashSet<String>,
    has_note: bool,
    has_dsn_to: bool,
    /// Opened `immutable=1` (see the module docs).
    immutable: bool,
}

/// SQLite's companions of a database file in WAL mode.
fn companions(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// `path` as an SQLite URI filename that opens it without creating or
/// locking anything; `None` when the path is not UTF-8.
fn immutable_uri(path: &Path) -> Option<String> {
    let mut uri = String::from("file:");
    for c in path.to_str()?.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    Some(uri)
}

/// Messages by state, from the snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct MessageCounts {
    pub total: u64,
    pub queued: u64,
    pub held: u64,
}

pub(super) struct MessageRow {
    pub seq: i64,
    pub id: String,
    pub received_at: i64,
    pub account: String,
    pub sender: String,
    pub size: i64,
    pub state: String,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_error: Option<String>,
    pub finished_at: Option<i64>,
    pub note: Option<String>,
    /// `NULL` in stores from before it was kept (and then in the target too).
    pub dsn_to: Option<String>,
}

pub(super) struct RecipientRow {
    pub message_seq: i64,
    pub idx: i64,
    pub address: String,
    pub state: String,
    pub reply: Option<String>,
}

pub(super) struct AttemptRow {
    pub message_seq: i64,
    pub at: i64,
    pub delivered: i64,
    pub deferred: i64,
    pub failed: i64,
    pub reply: Option<String>,
}

/// A table copied row for row, read in pages of its key.
pub(super) trait Page: Sized {
    /// The SQLite table.
    const TABLE: &'static str;
    /// Its unique key, in which order it is read (`rowid` where the table
    /// has no other).
    const KEY: &'static str;
    const COLUMNS: &'static str;
    type Key: ToSql + FromSql;
    /// A row of `COLUMNS`, starting at column 1 (column 0 is the key).
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self>;
}

pub(super) struct LinkRow {
    pub id: String,
    pub token_hash: String,
    pub message_id: String,
    pub account: String,
    pub file_name: String,
    pub content_type: String,
    pub size: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub salt: Option<Vec<u8>>,
    pub protected: bool,
    pub notify_to: Option<String>,
    pub downloads: i64,
    pub first_download_at: Option<i64>,
    pub state: String,
    pub ended_at: Option<i64>,
}

impl Page for LinkRow {
    const TABLE: &'static str = "links";
    const KEY: &'static str = "rowid";
    const COLUMNS: &'static str = "id, token_hash, message_id, account, file_name, content_type, \
        size, created_at, expires_at, salt, protected, notify_to, downloads, first_download_at, \
        state, ended_at";
    type Key = i64;
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(LinkRow {
            id: r.get(1)?,
            token_hash: r.get(2)?,
            message_id: r.get(3)?,
            account: r.get(4)?,
            file_name: r.get(5)?,
            content_type: r.get(6)?,
            size: r.get(7)?,
            created_at: r.get(8)?,
            expires_at: r.get(9)?,
            salt: r.get(10)?,
            protected: r.get(11)?,
            notify_to: r.get(12)?,
            downloads: r.get(13)?,
            first_download_at: r.get(14)?,
            state: r.get(15)?,
            ended_at: r.get(16)?,
        })
    }
}

pub(super) struct DownloadRow {
    pub link_id: String,
    pub at: i64,
    pub outcome: String,
    pub ip: Option<String>,
}

impl Page for DownloadRow {
    const TABLE: &'static str = "downloads";
    const KEY: &'static str = "rowid";
    const COLUMNS: &'static str = "link_id, at, outcome, ip";
    type Key = i64;
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(DownloadRow {
            link_id: r.get(1)?,
            at: r.get(2)?,
            outcome: r.get(3)?,
            ip: r.get(4)?,
        })
    }
}

pub(super) struct SuppressionRow {
    pub address: String,
    pub source: String,
    pub reason: String,
    pub detail: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl Page for SuppressionRow {
    const TABLE: &'static str = "suppressions";
    const KEY: &'static str = "address";
    const COLUMNS: &'static str = "address, source, reason, detail, created_at, expires_at";
    type Key = String;
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(SuppressionRow {
            address: r.get(1)?,
            source: r.get(2)?,
            reason: r.get(3)?,
            detail: r.get(4)?,
            created_at: r.get(5)?,
            expires_at: r.get(6)?,
        })
    }
}

pub(super) struct RelayEventRow {
    pub key: String,
    pub received_at: i64,
    pub at: i64,
    pub event: String,
    pub message_id: Option<String>,
    pub relay_message_id: Option<String>,
    pub recipient: String,
    pub detail: Option<String>,
}

impl Page for RelayEventRow {
    const TABLE: &'static str = "relay_events";
    const KEY: &'static str = "key";
    const COLUMNS: &'static str =
        "key, received_at, at, event, message_id, relay_message_id, recipient, detail";
    type Key = String;
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RelayEventRow {
            key: r.get(1)?,
            received_at: r.get(2)?,
            at: r.get(3)?,
            event: r.get(4)?,
            message_id: r.get(5)?,
            relay_message_id: r.get(6)?,
            recipient: r.get(7)?,
            detail: r.get(8)?,
        })
    }
}

pub(super) struct CounterRow {
    pub key: String,
    pub until: i64,
    pub count: i64,
}

impl Page for CounterRow {
    const TABLE: &'static str = "limit_counters";
    const KEY: &'static str = "key";
    const COLUMNS: &'static str = "key, until, count";
    type Key = String;
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(CounterRow {
            key: r.get(1)?,
            until: r.get(2)?,
            count: r.get(3)?,
        })
    }
}

pub(super) struct BanRow {
    pub ip: String,
    pub created_at: i64,
    pub until: i64,
    pub reason: String,
}

impl Page for BanRow {
    const TABLE: &'static str = "bans";
    const KEY: &'static str = "ip";
    const COLUMNS: &'static str = "ip, created_at, until, reason";
    type Key = String;
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(BanRow {
            ip: r.get(1)?,
            created_at: r.get(2)?,
            until: r.get(3)?,
            reason: r.get(4)?,
        })
    }
}

impl Snapshot {
    /// Opens the database read-only and starts the read transaction.
    pub fn open(path: &Path) -> Result<Snapshot, MigrateError> {
        // SQLite would refuse a missing file too; this names the likely
        // mistake (the wrong --from or data_dir).
        if !path.is_file() {
            return Err(MigrateError::NoSource(path.to_owned()));
        }
        let error = |cause| MigrateError::Source {
            path: path.to_owned(),
            cause,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let closed_cleanly = companions(path).iter().all(|p| !p.exists());
        let (conn, immutable) = match immutable_uri(path).filter(|_| closed_cleanly) {
            Some(uri) => (
                Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI),
                true,
            ),
            None => (Connection::open_with_flags(path, flags), false),
        };
        let conn = conn.map_err(error)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(error)?;
        // The snapshot starts with the first read, the table list below,
        // and lasts until the connection closes.
        conn.execute_batch("BEGIN").map_err(error)?;
        let tables: HashSet<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(error)?;
        if !tables.contains("messages") {
            return Err(MigrateError::NotAStore {
                path: path.to_owned(),
            });
        }
        let has_column = |name: &str| {
            conn.prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = ?1")
                .and_then(|mut st| st.exists([name]))
                .map_err(error)
        };
        let has_note = has_column("note")?;
        let has_dsn_to = has_column("dsn_to")?;
        Ok(Snapshot {
            conn,
            path: path.to_owned(),
            tables,
            has_note,
            has_dsn_to,
            immutable,
        })
    }

    /// Whether the database file is still as it was read: refuses when a
    /// database opened `immutable=1` was opened by another process since
    /// (its WAL files appeared), whose writes this snapshot may have
    /// missed or read half-done.
    pub fn still_alone(&self) -> Result<(), MigrateError> {
        if self.immutable && companions(&self.path).iter().any(|p| p.exists()) {
            return Err(MigrateError::SourceInUse(self.path.clone()));
        }
        Ok(())
    }

    fn error(&self, cause: rusqlite::Error) -> MigrateError {
        MigrateError::Source {
            path: self.path.clone(),
            cause,
        }
    }

    fn has(&self, table: &str) -> bool {
        self.tables.contains(table)
    }

    pub fn message_counts(&self) -> Result<MessageCounts, MigrateError> {
        let mut counts = MessageCounts::default();
        let rows: Vec<(String, i64)> = self
            .conn
            .prepare("SELECT state, count(*) FROM messages GROUP BY state")
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.error(e))?;
        for (state, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            counts.total += n;
            match state.as_str() {
                "queued" => counts.queued += n,
                "held" => counts.held += n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Rows in `table` (0 when the table does not exist), optionally only
    /// those `filter` (an SQL condition) selects.
    pub fn count(&self, table: &str, filter: Option<&str>) -> Result<u64, MigrateError> {
        if !self.has(table) {
            return Ok(0);
        }
        let sql = match filter {
            Some(f) => format!("SELECT count(*) FROM {table} WHERE {f}"),
            None => format!("SELECT count(*) FROM {table}"),
        };
        let n: i64 = self
            .conn
            .query_row(&sql, [], |r| r.get(0))
            .map_err(|e| self.error(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Up to `limit` messages with a `seq` above `after`, in `seq` order.
    pub fn messages_after(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MessageRow>, MigrateError> {
        let note = if self.has_note { "note" } else { "NULL" };
        let dsn_to = if self.has_dsn_to { "dsn_to" } else { "NULL" };
        let sql = format!(
            "SELECT seq, id, received_at, account, sender, size, state, attempts, next_attempt,
                    last_error, finished_at, {note}, {dsn_to}
             FROM messages WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_map(params![after.unwrap_or(i64::MIN), limit as i64], |r| {
                    Ok(MessageRow {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        received_at: r.get(2)?,
                        account: r.get(3)?,
                        sender: r.get(4)?,
                        size: r.get(5)?,
                        state: r.get(6)?,
                        attempts: r.get(7)?,
                        next_attempt: r.get(8)?,
                        last_error: r.get(9)?,
                        finished_at: r.get(10)?,
                        note: r.get(11)?,
                        dsn_to: r.get(12)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.error(e))
    }

    /// The recipients of the messages with `seq` in `first..=last`, in
    /// message and recipient order.
    pub fn recipients_between(
        &self,
        first: i64,
        last: i64,
    ) -> Result<Vec<RecipientRow>, MigrateError> {
        self.conn
            .prepare_cached(
                "SELECT message_seq, idx, address, state, reply FROM recipients
                 WHERE message_seq BETWEEN ?1 AND ?2 ORDER BY message_seq, idx",
            )
            .and_then(|mut st| {
                st.query_map(params![first, last], |r| {
                    Ok(RecipientRow {
                        message_seq: r.get(0)?,
                        idx: r.get(1)?,
                        address: r.get(2)?,
                        state: r.get(3)?,
                        reply: r.get(4)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.error(e))
    }

    /// The attempt log of the messages with `seq` in `first..=last`, in
    /// the order it was written.
    pub fn attempts_between(&self, first: i64, last: i64) -> Result<Vec<AttemptRow>, MigrateError> {
        if !self.has("attempts") {
            return Ok(Vec::new());
        }
        self.conn
            .prepare_cached(
                "SELECT message_seq, at, delivered, deferred, failed, reply FROM attempts
                 WHERE message_seq BETWEEN ?1 AND ?2 ORDER BY message_seq, rowid",
            )
            .and_then(|mut st| {
                st.query_map(params![first, last], |r| {
                    Ok(AttemptRow {
                        message_seq: r.get(0)?,
                        at: r.get(1)?,
                        delivered: r.get(2)?,
                        deferred: r.get(3)?,
                        failed: r.get(4)?,
                        reply: r.get(5)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.error(e))
    }

    /// The messages with `seq` in `first..=last` that still have content.
    pub fn contents_between(&self, first: i64, last: i64) -> Result<Vec<i64>, MigrateError> {
        self.conn
            .prepare_cached(
                "SELECT message_seq FROM contents WHERE message_seq BETWEEN ?1 AND ?2
                 ORDER BY message_seq",
            )
            .and_then(|mut st| st.query_map(params![first, last], |r| r.get(0))?.collect())
            .map_err(|e| self.error(e))
    }

    /// One message's bytes. Read through the incremental blob API straight
    /// into one buffer, as the store itself does: a column read would first
    /// build SQLite's own copy of a message of many MB.
    pub fn content(&self, seq: i64) -> Result<Option<Vec<u8>>, MigrateError> {
        let len: Option<i64> = self
            .conn
            .prepare_cached("SELECT length(data) FROM contents WHERE message_seq = ?1")
            .and_then(|mut st| st.query_row([seq], |r| r.get(0)).optional())
            .map_err(|e| self.error(e))?;
        let Some(len) = len else {
            return Ok(None);
        };
        let mut blob = self
            .conn
            .blob_open(rusqlite::MAIN_DB, "contents", "data", seq, true)
            .map_err(|e| self.error(e))?;
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        std::io::Read::read_to_end(&mut blob, &mut data).map_err(|cause| {
            MigrateError::SourceContent {
                path: self.path.clone(),
                cause,
            }
        })?;
        Ok(Some(data))
    }

    /// Up to `limit` rows of `T` after the key `after`, and the last key
    /// read (for the next page).
    pub fn page<T: Page>(
        &self,
        after: Option<&T::Key>,
        limit: usize,
    ) -> Result<(Vec<T>, Option<T::Key>), MigrateError> {
        if !self.has(T::TABLE) {
            return Ok((Vec::new(), None));
        }
        let (table, key, columns) = (T::TABLE, T::KEY, T::COLUMNS);
        let read = |st: &mut rusqlite::Statement<'_>,
                    p: &[&dyn ToSql]|
         -> rusqlite::Result<(Vec<T>, Option<T::Key>)> {
            let mut rows = st.query(p)?;
            let (mut out, mut last) = (Vec::new(), None);
            while let Some(r) = rows.next()? {
                last = Some(r.get::<_, T::Key>(0)?);
                out.push(T::from_row(r)?);
            }
            Ok((out, last))
        };
        let limit = limit as i64;
        let result = match after {
            None => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {key}, {columns} FROM {table} ORDER BY {key} LIMIT ?1"
                ))
                .and_then(|mut st| read(&mut st, &[&limit])),
            Some(after) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {key}, {columns} FROM {table} WHERE {key} > ?1 ORDER BY {key} \
                     LIMIT ?2"
                ))
                .and_then(|mut st| read(&mut st, &[after, &limit])),
        };
        result.map_err(|e| self.error(e))
    }
}
