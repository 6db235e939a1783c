//! TLS for the remote operators' TCP listener: a certificate chain and key
//! read from PEM files, optionally a CA that client certificates must chain
//! to (mutual TLS). Operators still sign every message; TLS keeps the
//! messages and the answers (active-message ids) private on the wire and
//! proves the server to the operator.
use std::{os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio_rustls::TlsAcceptor;

/// Errors building the TLS acceptor; each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS file {path}: {message}")]
    Pem { path: String, message: String },
    #[error("TLS key {path} is readable by group or others (mode {mode:o}); make it 0600 or 0400")]
    KeyExposed { path: String, mode: u32 },
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// Where the listener's TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    /// PEM certificate chain, leaf first.
    pub cert: &'a Path,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); must not be group/other readable.
    pub key: &'a Path,
    /// PEM CA certificates client certificates must chain to; `None` accepts
    /// any client (operators are authenticated by their signatures).
    pub client_ca: Option<&'a Path>,
}

/// Builds the acceptor, refusing an exposed key, an empty chain, a key that
/// does not match the certificate, or an unusable client CA.
pub fn acceptor(files: &TlsFiles<'_>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(files.cert)?;
    let key = read_key(files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: ca.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mode = std::fs::metadata(path)
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyExposed {
            path: path.display().to_string(),
            mode: mode & 0o7777,
        });
    }
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        message: format!("no usable private key: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn good_material_builds_and_bad_material_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = write(dir.path(), "cert.pem", &ck.cert.pem(), 0o644);
        let key = write(dir.path(), "key.pem", &ck.key_pair.serialize_pem(), 0o600);
        let files = |cert, key, client_ca| TlsFiles {
            cert,
            key,
            client_ca,
        };
        acceptor(&files(&cert, &key, None)).expect("self-signed pair");
        acceptor(&files(&cert, &key, Some(&cert))).expect("client CA");

        let open_key = write(dir.path(), "open.pem", &ck.key_pair.serialize_pem(), 0o644);
        let e = acceptor(&files(&cert, &open_key, None))
            .err()
            .expect("refused");
        assert!(matches!(e, TlsError::KeyExposed { .. }), "{e}");

        let empty = write(dir.path(), "empty.pem", "not pem\n", 0o600);
        let e = acceptor(&files(&empty, &key, None))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let e = acceptor(&files(&cert, &empty, None))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("empty.pem") && e.contains("private key"), "{e}");

        let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
        let wrong = write(
            dir.path(),
            "wrong.pem",
            &other.key_pair.serialize_pem(),
            0o600,
        );
        let e = acceptor(&files(&cert, &wrong, None))
            .err()
            .expect("refused");
        assert!(matches!(e, TlsError::Config(_)), "{e}");

        let missing = dir.path().join("missing.pem");
        let e = acceptor(&files(&missing, &key, None))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
