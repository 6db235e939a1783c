//! Background WAL checkpointing, so the writer thread never stalls copying
//! pages and fsyncing the database file in the middle of a group commit.
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::store::{self, StoreError};

/// How often the WAL is copied back into the database file.
pub const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// A running checkpointer; stopping it (or dropping this) joins the thread.
pub(crate) struct WalCheckpointer {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl WalCheckpointer {
    /// Starts a thread with its own connection running passive checkpoints.
    pub fn spawn(path: &Path) -> Result<Self, StoreError> {
        let conn =
            rusqlite::Connection::open(path).map_err(store::sql(path, "open checkpointer"))?;
        conn.busy_timeout(Duration::from_secs(1))
            .map_err(store::sql(path, "busy_timeout"))?;
        let (stop, rx) = mpsc::channel::<()>();
        let path: PathBuf = path.to_owned();
        let handle = std::thread::Builder::new()
            .name("audit-wal".into())
            .spawn(move || loop {
                match rx.recv_timeout(WAL_CHECKPOINT_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {
                        // PASSIVE never blocks the writer; a busy result just retries later.
                        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                            tracing::warn!(path = %path.display(), error = %e, "audit WAL checkpoint failed");
                        }
                    }
                    _ => return,
                }
            })
            .map_err(|source| StoreError::Spawn {
                what: "audit WAL checkpoint",
                source,
            })?;
        Ok(Self {
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// Stops and joins the thread.
    pub fn stop(&mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for WalCheckpointer {
    fn drop(&mut self) {
        self.stop();
    }
}
