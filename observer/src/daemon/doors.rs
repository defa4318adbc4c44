//! The doors, bound before anyone is told the daemon started: the API on `http.listen`
//! (loopback, or any address with tokens) and on `http.unix_socket`, the metrics door on
//! `http.metrics_listen`. Each is announced on stderr as `fsobserver: <door> listening on ...`.

use std::{sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, UnixListener},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    config::tokens::Tokens,
    serve::{
        Api,
        auth::Auth,
        door::{Door, DoorKind, Limits},
        http,
    },
};

pub struct Listeners {
    pub api: Option<TcpListener>,
    unix: Option<UnixListener>,
    metrics: Option<TcpListener>,
    /// The socket file this observer made (dev, inode): removed at exit only if the path is
    /// still that file.
    pub unix_file: Option<(u64, u64)>,
}

/// (dev, inode) of the file at `path`, not following a symlink.
pub fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

pub async fn bind(api: &Api) -> anyhow::Result<Listeners> {
    let h = &api.config.file.http;
    let unix = http::bind_unix(&h.unix_socket)?;
    let l = Listeners {
        api: http::bind(&h.listen, "http.listen").await?,
        unix_file: unix.as_ref().and_then(|_| file_id(&h.unix_socket)),
        unix,
        metrics: http::bind(&h.metrics_listen, "http.metrics_listen").await?,
    };
    if let Some(a) = &l.api {
        eprintln!("fsobserver: api listening on {}", a.local_addr()?);
    }
    if l.unix.is_some() {
        eprintln!(
            "fsobserver: api listening on unix:{}",
            h.unix_socket.display()
        );
    }
    if let Some(m) = &l.metrics {
        eprintln!("fsobserver: metrics listening on {}", m.local_addr()?);
    }
    Ok(l)
}

/// Serves every bound door until `stop`.
pub fn spawn(
    l: Listeners,
    api: &Arc<Api>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let h = &api.config.file.http;
    let tokens = if h.tokens_file.as_os_str().is_empty() {
        None
    } else {
        Some(Tokens::load(&h.tokens_file)?)
    };
    let auth = Arc::new(Auth::new(tokens));
    let limits = Limits {
        max_connections: h.max_connections,
        header_timeout: Duration::from_millis(h.header_timeout_ms),
        stall_timeout: Duration::from_millis(h.stall_timeout_ms),
    };
    let [api_counters, metrics_counters] = api.doors.clone();
    let api_door = || {
        Door::new(
            DoorKind::Api,
            http::api_router(api.clone(), auth.clone()),
            limits,
            api_counters.clone(),
        )
    };
    let mut tasks = Vec::new();
    if let Some(t) = l.api {
        tasks.push(tokio::spawn(api_door().serve_tcp(t, stop.clone())));
    }
    if let Some(u) = l.unix {
        tasks.push(tokio::spawn(api_door().serve_unix(u, stop.clone())));
    }
    if let Some(m) = l.metrics {
        let door = Door::new(
            DoorKind::Metrics,
            http::metrics_router(api.clone()),
            limits,
            metrics_counters,
        );
        tasks.push(tokio::spawn(door.serve_tcp(m, stop.clone())));
    }
    Ok(tasks)
}
