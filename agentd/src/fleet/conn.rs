//! Connecting to the fleet's PostgreSQL: the connection string from a
//! root-only file (or a systemd credential), optional TLS, and time bounds
//! on everything, so a server that accepts a connection and then hangs
//! costs a bounded wait, never a stuck task.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::FleetError;
use crate::config::FleetConfig;

/// Name of the systemd credential read when no `credentials_file` is set.
pub const CREDENTIAL_NAME: &str = "fleet-postgres";

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PgSettings {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Bound on connecting (TCP/Unix connect, TLS, start-up) and on each statement.
    pub timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PgSettings")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A live connection; dropping it ends the connection's task, so a hung
/// server cannot keep it alive.
pub struct PgConn {
    /// The client (queries may be issued concurrently).
    pub client: Client,
    task: JoinHandle<()>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgSettings {
    /// Settings from `[fleet]`: the credentials file (or credential), TLS
    /// and the time bound.
    pub fn from_config(f: &FleetConfig) -> Result<Self, FleetError> {
        let path = credentials_path(f.credentials_file.as_deref())?;
        let mut s = Self::from_file(&path, Duration::from_millis(f.timeout_ms))?;
        if let Some(ca) = &f.tls_ca_file {
            let mut tls =
                crate::upstream_tls::client_config(ca).map_err(|e| FleetError::Credentials {
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            // PostgreSQL's own ALPN name (a server checking ALPN refuses any other).
            tls.alpn_protocols = vec![b"postgresql".to_vec()];
            s.tls = Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls));
            s.config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        Ok(s)
    }

    /// Settings from a connection-string file, which must be owned by root
    /// (or by whoever runs this) and readable by its owner only.
    pub fn from_file(path: &Path, timeout: Duration) -> Result<Self, FleetError> {
        let bad = |message: String| FleetError::Credentials {
            path: path.to_owned(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.mode() & 0o077 != 0 {
            return Err(bad(format!(
                "mode {:o} lets others read the password; chmod 600 it",
                meta.mode() & 0o777
            )));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(bad(format!(
                "owned by uid {}, not root or this user",
                meta.uid()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Self::parse(text.trim(), timeout).map_err(bad)
    }

    /// Settings from a connection string (`key=value …` or a URL).
    pub fn parse(conninfo: &str, timeout: Duration) -> Result<Self, String> {
        let mut config: tokio_postgres::Config = conninfo
            .parse()
            .map_err(|e| format!("not a PostgreSQL connection string: {e}"))?;
        config.connect_timeout(timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("agentd");
        // The server ends a statement that runs past the bound too; the
        // client's own timeout covers a server that stops answering.
        let ms = timeout.as_millis();
        let opts = match config.get_options() {
            Some(o) => format!("{o} -c statement_timeout={ms} -c lock_timeout={ms}"),
            None => format!("-c statement_timeout={ms} -c lock_timeout={ms}"),
        };
        config.options(opts);
        Ok(Self {
            config,
            tls: None,
            timeout,
        })
    }

    /// The same settings with another time bound.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// Connects, within the time bound.
    pub async fn connect(&self) -> Result<PgConn, FleetError> {
        let attempt = async {
            match &self.tls {
                None => {
                    let (client, conn) = self.config.connect(tokio_postgres::NoTls).await?;
                    Ok::<_, tokio_postgres::Error>((client, spawn_conn(conn)))
                }
                Some(tls) => {
                    let (client, conn) = self.config.connect(tls.clone()).await?;
                    Ok((client, spawn_conn(conn)))
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((client, task))) => Ok(PgConn { client, task }),
            Ok(Err(e)) => Err(FleetError::Postgres(pg_error_text(&e))),
            Err(_) => Err(FleetError::Timeout("connecting")),
        }
    }

    /// Connects, within the time bound, and hands every NOTIFY the
    /// connection receives (its channel and payload) to the receiver; the
    /// receiver ends when the connection does.
    pub async fn connect_listening(
        &self,
    ) -> Result<
        (
            PgConn,
            tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
        ),
        FleetError,
    > {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let attempt = async {
            match &self.tls {
                None => {
                    let (client, conn) = self.config.connect(tokio_postgres::NoTls).await?;
                    Ok::<_, tokio_postgres::Error>((client, spawn_listening(conn, tx)))
                }
                Some(tls) => {
                    let (client, conn) = self.config.connect(tls.clone()).await?;
                    Ok((client, spawn_listening(conn, tx)))
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((client, task))) => Ok((PgConn { client, task }, rx)),
            Ok(Err(e)) => Err(FleetError::Postgres(pg_error_text(&e))),
            Err(_) => Err(FleetError::Timeout("connecting")),
        }
    }

    /// Runs `f` on `conn` within the time bound.
    pub async fn bounded<T, F>(&self, what: &'static str, f: F) -> Result<T, FleetError>
    where
        F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(FleetError::Postgres(pg_error_text(&e))),
            Err(_) => Err(FleetError::Timeout(what)),
        }
    }
}

/// An error's text with the server's message when there is one.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        // The client's own errors hide their cause (a refused certificate,
        // a reset connection) in the source chain.
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

fn spawn_conn<S, T>(conn: tokio_postgres::Connection<S, T>) -> JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "fleet: PostgreSQL connection ended");
        }
    })
}

fn spawn_listening<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::UnboundedSender<(String, String)>,
) -> JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "fleet: PostgreSQL connection ended");
                    return;
                }
                None => return,
            }
        }
    })
}

/// The credentials file: the configured one, else the systemd credential.
fn credentials_path(configured: Option<&Path>) -> Result<PathBuf, FleetError> {
    if let Some(p) = configured {
        return Ok(p.to_owned());
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Ok(Path::new(&dir).join(CREDENTIAL_NAME)),
        None => Err(FleetError::Credentials {
            path: PathBuf::from(CREDENTIAL_NAME),
            message: "no [fleet] credentials_file and no systemd credential \
                      ($CREDENTIALS_DIRECTORY is not set)"
                .into(),
        }),
    }
}

/// This host's id: `[fleet] host_id`, else `[gateway] host_id` (the name
/// v2 messages address it by), else the machine's host name.
pub fn host_id(config: &crate::config::Config) -> String {
    config
        .fleet
        .as_ref()
        .and_then(|f| f.host_id.clone())
        .or_else(|| config.gateway.host_id.clone())
        .unwrap_or_else(crate::gateway::machine_host_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_credentials_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pg");
        std::fs::write(&f, "host=/tmp user=agentd password=secret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = PgSettings::from_file(&f, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = PgSettings::from_file(&f, Duration::from_secs(1)).unwrap();
        // The password never shows in logs.
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn garbage_is_not_a_connection_string() {
        assert!(PgSettings::parse("host=/tmp port=notaport", Duration::from_secs(1)).is_err());
        let s = PgSettings::parse(
            "host=/tmp user=a options='-c search_path=x'",
            Duration::from_millis(1500),
        )
        .unwrap();
        let o = s.config.get_options().unwrap();
        assert!(
            o.contains("search_path=x") && o.contains("statement_timeout=1500"),
            "{o}"
        );
    }
}
