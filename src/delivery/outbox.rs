//! Outbox mode: the final message, exactly as it would have been relayed,
//! written to `DATA_DIR/outbox/<queue-id>.eml` (temp file, fsync, rename,
//! fsync of the directory, so a file that exists is complete).

use std::io::Write;
use std::path::{Path, PathBuf};

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox")
}

pub fn write(data_dir: &Path, id: &str, message: &[u8]) -> std::io::Result<PathBuf> {
    let dir = dir(data_dir);
    crate::store::private::private_dir(&dir)?;
    let path = dir.join(format!("{id}.eml"));
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(message).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(path)
}
