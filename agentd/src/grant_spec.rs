//! What an allowed tool call may do in the kernel, as decided by policy.
//! The gateway produces it; an enforcement backend turns it into a grant.
//! Its connect destinations parse here, below the profiles and the
//! enforcer, which both check them.
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The kernel-facing part of an allowed decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    /// Executables the call may run (matched by device+inode once resolved).
    #[serde(default)]
    pub exec: Vec<PathBuf>,
    /// Path scopes the call may open for reading (a directory covers its subtree).
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Path scopes the call may open for writing (implies read).
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// Connect destinations: `CIDR:PORT` (port 0 = any), `[v6CIDR]:PORT`, or `unix:/path`.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Seconds the grant lives after the decision.
    pub ttl_secs: u64,
    /// How many times it may be used — process bindings (`agentctl exec`)
    /// and claims of the pending grant alike; 0 = unlimited until expiry.
    #[serde(default)]
    pub uses: u32,
    /// Exact arguments (after argv[0]) an exec claim must carry; `None` = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// An agent's baseline only: its protected files (the policy's
    /// `[protected]` paths, expanded for the agent). No write reaches one —
    /// whatever write scope covers it — unless a call's grant names it in
    /// `protected_write`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<PathBuf>,
    /// Protected files this call may write: given only to a call whose
    /// owner signed for it (a signed scope, or an owner-signed approval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_write: Vec<PathBuf>,
}

/// One connect destination: an address prefix and a port (0 = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// IPv4-mapped for IPv4 addresses.
    pub addr: [u8; 16],
    /// Prefix length over the 128-bit (mapped) address.
    pub prefix_bits: u32,
    /// Port; 0 covers every port.
    pub port: u16,
}

/// Prefix of an inbound rule in a grant's `connect` list: `listen:PORT`
/// lets the agent bind a TCP/UDP socket to that local port and listen on
/// it (`listen:0`: any port). Without one, inbound service is refused.
pub const LISTEN_PREFIX: &str = "listen:";

/// A connect destination that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connect destination `{dest}`: {message}")]
pub struct DestinationError {
    /// The destination as given.
    pub dest: String,
    /// What is wrong with it.
    pub message: String,
}

/// Parses `CIDR:PORT`, `[v6CIDR]:PORT`; a missing `/len` means one address.
/// `unix:/path` destinations return `Ok(None)`: the cgroup hooks see only
/// IP sockets, and unix sockets are gated by file permissions.
pub fn parse_destination(dest: &str) -> Result<Option<Destination>, DestinationError> {
    let err = |message: &str| DestinationError {
        dest: dest.to_string(),
        message: message.to_string(),
    };
    if dest.starts_with("unix:") {
        return Ok(None);
    }
    if let Some(port) = dest.strip_prefix(LISTEN_PREFIX) {
        port.parse::<u16>()
            .map_err(|_| err("`listen:PORT` needs a port 0..=65535 (0 = any)"))?;
        return Ok(None);
    }
    let (cidr, port) = if let Some(rest) = dest.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(|| err("missing `]`"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| err("missing `:PORT`"))?;
        (inner, port)
    } else {
        dest.rsplit_once(':')
            .ok_or_else(|| err("missing `:PORT`"))?
    };
    let port: u16 = port.parse().map_err(|_| err("port must be 0..=65535"))?;
    let (ip, len) = match cidr.split_once('/') {
        Some((ip, len)) => (
            ip,
            Some(len.parse::<u32>().map_err(|_| err("bad prefix length"))?),
        ),
        None => (cidr, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| err("bad IP address"))?;
    let (addr, prefix_bits) = match ip {
        IpAddr::V4(v4) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return Err(err("IPv4 prefix longer than 32"));
            }
            (v4.to_ipv6_mapped().octets(), 96 + len)
        }
        IpAddr::V6(v6) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return Err(err("IPv6 prefix longer than 128"));
            }
            (v6.octets(), len)
        }
    };
    Ok(Some(Destination {
        addr: mask(addr, prefix_bits),
        prefix_bits,
        port,
    }))
}

fn mask(mut addr: [u8; 16], bits: u32) -> [u8; 16] {
    for (i, byte) in addr.iter_mut().enumerate() {
        let start = i as u32 * 8;
        if start >= bits {
            *byte = 0;
        } else if bits - start < 8 {
            *byte &= 0xffu8 << (8 - (bits - start));
        }
    }
    addr
}
