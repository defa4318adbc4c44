//! A small HTTP/1.1 client for the daemon's API over a Unix socket or TCP. Before it sends
//! anything it checks who it is talking to: a Unix socket's server must be root or this user
//! (credentials from the kernel), and so must the process behind a loopback TCP port (the
//! kernel's socket table) — anything could be listening on `127.0.0.1:9464`. Every wait has a
//! deadline except reading a stream (`tail`) that the user ends.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where `observer run` listens when nothing else is configured.
pub const DEFAULT_SOCKET: &str = "/run/fsobserver/api.sock";
pub const DEFAULT_TCP: &str = "127.0.0.1:9464";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the observer at {addr} ({source}); is `observer run` running there? (--addr / OBSERVER_ADDR)"
    )]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("refusing to trust {addr}: {why}")]
    Untrusted { addr: String, why: String },
    #[error("the observer at {addr} did not answer within {secs} s (timed out)")]
    Timeout { addr: String, secs: u64 },
    #[error("the observer at {addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("the observer at {addr} sent a malformed answer: {why}")]
    Protocol { addr: String, why: &'static str },
    #[error("--token-file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Clone, Debug)]
enum Target {
    Tcp(String),
    Unix(PathBuf),
}

/// A daemon to talk to: its address, the token to present, how long to wait.
#[derive(Clone, Debug)]
pub struct Client {
    target: Target,
    token: Option<String>,
    /// For an answer (and, unless streaming, its whole body).
    pub timeout: Duration,
}

pub trait Conn: Read + Write + Send {
    fn set_read_deadline(&self, d: Option<Duration>) -> std::io::Result<()>;
}

impl Conn for TcpStream {
    fn set_read_deadline(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(d)
    }
}

impl Conn for UnixStream {
    fn set_read_deadline(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(d)
    }
}

impl Client {
    /// `addr`: `host:port`, `unix:/path`, or empty for the default (the socket when it exists,
    /// else `127.0.0.1:9464`).
    pub fn new(
        addr: &str,
        token_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let target = match addr {
            "" if Path::new(DEFAULT_SOCKET).exists() => Target::Unix(DEFAULT_SOCKET.into()),
            "" => Target::Tcp(DEFAULT_TCP.into()),
            a => match a.strip_prefix("unix:") {
                Some(p) => Target::Unix(p.into()),
                None => Target::Tcp(a.into()),
            },
        };
        let token = token_file
            .map(|p| {
                let text = std::fs::read_to_string(p).map_err(|source| ClientError::Token {
                    path: p.display().to_string(),
                    source,
                })?;
                // The bare token, or the daemon's `name token` line.
                Ok::<_, ClientError>(
                    text.lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty() && !l.starts_with('#'))
                        .and_then(|l| l.split_whitespace().last())
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .transpose()?;
        Ok(Self {
            target,
            token,
            timeout,
        })
    }

    pub fn addr(&self) -> String {
        match &self.target {
            Target::Tcp(a) => a.clone(),
            Target::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    fn connect(&self) -> Result<Box<dyn Conn>, ClientError> {
        let addr = self.addr();
        let unreachable = |source| ClientError::Unreachable {
            addr: addr.clone(),
            source,
        };
        let untrusted = |why: String| ClientError::Untrusted {
            addr: addr.clone(),
            why,
        };
        let me = nix::unistd::geteuid().as_raw();
        match &self.target {
            Target::Unix(p) => {
                let s = UnixStream::connect(p).map_err(unreachable)?;
                let cred =
                    nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
                        .map_err(|e| unreachable(e.into()))?;
                let uid = cred.uid();
                if uid != 0 && uid != me {
                    return Err(untrusted(format!(
                        "the socket is served by uid {uid}, not root or uid {me}"
                    )));
                }
                Ok(Box::new(s))
            }
            Target::Tcp(a) => {
                let server: SocketAddr = a
                    .to_socket_addrs()
                    .map_err(unreachable)?
                    .next()
                    .ok_or_else(|| unreachable(std::io::ErrorKind::NotFound.into()))?;
                let s =
                    TcpStream::connect_timeout(&server, self.timeout.min(Duration::from_secs(5)))
                        .map_err(unreachable)?;
                if server.ip().is_loopback() {
                    // Who owns the server's end of this very connection.
                    let mine = s.local_addr().map_err(unreachable)?;
                    match crate::node::sockets::tcp_owner(&server, &mine) {
                        Some(uid) if uid == 0 || uid == me => {}
                        Some(uid) => {
                            return Err(untrusted(format!(
                                "port {} is served by uid {uid}, not root or uid {me}",
                                server.port()
                            )));
                        }
                        None => {
                            return Err(untrusted("no owner found for the server's socket".into()));
                        }
                    }
                }
                Ok(Box::new(s))
            }
        }
    }

    /// Sends one request; the answer's status and body. `stream`: no deadline on the body
    /// (the deadline still covers connecting and the answer's head).
    fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        stream: bool,
    ) -> Result<Body, ClientError> {
        let addr = self.addr();
        let conn = self.connect()?;
        let mut target = path.to_string();
        for (i, (k, v)) in query.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&encode(k));
            target.push('=');
            target.push_str(&encode(v));
        }
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: fsobserver\r\n\
             Connection: close\r\nContent-Length: 0\r\n"
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let io_err = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout {
                addr: addr.clone(),
                secs: self.timeout.as_secs(),
            },
            _ => ClientError::Unreachable {
                addr: addr.clone(),
                source,
            },
        };
        let mut conn = BufReader::new(Deadline {
            inner: conn,
            until: Some(Instant::now() + self.timeout),
        });
        conn.get_mut()
            .inner
            .write_all(head.as_bytes())
            .map_err(io_err)?;
        let (status, framing) = read_head(&mut conn).map_err(|e| match e {
            Head::Io(e) => io_err(e),
            Head::Bad(why) => ClientError::Protocol {
                addr: addr.clone(),
                why,
            },
        })?;
        if stream {
            conn.get_mut().until = None;
            conn.get_mut()
                .inner
                .set_read_deadline(None)
                .map_err(io_err)?;
        }
        let mut body = Body {
            framing,
            left: 0,
            done: false,
            conn,
        };
        if status != 200 {
            let mut text = String::new();
            let _: Result<_, _> = (&mut body).take(4096).read_to_string(&mut text);
            return Err(ClientError::Status {
                addr,
                status,
                body: crate::node::text::printable(text.trim()),
            });
        }
        Ok(body)
    }

    /// GET: the whole body (within the deadline).
    pub fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        self.read_all(self.call("GET", path, query, false)?)
    }

    /// POST (empty body): the whole answer (within the deadline).
    pub fn post_text(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        self.read_all(self.call("POST", path, query, false)?)
    }

    /// GET a stream (`/events`, `/dump`): the body as it arrives, without a deadline.
    pub fn get_stream(&self, path: &str, query: &[(&str, String)]) -> Result<Body, ClientError> {
        self.call("GET", path, query, true)
    }

    fn read_all(&self, mut body: Body) -> Result<String, ClientError> {
        let mut text = String::new();
        body.read_to_string(&mut text).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout {
                addr: self.addr(),
                secs: self.timeout.as_secs(),
            },
            _ => ClientError::Unreachable {
                addr: self.addr(),
                source: e,
            },
        })?;
        Ok(text)
    }
}

