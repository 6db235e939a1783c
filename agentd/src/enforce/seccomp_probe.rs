//! Probes seccomp user notification by installing a real filter in a forked
//! child (a filter can never be removed, so it must not land on agentd).

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` = `_IOW('!', 4, __u64)`.
pub const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;

/// Why the probe child could not get a user-notification listener.
#[derive(Debug, thiserror::Error)]
pub enum SeccompProbeError {
    /// The probe child could not be forked.
    #[error("fork: {0}")]
    Fork(std::io::Error),
    /// The probe child died before reporting.
    #[error("probe child died")]
    ChildDied,
    /// The kernel refused the filter or the listener flag.
    #[error("refused: {0}")]
    Refused(nix::errno::Errno),
}

/// Installs a filter that notifies on `getppid` and asks for a listener fd;
/// with `sync_wakeup`, also sets SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on it.
pub fn user_notif_in_child(sync_wakeup: bool) -> Result<&'static str, SeccompProbeError> {
    // SAFETY: the child only makes raw syscalls and _exits.
    match unsafe { libc::fork() } {
        -1 => Err(SeccompProbeError::Fork(std::io::Error::last_os_error())),
        0 => {
            let code = child(sync_wakeup);
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                255
            };
            match code {
                0 if sync_wakeup => Ok("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP accepted"),
                0 => Ok("filter with SECCOMP_FILTER_FLAG_NEW_LISTENER installed"),
                255 => Err(SeccompProbeError::ChildDied),
                errno => Err(SeccompProbeError::Refused(nix::errno::Errno::from_raw(
                    errno,
                ))),
            }
        }
    }
}

fn child(sync_wakeup: bool) -> i32 {
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(254)
    };
    let filter = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_getppid as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_USER_NOTIF,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let fd = match super::seccomp::filter::install_program(&filter) {
        Ok(fd) => fd,
        Err(e) => return e.raw_os_error().unwrap_or(254),
    };
    // SAFETY: an ioctl on the listener fd we own.
    unsafe {
        if sync_wakeup
            && libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                super::seccomp::notif::SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            ) != 0
        {
            return errno();
        }
    }
    0
}
