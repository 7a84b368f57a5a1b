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
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{id}.eml"));
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(message)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(path)
}
