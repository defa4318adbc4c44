//! The HTTP routes: `/healthz`, `/metrics` (OpenMetrics) on every door; `/top` (aggregates as
//! JSON), `/stats`, `/locks`, `/purge`, `/dump` (flight recorder, JSON Lines, streamed) and
//! `/events` (live JSON Lines stream with filters, optionally starting from the flight
//! recorder with `since`) on the API door only, behind [`super::auth`].

use std::sync::Arc;

use anyhow::Context as _;
use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::{
    events::filter::{Filter, FilterArgs},
    node::clock::now_unix_ns,
    serve::{Api, auth::Auth},
};

/// Binds a TCP door (`None` when its address is empty); `key` names it in errors.
pub async fn bind(listen: &str, key: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if listen.is_empty() {
        return Ok(None);
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .map(Some)
        .with_context(|| format!("cannot listen on {listen} ({key})"))
}

/// Binds the optional Unix socket (mode 0600, replacing a stale socket file).
pub fn bind_unix(path: &std::path::Path) -> anyhow::Result<Option<tokio::net::UnixListener>> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    use std::os::unix::fs::FileTypeExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        // A socket someone still answers on is another observer's: never taken from it.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "{} is served by another running observer (http.unix_socket)",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    // Created 0600 from the start (no window in which others could connect).
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l =
        bound.with_context(|| format!("cannot listen on {} (http.unix_socket)", path.display()))?;
    Ok(Some(l))
}

/// The metrics door: health and metrics, nothing else.
pub fn metrics_router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(api)
}

/// The API door: every route, each request authorised by `auth` first.
pub fn api_router(api: Arc<Api>, auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/top", get(top))
        .route("/stats", get(stats))
        .route("/dump", get(dump))
        .route("/events", get(events))
        .route("/locks", get(locks))
        .route("/report", get(super::report::handler))
        .route(
            "/purge",
            get(super::http_purge::status).post(super::http_purge::run),
        )
        .layer(axum::middleware::from_fn_with_state(
            auth,
            super::auth::require,
        ))
        .with_state(api)
}

/// A stream slot (`http.max_streams`), or [`NoStreamSlot`].
fn stream_slot(api: &Api) -> Result<tokio::sync::OwnedSemaphorePermit, NoStreamSlot> {
    api.streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| NoStreamSlot)
}

/// Every stream slot is taken: 503, try again.
struct NoStreamSlot;

impl IntoResponse for NoStreamSlot {
    fn into_response(self) -> Response {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many /events and /dump streams at once (http.max_streams); try again\n",
        )
            .into_response()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LocksQuery {
    path: Option<String>,
}

/// `GET /locks`: every tracked lock; `?path=P`: one lock's state and the `lock-status` exit
/// code (holders are re-checked first, so a dead holder shows as `holder-dead` now).
async fn locks(
    State(api): State<Arc<Api>>,
    q: Result<Query<LocksQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad_request("query: only path=P is accepted".into());
    };
    api.check_lock_holders();
    let analysis = api.analysis();
    let Some(t) = analysis.locks.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            "lock tracking is off (locks.enabled)\n",
        )
            .into_response();
    };
    let body = match q.path {
        None => {
            let mut all: Vec<_> = t.locks().collect();
            all.sort_by(|a, b| a.path.cmp(&b.path));
            serde_json::json!({ "locks": all })
        }
        Some(p) => {
            // Lock paths are in the node's view.
            let key = crate::node::mounts::MountTable::node()
                .fs_key(&p)
                .unwrap_or_else(|| (0, p.clone()));
            match t.get(&key) {
                Some(l) => serde_json::json!({
                    "path": p, "known": true, "state": l.state,
                    "exit_code": l.state.exit_code(), "lock": l,
                }),
                None => serde_json::json!({
                    "path": p, "known": false, "state": "unknown", "exit_code": 5,
                    "reason": t.not_a_lock_reason(&key, &p),
                }),
            }
        }
    };
    axum::Json(body).into_response()
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    match tokio::task::spawn_blocking(move || super::metrics::render(&api)).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopQuery {
    limit: Option<usize>,
}

