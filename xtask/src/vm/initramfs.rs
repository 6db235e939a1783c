//! The VM's initramfs: busybox-static, the test binaries (stripped) with the
//! shared libraries `ldd` names, and an `/init` that mounts the kernel
//! filesystems, runs `agentd doctor --json` and every test binary between
//! markers on the serial console, and powers off.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{markers, VmTest};

/// Where binaries live inside the VM.
pub const BIN_DIR: &str = "/agentd/bin";

/// Where busybox-static installs its binary.
const BUSYBOX: &str = "/bin/busybox";

/// Unprivileged user the tests may run agents as.
const AGENT_UID: u32 = 1000;
/// The scenario suite's agent user (`agentd-agent`).
const SCENARIO_UID: u32 = 1001;

/// Builds `work_dir/initramfs.cpio` and returns its path.
pub fn build(
    work_dir: &Path,
    agentd: &Path,
    tests: &[VmTest],
    per_test_secs: u64,
) -> Result<PathBuf> {
    let root = work_dir.join("initramfs-root");
    let _ = fs::remove_dir_all(&root);
    for dir in [
        "bin",
        "dev",
        "etc",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "var/lib",
        &BIN_DIR[1..],
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    install_busybox(&root)?;
    install_binary(&root, agentd, "agentd")?;
    // agentctl (built next to agentd) is there for tests that launch agents.
    let agentctl = agentd.with_file_name("agentctl");
    if agentctl.is_file() {
        install_binary(&root, &agentctl, "agentctl")?;
    }
    // The demo's scripted agent, for `cargo xtask demo --vm`.
    let demo_agent = agentd.with_file_name("demo-agent");
    if demo_agent.is_file() {
        install_binary(&root, &demo_agent, "demo-agent")?;
    }
    for t in tests {
        install_binary(&root, &t.binary, &t.name)?;
    }
    for f in HOST_FILES.iter().map(Path::new).filter(|f| f.is_file()) {
        install_host_file(&root, f)?;
    }
    fs::write(
        root.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/sh\n\
             agent:x:{AGENT_UID}:{AGENT_UID}:agent:/tmp:/bin/sh\n\
             agentd-agent:x:{SCENARIO_UID}:{SCENARIO_UID}:agentd-agent:/tmp:/bin/sh\n"
        ),
    )?;
    fs::write(
        root.join("etc/group"),
        format!("root:x:0:\nagent:x:{AGENT_UID}:\nagentd-agent:x:{SCENARIO_UID}:\n"),
    )?;
    let init = root.join("init");
    fs::write(&init, init_script(tests, per_test_secs))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let cpio = work_dir.join("initramfs.cpio");
    pack(&root, &cpio)?;
    Ok(cpio)
}

/// The `/init` script (pure, so it is unit-tested).
pub fn init_script(tests: &[VmTest], per_test_secs: u64) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin:/agentd/bin HOME=/root AGENTD_LOG=warn RUST_BACKTRACE=1\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t securityfs securityfs /sys/kernel/security\n\
         mount -t bpf bpffs /sys/fs/bpf\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         mount -t tmpfs tmpfs /tmp\n\
         mount -t tmpfs tmpfs /run\n\
         mkdir -p /run/agentd\n\
         ip link set lo up\n\
         echo +cpu +memory +pids > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null\n\
         # The VM's own sysctls (never the host's): let an unprivileged agent\n\
         # reach the bpf syscall and ICMP sockets, so the scenarios' unenforced\n\
         # controls can show those steps succeed and the hooks must refuse them.\n\
         echo 0 > /proc/sys/kernel/unprivileged_bpf_disabled 2>/dev/null\n\
         echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range\n",
    );
    s += &format!("echo {}\n", markers::BEGIN);
    s += &format!(
        "echo {} \"$(uname -r)\" \"$(cat /sys/kernel/security/lsm)\"\n",
        markers::KERNEL
    );
    s += &format!("echo {}\n", markers::DOCTOR_BEGIN);
    s += "agentd doctor --json\n";
    s += &format!("echo {} $?\n", markers::DOCTOR_END);
    for t in tests {
        let args: String = t
            .args
            .iter()
            .map(|a| format!(" '{}'", a.replace('\'', "'\\''")))
            .collect();
        s += &format!("echo {} {}\n", markers::TEST_BEGIN, t.name);
        s += &format!(
            "timeout -s KILL {per_test_secs} {BIN_DIR}/{}{args} </dev/null 2>&1\n",
            t.name
        );
        s += &format!("echo {} {} $?\n", markers::TEST_END, t.name);
    }
    s += &format!("echo {}\n", markers::DONE);
    s += "sync\npoweroff -f\n";
    s
}

