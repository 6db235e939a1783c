//! The audit log's low-space safeguard. A full disk must not turn into
//! "every call fails and nothing says why": below a threshold of free space
//! the gateway denies what it would allow, with `audit_storage_low`, and
//! still records those denials. A reserve file (preallocated next to the
//! log) is given back to the filesystem the moment space runs low, so the
//! denial rows have room even when something else filled the disk; it is
//! taken again once space has been freed.
use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

pub use crate::config::{
    AUDIT_DEFAULT_MIN_FREE as DEFAULT_MIN_FREE, AUDIT_DEFAULT_RESERVE as DEFAULT_RESERVE,
};
/// Name of the reserve file in the state directory.
pub const RESERVE_FILE: &str = "audit.reserve";
/// How long one free-space reading is trusted (statvfs per decision would
/// be cheap, but not free).
const RECHECK: Duration = Duration::from_millis(100);

/// Free-space watch of one state directory.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    reserve: PathBuf,
    min_free: u64,
    reserve_bytes: u64,
    last: Mutex<Option<(Instant, bool)>>,
}

/// Bytes an unprivileged writer could still use on `dir`'s filesystem
/// (`f_bavail`: root's reserved blocks are not counted on).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a zeroed statvfs is valid; statvfs fills it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and buffer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

impl Storage {
    /// Watches `state_dir`: low below `min_free` free bytes; keeps a reserve
    /// file of `reserve_bytes` while there is room for it.
    pub fn new(state_dir: &Path, min_free: u64, reserve_bytes: u64) -> Self {
        let s = Storage {
            dir: state_dir.to_owned(),
            reserve: state_dir.join(RESERVE_FILE),
            min_free,
            reserve_bytes,
            last: Mutex::new(None),
        };
        s.refresh();
        s
    }

    /// Whether free space is below the threshold (or cannot be read: fail
    /// closed). Entering the low state gives the reserve back.
    pub fn low(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, low)) = *last {
            if at.elapsed() < RECHECK {
                return low;
            }
        }
        let low = self.refresh();
        *last = Some((Instant::now(), low));
        low
    }

    /// Reads free space, releases or retakes the reserve; returns "low".
    fn refresh(&self) -> bool {
        let free = match free_bytes(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the audit log's free space; treating it as low");
                return true;
            }
        };
        let have_reserve = self.reserve.exists();
        if free < self.min_free {
            if have_reserve {
                let _ = std::fs::remove_file(&self.reserve);
                tracing::error!(dir = %self.dir.display(), free, min_free = self.min_free,
                    reserve = self.reserve_bytes,
                    "audit storage low: allows are denied (audit_storage_low); reserve released for the denial rows");
            }
            return true;
        }
        if !have_reserve && self.reserve_bytes > 0 && free >= self.min_free + self.reserve_bytes {
            self.take_reserve();
        }
        false
    }

    fn take_reserve(&self) {
        use std::os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _};
        let Ok(f) = std::fs::OpenOptions::new()
            .mode(0o600)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.reserve)
        else {
            return;
        };
        // SAFETY: fallocate on a file we own; real blocks, not a sparse hole.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, self.reserve_bytes as libc::off_t) };
        if r != 0 {
            let _ = std::fs::remove_file(&self.reserve);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plenty_of_space_keeps_a_reserve_and_is_not_low() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path(), 1 << 20, 64 << 10);
        assert!(!s.low());
        let meta = std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap();
        assert_eq!(meta.len(), 64 << 10);
    }

    #[test]
    fn an_impossible_threshold_is_low_and_gives_the_reserve_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESERVE_FILE), b"x").unwrap();
        let s = Storage::new(dir.path(), u64::MAX, 64 << 10);
        assert!(s.low());
        assert!(!dir.path().join(RESERVE_FILE).exists());
    }
}
