//! `cargo xtask package`: release binaries, then a .deb (cargo-deb) and an
//! .rpm (cargo-generate-rpm) from the metadata in agentd/Cargo.toml.
//!
//! Both packaging tools are installed first if missing (pinned versions,
//! `cargo install --locked`), so this works on a fresh clone.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Instant, SystemTime},
};

use anyhow::{bail, Context as _};

use crate::shell::{output, run_cmd, step, workspace_root};

/// Packaging tools: (cargo subcommand, crate, pinned version).
const TOOLS: &[(&str, &str, &str)] = &[
    ("deb", "cargo-deb", "3.8.0"),
    ("generate-rpm", "cargo-generate-rpm", "0.21.1"),
];

/// Binaries shipped in both packages.
const BINARIES: &[&str] = &["agentd", "agentctl"];

/// The two packages one run produced.
#[derive(Debug, Clone)]
pub struct Packages {
    /// The Debian package.
    pub deb: PathBuf,
    /// The RPM package.
    pub rpm: PathBuf,
}

/// `cargo xtask package`: builds both packages and says where they are.
pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    // A fresh clone needs the eBPF toolchain (nightly rust-src, bpf-linker)
    // for the release build; setup is idempotent and says what it does.
    crate::setup::run()?;
    let p = build()?;
    println!(
        "==> package: done in {:.0} s\n    {}\n    {}",
        started.elapsed().as_secs_f64(),
        p.deb.display(),
        p.rpm.display()
    );
    Ok(())
}

/// Builds release binaries and both packages; returns their paths.
pub fn build() -> anyhow::Result<Packages> {
    let root = workspace_root();
    ensure_tools()?;

    step("package: building release binaries (agentd, agentctl; a few minutes on 2 cores)");
    let t = Instant::now();
    run_cmd(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "agentd",
        "--bins",
    ]))?;
    println!("    release build: {:.0} s", t.elapsed().as_secs_f64());

    let target = target_dir(&root)?;
    stage(&root, &target)?;

    step("package: cargo deb");
    let deb_dir = target.join("debian");
    std::fs::create_dir_all(&deb_dir)?;
    let since = SystemTime::now();
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["deb", "-p", "agentd", "--no-build", "--output"])
            .arg(&deb_dir),
    )?;
    let deb = newest(&deb_dir, "agentd_", ".deb", since)?;

    step("package: cargo generate-rpm");
    // Must exist: cargo-generate-rpm takes a missing path for a file name.
    let rpm_dir = target.join("generate-rpm");
    std::fs::create_dir_all(&rpm_dir)?;
    let since = SystemTime::now();
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["generate-rpm", "-p", "agentd", "--output"])
            .arg(&rpm_dir),
    )?;
    let rpm = newest(&rpm_dir, "agentd-", ".rpm", since)?;
    Ok(Packages { deb, rpm })
}

/// Installs cargo-deb and cargo-generate-rpm at their pinned versions unless
/// they are already there.
fn ensure_tools() -> anyhow::Result<()> {
    step("package: checking packaging tools");
    for (sub, krate, version) in TOOLS {
        // stderr silenced: a missing subcommand is the expected answer here.
        let have = Command::new("cargo")
            .args([sub, "--version"])
            .stderr(std::process::Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if have.contains(version) {
            println!("    {krate} {version}: present");
            continue;
        }
        let found = have.trim();
        if found.is_empty() {
            println!("    {krate}: missing; installing {version} (cargo install --locked)");
        } else {
            println!("    {krate}: found `{found}`, want {version}; installing {version}");
        }
        run_cmd(Command::new("cargo").args(["install", "--locked", krate, "--version", version]))?;
    }
    Ok(())
}

/// Cargo's target directory (honours CARGO_TARGET_DIR and config).
fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let meta = output(Command::new("cargo").current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&meta).context("parsing cargo metadata")?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// Fills target/release/package/: stripped binaries (cargo-generate-rpm does
/// not strip) and the example policies copied from policies/ now, so the
/// packages carry the policies of this checkout.
fn stage(root: &Path, target: &Path) -> anyhow::Result<()> {
    step("package: staging stripped binaries and example policies in target/release/package/");
    let stage = target.join("release").join("package");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let policies = stage.join("policies");
    std::fs::create_dir_all(&policies)
        .with_context(|| format!("creating {}", policies.display()))?;

    for bin in BINARIES {
        let from = target.join("release").join(bin);
        let to = stage.join(bin);
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        run_cmd(Command::new("strip").arg("--strip-all").arg(&to))?;
    }

    let mut copied = 0;
    let src = root.join("policies");
    if src.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(&src)
            .with_context(|| format!("reading {}", src.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().context("policy file without a name")?;
            std::fs::copy(&p, policies.join(name))
                .with_context(|| format!("copying {}", p.display()))?;
            println!("    example policy: {}", p.display());
            copied += 1;
        }
    }
    if copied == 0 {
        println!("    no files in policies/: the packages carry no example policy");
    }
    // Always present, so the asset glob matches even without policies.
    std::fs::write(
        policies.join("README"),
        "Example policies for agentd, copied from the source tree's policies/ at package time.\n\
         They are not loaded automatically: review and edit one, then check it with\n\
         `agentctl policy validate FILE` and load it with `agentctl policy load FILE`\n\
         (or point gateway.policy_file in /etc/agentd/agentd.toml at it).\n",
    )?;
    Ok(())
}

/// The file in `dir` named `prefix*suffix` written at or after `since`.
fn newest(dir: &Path, prefix: &str, suffix: &str, since: SystemTime) -> anyhow::Result<PathBuf> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(prefix) && name.ends_with(suffix)) {
            continue;
        }
        let modified = e.metadata()?.modified()?;
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, e.path()));
        }
    }
    match best {
        // Filesystem timestamps can be coarser than SystemTime::now().
        Some((t, p)) if t + std::time::Duration::from_secs(2) >= since => Ok(p),
        Some((_, p)) => bail!(
            "{} is older than this run: the packager wrote nothing",
            p.display()
        ),
        None => bail!("no {prefix}*{suffix} in {}", dir.display()),
    }
}
