//! Who may use the API door. `/healthz` and `/metrics` are open on every door; everything else
//! (events, dumps, top, locks, stats, purge) needs one of:
//! - a Unix socket peer that is root or the daemon's own user (credentials from the kernel);
//! - a loopback TCP peer that is root or the daemon's user (owner of its socket, from the
//!   kernel's socket table);
//! - a bearer token from `http.tokens_file` (any address), compared in constant time;
//!
//! and no `Origin` header, and an address or `localhost` as `Host` (no web page, no
//! DNS-rebinding name).
//!
//! The caller's identity goes with the request ([`Caller`]) into the purge audit.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::door::Peer;
use crate::config::tokens::Tokens;

/// Who asked, as audited: `uid 0 pid 1234 (unix socket)`, `uid 0 (loopback)`, `token NAME`.
#[derive(Clone, Debug)]
pub struct Caller(pub String);

/// What the API door accepts.
#[derive(Debug)]
pub struct Auth {
    tokens: Option<Tokens>,
    /// Root and the daemon's own user.
    users: [u32; 2],
}

/// Paths open to anyone who reaches a door.
fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/metrics")
}

impl Auth {
    pub fn new(tokens: Option<Tokens>) -> Self {
        Self {
            tokens,
            users: [0, nix::unistd::geteuid().as_raw()],
        }
    }

    async fn caller(&self, peer: Option<&Peer>, bearer: Option<&[u8]>) -> Result<Caller, Response> {
        if let Some(presented) = bearer {
            return match self.tokens.as_ref().and_then(|t| t.check(presented)) {
                Some(name) => Ok(Caller(format!("token {name}"))),
                None => Err(unauthorized("the token is not accepted")),
            };
        }
        match peer {
            Some(Peer::Unix { uid, pid }) if self.users.contains(uid) => {
                Ok(Caller(format!("uid {uid} pid {pid} (unix socket)")))
            }
            Some(Peer::Unix { uid, .. }) => Err(forbidden(*uid)),
            Some(Peer::Tcp { peer, local, uid }) if peer.ip().is_loopback() => {
                let owner = match uid.get() {
                    Some(u) => *u,
                    None => {
                        let (p, l) = (*peer, *local);
                        let found = tokio::task::spawn_blocking(move || {
                            crate::node::sockets::tcp_owner(&p, &l)
                        })
                        .await
                        .ok()
                        .flatten();
                        *uid.get_or_init(|| found)
                    }
                };
                match owner {
                    Some(u) if self.users.contains(&u) => Ok(Caller(format!("uid {u} (loopback)"))),
                    Some(u) => Err(forbidden(u)),
                    None => Err(unauthorized("the caller's socket was not found")),
                }
            }
            _ => Err(unauthorized(
                "the API needs a bearer token from beyond this host (http.tokens_file)",
            )),
        }
    }
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"fsobserver\"")],
        format!("{why}\n"),
    )
        .into_response()
}

fn forbidden(uid: u32) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!("uid {uid} may not use the API (root or the daemon's user only)\n"),
    )
        .into_response()
}

/// The `Authorization: Bearer <token>` of a request: `Some` when the header is present (an
/// unusable header counts as a wrong token, never as no credential).
fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    Some(v.strip_prefix(b"Bearer ").unwrap_or(b""))
}

/// A request a web page made (it carries `Origin`, or names a host that is not an address or
/// `localhost`: a DNS-rebinding name): a page in a browser run by root must not reach the API
/// through the loopback trust.
fn from_a_browser(req: &Request) -> Option<&'static str> {
    if req.headers().contains_key(header::ORIGIN) {
        return Some("requests from web pages are refused (Origin)\n");
    }
    let host = req.headers().get(header::HOST)?.to_str().unwrap_or("?");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let literal = name.parse::<std::net::IpAddr>().is_ok() || name == "localhost";
    (!literal).then_some("the Host header must be an address or localhost\n")
}

/// Middleware of the API door: open paths pass; every other request gets its [`Caller`] or
/// is answered 401/403.
pub async fn require(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    if open_path(req.uri().path()) {
        return next.run(req).await;
    }
    if let Some(why) = from_a_browser(&req) {
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let peer = req.extensions().get::<Peer>().cloned();
    match auth.caller(peer.as_ref(), bearer(&req)).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refused) => refused,
    }
}
