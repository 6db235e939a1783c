//! TLS to the upstreams agentd connects to on an agent's behalf (model
//! APIs in forward mode, MCP servers over Streamable HTTP): rustls with the
//! ring provider, trusting the certificates of one PEM bundle — the
//! system's by default.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

/// Debian's bundle of the system's trusted CA certificates.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why no TLS client could be set up.
#[derive(Debug, thiserror::Error)]
#[error("CA certificates {path}: {message}")]
pub struct CaStoreError {
    /// The bundle read.
    pub path: PathBuf,
    /// What was wrong with it.
    pub message: String,
}

/// A TLS client configuration (HTTP/1.1 by ALPN) trusting the certificates
/// in `ca_bundle`. A certificate rustls cannot use is skipped, as every TLS
/// client does; a bundle with none usable is an error.
pub fn client_config(ca_bundle: &Path) -> Result<rustls::ClientConfig, CaStoreError> {
    use rustls_pki_types::{pem::PemObject as _, CertificateDer};
    let err = |message: String| CaStoreError {
        path: ca_bundle.to_owned(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_bundle).map_err(|e| err(e.to_string()))? {
        let _ = roots.add(cert.map_err(|e| err(e.to_string()))?);
    }
    if roots.is_empty() {
        return Err(err("no usable certificate".into()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(&empty).unwrap_err();
        assert!(e.to_string().contains("no usable certificate"), "{e}");
        assert!(client_config(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn the_system_bundle_loads_where_there_is_one() {
        if !Path::new(SYSTEM_CA_BUNDLE).exists() {
            eprintln!("SKIPPED: no {SYSTEM_CA_BUNDLE} here");
            return;
        }
        let c = client_config(Path::new(SYSTEM_CA_BUNDLE)).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
