//! Audit exports and checkpoint files as `agentctl audit verify` reads them.
//! A genuine export (records chained, checkpoints signed by a fixed test key)
//! is built here; the fuzzer edits it (bytes replaced, inserted, deleted;
//! lines dropped, swapped, duplicated). Properties: verifying and reading
//! checkpoints never panic; the unedited export verifies; an edited export
//! verifies as intact — given the newest genuine checkpoint, as an auditor
//! holding it would — only if its records are exactly the original ones
//! from where it starts (JSON spacing or key order may differ, the records
//! may not), and it starts at row 1 or right after a signed checkpoint (a
//! pruned log's export; the report names its first row); and every
//! validly signed checkpoint read from the edited text is a genuine one.
#![no_main]
use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use agentd::audit::export::{parse_checkpoints, verify_export_from};
use agentd::audit::{AuditEvent, Checkpoint, ExportLine, Record, RecordKind, GENESIS_HASH};
use ed25519_dalek::{SigningKey, VerifyingKey};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

struct Original {
    key: VerifyingKey,
    text: String,
    records: Vec<Record>,
    checkpoints: Vec<Checkpoint>,
}

fn original() -> &'static Original {
    static O: OnceLock<Original> = OnceLock::new();
    O.get_or_init(|| {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let mut records = Vec::new();
        let mut checkpoints = Vec::new();
        let mut lines = Vec::new();
        let mut prev = GENESIS_HASH.to_string();
        for seq in 1..=5u64 {
            let mut ev = AuditEvent::new(RecordKind::ToolCall, "read_chart");
            ev.operator = "alice".into();
            ev.target = format!("/charts/{seq}");
            ev.decision = if seq % 2 == 0 { "deny" } else { "allow" }.into();
            ev.latency_us = seq * 10;
            // Rows 4 and 5 name their subject (hashed as format v2), the
            // rest do not (v1): one chain across both formats.
            if seq >= 4 {
                ev.agent = "mail".into();
                ev.pid = 4000 + seq as u32;
            }
            if seq == 5 {
                ev.access = "read".into();
            }
            let r = Record::seal(seq, format!("2026-12-01T00:00:0{seq}.000000Z"), ev, prev);
            prev = r.hash.clone();
            lines.push(serde_json::to_string(&ExportLine::Record(r.clone())).unwrap());
            records.push(r);
            if seq == 3 || seq == 5 {
                let cp =
                    Checkpoint::sign(&sk, seq, &prev, format!("2026-12-01T00:01:0{seq}Z")).unwrap();
                lines.push(serde_json::to_string(&ExportLine::Checkpoint(cp.clone())).unwrap());
                checkpoints.push(cp);
            }
        }
        Original {
            key: sk.verifying_key(),
            text: lines.join("\n") + "\n",
            records,
            checkpoints,
        }
    })
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Replace(u16, u8),
    Insert(u16, Vec<u8>),
    Delete(u16, u8),
    DropLine(u8),
    SwapLines(u8, u8),
    DuplicateLine(u8),
}

fn apply(text: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = text.to_vec();
    for e in edits.iter().take(8) {
        let at = |i: u16, len: usize| if len == 0 { 0 } else { i as usize % (len + 1) };
        match e {
            Edit::Replace(i, v) if !b.is_empty() => {
                let i = *i as usize % b.len();
                b[i] = *v;
            }
            Edit::Replace(..) => {}
            Edit::Insert(i, bytes) => {
                let i = at(*i, b.len());
                drop(b.splice(i..i, bytes.iter().copied().take(256)));
            }
            Edit::Delete(i, n) => {
                let i = at(*i, b.len());
                let end = (i + *n as usize).min(b.len());
                drop(b.drain(i..end));
            }
            Edit::DropLine(_) | Edit::SwapLines(..) | Edit::DuplicateLine(_) => {
                let mut lines: Vec<Vec<u8>> =
                    b.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len();
                match e {
                    Edit::DropLine(i) => {
                        lines.remove(*i as usize % n);
                    }
                    Edit::SwapLines(i, j) => lines.swap(*i as usize % n, *j as usize % n),
                    Edit::DuplicateLine(i) => {
                        let l = lines[*i as usize % n].clone();
                        lines.insert(*i as usize % n, l);
                    }
                    _ => unreachable!(),
                }
                b = lines.join(&b'\n');
            }
        }
    }
    b
}

fn records_of(text: &[u8]) -> Vec<Record> {
    let text = std::str::from_utf8(text).expect("a verified export is UTF-8");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str::<ExportLine>(l) {
            Ok(ExportLine::Record(r)) => Some(r),
            _ => None,
        })
        .collect()
}

fuzz_target!(|edits: Vec<Edit>| {
    let o = original();
    let edited = apply(o.text.as_bytes(), &edits);
    let path = Path::new("fuzz.jsonl");
    let open = || -> std::io::Result<Cursor<&[u8]>> { Ok(Cursor::new(edited.as_slice())) };
    let newest = std::slice::from_ref(o.checkpoints.last().unwrap());
    let anchored = verify_export_from(path, open, &o.key, newest);
    let alone = verify_export_from(path, open, &o.key, &[]);
    if edited == o.text.as_bytes() {
        assert!(
            anchored.is_ok() && alone.is_ok(),
            "the genuine export fails"
        );
    }
    if let Ok(report) = &anchored {
        // A pruned log's export starts right after a signed checkpoint (the
        // report says where); from there on it holds the original rows.
        let first = report.first_seq.unwrap_or(1);
        assert!(
            first == 1 || o.checkpoints.iter().any(|c| c.count + 1 == first),
            "an export starting at row {first}, not after a checkpoint, verified"
        );
        let want = &o.records[(first - 1) as usize..];
        let got = records_of(&edited);
        assert!(
            got.len() >= want.len() && got[..want.len()] == want[..],
            "an altered export verified as intact:\n{}",
            String::from_utf8_lossy(&edited)
        );
    }
    if let Ok(cps) = parse_checkpoints(&String::from_utf8_lossy(&edited)) {
        for cp in cps {
            if cp.signature_is_valid(&o.key) {
                assert!(o.checkpoints.contains(&cp), "forged checkpoint {cp:?}");
            }
        }
    }
});
