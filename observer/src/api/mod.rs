//! The agent's read-only API: JSON over HTTP, served on a root-only unix socket (for the
//! CLI) and on a TCP address (127.0.0.1 by default, for Prometheus and tools). On TCP the
//! process views answer only clients that authenticate (`public_router`).
//!
//! All of HTTP is here: the routes (this file), what each answers (`service.rs`) and how a
//! view is assembled (`assemble.rs`); the listeners (`listeners.rs`), each connection's
//! bounds (`connections.rs`), TLS and credentials (`web/`); the CLI's client (`client.rs`).
//!
//! Routes: `/healthz` (alive), `/readyz` (programs attached, first scan applied; 503
//! before, as every other route), `/metrics` (Prometheus), `/v1/status`, `/v1/containers`, `/v1/processes[?container=X]`,
//! `/v1/containers/{ref}/tree` (303 to the pod's tree for a pod reference), `/v1/pods`,
//! `/v1/pods/{ref}/tree`, `/v1/zombies`, `/v1/containers/{ref}/history[?since=&failed=&comm=&boot=&exec=]`,
//! `/v1/why/{ref}[?boot=]` (a container, pod or pid), `/v1/events[?type=a,b]` (NDJSON stream),
//! `/v1/signals` (the same stream, signal and OOM events only).

pub(crate) mod assemble;
pub mod client;
pub(crate) mod connections;
pub(crate) mod listeners;
mod queries;
pub(crate) mod reasons;
pub(crate) mod service;
pub(crate) mod web;

use std::sync::{Arc, Mutex};

use axum::{
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    containers::names::Resolver,
    events::kind_from_name,
    host::{
        cgroupfs::CgroupFs, clock::boot_now_ns, facts::Resources, resource_files::ResourceFiles,
        stat_files::StatFiles,
    },
    table::{
        snapshot::{Scope, Snapshot},
        summary::{cgroup_paths, oom_counts},
    },
    views::{
        event_line::EventJson,
        text::{Escaped, Style},
    },
};
use assemble::ViewCtx;
use service::{ApiError, Source};

pub(crate) const DEFAULT_SOCKET: &str = "/run/observer/observer.sock";
/// Not in Prometheus' default-port allocations (its 9100–9999 exporter range is full).
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:19100";

/// Requests to the task that owns the table.
pub(crate) enum Request {
    /// Shared between the requests for one scope the table task answers at once.
    Snapshot(Scope, oneshot::Sender<Arc<Snapshot>>),
    MemberOf(u32, oneshot::Sender<Option<u32>>),
    Status(oneshot::Sender<crate::views::status::Health>),
}

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) events: broadcast::Sender<crate::table::Published>,
    pub(crate) resolver: Arc<Mutex<Resolver>>,
    /// The durable history store, for the history and `why` views (None: off).
    pub(crate) store: Option<Arc<crate::store::Store>>,
    pub(crate) cgroupfs: Arc<CgroupFs>,
    /// Container labels kept on metrics.
    pub(crate) metrics_labels: Arc<Vec<String>>,
    /// The live containers' cgroup files, kept open between scrapes.
    pub(crate) cgroup_files: Arc<Mutex<ResourceFiles>>,
    /// The /proc/<pid>/stat files of processes viewed recently, kept open between views.
    pub(crate) stat_files: Arc<Mutex<StatFiles>>,
    /// Set once the programs are attached and the first scan is applied (`/readyz`).
    pub(crate) ready: Arc<std::sync::atomic::AtomicBool>,
}

/// Asks the table task from a blocking thread.
struct AgentSource<'a>(&'a mpsc::Sender<Request>);