async fn top(
    State(api): State<Arc<Api>>,
    q: Result<Query<TopQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad_request("query: only limit=N is accepted".into());
    };
    let k = q.limit.unwrap_or(api.config.file.aggregate.top_k);
    let body = {
        let f = &api.config.file;
        let now = now_unix_ns();
        let (top, growth) = {
            let a = api.analysis();
            let (procs, workloads) = a.growth.actors(k);
            let culprits =
                a.growth
                    .culprits(f.growth.culprit_share, f.growth.culprit_min_net as i64, now);
            (
                a.agg.top(k),
                serde_json::json!({"culprits": culprits, "processes": procs, "workloads": workloads}),
            )
        };
        // One lock at a time: a guard in the json! expression lives to its end.
        let (capacity, deleted_open) = {
            let c = api.capacity();
            (c.rows(), c.deleted_open.clone())
        };
        serde_json::json!({
            "node": api.info.node,
            "probe_mode": api.info.probe_mode,
            "capacity": capacity,
            "deleted_open": deleted_open,
            "growth": growth,
            "top": top,
        })
    };
    axum::Json(body).into_response()
}

/// `GET /stats`: the stats line now (exact kernel counts, losses), as JSON.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    pid: Option<u32>,
}

/// `GET /stats`; `?pid=N`: `deletes_by_process` holds that process's row alone (the list is
/// otherwise the 20 busiest).
async fn stats(
    State(api): State<Arc<Api>>,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad_request("query: only pid=N is accepted".into());
    };
    // Reads every kernel map (and the mount table): off the async threads.
    match tokio::task::spawn_blocking(move || api.stats_for(q.pid).line()).await {
        Ok(line) => ([(header::CONTENT_TYPE, "application/json")], line).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "stats failed\n").into_response(),
    }
}

/// `GET /dump`: the flight recorder streamed as it is rendered (a few chunks in flight per
/// client; the window itself is shared, not copied).
async fn dump(State(api): State<Arc<Api>>) -> Response {
    let slot = match stream_slot(&api) {
        Ok(s) => s,
        Err(busy) => return busy.into_response(),
    };
    let Ok(rendering_slot) = api.dumps.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "other dumps are being sent; try again when they are done\n",
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    // A thread of its own (bounded by the stream slots), at a lower priority: rendering dumps
    // for many clients must not take the CPU from /healthz and the event pipeline.
    let rendering = std::thread::Builder::new()
        .name("dump".into())
        .spawn(move || {
            let _slots = (slot, rendering_slot);
            // The stages' locks are taken (briefly) at normal priority: a lowered thread
            // preempted while holding one would stall the pipeline behind it.
            let (header, window) = api.dump("request", None);
            drop(api);
            // SAFETY: setpriority(2) on this thread only (a Linux thread id is a pid here).
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
            let mut out = Chunks {
                buf: Vec::with_capacity(CHUNK),
                tx,
            };
            // A client that went away ends the rendering (the send fails).
            let _: Result<(), _> = window.write_to(&header, &mut out);
        });
    if rendering.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "cannot start a dump now\n").into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

const CHUNK: usize = 64 << 10;

/// Bytes written on a blocking thread, sent to the response in chunks.
struct Chunks {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl std::io::Write for Chunks {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

async fn events(
    State(api): State<Arc<Api>>,
    q: Result<Query<FilterArgs>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let args = match q {
        Ok(Query(a)) => a,
        Err(e) => return bad_request(format!("query: {e}")),
    };
    let filter = match Filter::new(&args, now_unix_ns()) {
        Ok(f) => f,
        Err(e) => return bad_request(e.to_string()),
    };
    let slot = match stream_slot(&api) {
        Ok(s) => s,
        Err(busy) => return busy.into_response(),
    };
    // Subscribed together with the backlog: every event either in the backlog or in the live
    // stream, never both, never neither. Lines are rendered by the sending task.
    let (mut live, backlog) = api.record.subscribe(filter.since_unix_ns, &filter);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let _slot = slot;
        let line = |b: &Bytes| {
            let mut v = Vec::with_capacity(b.len() + 1);
            v.extend_from_slice(b);
            v.push(b'\n');
            Ok(Bytes::from(v))
        };
        for e in &backlog {
            if tx.send(line(&e.line_uncached())).await.is_err() {
                return;
            }
        }
        drop(backlog);
        loop {
            match live.recv().await {
                Ok(ev) => {
                    if filter.matches(ev.as_ref()) && tx.send(line(ev.line())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    api.record.lagged(n);
                    let msg = Bytes::from(format!("{{\"type\":\"lagged\",\"missed\":{n}}}"));
                    if tx.send(line(&msg)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}
