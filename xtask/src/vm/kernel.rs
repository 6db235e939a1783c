//! The VM kernel: Debian's `linux-image-6.1.0-N-cloud-amd64`, fetched once
//! with `apt-get download`, unpacked with `dpkg -x`, and cached as a bare
//! `vmlinuz` (the cloud kernel has everything we need built in, so no
//! modules are kept).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// Package name prefix and suffix of the kernels we accept.
const PREFIX: &str = "linux-image-6.1.0-";
const SUFFIX: &str = "-cloud-amd64";

/// A kernel image ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Debian package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Path of the cached bzImage.
    pub vmlinuz: PathBuf,
}

/// The ABI number `N` of `linux-image-6.1.0-N-cloud-amd64`, if `name` is one.
pub fn abi_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The newest acceptable kernel package among `names`.
pub fn newest(names: impl IntoIterator<Item = String>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|n| abi_of(n.trim()).map(|abi| (abi, n.trim().to_string())))
        .max_by_key(|(abi, _)| *abi)
        .map(|(_, n)| n)
}

fn cached_name(package: &str) -> String {
    format!("vmlinuz-{}", package.trim_start_matches("linux-image-"))
}

/// Kernels already in the cache, newest first.
fn cached(cache_dir: &Path) -> Vec<Kernel> {
    let mut found: Vec<(u32, Kernel)> = fs::read_dir(cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let package = format!("linux-image-{}", file.strip_prefix("vmlinuz-")?);
            let abi = abi_of(&package)?;
            Some((
                abi,
                Kernel {
                    package,
                    vmlinuz: e.path(),
                },
            ))
        })
        .collect();
    found.sort_by_key(|(abi, _)| std::cmp::Reverse(*abi));
    found.into_iter().map(|(_, k)| k).collect()
}

/// The newest kernel package apt knows about (local package lists only).
fn newest_from_apt() -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", PREFIX])
        .output()
        .context("running apt-cache (is this a Debian/Ubuntu host?)")?;
    if !out.status.success() {
        bail!(
            "apt-cache pkgnames failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    newest(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from),
    )
    .with_context(|| {
        format!(
            "apt knows no {PREFIX}N{SUFFIX} package; run `apt-get update` (cargo xtask setup does)"
        )
    })
}

/// Returns a bootable kernel, downloading the newest available one into
/// `cache_dir` unless it is already there. `AGENTD_VM_KERNEL` overrides.
/// Idempotent; a cached kernel is used when apt cannot be asked.
pub fn ensure_kernel(cache_dir: &Path) -> Result<Kernel> {
    if let Some(path) = std::env::var_os("AGENTD_VM_KERNEL") {
        let vmlinuz = PathBuf::from(path);
        if !vmlinuz.is_file() {
            bail!("AGENTD_VM_KERNEL={} is not a file", vmlinuz.display());
        }
        return Ok(Kernel {
            package: "AGENTD_VM_KERNEL".into(),
            vmlinuz,
        });
    }
    fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
    let package = match newest_from_apt() {
        Ok(p) => p,
        Err(e) => {
            if let Some(k) = cached(cache_dir).into_iter().next() {
                eprintln!("vm: {e:#}; using cached {}", k.package);
                return Ok(k);
            }
            return Err(e);
        }
    };
    let vmlinuz = cache_dir.join(cached_name(&package));
    if vmlinuz.is_file() {
        return Ok(Kernel { package, vmlinuz });
    }
    eprintln!(
        "vm: downloading {package} (once; cached in {})",
        cache_dir.display()
    );
    download(&package, cache_dir, &vmlinuz)?;
    Ok(Kernel { package, vmlinuz })
}

fn download(package: &str, cache_dir: &Path, dest: &Path) -> Result<()> {
    let scratch = cache_dir.join(format!("download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = (|| -> Result<()> {
        run(Command::new("apt-get")
            .arg("download")
            .arg(package)
            .current_dir(&scratch))?;
        let deb = fs::read_dir(&scratch)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download produced no .deb")?;
        let root = scratch.join("root");
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        let image = fs::read_dir(root.join("boot"))
            .context("package has no /boot")?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .context("package has no /boot/vmlinuz-*")?;
        // Copy then rename, so an interrupted run never leaves half a kernel.
        let tmp = dest.with_extension("partial");
        fs::copy(&image, &tmp)?;
        fs::rename(&tmp, dest)?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result.with_context(|| format!("fetching {package}"))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_abi_not_lexicographic() {
        let names = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "linux-image-6.1.0-55-amd64",
            "linux-image-6.1.0-100-cloud-amd64-unsigned",
        ]
        .map(String::from);
        assert_eq!(
            newest(names).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
    }

    #[test]
    fn nothing_acceptable_is_none() {
        assert_eq!(newest(["linux-image-amd64".to_string()]), None);
    }

    #[test]
    fn cache_lookup_round_trips_names() {
        let dir = std::env::temp_dir().join(format!("xtask-vm-cache-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for p in [
            "linux-image-6.1.0-7-cloud-amd64",
            "linux-image-6.1.0-12-cloud-amd64",
        ] {
            fs::write(dir.join(cached_name(p)), b"x").unwrap();
        }
        fs::write(dir.join("vmlinuz-other"), b"x").unwrap();
        let found = cached(&dir);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].package, "linux-image-6.1.0-12-cloud-amd64");
    }
}
