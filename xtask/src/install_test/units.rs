//! The systemd unit: `systemd-analyze verify` and `security`, starting it
//! where systemd runs (emulated elsewhere), the pinned test object, leftovers.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

#[allow(unused_imports)]
use super::*;

pub(super) fn verify_units() -> (String, Outcome) {
    let name =
        "systemd-analyze verify agentd.service agentd.slice agent@example.service".to_owned();
    if let Err(e) = ensure_debian_package("systemd-analyze", "systemd") {
        return (
            name,
            Outcome::Skip(format!("systemd-analyze unavailable: {e:#}")),
        );
    }
    // A template verifies through an instance; copy it under an instance name.
    let tmp = std::env::temp_dir().join(format!("agentd-verify-{}", std::process::id()));
    let result = (|| -> anyhow::Result<Outcome> {
        std::fs::create_dir_all(&tmp)?;
        let inst = tmp.join("agent@example.service");
        std::fs::copy(Path::new(UNIT_DIR).join("agent@.service"), &inst)?;
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(Path::new(UNIT_DIR).join("agentd.service"))
            .arg(Path::new(UNIT_DIR).join("agentd.slice"))
            .arg(&inst)
            .output()
            .context("running systemd-analyze")?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.trim().is_empty() {
            Ok(Outcome::Pass)
        } else if out.status.success() {
            Ok(Outcome::Fail(format!("warnings: {}", text.trim())))
        } else if text.contains("Failed to initialize manager")
            || text.contains("Failed to setup working directory")
        {
            Ok(Outcome::Skip(format!(
                "systemd-analyze cannot run here: {}",
                text.trim()
            )))
        } else {
            Ok(Outcome::Fail(text.trim().to_owned()))
        }
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    match result {
        Ok(o) => (name, o),
        Err(e) => (name, Outcome::Fail(format!("{e:#}"))),
    }
}

/// Highest exposure score (systemd's 0–10 scale) accepted for agentd.service.
/// `--threshold` takes tenths: 50 means 5.0 (the unit rates 4.6 now).
pub(super) const MAX_EXPOSURE_TENTHS: u32 = 50;

pub(super) fn security_exposure() -> (String, Outcome) {
    let name = format!(
        "systemd-analyze security --offline: agentd.service exposure <= {}.{}",
        MAX_EXPOSURE_TENTHS / 10,
        MAX_EXPOSURE_TENTHS % 10
    );
    let out = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            "--no-pager",
            &format!("--threshold={MAX_EXPOSURE_TENTHS}"),
        ])
        .arg(Path::new(UNIT_DIR).join("agentd.service"))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return (name, Outcome::Skip(format!("systemd-analyze: {e}"))),
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let level = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default();
    if level.is_empty() {
        return (
            name,
            Outcome::Skip(format!("no exposure level printed: {}", text.trim())),
        );
    }
    println!("            {level}");
    if out.status.success() {
        (name, Outcome::Pass)
    } else {
        (name, Outcome::Fail(level))
    }
}

/// Starts and stops the unit where systemd is PID 1; says why not otherwise.
pub(super) fn start_unit() -> (String, Outcome) {
    let name = "systemctl start agentd (Type=notify readiness, socket)".to_owned();
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if pid1.trim() != "systemd" || !Path::new("/run/systemd/system").exists() {
        return (
            name,
            Outcome::Skip(format!(
                "systemd is not PID 1 on this machine (PID 1 is `{}`), so no unit can be started; the units are verified offline instead",
                pid1.trim()
            )),
        );
    }
    let result = (|| -> anyhow::Result<()> {
        run_quiet(Command::new("systemctl").args(["daemon-reload"]))?;
        // Type=notify: `start` returns only after READY=1 (or fails).
        run_quiet(Command::new("timeout").args(["60", "systemctl", "start", "agentd.service"]))
            .context("agentd.service did not become ready (journalctl -u agentd)")?;
        if !Path::new("/run/agentd/agentd.sock").exists() {
            bail!("active, but /run/agentd/agentd.sock is missing");
        }
        Ok(())
    })();
    let _ = run_quiet(Command::new("systemctl").args(["stop", "agentd.service"]));
    match result {
        Ok(()) => (name, Outcome::Pass),
        Err(e) => (name, Outcome::Fail(format!("{e:#}"))),
    }
}

/// Without systemd as PID 1, runs what the unit would run as the unit would
/// run it: the installed binary, only the unit's capabilities,
/// NoNewPrivileges, NOTIFY_SOCKET for Type=notify. A throwaway instance (its
/// own state directory and socket under /tmp), never the service's state;
/// its pins, cgroup slice and instance record are removed afterwards.
pub(super) fn emulated_start() -> Vec<(String, Outcome)> {
    let name = "emulated unit start: READY=1 with the unit's capabilities, socket bound, clean SIGTERM stop";
    let dir = std::env::temp_dir().join(format!("agentd-unit-emul-{}", std::process::id()));
    let unit =
        std::fs::read_to_string(Path::new(UNIT_DIR).join("agentd.service")).unwrap_or_default();
    let mut stderr_text = String::new();
    let result = (|| -> anyhow::Result<()> {
        let set = bounding_set_of(&unit)?;
        let (mut child, notify, socket) = start_emulated(&dir, &set)?;
        let outcome = await_ready(&notify, &socket, &dir);
        let status = stop_after_sigterm(&mut child)?;
        stderr_text =
            strip_ansi(&std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default());
        outcome?;
        match status {
            Some(st) if st.success() => Ok(()),
            Some(st) => bail!("exit {st} after SIGTERM"),
            None => bail!("did not stop within 30 s of SIGTERM"),
        }
    })();
    cleanup_instances(&stderr_text);
    let _ = std::fs::remove_dir_all(&dir);

    let mut out = vec![(
        name.to_owned(),
        match result {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(format!(
                "{e:#}; agentd said: {}",
                stderr_text
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )),
        },
    )];
    if out[0].1 == Outcome::Pass {
        out.push(emulated_enforcement(&stderr_text));
    }
    out
}

