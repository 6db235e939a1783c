//! The seccomp supervisor's decoder of socket addresses copied out of an
//! agent's memory (connect, bind, sendto): arbitrary bytes up to the
//! kernel's limit. Properties: never panics; an IPv4 or IPv6 address
//! decodes to the port and address bytes the agent wrote (re-encoding
//! gives the same prefix); a Unix path holds no NUL; an abstract name's
//! audit form is printable ASCII.
#![no_main]
use agentd::enforce::seccomp::supervisor::net::sockaddr::{
    display_abstract, parse, Addr, MAX_ADDR,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = &data[..data.len().min(MAX_ADDR)];
    match parse(bytes) {
        Addr::Inet { ip, port } => {
            assert_eq!(port.to_be_bytes(), [bytes[2], bytes[3]]);
            let family = i32::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
            if family == libc::AF_INET {
                assert_eq!(&ip[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
                assert_eq!(&ip[12..], &bytes[4..8]);
            } else {
                assert_eq!(family, libc::AF_INET6);
                assert_eq!(&ip[..], &bytes[8..24]);
            }
        }
        Addr::Path(p) => {
            assert!(!p.is_empty() && !p.contains(&0));
            assert!(bytes[2..].starts_with(&p));
        }
        Addr::Abstract(name) => {
            assert_eq!(&bytes[3..], &name[..]);
            let shown = display_abstract(&name);
            assert!(shown.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
        }
        Addr::Unnamed => assert_eq!(bytes.len(), 2),
        Addr::Other => {}
    }
});
