//! Files the gateway writes are private to its user (SPEC §10), whatever
//! the umask it was started with: the database holds queued mail and clear
//! recipients until delivery, and document file names can name pupils.
//!
//! Two layers: the process umask is `077` from the first instruction on, so
//! every file anything creates (SQLite's WAL and shared-memory files,
//! documents, the outbox, keys) is `0600` and every directory `0700`; and
//! the data directory and database of an older installation, created under
//! a looser umask, are tightened when opened.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Group and other bits.
const OPEN_BITS: u32 = 0o077;

/// Makes every file and directory this process creates private to its user.
pub fn restrict_umask() {
    // SAFETY: umask(2) only sets the process's file creation mask; it
    // cannot fail and touches no memory.
    unsafe {
        libc::umask(OPEN_BITS as libc::mode_t);
    }
}

/// Creates `dir` (and missing parents) as `0700`, and takes group and
/// other access away from it if it already existed.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    tighten(dir, 0o700)
}

/// Takes group and other access away from `path` if it exists.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    match tighten(path, 0o600) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & OPEN_BITS != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Whether `dir` exists as a writable directory or could be created: the
/// nearest existing ancestor must be a directory this user may write to.
/// For `check-config`, which must not create anything itself.
pub fn check_creatable_dir(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a directory", probe.display())),
            // Missing, or below something that is not a directory: look
            // further up for the part that exists.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match probe.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
                    _ => {
                        probe = Path::new(".");
                        break;
                    }
                }
            }
            Err(e) => return Err(format!("{}: {e}", probe.display())),
        }
    }
    let Ok(c_path) = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()) else {
        return Err(format!("{}: the path contains a NUL byte", dir.display()));
    };
    // SAFETY: access(2) reads the NUL-terminated path and nothing else.
    let ok = unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    if ok {
        Ok(())
    } else {
        let why = std::io::Error::last_os_error();
        if probe == dir {
            Err(format!("{} is not writable: {why}", dir.display()))
        } else {
            Err(format!(
                "cannot be created: {} is not writable: {why}",
                probe.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777)
    }

    #[test]
    fn dirs_and_files_are_tightened() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        private_dir(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("tighten");
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("queue.db");
        std::fs::write(&f, b"x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        private_file(&f).expect("tighten");
        assert_eq!(mode(&f), 0o600);
        private_file(&dir.join("missing")).expect("a missing file is fine");
    }

    #[test]
    fn a_dir_under_a_file_cannot_be_created() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        let err = check_creatable_dir(&file.join("var")).expect_err("under a file");
        assert!(err.contains("is not a directory"), "{err}");
        check_creatable_dir(&tmp.path().join("new/deeper")).expect("creatable");
        check_creatable_dir(tmp.path()).expect("exists");
    }
}
