//! Boots the kernel + initramfs under QEMU (TCG: /dev/kvm hangs on these
//! hosts) and collects the serial console until the guest powers off or the
//! timeout expires.
use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// Kernel command line: BPF must be an active LSM; `panic=-1` with
/// `-no-reboot` turns a guest panic into a QEMU exit instead of a hang.
pub const APPEND: &str = "console=ttyS0 panic=-1 lsm=lockdown,capability,landlock,yama,bpf quiet";

/// What one boot produced.
pub struct Boot {
    /// The whole serial console, `\r` included.
    pub console: String,
    /// Whether the guest was killed at the timeout.
    pub timed_out: bool,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

/// How to boot.
pub struct BootSpec<'a> {
    /// bzImage.
    pub kernel: &'a Path,
    /// Uncompressed newc cpio.
    pub initrd: &'a Path,
    /// Guest memory.
    pub memory_mib: u32,
    /// Guest vCPUs.
    pub cpus: u32,
    /// Kill the guest after this long.
    pub timeout: Duration,
    /// Copy of the console written here as it arrives.
    pub log: PathBuf,
    /// Echo result lines to stderr as they arrive.
    pub echo: bool,
}

/// Boots once and returns the console.
pub fn boot(spec: &BootSpec<'_>) -> Result<Boot> {
    let start = Instant::now();
    let mut child = spawn_qemu(spec)?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut log =
        fs::File::create(&spec.log).with_context(|| format!("creating {}", spec.log.display()))?;
    let (rx, reader) = read_console(stdout, spec.echo);
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let (mut console, timed_out) = collect_console(&rx, &mut log, &mut child, start, spec.timeout);
    let status = child.wait()?;
    let _ = reader.join();
    // Lines that arrived between the last recv and the kill.
    console.extend(rx.try_iter().map(|l| l + "\n"));
    let qemu_err = err_reader.join().unwrap_or_default();
    if !qemu_err.trim().is_empty() {
        let _ = writeln!(log, "--- qemu stderr ({status}) ---\n{qemu_err}");
        console.push_str(&format!("qemu stderr: {qemu_err}\n"));
    }
    Ok(Boot {
        console,
        timed_out,
        elapsed: start.elapsed(),
    })
}

/// Starts QEMU on the spec's kernel and initramfs, console on stdout.
fn spawn_qemu(spec: &BootSpec<'_>) -> Result<std::process::Child> {
    Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .args([
            "-m",
            &spec.memory_mib.to_string(),
            "-smp",
            &spec.cpus.to_string(),
        ])
        .arg("-kernel")
        .arg(spec.kernel)
        .arg("-initrd")
        .arg(spec.initrd)
        .args(["-append", APPEND])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (install qemu-system-x86; cargo xtask setup does)")
}

/// Reads the console's lines on a thread (echoing result lines to stderr
/// when `echo`), sending each as it arrives.
fn read_console(
    stdout: std::process::ChildStdout,
    echo: bool,
) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line).into_owned();
            if echo {
                let l = line.trim_end_matches('\r');
                if ["PASS ", "FAIL ", "SKIP", "BENCH "]
                    .iter()
                    .any(|p| l.starts_with(p))
                {
                    eprintln!("vm: {l}");
                }
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, reader)
}

/// Collects the console (copied to `log`) until QEMU closes it or the
/// timeout passes (QEMU then killed); returns it and whether it timed out.
fn collect_console(
    rx: &mpsc::Receiver<String>,
    log: &mut fs::File,
    child: &mut std::process::Child,
    start: Instant,
    timeout: Duration,
) -> (String, bool) {
    let mut console = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if start.elapsed() > timeout {
            // Our own child, by handle: nothing else is touched.
            let _ = child.kill();
            return (console, true);
        }
    }
    (console, false)
}
