//! Turns the VM's serial console into test results. Pure: the console text
//! goes in, counted results come out, so every rule here is unit-tested.
//!
//! Test binaries print one line per test: `PASS name: detail`,
//! `FAIL name: detail` or `SKIP name: reason`; `BENCH name: ...` lines are
//! carried through as figures. The init script brackets each binary with
//! markers, so a binary that crashes, hangs (killed by `timeout`) or exits
//! non-zero without saying why still counts as a failure, and a VM that dies
//! early fails the tests it never reached.
use super::markers;

/// Outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The test ran and its assertion held.
    Pass,
    /// The test ran and failed, or never reported.
    Fail,
    /// A kernel feature the test needs is missing; `detail` says which.
    Skip,
}

/// One reported test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestLine {
    /// Pass, fail or skip.
    pub status: Status,
    /// The binary that printed it (`vm` for the harness's own checks).
    pub binary: String,
    /// Test name.
    pub name: String,
    /// Detail or skip reason.
    pub detail: String,
}

impl std::fmt::Display for TestLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        write!(f, "{word} {}/{}: {}", self.binary, self.name, self.detail)
    }
}

/// Everything parsed from one console log.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Every test line, in console order.
    pub tests: Vec<TestLine>,
    /// `BENCH` lines, verbatim without the prefix.
    pub bench: Vec<String>,
    /// `uname -r` and the active LSM list inside the VM.
    pub kernel: String,
    /// The backend `agentd doctor --json` chose inside the VM.
    pub doctor_backend: Option<String>,
}

/// Parses the console. `expected` are the test binaries the init script was
/// told to run; any it never finished become failures.
pub fn parse(console: &str, expected: &[String]) -> Parsed {
    let mut r = Reader::default();
    for raw in console.lines() {
        let clean = strip_escapes(raw);
        r.line(clean.trim_end_matches('\r').trim_start());
    }
    r.finish(expected)
}

/// The parse so far, line by line.
#[derive(Default)]
struct Reader {
    p: Parsed,
    /// The binary running and the failures it printed.
    current: Option<(String, usize)>,
    /// The doctor's JSON while it is being printed.
    doctor: Option<String>,
    /// Binaries whose end marker was seen.
    finished: Vec<String>,
    begun: bool,
    done: bool,
}

impl Reader {
    /// One console line (escapes stripped, trimmed).
    fn line(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(markers::BEGIN) => self.begun = true,
            Some(markers::KERNEL) => self.p.kernel = words.collect::<Vec<_>>().join(" "),
            Some(markers::DOCTOR_BEGIN) => self.doctor = Some(String::new()),
            Some(markers::DOCTOR_END) => {
                let status = words.next().unwrap_or("?").to_string();
                self.p.tests.push(doctor_result(
                    self.doctor.take().unwrap_or_default(),
                    &status,
                    &mut self.p.doctor_backend,
                ));
            }
            Some(markers::TEST_BEGIN) => {
                self.current = words.next().map(|b| (b.to_string(), 0));
            }
            Some(markers::TEST_END) => {
                let name = words.next().unwrap_or("?").to_string();
                let status = words.next().unwrap_or("?");
                self.test_end(name, status);
            }
            Some(markers::DONE) => self.done = true,
            _ => self.output(line),
        }
    }

    /// A binary's end marker: a non-zero exit it never explained, or no
    /// results at all, is a failure of its own.
    fn test_end(&mut self, name: String, status: &str) {
        let printed_failures = self.current.take().map(|(_, f)| f).unwrap_or(0);
        let reported = self.p.tests.iter().any(|t| t.binary == name);
        if status != "0" && printed_failures == 0 {
            self.p
                .tests
                .push(harness_fail(&name, "exit_status", exit_detail(status)));
        } else if !reported {
            self.p.tests.push(harness_fail(
                &name,
                "no_results",
                "the binary reported no tests".into(),
            ));
        }
        self.finished.push(name);
    }

    /// Any other line: the doctor's JSON, a figure, or a test's result.
    fn output(&mut self, line: &str) {
        if let Some(json) = self.doctor.as_mut() {
            json.push_str(line);
            json.push('\n');
        } else if let Some(bench) = line.strip_prefix("BENCH ") {
            self.p.bench.push(bench.to_string());
        } else if let Some(t) = test_line(line, self.current.as_ref().map(|(b, _)| b.as_str())) {
            if t.status == Status::Fail {
                if let Some((_, failures)) = self.current.as_mut() {
                    *failures += 1;
                }
            }
            self.p.tests.push(t);
        }
    }

    /// The console's end: what never started, finished or reported fails.
    fn finish(mut self, expected: &[String]) -> Parsed {
        let p = &mut self.p;
        if !self.begun {
            p.tests.push(harness_fail(
                "vm",
                "boot",
                "the init script never started (kernel or initramfs broken; see the console log)"
                    .into(),
            ));
        } else if p.doctor_backend.is_none()
            && !p
                .tests
                .iter()
                .any(|t| t.binary == "vm" && t.name == "doctor_chooses_lsm")
        {
            p.tests.push(harness_fail(
                "vm",
                "doctor_chooses_lsm",
                "agentd doctor never finished".into(),
            ));
        }
        for name in expected.iter().filter(|n| !self.finished.contains(n)) {
            let why = match &self.current {
                Some((b, _)) if b == name => "crashed or hung the VM while running",
                _ => "never ran (the VM stopped first)",
            };
            p.tests.push(harness_fail(name, "incomplete", why.into()));
        }
        if self.begun && !self.done {
            p.tests.push(harness_fail(
                "vm",
                "complete",
                "the VM stopped before the init script finished".into(),
            ));
        }
        self.p
    }
}

