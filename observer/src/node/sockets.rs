//! Who owns a TCP socket on this host, asked of the kernel by its exact address pair (netlink
//! `sock_diag`, one hash lookup however many sockets the node has). The daemon asks who is on
//! the other end of a loopback connection; a client asks who owns the server's end of the
//! connection it is about to trust. Where the kernel has no TCP `sock_diag` (the `tcp_diag`
//! module absent and not loadable, as in a VM without modules), the socket tables in
//! `/proc/net/tcp{,6}` are read instead.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::OnceLock,
    time::Duration,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDR: usize = 16;
/// `inet_diag_req_v2`: family, protocol, ext, pad, states, then the 48-byte socket id.
const REQ_LEN: usize = 56;
/// `idiag_uid` in `inet_diag_msg` (family, state, timer, retrans, id, expires, rqueue, wqueue).
const MSG_UID: usize = 64;
const INET_DIAG_NOCOOKIE: u32 = !0;

/// The user owning the TCP socket whose own address is `local` and whose peer is `remote`, in
/// this network namespace; `None` when there is no such socket or the kernel does not say.
pub fn tcp_owner(local: &SocketAddr, remote: &SocketAddr) -> Option<u32> {
    if !diag_answers() {
        return table_owner(local, remote);
    }
    diag_owner(local, remote)
}

fn diag_owner(local: &SocketAddr, remote: &SocketAddr) -> Option<u32> {
    // An IPv4 peer of a dual-stack socket is seen as `::ffff:a.b.c.d`; the kernel finds the
    // socket from either form of the pair.
    [false, true]
        .into_iter()
        .filter_map(|mapped| Some((with_family(local, mapped)?, with_family(remote, mapped)?)))
        .find_map(|(l, r)| lookup(&l, &r).ok().flatten())
}

/// Whether this kernel answers TCP `sock_diag` lookups: asked once, about a connection of our
/// own (a "no such socket" and "no TCP diag here" are the same error otherwise).
fn diag_answers() -> bool {
    static ANSWERS: OnceLock<bool> = OnceLock::new();
    *ANSWERS.get_or_init(|| {
        let probe = || -> io::Result<bool> {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let _c = std::net::TcpStream::connect(l.local_addr()?)?;
            let (s, peer) = l.accept()?;
            Ok(diag_owner(&peer, &s.local_addr()?).is_some())
        };
        let answers = probe().unwrap_or(false);
        if !answers {
            tracing::warn!(
                "the kernel does not answer TCP sock_diag (tcp_diag module?): loopback callers are \
                 identified from /proc/net/tcp"
            );
        }
        answers
    })
}

/// The owner of the established socket `local` -> `remote` from `/proc/net/tcp{,6}` (TIME_WAIT
/// and request sockets are never an owner).
fn table_owner(local: &SocketAddr, remote: &SocketAddr) -> Option<u32> {
    let (locals, remotes) = (forms(local), forms(remote));
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
            if *st == "01" && locals.iter().any(|x| x == l) && remotes.iter().any(|x| x == r) {
                return uid.parse().ok();
            }
        }
    }
    None
}

/// `0100007F:1F90`: an address as the kernel's tables print it (each 32-bit word of the
/// address in host byte order, the port in hex).
fn kernel_form(a: &SocketAddr) -> String {
    let port = a.port();
    let words: Vec<String> = words(a.ip())[..if a.is_ipv4() { 4 } else { 16 }]
        .chunks_exact(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    format!("{}:{port:04X}", words.concat())
}

/// Both ways an address can appear (an IPv4 peer of a dual-stack socket as `::ffff:a.b.c.d`).
fn forms(a: &SocketAddr) -> Vec<String> {
    [false, true]
        .into_iter()
        .filter_map(|mapped| with_family(a, mapped))
        .map(|x| kernel_form(&x))
        .collect()
}

/// `a` as IPv6 (`mapped`, an IPv4 address mapped) or as IPv4 (a mapped IPv6 address unmapped);
/// `None` when it has no such form.
fn with_family(a: &SocketAddr, mapped: bool) -> Option<SocketAddr> {
    let ip = match (a.ip(), mapped) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (IpAddr::V6(v6), false) => IpAddr::V4(v6.to_ipv4_mapped()?),
        (ip, _) => ip,
    };
    Some(SocketAddr::new(ip, a.port()))
}

/// The address words as `inet_diag_sockid` holds them (network byte order).
fn words(ip: IpAddr) -> [u8; 16] {
    let mut w = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => w[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => w.copy_from_slice(&v6.octets()),
    }
    w
}

