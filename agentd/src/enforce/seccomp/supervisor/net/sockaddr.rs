//! Socket addresses copied out of the tracee, decoded (pure).

/// The largest address the kernel accepts (`sizeof(struct sockaddr_storage)`).
pub const MAX_ADDR: usize = 128;

/// A decoded socket address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// `AF_UNIX` with no name (autobind on `bind`).
    Unnamed,
    /// `AF_UNIX` abstract name (without the leading NUL).
    Abstract(Vec<u8>),
    /// `AF_UNIX` path (up to its first NUL).
    Path(Vec<u8>),
    /// `AF_INET`/`AF_INET6` (IPv4 mapped) and port.
    Inet {
        /// The address, IPv4-mapped for IPv4.
        ip: [u8; 16],
        /// The port.
        port: u16,
    },
    /// Any other family, or an address too short for its family.
    Other,
}

/// Decodes `bytes` (exactly the length the caller passed).
pub fn parse(bytes: &[u8]) -> Addr {
    if bytes.len() < 2 {
        return Addr::Other;
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]) as i32;
    match family {
        libc::AF_UNIX => {
            let path = &bytes[2..];
            match path.first() {
                None => Addr::Unnamed,
                Some(0) => Addr::Abstract(path[1..].to_vec()),
                Some(_) => {
                    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                    Addr::Path(path[..end].to_vec())
                }
            }
        }
        libc::AF_INET if bytes.len() >= 16 => {
            let mut ip = [0u8; 16];
            ip[10] = 0xff;
            ip[11] = 0xff;
            ip[12..].copy_from_slice(&bytes[4..8]);
            Addr::Inet {
                ip,
                port: u16::from_be_bytes([bytes[2], bytes[3]]),
            }
        }
        libc::AF_INET6 if bytes.len() >= 24 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&bytes[8..24]);
            Addr::Inet {
                ip,
                port: u16::from_be_bytes([bytes[2], bytes[3]]),
            }
        }
        _ => Addr::Other,
    }
}

/// An abstract name for an audit row: `@name`, bytes outside printable
/// ASCII as `\xNN`.
pub fn display_abstract(name: &[u8]) -> String {
    let mut s = String::from("@");
    for &b in name {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(path: &[u8]) -> Vec<u8> {
        let mut v = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(path);
        v
    }

    #[test]
    fn unix_addresses() {
        assert_eq!(parse(&un(b"")), Addr::Unnamed);
        assert_eq!(parse(&un(b"\0name")), Addr::Abstract(b"name".to_vec()));
        assert_eq!(
            parse(&un(b"/run/x.sock\0junk")),
            Addr::Path(b"/run/x.sock".to_vec())
        );
        assert_eq!(parse(&[1]), Addr::Other);
        assert_eq!(display_abstract(b"a b\0\x01"), "@a b\\x00\\x01");
    }

    #[test]
    fn inet_addresses() {
        let mut v4 = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        v4.extend_from_slice(&8080u16.to_be_bytes());
        v4.extend_from_slice(&[127, 0, 0, 1]);
        v4.extend_from_slice(&[0; 8]);
        match parse(&v4) {
            Addr::Inet { ip, port } => {
                assert_eq!(port, 8080);
                assert_eq!(&ip[10..], &[0xff, 0xff, 127, 0, 0, 1]);
            }
            a => panic!("{a:?}"),
        }
        assert_eq!(parse(&v4[..8]), Addr::Other, "too short");
    }
}
