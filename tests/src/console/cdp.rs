//! Headless Chromium driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: commands on the browser's fd 3, answers on
//! its fd 4, each message JSON ended by a NUL byte) — no WebDriver, no
//! WebSocket, nothing but the browser Debian ships.
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::{FromRawFd as _, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64_decode::decode as b64;
use serde_json::{json, Value};

/// How long one protocol command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Where Debian's package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    _profile: PathBuf,
}

fn pipe() -> anyhow::Result<(RawFd, RawFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile under `scratch`
    /// (the flags this closed network needs: no background fetches), and
    /// opens one page of `width`×`height`.
    pub fn launch(
        chromium: &Path,
        scratch: &Path,
        width: u32,
        height: u32,
    ) -> anyhow::Result<Self> {
        let profile = scratch.join("chromium-profile");
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        let (cmd_r, cmd_w) = pipe()?;
        let (resp_r, resp_w) = pipe()?;
        let mut c = Command::new(chromium);
        c.args([
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-features=Translate,MediaRouter,OptimizationHints",
            "--hide-scrollbars",
            "--mute-audio",
            &format!("--window-size={width},{height}"),
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                // Out of the way first: a pipe end may itself be fd 3 or 4
                // (and dup2 onto itself would keep its close-on-exec flag).
                let a = libc::fcntl(cmd_r, libc::F_DUPFD, 10);
                let b = libc::fcntl(resp_w, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c
            .spawn()
            .with_context(|| format!("starting {}", chromium.display()))?;
        // SAFETY: we own these descriptors; the child has its own copies.
        let (to, from_file) = unsafe {
            libc::close(cmd_r);
            libc::close(resp_w);
            (File::from_raw_fd(cmd_w), File::from_raw_fd(resp_r))
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from: rx,
            next: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.browser_command("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"]
            .as_str()
            .context("no targetId")?
            .to_owned();
        let attached = b.browser_command(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        b.session = attached["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_owned();
        b.command("Page.enable", json!({}))?;
        b.command(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        Ok(b)
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> anyhow::Result<Value> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if session {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .context("writing to the browser")?;
        let deadline = Instant::now() + COMMAND_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .with_context(|| format!("no answer to {method} within {COMMAND_LIMIT:?}"))?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    fn browser_command(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params, false)
    }

    /// A command to the page.
    pub fn command(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params, true)
    }

    /// Opens `url` and waits for the document to finish loading.
    pub fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        self.command("Page.navigate", json!({ "url": url }))?;
        std::thread::sleep(Duration::from_millis(100));
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(15),
        )
        .map(|_| ())
    }

    /// Evaluates `expr` in the page (promises awaited); its value as JSON.
    pub fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self.command(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("script threw: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expr` until it is truthy (or `limit` passes); its value.
    pub fn wait_for(&mut self, expr: &str, limit: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(expr).unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("`{expr}` did not become true within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the page's viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self.command("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = r["data"].as_str().context("no screenshot data")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, b64(data).context("screenshot is not base64")?)?;
        Ok(())
    }

    /// Saves a PNG of the whole page (as tall as its content, at most
    /// 4000 px) to `path`, then restores the viewport.
    pub fn screenshot_full(&mut self, path: &Path, width: u32, height: u32) -> anyhow::Result<()> {
        let tall = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")?
            .as_u64()
            .unwrap_or(height as u64)
            .clamp(height as u64, 4000);
        let metrics = |h: u64| json!({ "width": width, "height": h, "deviceScaleFactor": 1, "mobile": false });
        self.command("Emulation.setDeviceMetricsOverride", metrics(tall))?;
        std::thread::sleep(Duration::from_millis(150));
        let r = self.screenshot(path);
        self.command("Emulation.setDeviceMetricsOverride", metrics(height as u64))?;
        r
    }

    /// Saves a PNG of the page region that `selector`'s elements cover
    /// together (plus a 12 px margin), in page coordinates, to `path`.
    pub fn screenshot_of(&mut self, selector: &str, path: &Path) -> anyhow::Result<()> {
        let rect = self.eval(&format!(
            "(() => {{ const els = [...document.querySelectorAll({sel})]; if (!els.length) return null; \
               const r = els.map(e => e.getBoundingClientRect()); \
               const x = Math.min(...r.map(b => b.left)), y = Math.min(...r.map(b => b.top)); \
               return {{ x: Math.max(0, x + scrollX - 12), y: Math.max(0, y + scrollY - 12), \
                        width: Math.max(...r.map(b => b.right)) - x + 24, height: Math.max(...r.map(b => b.bottom)) - y + 24 }}; }})()",
            sel = serde_json::to_string(selector).unwrap_or_default()
        ))?;
        if rect.is_null() {
            bail!("nothing matches {selector}");
        }
        let mut clip = rect;
        clip["scale"] = json!(1);
        let r = self.command(
            "Page.captureScreenshot",
            json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
        )?;
        let data = r["data"].as_str().context("no screenshot data")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, b64(data).context("screenshot is not base64")?)?;
        Ok(())
    }

    /// Every cookie the browser holds (HttpOnly ones included).
    pub fn cookies(&mut self) -> anyhow::Result<Vec<Value>> {
        let r = self.browser_command("Storage.getCookies", json!({}))?;
        Ok(r["cookies"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.browser_command("Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (the screenshot's encoding), decoded without a crate.
mod base64_decode {
    /// Decodes standard base64 with padding; None on a bad character.
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        for chunk in bytes.chunks(4) {
            let pad = chunk.iter().filter(|&&c| c == b'=').count();
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                let v = if c == b'=' { 0 } else { val(c)? };
                n |= v << (18 - 6 * i);
            }
            let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&b[..3 - pad.min(2)]);
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn decodes() {
            assert_eq!(super::decode("aGVsbG8=").unwrap(), b"hello");
            assert_eq!(super::decode("aGk=").unwrap(), b"hi");
            assert_eq!(super::decode("YWJj").unwrap(), b"abc");
            assert!(super::decode("a$==").is_none());
        }
    }
}