impl Source for AgentSource<'_> {
    fn snapshot(&self, scope: Scope) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.0.blocking_send(Request::Snapshot(scope, tx)).ok()?;
        // A copy here, off the table's thread, when another request shares it.
        rx.blocking_recv()
            .ok()
            .map(|s| Arc::try_unwrap(s).unwrap_or_else(|s| (*s).clone()))
    }

    fn member_of(&self, pid: u32) -> Option<u32> {
        let (tx, rx) = oneshot::channel();
        self.0.blocking_send(Request::MemberOf(pid, tx)).ok()?;
        rx.blocking_recv().ok().flatten()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self {
            ApiError::NotFound { .. } | ApiError::NotAPod { .. } | ApiError::NotInBoot { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::Ambiguous { .. } => StatusCode::CONFLICT,
            ApiError::IsPod { .. } => StatusCode::SEE_OTHER,
            ApiError::Unavailable | ApiError::Changed => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut body = serde_json::to_value(&self).unwrap_or_default();
        body["message"] = self.to_string().into();
        let mut r = (code, Json(body)).into_response();
        if let ApiError::IsPod { query } = &self {
            // The pod's tree is where a pod reference's tree is.
            let to = format!("/v1/pods/{}/tree", client::urlencode(query));
            if let Ok(v) = axum::http::HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
        }
        r
    }
}

/// An answer at least this big (bytes) gives the memory its making freed back at once.
const BIG_ANSWER: u64 = 1 << 20;

/// Runs a view on a blocking thread (assembling it reads /proc and runtime state files).
async fn blocking<T: Serialize + Send + 'static>(
    st: ApiState,
    f: impl FnOnce(&dyn Source, &mut ViewCtx) -> Result<T, ApiError> + Send + 'static,
) -> Response {
    blocking_as(st, f, |v| Json(v).into_response()).await
}

/// `blocking`, with the view's value answered by `answer`.
async fn blocking_as<T: Send + 'static>(
    st: ApiState,
    f: impl FnOnce(&dyn Source, &mut ViewCtx) -> Result<T, ApiError> + Send + 'static,
    answer: fn(T) -> Response,
) -> Response {
    let r = tokio::task::spawn_blocking(move || {
        let src = AgentSource(&st.requests);
        let mut ctx = ViewCtx {
            now_ns: boot_now_ns(),
            resolver: &st.resolver,
            cgroupfs: &st.cgroupfs,
            cgroup_files: Some(&st.cgroup_files),
            stat_files: Some(&st.stat_files),
            store: st.store.as_deref(),
        };
        // Answered here, so that the view and its serialized body are made and freed on
        // one thread; after a big one (a whole node) what it freed goes back to the kernel.
        let r = f(&src, &mut ctx).map(answer);
        if let Ok(resp) = &r {
            if axum::body::HttpBody::size_hint(resp.body()).lower() >= BIG_ANSWER {
                crate::host::heap::trim();
            }
        }
        r
    })
    .await;
    match r {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => e.into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("view failed: {e}"),
        )
            .into_response(),
    }
}

/// A route handler's answer, boxed.
type ViewFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// `?format=text[&color=true]` on a tree: the view as the CLI prints it, rendered by the
/// agent. The CLI asks for it: decoding a 1,000-process tree's JSON (600 kB) was most of
/// its time. `format=json` (the default) is the tree object.
#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
    #[serde(default)]
    color: bool,
}

/// A tree view by reference, as JSON or (`FormatQuery`) rendered text.
fn tree_by_reference<T: Serialize + DeserializeOwned + Send + 'static>(
    view: fn(&dyn Source, &mut ViewCtx, &str) -> Result<T, ApiError>,
    render: fn(&Escaped<T>, Style) -> String,
) -> impl Fn(State<ApiState>, Path<String>, Query<FormatQuery>) -> ViewFuture + Clone + Send + 'static
{
    move |State(st): State<ApiState>, Path(r): Path<String>, Query(q): Query<FormatQuery>| {
        Box::pin(async move {
            let style = Style { color: q.color };
            match q.format.as_deref() {
                None | Some("json") => blocking(st, move |s, c| view(s, c, &r)).await,
                Some("text") => {
                    let f = move |s: &dyn Source, c: &mut ViewCtx| {
                        view(s, c, &r).map(|v| Escaped::new(v).map(|v| render(&v, style)))
                    };
                    blocking_as(st, f, |text| match text {
                        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)
                            .into_response(),
                        Err(e) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("rendering the view failed: {e}\n"),
                        )
                            .into_response(),
                    })
                    .await
                }
                Some(other) => (
                    StatusCode::BAD_REQUEST,
                    format!("unknown format `{other}` (json or text)\n"),
                )
                    .into_response(),
            }
        })
    }
}

#[derive(Deserialize)]
struct ProcessesQuery {
    container: Option<String>,
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(rename = "type")]
    types: Option<String>,
}

async fn status(State(st): State<ApiState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if st.requests.send(Request::Status(tx)).await.is_err() {
        return ApiError::Unavailable.into_response();
    }
    match rx.await {
        Ok(v) => Json(v).into_response(),
        Err(_) => ApiError::Unavailable.into_response(),
    }
}