/// Starts the installed agentd in `dir` (its own config, state and socket)
/// under setpriv with the bounding set `set`, as the unit would; returns
/// it, the NOTIFY_SOCKET it reports to, and its API socket's path.
fn start_emulated(
    dir: &Path,
    set: &str,
) -> anyhow::Result<(
    std::process::Child,
    std::os::unix::net::UnixDatagram,
    std::path::PathBuf,
)> {
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("run/agentd.sock");
    let config = dir.join("agentd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\nsocket_path = \"{}\"\n",
            dir.join("state").display(),
            socket.display()
        ),
    )?;
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let log = std::fs::File::create(dir.join("stderr.log"))?;
    let child = Command::new("setpriv")
        .args([
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set",
            set,
            "--",
        ])
        .args(["/usr/bin/agentd", "run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting agentd under setpriv")?;
    Ok((child, notify, socket))
}

/// Waits for READY=1 (the socket must then exist), then for enforcement
/// to come up or be reported unavailable; prints how long each took.
fn await_ready(
    notify: &std::os::unix::net::UnixDatagram,
    socket: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut buf = [0u8; 4096];
    let started = std::time::Instant::now();
    loop {
        let n = notify.recv(&mut buf).context("no READY=1 within 60 s")?;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            println!(
                "            READY=1 after {:.2} s",
                started.elapsed().as_secs_f64()
            );
            break;
        }
    }
    if !socket.exists() {
        bail!("READY=1 sent but {} is missing", socket.display());
    }
    // Enforcement loads in the background after READY=1: wait until
    // enforce.sock appears or agentd says it is unavailable.
    let enforce_sock = socket.with_file_name("enforce.sock");
    let log_path = dir.join("stderr.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !enforce_sock.exists()
        && std::time::Instant::now() < deadline
        && !std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("enforcement unavailable")
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if enforce_sock.exists() {
        println!(
            "            enforce.sock after {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// SIGTERM, then up to 30 s for the exit (killed after that: None).
fn stop_after_sigterm(
    child: &mut std::process::Child,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether the emulated start's enforcement backend loaded, from its log
/// (skipped where the cgroup2 root's mode rules it out).
fn emulated_enforcement(stderr_text: &str) -> (String, Outcome) {
    let enforcing = "emulated unit start: enforcement backend loads with the unit's capabilities";
    let failed = stderr_text
        .lines()
        .find(|l| l.contains("enforcement unavailable"));
    (
        enforcing.to_owned(),
        match failed {
            None if stderr_text.contains("enforcement running") => Outcome::Pass,
            None => Outcome::Fail(
                "agentd logged neither `enforcement running` nor `enforcement unavailable`".into(),
            ),
            Some(line) => match cgroup_root_mode_quirk() {
                Some(why) => Outcome::Skip(format!("{why} (agentd: {})", line.trim())),
                None => Outcome::Fail(line.trim().to_owned()),
            },
        },
    )
}

/// Why enforcement cannot start with the unit's capabilities on this
/// machine, if the cgroup2 root lacks the owner-write bit.
pub(super) fn cgroup_root_mode_quirk() -> Option<String> {
    let root = cgroup2_root()?;
    let mode = std::fs::metadata(&root).ok()?.permissions().mode() & 0o7777;
    (mode & 0o200 == 0).then(|| {
        format!(
            "the cgroup2 root {} is mode {mode:o} here (0755 on systemd hosts): creating agent cgroups there needs CAP_DAC_OVERRIDE, which agentd.service deliberately lacks",
            root.display()
        )
    })
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub(super) fn cgroup2_root() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })
}

/// Removes what the throwaway instance(s) named in the log left: pins,
/// instance record, (empty) cgroup slice.
pub(super) fn cleanup_instances(log: &str) {
    for inst in log
        .split("instance=")
        .skip(1)
        .filter_map(|rest| rest.trim_start_matches('"').split(['"', ' ']).next())
        .filter(|i| i.starts_with("agentd-") && !i.contains('/'))
    {
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{inst}"));
        let _ = std::fs::remove_file(format!("/run/agentd-instances/{inst}"));
        if let Some(root) = cgroup2_root() {
            let slice = root.join(format!("{inst}.slice"));
            if let Ok(children) = std::fs::read_dir(&slice) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(&slice);
        }
    }
}

/// Drops ANSI colour sequences from a log.
pub(super) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------- bpf ----

/// Pins a one-entry array map at /sys/fs/bpf/agentd/install-test, mounting
/// bpffs at /sys/fs/bpf first if nothing is mounted there (systemd does that
/// at boot on a real host).
pub(super) fn pin_test_object() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        println!("            mounting bpffs at /sys/fs/bpf (as systemd does at boot)");
        run_quiet(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    std::fs::create_dir_all(PIN_DIR)?;
    let path = std::ffi::CString::new(format!("{PIN_DIR}/install-test"))?;

    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_MAP_CREATE of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>(),
        )
    };
    if fd < 0 {
        bail!("BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    }
    let pin = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    // SAFETY: pin points at a NUL-terminated path that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &pin as *const ObjPin,
            std::mem::size_of::<ObjPin>(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours; the pin keeps the map alive.
    unsafe { libc::close(fd as i32) };
    if rc < 0 {
        bail!("BPF_OBJ_PIN {}: {err}", path.to_string_lossy());
    }
    Ok(())
}

// ------------------------------------------------------------ cleanup ----
