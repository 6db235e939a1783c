//! A private mount namespace whose `/etc` is an overlay: the runtimes'
//! system-wide settings (`/etc/claude-code`, `/etc/codex`) are written there
//! and vanish with the process; the host's real `/etc` is never touched.
//! agentd runs inside the same namespace (it is started by this process), so
//! the seccomp supervisor resolves paths as the runtimes see them.
use std::{ffi::CString, io, path::Path};

fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let (src, fstype, data) = (c(src)?, c(fstype)?, c(data)?);
    let target = c(&target.to_string_lossy())?;
    // SAFETY: valid C strings that outlive the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves this process into a new mount namespace (mounts private, so
/// nothing propagates to the host) and overlays `/etc` with a tmpfs-backed
/// upper layer under `scratch` (which must exist).
pub fn private_etc(scratch: &Path) -> io::Result<()> {
    // SAFETY: unshare has no memory-safety preconditions; the process is
    // single-threaded here (called first thing in main).
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    mount(
        "none",
        Path::new("/"),
        "",
        libc::MS_REC | libc::MS_PRIVATE,
        "",
    )?;
    mount("tmpfs", scratch, "tmpfs", 0, "mode=0755")?;
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    std::fs::create_dir(&upper)?;
    std::fs::create_dir(&work)?;
    mount(
        "overlay",
        Path::new("/etc"),
        "overlay",
        0,
        &format!(
            "lowerdir=/etc,upperdir={},workdir={}",
            upper.display(),
            work.display()
        ),
    )
}