/// Removes terminal escape sequences (SeaBIOS and the kernel clear the
/// screen on the serial line, glueing `ESC c ESC[2J` to the next line).
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI: parameters, then one final byte in @..~. Anything else after
        // ESC is a two-byte sequence such as `ESC c`.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

fn exit_detail(status: &str) -> String {
    match status {
        "137" => "killed (timed out)".into(),
        s => match s.parse::<i32>() {
            Ok(n) if n > 128 => format!("died of signal {}", n - 128),
            _ => format!("exited with status {s} without printing a FAIL line"),
        },
    }
}

fn harness_fail(binary: &str, name: &str, detail: String) -> TestLine {
    TestLine {
        status: Status::Fail,
        binary: binary.into(),
        name: name.into(),
        detail,
    }
}

fn doctor_result(json: String, exit: &str, backend_out: &mut Option<String>) -> TestLine {
    let mut t = TestLine {
        status: Status::Fail,
        binary: "vm".into(),
        name: "doctor_chooses_lsm".into(),
        detail: String::new(),
    };
    let report: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => {
            t.detail = format!("`agentd doctor --json` exited {exit} with unparsable output: {e}");
            return t;
        }
    };
    let backend = report["backend"].as_str().unwrap_or("?").to_string();
    *backend_out = Some(backend.clone());
    if backend == "lsm" {
        t.status = Status::Pass;
        t.detail = format!("backend lsm: {}", report["reason"].as_str().unwrap_or(""));
    } else {
        let failing: Vec<String> = report["probes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["ok"] == false)
            .map(|p| {
                format!(
                    "{} ({})",
                    p["name"].as_str().unwrap_or("?"),
                    p["detail"].as_str().unwrap_or("")
                )
            })
            .collect();
        t.detail = format!("backend {backend}; failing probes: {}", failing.join("; "));
    }
    t
}

