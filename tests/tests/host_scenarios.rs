//! Runs the scenario suite on this host with the backend `agentd doctor`
//! picks (seccomp here): every scenario must PASS or say why it is SKIPped.
#[test]
fn host_scenarios_pass() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentd-scenarios"))
        .output()
        .expect("run agentd-scenarios");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if stdout.starts_with("SKIP all") {
        println!("SKIPPED: {}", stdout.trim());
        return;
    }
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
    assert!(
        stdout.lines().filter(|l| l.starts_with("PASS")).count() >= 20,
        "too few scenarios ran:\n{stdout}"
    );
    assert!(out.status.success());
}
