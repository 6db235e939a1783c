//! Signed checkpoints: Ed25519 over (count, head hash, time), and the key file.
//!
//! A checkpoint lets an offline verifier notice a truncated or rolled-back
//! tail, which the hash chain alone cannot show.
use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::decode_hash;

/// File name of the checkpoint signing key under the state directory.
pub const KEY_FILE: &str = "audit-signing.key";

/// Domain separator of the signed checkpoint message.
pub const CHECKPOINT_DOMAIN: &[u8] = b"agentd.audit.checkpoint.v1\n";

/// Errors handling checkpoint keys and signatures.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The key file could not be read, created or protected.
    #[error("audit signing key {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file is not a PKCS#8 PEM Ed25519 private key.
    #[error("audit signing key {path} is not a PKCS#8 PEM Ed25519 key: {message}")]
    KeyFormat { path: PathBuf, message: String },
    /// A public key is not an SPKI PEM Ed25519 key.
    #[error("not an Ed25519 public key PEM: {message}")]
    PublicKeyFormat { message: String },
    /// A head hash to sign is not a hex SHA-256.
    #[error("checkpoint head hash is not a hex SHA-256: `{value}`")]
    BadHeadHash { value: String },
}

/// One signed checkpoint: "the log had `count` records and ended in `head_hash`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the last covered record (= records ever written then).
    pub count: u64,
    /// Hex hash of record `count` (the genesis hash when `count` is 0).
    pub head_hash: String,
    /// RFC 3339 UTC time of signing.
    pub timestamp: String,
    /// Hex Ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes that are signed: domain, then length-prefixed count
    /// (8 bytes BE), head hash (32 raw bytes) and timestamp (UTF-8).
    pub fn message(count: u64, head_hash: &[u8; 32], timestamp: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 64 + timestamp.len());
        m.extend_from_slice(CHECKPOINT_DOMAIN);
        for field in [
            &count.to_be_bytes()[..],
            &head_hash[..],
            timestamp.as_bytes(),
        ] {
            m.extend_from_slice(&(field.len() as u32).to_be_bytes());
            m.extend_from_slice(field);
        }
        m
    }

    /// Signs a new checkpoint.
    pub fn sign(
        key: &SigningKey,
        count: u64,
        head_hash: &str,
        timestamp: String,
    ) -> Result<Self, CheckpointError> {
        let raw = decode_hash(head_hash).ok_or_else(|| CheckpointError::BadHeadHash {
            value: head_hash.to_owned(),
        })?;
        let sig = key.sign(&Self::message(count, &raw, &timestamp));
        Ok(Self {
            count,
            head_hash: head_hash.to_owned(),
            timestamp,
            signature: hex::encode(sig.to_bytes()),
        })
    }

    /// Whether the signature is valid for `key` (malformed fields are invalid).
    pub fn signature_is_valid(&self, key: &VerifyingKey) -> bool {
        let Some(raw) = decode_hash(&self.head_hash) else {
            return false;
        };
        // One spelling per signature (lowercase, as written): otherwise an
        // upper-cased copy of a genuine checkpoint would verify as another.
        let mut sig = [0u8; 64];
        if self.signature.len() != 128
            || self.signature.bytes().any(|b| b.is_ascii_uppercase())
            || hex::decode_to_slice(&self.signature, &mut sig).is_err()
        {
            return false;
        }
        key.verify(
            &Self::message(self.count, &raw, &self.timestamp),
            &Signature::from_bytes(&sig),
        )
        .is_ok()
    }
}

/// Loads the signing key from `state_dir`, creating it (0600) on first use.
pub fn load_or_create_key(state_dir: &Path) -> Result<SigningKey, CheckpointError> {
    let path = state_dir.join(KEY_FILE);
    let io = |source| CheckpointError::KeyFile {
        path: path.clone(),
        source,
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| CheckpointError::KeyFormat {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            f.write_all(pem.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(io)?;
            tracing::info!(path = %path.display(), "created audit checkpoint signing key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_key(state_dir),
        Err(e) => Err(io(e)),
    }
}

/// Loads the existing signing key from `state_dir` (never creates one).
/// A key readable by others is restricted to 0600 first.
pub fn load_key(state_dir: &Path) -> Result<SigningKey, CheckpointError> {
    let path = state_dir.join(KEY_FILE);
    let io = |source| CheckpointError::KeyFile {
        path: path.clone(),
        source,
    };
    let meta = std::fs::metadata(&path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "audit signing key was readable by others; restricting to 0600");
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(io)?;
    }
    let pem = std::fs::read_to_string(&path).map_err(io)?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| CheckpointError::KeyFormat {
        path: path.clone(),
        message: e.to_string(),
    })
}

/// SPKI PEM of a verifying key (what `agentctl audit public-key` prints).
pub fn public_key_pem(key: &VerifyingKey) -> String {
    // Encoding a valid 32-byte key cannot fail.
    key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
}

/// Parses an SPKI PEM Ed25519 public key.
pub fn parse_public_key_pem(pem: &str) -> Result<VerifyingKey, CheckpointError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| CheckpointError::PublicKeyFormat {
        message: e.to_string(),
    })
}

/// Short fingerprint of a public key (first 16 hex digits of SHA-256 of its bytes).
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS_HASH;

    #[test]
    fn sign_verify_and_tamper() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let vk = key.verifying_key();
        let cp = Checkpoint::sign(&key, 5, &"ab".repeat(32), "t".into()).unwrap();
        assert!(cp.signature_is_valid(&vk));
        let mut c = cp.clone();
        c.count = 6;
        assert!(!c.signature_is_valid(&vk));
        let mut c = cp.clone();
        c.head_hash = GENESIS_HASH.into();
        assert!(!c.signature_is_valid(&vk));
        let mut c = cp.clone();
        c.timestamp = "u".into();
        assert!(!c.signature_is_valid(&vk));
        let other = SigningKey::generate(&mut rand::rngs::OsRng);
        assert!(!cp.signature_is_valid(&other.verifying_key()));
    }

    /// Found by the `audit_export` fuzz target: the same signature bytes
    /// spelt with an upper-case hex digit verified as a second, different
    /// checkpoint.
    #[test]
    fn an_upper_cased_signature_does_not_verify() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let cp = Checkpoint::sign(&key, 3, &"ab".repeat(32), "t".into()).unwrap();
        let mut c = cp.clone();
        let at = c
            .signature
            .find(|ch: char| ch.is_ascii_lowercase())
            .unwrap_or(0);
        c.signature
            .replace_range(at..at + 1, &c.signature[at..at + 1].to_ascii_uppercase());
        assert_ne!(c, cp);
        assert!(!c.signature_is_valid(&key.verifying_key()));
        assert!(cp.signature_is_valid(&key.verifying_key()));
    }

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = load_or_create_key(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = load_or_create_key(dir.path()).unwrap();
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        let pem = public_key_pem(&k1.verifying_key());
        assert_eq!(parse_public_key_pem(&pem).unwrap(), k1.verifying_key());
    }
}