fn request(local: &SocketAddr, remote: &SocketAddr) -> [u8; NLMSG_HDR + REQ_LEN] {
    let mut m = [0u8; NLMSG_HDR + REQ_LEN];
    m[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let r = &mut m[NLMSG_HDR..];
    r[0] = if local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    r[1] = libc::IPPROTO_TCP as u8;
    r[4..8].copy_from_slice(&(!0u32).to_ne_bytes());
    r[8..10].copy_from_slice(&local.port().to_be_bytes());
    r[10..12].copy_from_slice(&remote.port().to_be_bytes());
    r[12..28].copy_from_slice(&words(local.ip()));
    r[28..44].copy_from_slice(&words(remote.ip()));
    r[48..52].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    r[52..56].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    m
}

fn lookup(local: &SocketAddr, remote: &SocketAddr) -> io::Result<Option<u32>> {
    // SAFETY: socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd from socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: Duration::from_secs(1).as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let req = request(local, remote);
    // SAFETY: a zeroed sockaddr_nl addressed to the kernel (pid 0).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sendto with a buffer and address of the sizes passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    // SAFETY: recv into a buffer of the size passed.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(parse_reply(
        &buf[..n as usize],
        &req[NLMSG_HDR + 8..NLMSG_HDR + 44],
    ))
}

/// `idiag_state` of a connected socket (`TCP_ESTABLISHED`).
const ESTABLISHED: u8 = 1;
/// `inet_diag_msg` fields after the netlink header: state, the socket id; its length.
const MSG_STATE: usize = 1;
const MSG_ID: usize = 4;
const MSG_LEN: usize = 72;

/// The uid in the reply's `inet_diag_msg`, trusted only for an established socket whose ports
/// and addresses are the ones asked: the kernel's exact lookup also answers with TIME_WAIT and
/// request sockets (uid 0, owned by nobody) and with a listener on the address. (An established
/// socket not yet accepted has no inode but carries its listener's owner, which is what a
/// client asks about.) `None` for anything else (an `NLMSG_ERROR`: no such socket).
fn parse_reply(reply: &[u8], asked_id: &[u8]) -> Option<u32> {
    let len = u32::from_ne_bytes(reply.get(0..4)?.try_into().ok()?) as usize;
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    let msg = reply.get(NLMSG_HDR..NLMSG_HDR + MSG_LEN)?;
    if kind != SOCK_DIAG_BY_FAMILY || len > reply.len() || len < NLMSG_HDR + MSG_LEN {
        return None;
    }
    // Ports, then the addresses (as asked: same family, same words).
    let id = msg.get(MSG_ID..MSG_ID + asked_id.len())?;
    if msg[MSG_STATE] != ESTABLISHED || id != asked_id {
        return None;
    }
    let uid = msg.get(MSG_UID..MSG_UID + 4)?;
    Some(u32::from_ne_bytes(uid.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_both_ends_of_a_connection_is_found_exactly() {
        let me = nix::unistd::geteuid().as_raw();
        for (listen, connect) in [
            ("127.0.0.1:0", None),
            ("[::1]:0", None),
            // A dual-stack listener reached over IPv4: the server sees a mapped address.
            ("[::]:0", Some("127.0.0.1")),
        ] {
            let Ok(l) = std::net::TcpListener::bind(listen) else {
                continue;
            };
            let mut addr = l.local_addr().unwrap();
            if let Some(ip) = connect {
                addr = SocketAddr::new(ip.parse().unwrap(), addr.port());
            }
            let c = std::net::TcpStream::connect(addr).unwrap();
            let (s, peer) = l.accept().unwrap();
            let server_end = s.local_addr().unwrap();
            // The daemon's question (the client's socket) and the client's (the server's end),
            // from sock_diag and from the socket tables.
            let mine = c.local_addr().unwrap();
            let other: SocketAddr = SocketAddr::new(peer.ip(), 1);
            for (how, owner) in [
                (
                    "diag",
                    diag_owner as fn(&SocketAddr, &SocketAddr) -> Option<u32>,
                ),
                ("table", table_owner),
            ] {
                assert_eq!(owner(&peer, &server_end), Some(me), "{how} {listen}");
                assert_eq!(owner(&addr, &mine), Some(me), "{how} {listen}");
                // A pair that is not a connection has no owner.
                assert_eq!(owner(&other, &server_end), None, "{how} {listen}");
            }
        }
        assert_eq!(parse_reply(&[0u8; 3], &[0u8; 36]), None);
        // A listener and a closed connection (TIME_WAIT: owned by nobody, reported as uid 0)
        // are never an owner.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(addr).unwrap();
        let (s, peer) = l.accept().unwrap();
        let server_end = s.local_addr().unwrap();
        assert_eq!(tcp_owner(&peer, &server_end), Some(me));
        drop(c);
        drop(s);
        std::thread::sleep(Duration::from_millis(50));
        for owner in [diag_owner, table_owner] {
            assert_eq!(owner(&peer, &server_end), None, "a closed client's socket");
            assert_eq!(owner(&server_end, &peer), None, "the server's closed end");
        }
        assert_eq!(
            kernel_form(&"127.0.0.1:8080".parse().unwrap()),
            "0100007F:1F90"
        );
        // A connection the server has not accepted yet: its end carries the listener's owner.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(addr).unwrap();
        let mine = c.local_addr().unwrap();
        for owner in [diag_owner, table_owner] {
            assert_eq!(owner(&addr, &mine), Some(me), "not accepted yet");
        }
    }
}
