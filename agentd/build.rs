//! Builds the eBPF programs (agentd-ebpf) for the BPF target with aya-build,
//! so `cargo build` alone yields a daemon with its kernel side embedded.

/// The dated nightly the eBPF crate builds with (one file, read by xtask too),
/// so two builds a month apart produce the same object.
const EBPF_TOOLCHAIN: &str = include_str!("../agentd-ebpf/toolchain");

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../agentd-ebpf/toolchain");
    // A fuzz build (cargo-fuzz sets `--cfg fuzzing`) exercises parsers and
    // never loads the kernel side: it embeds an empty object instead of
    // building the eBPF crate for the BPF target a second time.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("agentd-ebpf");
        std::fs::write(out, [])?;
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agentd-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agentd-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN.trim()),
    )
}
