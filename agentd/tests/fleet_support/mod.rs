//! A throwaway PostgreSQL cluster for the fleet tests: `initdb` into a
//! temporary directory as the `postgres` user (initdb refuses root), a
//! server on a Unix socket in that directory (no TCP), stopped at the end.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster.
pub struct PgCluster {
    bin: PathBuf,
    /// Temporary root (owned by the postgres user).
    pub dir: tempfile::TempDir,
    /// Data directory.
    pub data: PathBuf,
    /// Socket directory.
    pub sock: PathBuf,
    /// The server's port (names its socket; TCP only once TLS is on).
    port: std::cell::Cell<u16>,
    /// Extra server options (TLS on loopback TCP, after `enable_tls`).
    tcp_options: std::cell::RefCell<String>,
    uid: u32,
    gid: u32,
    /// Root-owned directory for the connection-string file.
    private: tempfile::TempDir,
}

/// The server binaries' directory, if PostgreSQL is installed.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

impl PgCluster {
    /// Starts a cluster, or says why it cannot (the caller prints SKIP).
    pub fn start() -> Result<Self, String> {
        let bin = bin_dir().ok_or("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (cargo xtask setup installs them)")?;
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or("no `postgres` user to run initdb as")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
        nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        let c = PgCluster {
            bin,
            data,
            sock,
            port: std::cell::Cell::new(5432),
            tcp_options: std::cell::RefCell::new(String::new()),
            uid,
            gid,
            dir,
            private: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        c.as_postgres("mkdir")
            .arg(&c.sock)
            .status()
            .map_err(|e| e.to_string())?;
        let out = c
            .as_postgres(c.bin.join("initdb").to_str().unwrap())
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&c.data)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        c.server_start();
        Ok(c)
    }

    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(self.uid).gid(self.gid).current_dir(self.dir.path());
        cmd
    }

    /// `pg_ctl start` (waits until it accepts connections).
    pub fn server_start(&self) {
        let out = self
            .as_postgres(self.bin.join("pg_ctl").to_str().unwrap())
            .arg("-D")
            .arg(&self.data)
            .arg("-o")
            .arg(format!(
                "-k {} -p {} -c fsync=off -c max_connections=200 {}",
                self.sock.display(),
                self.port.get(),
                self.listen_options()
            ))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn listen_options(&self) -> String {
        let tcp = self.tcp_options.borrow();
        if tcp.is_empty() {
            "-c listen_addresses=".into()
        } else {
            tcp.clone()
        }
    }

    /// Restarts the server listening on loopback TCP with TLS only (the
    /// certificate and key in PEM; `pg_hba.conf` admits TCP clients over
    /// TLS and no other way; the Unix socket stays as it was). Returns the
    /// port.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> u16 {
        self.server_kill();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for (name, text, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
            (
                "pg_hba.conf",
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
                0o600,
            ),
        ] {
            let f = self.data.join(name);
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            nix::unistd::chown(
                &f,
                Some(nix::unistd::Uid::from_raw(self.uid)),
                Some(nix::unistd::Gid::from_raw(self.gid)),
            )
            .unwrap();
        }
        self.port.set(port);
        *self.tcp_options.borrow_mut() = format!(
            "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            self.data.join("server.crt").display(),
            self.data.join("server.key").display()
        );
        self.server_start();
        port
    }

    /// `pg_ctl stop -m immediate`: the server dies as if killed.
    pub fn server_kill(&self) {
        let out = self
            .as_postgres(self.bin.join("pg_ctl").to_str().unwrap())
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The postmaster and its children (to freeze with SIGSTOP).
    pub fn server_pids(&self) -> Vec<i32> {
        let pm: i32 = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut pids = vec![pm];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // Field 4 (after the parenthesised name) is the parent pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(pm) {
                pids.push(pid);
            }
        }
        pids
    }

    /// A connection-string file for agentd (root-owned, 0600).
    pub fn conninfo_file(&self) -> PathBuf {
        self.conninfo_file_as("postgres")
    }

    /// A root-owned 0600 file holding `text` (a connection string of the
    /// test's own making).
    pub fn private_file(&self, name: &str, text: &str) -> PathBuf {
        let f = self.private.path().join(name);
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        f
    }

    /// A connection-string file connecting as `user` (root-owned, 0600).
    pub fn conninfo_file_as(&self, user: &str) -> PathBuf {
        let f = self.private.path().join(format!("fleet-postgres-{user}"));
        std::fs::write(
            &f,
            format!(
                "host={} port={} user={user} dbname=postgres\n",
                self.sock.display(),
                self.port.get()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        f
    }

    /// Runs SQL with psql; returns its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_as("postgres", sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// Runs SQL with psql as `user`: its output, or psql's error.
    pub fn sql_as(&self, user: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                user,
                "-d",
                "postgres",
                "-p",
                &self.port.get().to_string(),
                "-h",
            ])
            .arg(&self.sock)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("psql");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    /// The data directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.data
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Thaw a frozen server first, so it can be stopped.
        if let Ok(text) = std::fs::read_to_string(self.data.join("postmaster.pid")) {
            if text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
                .is_some()
            {
                for pid in self.server_pids() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGCONT,
                    );
                }
            }
        }
        let _ = self
            .as_postgres(self.bin.join("pg_ctl").to_str().unwrap())
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