/// NDJSON stream of live events; a `{"type":"lost","count":N}` line marks events this
/// subscriber missed because it read too slowly.
async fn events(State(st): State<ApiState>, Query(q): Query<EventsQuery>) -> Response {
    let mut mask = u32::MAX;
    if let Some(t) = q.types.as_deref().filter(|t| !t.is_empty()) {
        mask = 0;
        for name in t.split(',') {
            match kind_from_name(name.trim()) {
                Some(k) => mask |= 1 << k as u32,
                None => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("unknown event type `{name}`\n"),
                    )
                        .into_response()
                }
            }
        }
    }
    let rx = st.events.subscribe();
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            let line = match rx.recv().await {
                Ok(p) if mask & (1 << p.ev.kind() as u32) != 0 => {
                    let hash = assemble::exe_hash(p.exe, p.ev.header().ktime_ns).await;
                    let json = EventJson::new(&p.ev)
                        .with_exe_hash(hash)
                        .with_session(p.session.as_deref());
                    let mut l = serde_json::to_vec(&json).unwrap_or_default();
                    l.push(b'\n');
                    l
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    format!("{{\"type\":\"lost\",\"count\":{n}}}\n").into_bytes()
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok::<_, std::io::Error>(Bytes::from(line)), rx));
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Prometheus scrape: container summaries and agent health from the table task, names and
/// cgroup files read here (live containers only), never a walk of /proc. The cgroup files
/// of the containers the last scrape saw are read while the table task works out the
/// summaries; only containers new since then wait for it.
async fn metrics(State(st): State<ApiState>) -> Response {
    let (status_tx, status_rx) = oneshot::channel();
    let (snap_tx, snap_rx) = oneshot::channel();
    if st.requests.send(Request::Status(status_tx)).await.is_err()
        || st
            .requests
            .send(Request::Snapshot(Scope::Metrics, snap_tx))
            .await
            .is_err()
    {
        return ApiError::Unavailable.into_response();
    }
    let r = tokio::task::spawn_blocking(move || {
        let mut files = st.cgroup_files.lock().unwrap_or_else(|e| e.into_inner());
        let early = files.read_known();
        let mut health = status_rx.blocking_recv().ok()?;
        let snap = snap_rx.blocking_recv().ok()?;
        let snap = Arc::try_unwrap(snap).unwrap_or_else(|s| (*s).clone());
        let (paths, ooms) = (cgroup_paths(&snap.containers), oom_counts(&snap.containers));
        let fresh = files.read_containers(&st.cgroupfs, &paths, &ooms, early);
        drop(files);
        health.name_cache_evictions = st
            .resolver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .evictions;
        health.unreadable_processes = st
            .stat_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unreadable();
        let mut ctx = ViewCtx {
            now_ns: boot_now_ns(),
            resolver: &st.resolver,
            cgroupfs: &st.cgroupfs,
            cgroup_files: None,
            stat_files: None,
            store: None,
        };
        let mut samples =
            assemble::samples(&mut ctx, snap.containers, &st.metrics_labels, |path| {
                fresh.get(path).copied().unwrap_or_default()
            });
        // Ended containers: their counters only (no cgroup left to read).
        let mut ended = assemble::samples(&mut ctx, snap.ended, &st.metrics_labels, |_| {
            Resources::default()
        });
        ended.iter_mut().for_each(|s| s.ended = true);
        samples.extend(ended);
        Some(crate::views::metrics::render(&samples, &health))
    })
    .await;
    match r {
        Ok(Some(text)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(None) => ApiError::Unavailable.into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics failed: {e}"),
        )
            .into_response(),
    }
}

/// The real router with no table task behind it: routes that need the table answer 503.
/// For fuzzing the request parsing (fuzz/fuzz_targets/api_requests.rs). Call it inside a
/// tokio runtime.
#[doc(hidden)]
pub fn fuzzing_router() -> Router {
    router(detached_state(true))
}

/// A state with no agent behind it (requests to the table find nobody).
fn detached_state(ready: bool) -> ApiState {
    let (requests, _) = mpsc::channel(1);
    let (events, _) = broadcast::channel(1);
    ApiState {
        requests,
        events,
        resolver: Arc::new(Mutex::new(Resolver::new(Default::default()))),
        store: None,
        cgroupfs: Arc::new(CgroupFs::discover()),
        metrics_labels: Arc::new(Vec::new()),
        cgroup_files: Arc::new(Mutex::new(ResourceFiles::with_budget(0))),
        stat_files: Arc::new(Mutex::new(StatFiles::with_budget(0))),
        ready: Arc::new(ready.into()),
    }
}

/// The metrics listener's routes: nothing of the JSON API.
pub(crate) fn metrics_router(st: ApiState) -> Router {
    let ready = st.ready.clone();
    gate(
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(st),
        ready,
    )
}

