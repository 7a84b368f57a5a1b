//! The journal of kept delivery outcomes (`DATA_DIR/delivery-outcomes.journal`).
//!
//! When the store refuses an attempt's outcome, the outcome is kept in
//! memory ([`super::unrecorded`]) and written here, so that a crash or a
//! restart while the store is unwritable does not offer the message to the
//! upstream again: at start-up the journal is read back before delivery
//! begins, and its outcomes are recorded first.
//!
//! The usual cause is a full disk, which would refuse an ordinary append
//! too. So the file's space is reserved at start-up ([`SIZE`] bytes of
//! zeros, fsync'd): later writes only overwrite blocks the file system has
//! already given it. Records are JSON lines from the start of the file; the
//! first NUL byte ends them. Once every kept outcome is in the store, the
//! used part is zeroed again.
//!
//! Replaying an outcome twice is harmless: the store refuses an attempt
//! whose expected attempt count no longer matches, and ignores one for a
//! message that is already final.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::store::{AttemptUpdate, NewMessage, RecipientState};

pub const FILE_NAME: &str = "delivery-outcomes.journal";
/// Reserved space: a kept outcome without a DSN takes a few hundred bytes,
/// one with a DSN (headers of the original only) a few KB.
pub const SIZE: u64 = 1024 * 1024;

/// One attempt's outcome, waiting to be recorded.
#[derive(Debug, Clone)]
pub struct Kept {
    pub queue_id: String,
    pub update: AttemptUpdate,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: the outcome ({len} bytes) does not fit in the reserved space")]
    Full { path: PathBuf, len: usize },
}

/// One kept outcome as written to the file.
#[derive(Serialize, Deserialize)]
struct Entry {
    queue_id: String,
    expected_attempts: u32,
    recipients: Vec<(String, RecipientState, String)>,
    next_attempt: Option<i64>,
    error: Option<String>,
    dsn: Option<Dsn>,
}

/// The bounce notice of an outcome (see [`super::outcome`]).
#[derive(Serialize, Deserialize)]
struct Dsn {
    id: String,
    account: String,
    recipients: Vec<String>,
    /// Base64: the report is bytes, not text.
    content: String,
}

impl Entry {
    fn of(k: &Kept) -> Entry {
        let u = &k.update;
        Entry {
            queue_id: k.queue_id.clone(),
            expected_attempts: u.expected_attempts,
            recipients: u.recipients.clone(),
            next_attempt: u.next_attempt,
            error: u.error.clone(),
            dsn: u.bounce_notice.as_ref().map(|n| Dsn {
                id: n.id.clone(),
                account: n.account.clone(),
                recipients: n.recipients.clone(),
                content: base64::engine::general_purpose::STANDARD.encode(&n.content),
            }),
        }
    }

    fn into_kept(self) -> Option<Kept> {
        let bounce_notice = match self.dsn {
            None => None,
            Some(d) => Some(NewMessage {
                id: d.id,
                account: d.account,
                recipients: d.recipients,
                content: base64::engine::general_purpose::STANDARD
                    .decode(d.content)
                    .ok()?,
                ..NewMessage::default()
            }),
        };
        Some(Kept {
            queue_id: self.queue_id,
            update: AttemptUpdate {
                expected_attempts: self.expected_attempts,
                recipients: self.recipients,
                next_attempt: self.next_attempt,
                error: self.error,
                bounce_notice,
            },
        })
    }
}

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Where the next record goes (the end of the used part).
    used: u64,
}

impl Journal {
    /// Opens the journal in `data_dir`, reserving its space if needed, and
    /// returns the outcomes a previous run left in it.
    pub fn open(data_dir: &Path) -> Result<(Journal, Vec<Kept>), JournalError> {
        let path = data_dir.join(FILE_NAME);
        let io = |cause| JournalError::Io {
            path: path.clone(),
            cause,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let end = memchr::memchr(0, &bytes).unwrap_or(bytes.len());
        let mut kept = Vec::new();
        for line in bytes[..end].split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            // A line cut short by a crash mid-write is the only kind that
            // does not parse; its outcome was never acknowledged as kept.
            match serde_json::from_slice::<Entry>(line)
                .ok()
                .and_then(Entry::into_kept)
            {
                Some(k) => kept.push(k),
                None => tracing::warn!(path = %path.display(), "journal: skipped a damaged record"),
            }
        }
        // Appends go after the last whole record; a torn one is zeroed so
        // the next record does not join its line.
        let whole = memchr::memrchr(b'\n', &bytes[..end]).map_or(0, |i| i + 1);
        let mut journal = Journal {
            path: path.clone(),
            file,
            used: whole as u64,
        };
        if whole < end {
            journal.zero(whole as u64, end - whole).map_err(io)?;
        }
        if bytes.len() < SIZE as usize {
            journal.reserve(bytes.len() as u64).map_err(io)?;
        }
        Ok((journal, kept))
    }