fn install_busybox(root: &Path) -> Result<()> {
    if !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} is missing: install the busybox-static package (cargo xtask setup does)");
    }
    if !libraries_of(Path::new(BUSYBOX))?.is_empty() {
        bail!("{BUSYBOX} is dynamically linked: install busybox-static, not busybox");
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
    Ok(())
}

/// Host programs and libraries copied to the same path in the VM: the
/// scenario suite execs and copies real (non-busybox) binaries.
const HOST_FILES: &[&str] = &[
    "/usr/bin/true",
    "/usr/bin/false",
    "/usr/bin/id",
    "/usr/bin/touch",
    "/usr/bin/cat",
    "/usr/bin/dash",
    // The demo's agent tries these directly (and the kernel refuses them).
    "/usr/bin/ls",
    "/usr/bin/rm",
    "/usr/lib/x86_64-linux-gnu/libm.so.6",
];

/// Copies a host file (and, for a program, its libraries) to the same path.
fn install_host_file(root: &Path, src: &Path) -> Result<()> {
    let inside = root.join(src.strip_prefix("/").unwrap_or(src));
    fs::create_dir_all(inside.parent().expect("absolute path has a parent"))?;
    fs::copy(src, &inside).with_context(|| format!("copying {}", src.display()))?;
    install_libraries(root, src)
}

fn install_libraries(root: &Path, binary: &Path) -> Result<()> {
    for lib in libraries_of(binary)? {
        let inside = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        if inside.exists() {
            continue;
        }
        fs::create_dir_all(inside.parent().expect("library path has a parent"))?;
        // fs::copy follows symlinks: the VM gets the real file under the name the loader asks for.
        fs::copy(&lib, &inside).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}

/// Copies `src` stripped of debug info to `BIN_DIR/name`, plus its libraries.
fn install_binary(root: &Path, src: &Path, name: &str) -> Result<()> {
    if !src.is_file() {
        bail!(
            "test binary {} does not exist (build it first)",
            src.display()
        );
    }
    let dest = root.join(&BIN_DIR[1..]).join(name);
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dest)
        .arg(src)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        // No binutils: the image is just larger.
        fs::copy(src, &dest).with_context(|| format!("copying {}", src.display()))?;
    }
    install_libraries(root, src)
}

/// Shared libraries (and the dynamic loader) `binary` needs; empty if static.
fn libraries_of(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    // ldd exits non-zero for static binaries ("not a dynamic executable").
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `ldd` output into absolute library paths.
pub fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Packs `root` as a newc cpio archive (uncompressed: TCG decompresses slowly).
fn pack(root: &Path, cpio: &Path) -> Result<()> {
    let mut names = Vec::new();
    collect(root, Path::new("."), &mut names)?;
    let out = fs::File::create(cpio)?;
    let mut child = Command::new("cpio")
        .args([
            "--create",
            "--format=newc",
            "--quiet",
            "--null",
            "--owner=0:0",
        ])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("running cpio (install the cpio package; cargo xtask setup does)")?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        for n in &names {
            stdin.write_all(n.as_os_str().as_encoded_bytes())?;
            stdin.write_all(b"\0")?;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cpio failed: {status}");
    }
    Ok(())
}

fn collect(root: &Path, rel: &Path, names: &mut Vec<PathBuf>) -> Result<()> {
    names.push(rel.to_path_buf());
    let full = root.join(rel);
    if fs::symlink_metadata(&full)?.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(&full)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for e in entries {
            collect(root, &rel.join(e), names)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_parsed() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn init_runs_doctor_then_each_test_between_markers() {
        let tests = [VmTest {
            name: "agentd-vm-lsm".into(),
            binary: "/x".into(),
            args: vec!["it's".into()],
        }];
        let s = init_script(&tests, 60);
        let doctor = s.find("agentd doctor --json").unwrap();
        let test = s
            .find("timeout -s KILL 60 /agentd/bin/agentd-vm-lsm 'it'\\''s'")
            .unwrap();
        let done = s.find(markers::DONE).unwrap();
        assert!(doctor < test && test < done);
        assert!(s.contains("mount -t bpf bpffs /sys/fs/bpf"));
        assert!(s.ends_with("poweroff -f\n"));
    }
}
