//! The HTTP API: `/healthz`, `/metrics` (OpenMetrics), `/top` (aggregates as JSON), `/dump`
//! (flight recorder, JSON Lines) and `/events` (live JSON Lines stream with filters, optionally
//! starting from the flight recorder with `since`).

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
use tokio::sync::{broadcast, mpsc, watch};

use crate::{
    events::filter::{Filter, FilterArgs},
    node::clock::now_unix_ns,
    serve::Api,
};

/// Binds the API address (`None` when disabled).
pub async fn bind(listen: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if listen.is_empty() {
        return Ok(None);
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .map(Some)
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))
}

/// Binds the optional Unix socket (mode 0600, replacing a stale socket file).
pub fn bind_unix(path: &std::path::Path) -> anyhow::Result<Option<tokio::net::UnixListener>> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    // Created 0600 from the start (no window in which others could connect).
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l =
        bound.with_context(|| format!("cannot listen on {} (http.unix_socket)", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Some(l))
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/top", get(top))
        .route("/stats", get(stats))
        .route("/dump", get(dump))
        .route("/events", get(events))
        .route("/locks", get(locks))
        .route(
            "/purge",
            get(super::http_purge::status).post(super::http_purge::run),
        )
        .with_state(api)
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
            let key = crate::node::mounts::MountTable::load()
                .fs_key(&p)
                .unwrap_or_else(|| (0, p.clone()));
            match t.get(&key) {
                Some(l) => serde_json::json!({
                    "path": p, "known": true, "state": l.state,
                    "exit_code": l.state.exit_code(), "lock": l,
                }),
                None => serde_json::json!({
                    "path": p, "known": false, "state": "unknown", "exit_code": 5,
                }),
            }
        }
    };
    axum::Json(body).into_response()
}

/// Serves the API on `listener` (TCP or the Unix socket) until `stop`.
pub async fn serve<L>(listener: L, api: Arc<Api>, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let shutdown = async move {
        let _: Result<_, _> = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router(api))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
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
        let top = api.analysis().agg.top(k);
        serde_json::json!({
            "node": api.info.node,
            "probe_mode": api.info.probe_mode,
            "capacity": api.capacity().rows(),
            "top": top,
        })
    };
    axum::Json(body).into_response()
}

/// `GET /stats`: the stats line now (exact kernel counts, losses), as JSON.
async fn stats(State(api): State<Arc<Api>>) -> Response {
    // Reads every kernel map (and the mount table): off the async threads.
    match tokio::task::spawn_blocking(move || api.stats().line()).await {
        Ok(line) => ([(header::CONTENT_TYPE, "application/json")], line).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "stats failed\n").into_response(),
    }
}

async fn dump(State(api): State<Arc<Api>>) -> Response {
    match tokio::task::spawn_blocking(move || api.dump("request", None)).await {
        Ok(data) => ([(header::CONTENT_TYPE, "application/x-ndjson")], data).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "dump failed\n").into_response(),
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
    // Subscribed together with the backlog: every event either in the backlog or in the live
    // stream, never both, never neither. Lines are rendered by the sending task.
    let (mut live, backlog) = api.record.subscribe(filter.since_unix_ns, &filter);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
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