    /// Fills the file with zeros from `from` up to [`SIZE`].
    fn reserve(&mut self, from: u64) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(from))?;
        let zeros = vec![0_u8; 64 * 1024];
        let mut left = SIZE.saturating_sub(from);
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        self.file.sync_all()
    }

    /// Writes `kept` durably into the reserved space.
    pub fn append(&mut self, kept: &Kept) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(&Entry::of(kept)).unwrap_or_default();
        line.push(b'\n');
        if self.used + line.len() as u64 > SIZE {
            return Err(JournalError::Full {
                path: self.path.clone(),
                len: line.len(),
            });
        }
        let io = |cause| JournalError::Io {
            path: self.path.clone(),
            cause,
        };
        self.file.seek(SeekFrom::Start(self.used)).map_err(io)?;
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.used += line.len() as u64;
        Ok(())
    }

    /// Everything kept is in the store: zero the used part.
    pub fn clear(&mut self) -> Result<(), JournalError> {
        if self.used == 0 {
            return Ok(());
        }
        self.zero(0, self.used as usize)
            .map_err(|cause| JournalError::Io {
                path: self.path.clone(),
                cause,
            })?;
        self.used = 0;
        Ok(())
    }

    fn zero(&mut self, at: u64, len: usize) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(&vec![0_u8; len])?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(id: &str, dsn: bool) -> Kept {
        Kept {
            queue_id: id.into(),
            update: AttemptUpdate {
                expected_attempts: 2,
                recipients: vec![(
                    "a@example.org".into(),
                    RecipientState::Delivered,
                    "250 2.0.0 ok".into(),
                )],
                next_attempt: Some(5),
                error: None,
                bounce_notice: dsn.then(|| NewMessage {
                    id: "dsn1".into(),
                    account: "app".into(),
                    recipients: vec!["s@example.com".into()],
                    content: vec![0, 1, 2, 255, b'\n'],
                    ..NewMessage::default()
                }),
            },
        }
    }

    #[test]
    fn kept_outcomes_survive_a_restart_until_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, left) = Journal::open(dir.path()).expect("open");
        assert!(left.is_empty());
        let len = std::fs::metadata(dir.path().join(FILE_NAME)).map(|m| m.len());
        assert_eq!(len.ok(), Some(SIZE), "space reserved");
        j.append(&kept("q1", false)).expect("append");
        j.append(&kept("q2", true)).expect("append");
        drop(j);

        let (mut j, left) = Journal::open(dir.path()).expect("reopen");
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].queue_id, "q1");
        assert_eq!(left[1].update.expected_attempts, 2);
        let dsn = left[1].update.bounce_notice.as_ref().expect("dsn");
        assert_eq!(dsn.content, vec![0, 1, 2, 255, b'\n']);
        assert_eq!(dsn.sender, "", "a DSN has the null sender");
        // Appends continue after what was there.
        j.append(&kept("q3", false)).expect("append");
        drop(j);
        let (mut j, left) = Journal::open(dir.path()).expect("reopen");
        assert_eq!(left.len(), 3);
        j.clear().expect("clear");
        drop(j);
        let (_, left) = Journal::open(dir.path()).expect("reopen");
        assert!(left.is_empty());
    }

    #[test]
    fn a_torn_record_is_skipped_and_an_oversized_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path()).expect("open");
        j.append(&kept("q1", false)).expect("append");
        // A crash mid-write: half a line after the good one.
        let used = j.used;
        j.file.seek(SeekFrom::Start(used)).expect("seek");
        j.file
            .write_all(b"{\"queue_id\":\"q2\",\"exp")
            .expect("write");
        drop(j);
        let (mut j, left) = Journal::open(dir.path()).expect("reopen");
        assert_eq!(left.len(), 1);
        // The next record starts on a line of its own.
        j.append(&kept("q3", false)).expect("append");
        drop(j);
        let (mut j, left) = Journal::open(dir.path()).expect("reopen");
        let ids: Vec<&str> = left.iter().map(|k| k.queue_id.as_str()).collect();
        assert_eq!(ids, ["q1", "q3"]);
        j.used = SIZE - 10;
        assert!(matches!(
            j.append(&kept("big", true)),
            Err(JournalError::Full { .. })
        ));
    }
}
