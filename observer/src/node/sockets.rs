//! Who owns a TCP socket on this host: the kernel's socket tables (`/proc/net/tcp`, `tcp6`)
//! name the user of each socket. The daemon asks who is on the other end of a loopback
//! connection; a client asks who is listening on the address it is about to trust.

use std::net::{IpAddr, SocketAddr};

/// `0100007F:1F90`: an address as the kernel's tables print it (each 32-bit word of the
/// address in host byte order, the port in hex).
fn kernel_form(a: &SocketAddr) -> String {
    let port = a.port();
    match a.ip() {
        IpAddr::V4(ip) => format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets())),
        IpAddr::V6(ip) => {
            let o = ip.octets();
            let mut s = String::with_capacity(38);
            for w in o.chunks_exact(4) {
                s.push_str(&format!(
                    "{:08X}",
                    u32::from_ne_bytes([w[0], w[1], w[2], w[3]])
                ));
            }
            format!("{s}:{port:04X}")
        }
    }
}

/// Both ways an address can appear (an IPv4 peer of a dual-stack socket shows as `::ffff:a.b.c.d`).
fn forms(a: &SocketAddr) -> Vec<String> {
    let mut v = vec![kernel_form(a)];
    match a.ip() {
        IpAddr::V4(ip) => v.push(kernel_form(&SocketAddr::new(
            IpAddr::V6(ip.to_ipv6_mapped()),
            a.port(),
        ))),
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                v.push(kernel_form(&SocketAddr::new(IpAddr::V4(v4), a.port())));
            }
        }
    }
    v
}

const LISTEN: &str = "0A";
const ESTABLISHED: &str = "01";

/// The user owning the TCP socket whose local address is `local` and, when given, whose remote
/// address is `remote` (an established connection); without `remote`, the listening socket on
/// `local` (or on the wildcard address with its port).
pub fn tcp_owner(local: &SocketAddr, remote: Option<&SocketAddr>) -> Option<u32> {
    let locals = forms(local);
    let remotes = remote.map(forms);
    let wildcard_port = format!(":{:04X}", local.port());
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(l), Some(r), Some(st), Some(uid)) = (f.get(1), f.get(2), f.get(3), f.get(7))
            else {
                continue;
            };
            let found = match &remotes {
                Some(rs) => {
                    *st == ESTABLISHED
                        && locals.contains(&l.to_string())
                        && rs.contains(&r.to_string())
                }
                None => {
                    *st == LISTEN
                        && (locals.contains(&l.to_string())
                            || (l.ends_with(&wildcard_port)
                                && l.trim_end_matches(&wildcard_port)
                                    .bytes()
                                    .all(|b| b == b'0')))
                }
            };
            if found {
                return uid.parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_listening_and_a_connected_socket_is_found() {
        let me = nix::unistd::geteuid().as_raw();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(tcp_owner(&addr, None), Some(me));
        let c = std::net::TcpStream::connect(addr).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        assert_eq!(tcp_owner(&peer, Some(&addr)), Some(me));
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(tcp_owner(&nobody, Some(&addr)), None);
        assert_eq!(
            kernel_form(&"127.0.0.1:8080".parse().unwrap()),
            "0100007F:1F90"
        );
    }
}
