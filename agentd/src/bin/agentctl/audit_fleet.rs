//! `agentctl audit verify --postgres FILE`: every host's chain in the
//! fleet's PostgreSQL, verified with the key each host registered; one
//! verdict per host, and a non-zero exit on any finding.
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use agentd::audit::Checkpoint;
use agentd::fleet::conn::PgSettings;
use agentd::fleet::verify::{self, HostReport};

/// Verifies the hosts in PostgreSQL (all, or `only`), with `witnesses`
/// (host, checkpoint taken on that host).
pub fn verify(
    conninfo: &Path,
    only: Option<&str>,
    witnesses: &[(String, Checkpoint)],
    json: bool,
) -> anyhow::Result<()> {
    let pg = PgSettings::from_file(conninfo, Duration::from_secs(10))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let chains = rt
        .block_on(verify::load(&pg, only))
        .context("reading the fleet's audit rows from PostgreSQL")?;
    for (host, _) in witnesses {
        if !chains.iter().any(|c| &c.host_id == host) {
            anyhow::bail!("--witness names host `{host}`, which PostgreSQL does not know");
        }
    }
    if let Some(h) = only {
        if chains.is_empty() {
            anyhow::bail!("PostgreSQL holds nothing for host `{h}`");
        }
    }
    let reports: Vec<HostReport> = chains
        .iter()
        .map(|c| {
            let w = witnesses
                .iter()
                .find(|(h, _)| h == &c.host_id)
                .map(|(_, w)| w);
            verify::verify_host(c, w)
        })
        .collect();
    let failed = reports.iter().filter(|r| !r.findings.is_empty()).count();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "result": if failed == 0 { "pass" } else { "fail" },
                "hosts": reports,
            })
        );
    } else {
        for r in &reports {
            print_host(r);
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "fleet audit verification failed: {failed} of {} hosts have findings",
            reports.len()
        );
    }
    if !json {
        println!("PASS: {} hosts", reports.len());
    }
    Ok(())
}

fn print_host(r: &HostReport) {
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "no rows".into(),
    };
    let verdict = if r.findings.is_empty() {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "{verdict} host {}: {} rows ({range}), {} checkpoints",
        r.host_id, r.rows, r.checkpoints
    );
    for f in &r.findings {
        println!("  {f}");
    }
}
