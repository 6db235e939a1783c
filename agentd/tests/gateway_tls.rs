//! The remote operators' listener over real TLS (rustls client, real
//! sockets, the real daemon): a signed message is accepted over HTTPS; plain
//! HTTP, a client that trusts another CA, and (with mutual TLS) a client
//! without a certificate get no HTTP answer at all; admin routes stay
//! refused over TLS; the daemon keeps serving throughout.
mod gateway_support;

use std::{
    io::{Read, Write},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use gateway_support::{free_port, Daemon};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};

/// A CA and a server certificate for `localhost` signed by it, on disk.
struct Pki {
    _dir: tempfile::TempDir,
    ca_pem: String,
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: rcgen::CertifiedKey,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

fn signed_by(
    names: &[&str],
    ca: &(rcgen::Certificate, rcgen::KeyPair),
    client: bool,
) -> rcgen::CertifiedKey {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    if client {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    rcgen::CertifiedKey {
        cert,
        key_pair: key,
    }
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let authority = ca("agentd test CA");
    let server = signed_by(&["localhost"], &authority, false);
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let ca_pem = authority.0.pem();
    Pki {
        ca_file: write("ca.pem", &ca_pem, 0o644),
        cert: write("cert.pem", &server.cert.pem(), 0o644),
        key: write("key.pem", &server.key_pair.serialize_pem(), 0o600),
        client: signed_by(&["operator-olivia"], &authority, true),
        ca_pem,
        _dir: dir,
    }
}

fn tcp(port: u16) -> std::net::TcpStream {
    // The TCP listener is bound just after the Unix socket the harness waits for.
    for _ in 0..100 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

fn client_config(
    trusted_ca_pem: &str,
    identity: Option<&rcgen::CertifiedKey>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(trusted_ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![id.cert.der().clone()],
                PrivateKeyDer::from_pem_slice(id.key_pair.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap(),
    }
}

/// One HTTP/1.1 request over TLS; `Err` carries the TLS or I/O failure.
fn https(
    port: u16,
    config: rustls::ClientConfig,
    method: &str,
    path: &str,
    body: &str,
) -> Result<String, String> {
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp(port));
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        // Without close_notify: keep what arrived, if anything did.
        Err(_) if !out.is_empty() => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// A refused TLS client: the handshake failed, or whatever came back is not HTTP.
fn assert_no_http(r: Result<String, String>, what: &str) {
    if let Ok(r) = r {
        assert!(!r.contains("HTTP/1.1"), "answered {what}: {r}");
    }
}

/// Plain HTTP to the TLS port: whatever comes back must not be HTTP.
fn plain_http(port: u16) -> String {
    let mut s = tcp(port);
    let _ = write!(
        s,
        "GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn tls_config(p: &Pki, port: u16, client_ca: Option<&Path>) -> String {
    let mut c = format!(
        "tcp_listen = \"127.0.0.1:{port}\"\ntls_cert = {:?}\ntls_key = {:?}\n",
        p.cert, p.key
    );
    if let Some(ca) = client_ca {
        c.push_str(&format!("tls_client_ca = {ca:?}\n"));
    }
    c
}

fn signed_message(d: &Daemon, session: &str) -> String {
    let olivia = d.enroll("olivia", "owner");
    d.ok(&[
        "send",
        "--print-only",
        "--operator",
        "olivia",
        "--key-file",
        olivia.to_str().unwrap(),
        "--session",
        session,
        "hi over TLS",
    ])
    .trim()
    .to_string()
}

#[test]
fn signed_messages_over_tls_and_nothing_over_anything_else() {
    let p = pki();
    let port = free_port();
    let d = Daemon::start_with(&tls_config(&p, port, None));
    let msg = signed_message(&d, "remote-tls");
    let trusted = |method: &str, path: &str, body: &str| {
        https(port, client_config(&p.ca_pem, None), method, path, body).unwrap()
    };

    let r = trusted("POST", "/v1/messages", &msg);
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"trust\":\"verified\""),
        "{r}"
    );
    // The same nonce again is a replay, over TLS as over the socket.
    let r = trusted("POST", "/v1/messages", &msg);
    assert!(r.starts_with("HTTP/1.1 4"), "replay accepted: {r}");
    // Admin routes stay refused on the remote listener, TLS or not.
    let r = trusted("POST", "/v1/operators", r#"{"id":"x","roles":["owner"]}"#);
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");

    let plain = plain_http(port);
    assert!(
        !plain.contains("HTTP/1.1"),
        "plain HTTP answered on the TLS port: {plain}"
    );

    let stranger = ca("another CA").0.pem();
    let e = https(
        port,
        client_config(&stranger, None),
        "GET",
        "/v1/health",
        "",
    )
    .unwrap_err();
    assert!(
        e.contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );

    // Still serving after the bad clients.
    let r = trusted("GET", "/v1/health", "");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[test]
fn mutual_tls_needs_a_client_certificate_from_the_configured_ca() {
    let p = pki();
    let port = free_port();
    let d = Daemon::start_with(&tls_config(&p, port, Some(&p.ca_file)));
    let msg = signed_message(&d, "remote-mtls");

    // Without a client certificate the handshake fails (TLS 1.3 reports it
    // on the first read), so no HTTP answer comes back.
    assert_no_http(
        https(
            port,
            client_config(&p.ca_pem, None),
            "POST",
            "/v1/messages",
            &msg,
        ),
        "without a client cert",
    );
    // A client certificate from another CA is refused too.
    let other = ca("another CA");
    let foreign = signed_by(&["mallory"], &other, true);
    assert_no_http(
        https(
            port,
            client_config(&p.ca_pem, Some(&foreign)),
            "POST",
            "/v1/messages",
            &msg,
        ),
        "a foreign client cert",
    );
    // The refused attempts consumed nothing: the message is still fresh.
    let r = https(
        port,
        client_config(&p.ca_pem, Some(&p.client)),
        "POST",
        "/v1/messages",
        &msg,
    )
    .unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"trust\":\"verified\""),
        "{r}"
    );
}

#[test]
fn an_exposed_or_broken_key_stops_start_up_with_its_name() {
    let p = pki();
    std::fs::set_permissions(&p.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nsocket_path = {:?}\n{}",
            dir.path().join("state"),
            dir.path().join("agentd.sock"),
            tls_config(&p, free_port(), None)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a world-readable TLS key"
    );
    assert!(err.contains("key.pem") && err.contains("0600"), "{err}");
}
