//! The doors the daemon listens on (the API on loopback TCP and a Unix socket, the metrics door
//! on the pod network) and the bounds every connection lives within: a cap on connections held
//! per door (more are closed as they arrive), a deadline for request headers (and for the next
//! request on an idle connection), a deadline for a response nobody reads, and a small read
//! buffer. Who is at the other end is recorded for [`super::auth`].

use std::{
    future::Future as _,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, UnixListener},
    sync::{Semaphore, watch},
};

/// Which door a connection came through (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorKind {
    Api,
    Metrics,
}

impl DoorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DoorKind::Api => "api",
            DoorKind::Metrics => "metrics",
        }
    }
}

/// Who is connected: a Unix socket peer's credentials (from the kernel), or a TCP peer's
/// address (its user, for loopback, looked up once when a request needs it).
#[derive(Clone, Debug)]
pub enum Peer {
    Unix {
        uid: u32,
        pid: i32,
    },
    Tcp {
        peer: SocketAddr,
        local: SocketAddr,
        uid: Arc<OnceLock<Option<u32>>>,
    },
}

/// Per-door connection outcomes (`fsobserver_http_connections_total`).
#[derive(Debug, Default)]
pub struct DoorCounters {
    pub accepted: AtomicU64,
    /// Closed on arrival: the door held `http.max_connections` already.
    pub refused: AtomicU64,
    /// Closed because the request headers did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Closed because a response made no progress (its reader stopped reading).
    pub stalled: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub stall_timeout: Duration,
}

/// One door: its routes, limits and counters.
pub struct Door {
    pub kind: DoorKind,
    router: Router,
    limits: Limits,
    permits: Arc<Semaphore>,
    counters: Arc<DoorCounters>,
}

impl Door {
    pub fn new(
        kind: DoorKind,
        router: Router,
        limits: Limits,
        counters: Arc<DoorCounters>,
    ) -> Self {
        Self {
            kind,
            router,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            counters,
        }
    }

    /// Accepts TCP connections until `stop`.
    pub async fn serve_tcp(self, l: TcpListener, mut stop: watch::Receiver<bool>) {
        while let Some(accepted) = until_stop(&mut stop, l.accept()).await {
            match accepted {
                Ok((s, peer)) => {
                    let Ok(local) = s.local_addr() else { continue };
                    let _: Result<(), _> = s.set_nodelay(true);
                    let uid = Arc::default();
                    self.spawn(s, Peer::Tcp { peer, local, uid }, stop.clone());
                }
                Err(e) => accept_failed(self.kind, &e).await,
            }
        }
    }

    /// Accepts Unix socket connections until `stop`.
    pub async fn serve_unix(self, l: UnixListener, mut stop: watch::Receiver<bool>) {
        while let Some(accepted) = until_stop(&mut stop, l.accept()).await {
            match accepted {
                Ok((s, _)) => {
                    // The kernel's record of who connected; without it, nobody.
                    let Ok(cred) = s.peer_cred() else { continue };
                    let peer = Peer::Unix {
                        uid: cred.uid(),
                        pid: cred.pid().unwrap_or(0),
                    };
                    self.spawn(s, peer, stop.clone());
                }
                Err(e) => accept_failed(self.kind, &e).await,
            }
        }
    }

    fn spawn<S>(&self, io: S, peer: Peer, mut stop: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return; // dropped: closed at once
        };
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let (router, limits, counters) = (self.router.clone(), self.limits, self.counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let stalled = Arc::new(AtomicBool::new(false));
            let io = TokioIo::new(Stall::new(io, limits.stall_timeout, stalled.clone()));
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    let mut router = router.clone();
                    async move { tower_service::Service::call(&mut router, req).await }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(64 << 10)
                .serve_connection(io, svc);
            tokio::pin!(conn);
            let stopping = async move {
                let _: Result<_, _> = stop.wait_for(|s| *s).await;
            };
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(2), conn.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if stalled.load(Ordering::Relaxed) {
                counters.stalled.fetch_add(1, Ordering::Relaxed);
            } else if result.as_ref().is_err_and(hyper::Error::is_timeout) {
                counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// An accept error (e.g. EMFILE): logged, and a short pause so the loop does not spin.
async fn accept_failed(kind: DoorKind, e: &std::io::Error) {
    tracing::warn!(door = kind.as_str(), error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// What `accept` gives, or `None` once `stop` is set (the accept is then dropped).
async fn until_stop<T>(
    stop: &mut watch::Receiver<bool>,
    accept: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        s = stop.wait_for(|s| *s) => {
            drop(s);
            None
        }
        a = accept => Some(a),
    }
}

/// A connection whose writes fail once they have made no progress for `timeout` (a client
/// that stopped reading): the response, and whatever it holds, is dropped.
struct Stall<S> {
    inner: S,
    timeout: Duration,
    /// The write-stall deadline, armed at the first `Pending` after a write that went through
    /// (one timer per connection, reset rather than made anew).
    deadline: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
    stalled: Arc<AtomicBool>,
}

impl<S> Stall<S> {
    fn new(inner: S, timeout: Duration, stalled: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            stalled,
        }
    }

    /// After the inner write returned `Pending`: `Ready(Err)` once the deadline passed.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        if !self.armed {
            let at = tokio::time::Instant::now() + self.timeout;
            self.deadline.as_mut().reset(at);
            self.armed = true;
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.stalled.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }

    /// The inner call's outcome: a write that went through disarms the deadline.
    fn through<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stall<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.through(cx, r)
    }

    /// Vectored writes pass through: hyper then queues a response's pieces and writes them with
    /// one `writev` instead of copying them into one buffer first.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.through(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.through(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => self.pending(cx),
        }
    }
}