/// Health, readiness, /metrics and the agent's own account (/v1/status): what every API
/// listener serves. Nothing here names a process.
fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
}

/// The TCP listener's routes when its clients need not prove who they are (no
/// `--web-config` credentials or required client certificates): [`open_routes`] only. The
/// process views list every command line, which /proc mounted with `hidepid` hides from
/// other users, so they are not routes here: `/v1/...` answers 403 saying where they are.
pub(crate) fn public_router(st: ApiState, socket: &std::path::Path) -> Router {
    let ready = st.ready.clone();
    let message: Arc<str> = format!(
        "the process views list every command line, so on TCP they answer only clients that \
         authenticate (--web-config with basic_auth_users or bearer_tokens, or \
         client_auth_type: RequireAndVerifyClientCert); root can use the unix socket {} \
         (observer ps, tree, ...; curl --unix-socket)",
        socket.display()
    )
    .into();
    let refuse = move |uri: axum::http::Uri| {
        let message = message.clone();
        async move {
            if uri.path().starts_with("/v1/") {
                let body = serde_json::json!({ "error": "forbidden", "message": &*message });
                (StatusCode::FORBIDDEN, Json(body)).into_response()
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        }
    };
    gate(open_routes().fallback(refuse).with_state(st), ready)
}

/// Every route: the unix socket's (root only), and TCP's when every client authenticates.
pub(crate) fn router(st: ApiState) -> Router {
    let ready = st.ready.clone();
    let r = open_routes()
        .route("/v1/containers", get(listing(service::containers)))
        .route(
            "/v1/containers/{reference}/tree",
            get(tree_by_reference(service::tree, crate::views::tree::render)),
        )
        .route("/v1/pods", get(listing(service::pods)))
        .route(
            "/v1/pods/{reference}/tree",
            get(tree_by_reference(
                service::pod_tree,
                crate::views::pods::render,
            )),
        )
        .route(
            "/v1/processes",
            get(
                |State(st): State<ApiState>, Query(q): Query<ProcessesQuery>| async move {
                    blocking(st, move |s, c| {
                        service::processes(s, c, q.container.as_deref())
                    })
                    .await
                },
            ),
        )
        .route("/v1/zombies", get(listing(service::zombies)))
        .route(
            "/v1/containers/{reference}/history",
            get(
                |State(st): State<ApiState>,
                 Path(r): Path<String>,
                 Query(q): Query<queries::HistoryQuery>| async move {
                    match q.filter() {
                        Ok(f) => blocking(st, move |s, c| service::history(s, c, &r, &f)).await,
                        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                    }
                },
            ),
        )
        .route(
            "/v1/why/{reference}",
            get(
                |State(st): State<ApiState>,
                 Path(r): Path<String>,
                 Query(q): Query<queries::WhyQuery>| async move {
                    blocking(st, move |s, c| service::why(s, c, &r, q.boot)).await
                },
            ),
        )
        .route("/v1/events", get(events))
        .route(
            "/v1/signals",
            get(|st: State<ApiState>| {
                events(
                    st,
                    Query(EventsQuery {
                        types: Some("signal,oom".into()),
                    }),
                )
            }),
        )
        .with_state(st);
    gate(r, ready)
}

/// A view of the whole node, as a route's handler.
fn listing<T: Serialize + Send + 'static>(
    view: fn(&dyn Source, &mut ViewCtx) -> Result<T, ApiError>,
) -> impl Fn(State<ApiState>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>
       + Clone
       + Send
       + 'static {
    move |State(st): State<ApiState>| Box::pin(blocking(st, move |s, c| view(s, c)))
}

/// Every route but /healthz answers 503 until the agent is ready.
fn gate(r: Router, ready: Arc<std::sync::atomic::AtomicBool>) -> Router {
    r.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let ready = ready.load(std::sync::atomic::Ordering::Acquire);
            async move {
                let path = req.uri().path();
                if ready || path == "/healthz" || path == "/readyz" {
                    next.run(req).await
                } else {
                    starting()
                }
            }
        },
    ))
}

/// The answer of every route but /healthz until the agent is ready.
fn starting() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "starting: attaching the programs and reading /proc\n",
    )
        .into_response()
}

/// 200 once the programs are attached and the first scan is applied, 503 before.
async fn readyz(State(st): State<ApiState>) -> Response {
    if st.ready.load(std::sync::atomic::Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        starting()
    }
}

#[cfg(test)]
mod tests;