/// Percent-encodes a query component (unreserved characters stay).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection whose reads fail once `until` has passed.
struct Deadline {
    inner: Box<dyn Conn>,
    until: Option<Instant>,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(until) = self.until {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.inner.set_read_deadline(Some(left))?;
        }
        self.inner.read(buf)
    }
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

enum Head {
    Io(std::io::Error),
    Bad(&'static str),
}

/// Largest answer head accepted.
const MAX_HEAD: usize = 64 << 10;

fn read_head(r: &mut impl BufRead) -> Result<(u16, Framing), Head> {
    let mut total = 0;
    let mut line = String::new();
    let mut next = |line: &mut String| -> Result<(), Head> {
        line.clear();
        let n = (&mut *r)
            .take((MAX_HEAD - total.min(MAX_HEAD)) as u64)
            .read_line(line)
            .map_err(Head::Io)?;
        total += n;
        if n == 0 || !line.ends_with('\n') {
            return Err(Head::Bad("the answer's head ended early or is too long"));
        }
        Ok(())
    };
    next(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(Head::Bad("no status line"))?;
    let mut framing = Framing::UntilClose;
    loop {
        next(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((status, framing));
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(Head::Bad("a header line without ':'"));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            framing = Framing::Chunked;
        } else if k.eq_ignore_ascii_case("content-length") && !matches!(framing, Framing::Chunked) {
            framing = Framing::Length(v.parse().map_err(|_| Head::Bad("bad content-length"))?);
        }
    }
}

/// An answer's body (length-delimited, chunked, or until the server closes).
pub struct Body {
    framing: Framing,
    /// Bytes left in the current chunk.
    left: u64,
    done: bool,
    conn: BufReader<Deadline>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::UntilClose => self.conn.read(buf),
            Framing::Length(ref mut left) => {
                if *left == 0 {
                    self.done = true;
                    return Ok(0);
                }
                let max = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.conn.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                *left -= n as u64;
                Ok(n)
            }
            Framing::Chunked => {
                if self.left == 0 {
                    let mut line = String::new();
                    (&mut self.conn).take(1024).read_line(&mut line)?;
                    let size = line.trim().split(';').next().unwrap_or("");
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
                    if size == 0 {
                        self.done = true;
                        return Ok(0);
                    }
                    self.left = size;
                }
                let max = buf
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                let n = self.conn.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.left -= n as u64;
                if self.left == 0 {
                    let mut crlf = [0u8; 2];
                    self.conn.read_exact(&mut crlf)?;
                }
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_chunked_bodies_are_read() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let (status, framing) = read_head(&mut r).ok().unwrap();
        assert_eq!(status, 200);
        assert!(matches!(framing, Framing::Chunked));
        assert_eq!(encode("/a b&c=d"), "%2Fa%20b%26c%3Dd");
        assert!(read_head(&mut BufReader::new(&b"HTTP/1.1 200 OK\r\nX"[..])).is_err());
        assert!(read_head(&mut BufReader::new(&b"garbage\r\n\r\n"[..])).is_err());
    }
}