/// Parses `PASS|FAIL|SKIP name: detail` (the `: detail` part is optional).
fn test_line(line: &str, binary: Option<&str>) -> Option<TestLine> {
    let (word, rest) = line.split_once(' ')?;
    let status = match word {
        "PASS" => Status::Pass,
        "FAIL" => Status::Fail,
        "SKIP" | "SKIPPED" => Status::Skip,
        _ => return None,
    };
    let (name, detail) = match rest.split_once(": ") {
        Some((n, d)) => (n.trim_end_matches(':'), d),
        None => (rest.trim_end_matches(':'), ""),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(TestLine {
        status,
        binary: binary.unwrap_or("vm").into(),
        name: name.into(),
        detail: detail.trim().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCTOR_LSM: &str = r#"{ "kernel": "6.1", "probes": [], "backend": "lsm", "reason": "loads", "limitations": [] }"#;

    fn console(body: &str) -> String {
        format!(
            "[    0.000] Linux version 6.1\r\n{}\r\n{} 6.1.0-56-cloud-amd64 lockdown,capability,bpf\r\n{}\r\n{DOCTOR_LSM}\r\n{} 0\r\n{body}{}\r\n",
            markers::BEGIN,
            markers::KERNEL,
            markers::DOCTOR_BEGIN,
            markers::DOCTOR_END,
            markers::DONE
        )
    }

    fn run(name: &str, lines: &str, status: i32) -> String {
        format!(
            "{} {name}\r\n{lines}{} {name} {status}\r\n",
            markers::TEST_BEGIN,
            markers::TEST_END
        )
    }

    fn count(p: &Parsed, s: Status) -> usize {
        p.tests.iter().filter(|t| t.status == s).count()
    }

    #[test]
    fn counts_pass_fail_skip_and_bench() {
        let body = run(
            "lsm",
            "PASS exec_denied: EPERM\r\nSKIP io_uring: kernel lacks it\r\nBENCH open_close: ratio 1.01\r\nnoise line\r\n",
            0,
        );
        let p = parse(&console(&body), &["lsm".into()]);
        assert_eq!(count(&p, Status::Pass), 2, "{:?}", p.tests); // doctor + exec_denied
        assert_eq!(count(&p, Status::Skip), 1);
        assert_eq!(count(&p, Status::Fail), 0);
        assert_eq!(p.bench, vec!["open_close: ratio 1.01"]);
        assert_eq!(p.doctor_backend.as_deref(), Some("lsm"));
        assert!(p.kernel.contains("6.1.0-56"));
        assert_eq!(p.tests[1].binary, "lsm");
    }

    #[test]
    fn nonzero_exit_without_fail_line_is_a_failure() {
        let p = parse(
            &console(&run("lsm", "PASS a: ok\r\n", 101)),
            &["lsm".into()],
        );
        assert_eq!(count(&p, Status::Fail), 1);
        let p = parse(
            &console(&run("lsm", "PASS a: ok\r\n", 137)),
            &["lsm".into()],
        );
        assert!(p.tests.iter().any(|t| t.detail.contains("timed out")));
    }

    #[test]
    fn nonzero_exit_with_fail_line_counts_once() {
        let p = parse(
            &console(&run("lsm", "FAIL a: EPERM expected\r\n", 1)),
            &["lsm".into()],
        );
        assert_eq!(count(&p, Status::Fail), 1);
    }

    #[test]
    fn silent_binary_fails() {
        let p = parse(&console(&run("lsm", "", 0)), &["lsm".into()]);
        assert_eq!(count(&p, Status::Fail), 1);
    }

    #[test]
    fn vm_dying_mid_test_fails_that_and_later_tests() {
        let text = format!(
            "{}\r\n{} lsm\r\nPASS a: ok\r\nKernel panic - not syncing\r\n",
            markers::BEGIN,
            markers::TEST_BEGIN
        );
        let p = parse(&text, &["lsm".into(), "scen".into()]);
        let fails: Vec<_> = p
            .tests
            .iter()
            .filter(|t| t.status == Status::Fail)
            .map(|t| format!("{}/{}", t.binary, t.name))
            .collect();
        assert!(fails.contains(&"lsm/incomplete".to_string()), "{fails:?}");
        assert!(fails.contains(&"scen/incomplete".to_string()));
        assert!(fails.contains(&"vm/complete".to_string()));
    }

    #[test]
    fn escape_sequences_before_markers_are_ignored() {
        let text = console("").replace(
            markers::BEGIN,
            &format!("\x1bc\x1b[?7l\x1b[2J{}", markers::BEGIN),
        );
        let p = parse(&text, &[]);
        assert_eq!(count(&p, Status::Fail), 0, "{:?}", p.tests);
    }

    #[test]
    fn no_boot_is_a_failure() {
        let p = parse("garbage\n", &[]);
        assert_eq!(count(&p, Status::Fail), 1);
        assert_eq!(p.tests[0].name, "boot");
    }

    #[test]
    fn doctor_not_choosing_lsm_fails_with_probe_details() {
        let text = format!(
            "{}\n{}\n{{\"backend\":\"seccomp\",\"probes\":[{{\"name\":\"lsm_program\",\"ok\":false,\"detail\":\"EPERM\"}}]}}\n{} 0\n{}\n",
            markers::BEGIN,
            markers::DOCTOR_BEGIN,
            markers::DOCTOR_END,
            markers::DONE
        );
        let p = parse(&text, &[]);
        assert_eq!(p.tests[0].status, Status::Fail);
        assert!(p.tests[0].detail.contains("lsm_program (EPERM)"));
    }

    #[test]
    fn test_line_shapes() {
        assert_eq!(test_line("PASS name", None).unwrap().name, "name");
        assert_eq!(
            test_line("SKIPPED io_uring: no", None).unwrap().status,
            Status::Skip
        );
        assert!(test_line("PASSWORD x", None).is_none());
        assert!(test_line("FAIL two words: x", None).is_none());
    }
}
