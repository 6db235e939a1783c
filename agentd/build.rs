//! Builds the eBPF programs (agentd-ebpf) for the BPF target with aya-build,
//! so `cargo build` alone yields a daemon with its kernel side embedded.
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agentd-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agentd-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
