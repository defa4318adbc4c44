//! `GET /purge` (state, recent runs) and `POST /purge?policy=P&execute=true` (a manual run;
//! dry run unless `execute=true`). The run happens on the purge threads; this only waits.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Extension,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{
    act::purge::{PurgeError, Request, workers::MANUAL},
    serve::{Api, auth::Caller},
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    policy: Option<String>,
    #[serde(default)]
    execute: bool,
}

pub async fn run(
    State(api): State<Arc<Api>>,
    caller: Option<Extension<Caller>>,
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    // Set by the API door's authorisation; a route without it is refused, never run.
    let Some(Extension(caller)) = caller else {
        return (StatusCode::FORBIDDEN, "no caller identity\n").into_response();
    };
    let Ok(Query(q)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            "query: policy=NAME and execute=true|false are accepted\n",
        )
            .into_response();
    };
    let Some(purger) = api.purge.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "purge is starting\n").into_response();
    };
    let req = Request {
        policy: q.policy,
        execute: q.execute,
        trigger: MANUAL.into(),
        requested_by: caller.0,
    };
    let rx = match purger.request(req) {
        Ok(rx) => rx,
        Err(e) => {
            let code = match e {
                PurgeError::Disabled(_) => StatusCode::SERVICE_UNAVAILABLE,
                PurgeError::UnknownPolicy(..) => StatusCode::NOT_FOUND,
                PurgeError::Busy => StatusCode::CONFLICT,
                PurgeError::NotAllowed(..) => StatusCode::FORBIDDEN,
                PurgeError::Stopped => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return (code, format!("{e}\n")).into_response();
        }
    };
    match rx.await {
        Ok(runs) => axum::Json(serde_json::json!({ "runs": runs })).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the purge thread stopped\n",
        )
            .into_response(),
    }
}

pub async fn status(State(api): State<Arc<Api>>) -> Response {
    let Some(purger) = api.purge.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "purge is starting\n").into_response();
    };
    let s = &purger.stats;
    // Sampled by the trigger thread: this handler never waits on a filesystem.
    let free = s.free.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let recent: Vec<_> = s
        .inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .recent
        .iter()
        .cloned()
        .collect();
    let policies: Vec<_> = purger
        .purge
        .iter()
        .flat_map(|p| p.policies.iter())
        .map(|p| {
            serde_json::json!({
                "name": p.cfg.name, "root": p.cfg.root, "match": p.cfg.matches,
                "group": p.cfg.group, "min_age_secs": p.cfg.min_age_secs,
                "auto": p.cfg.auto, "execute": p.cfg.execute,
                "free": free.get(&p.cfg.name).copied().flatten(),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "enabled": purger.purge.is_some(),
        "disabled_reason": (!purger.disabled.is_empty()).then_some(&purger.disabled),
        "policies": policies,
        "trash_pending_bytes": s.trash_pending_bytes.load(Ordering::Relaxed),
        "removed_files": s.removed_files.load(Ordering::Relaxed),
        "removed_dirs": s.removed_dirs.load(Ordering::Relaxed),
        "removal_errors": s.removal_errors.load(Ordering::Relaxed),
        "recent_runs": recent,
    }))
    .into_response()
}
