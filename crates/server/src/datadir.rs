//! One server per data directory. Two processes delivering from one queue file would each plan
//! the same events and create the same people twice, so `serve` takes an exclusive lock on
//! `<data-dir>/closeflow.lock` (an OS file lock: released by the kernel when the process ends,
//! however it ends) and a second server exits at once, naming the holder. `closeflow dlq` and
//! `capture` take no lock: they read and replay through the queue file's own transactions.

use anyhow::{Result, bail};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held for as long as the server runs; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "closeflow.lock";

/// Takes the data directory for this process, or says who has it. `holder` is written into
/// the lock file (pid, address) so that the next one can name it.
pub fn lock(dir: &Path, holder: &str) -> Result<DataDirLock> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: the holder's line must survive a contender's attempt.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let who = text.trim();
            let who = if who.is_empty() {
                "another process".to_string()
            } else {
                who.to_string()
            };
            bail!(
                "the data directory {} is in use by {who}: one server per data directory (two would deliver the same events twice); stop that one first, or give this one another --data-dir",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            bail!("cannot lock {}: {e}", path.display());
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{holder}")?;
    file.sync_all()?;
    Ok(DataDirLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(
            dir.path(),
            "closeflow serve (pid 1, listening on 127.0.0.1:1)",
        )
        .unwrap();
        let err = lock(dir.path(), "closeflow serve (pid 2)")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in use by closeflow serve (pid 1, listening on 127.0.0.1:1)"),
            "{err}"
        );
        drop(first);
        let again = lock(dir.path(), "closeflow serve (pid 3)").unwrap();
        assert_eq!(
            std::fs::read_to_string(&again.path).unwrap().trim(),
            "closeflow serve (pid 3)"
        );
    }
}
