//! Serving the API router on a listener with bounds a local client cannot get around:
//! `axum::serve` keeps a connection that sends nothing, half a header, or idles after a
//! keep-alive response open forever, so a client could exhaust the agent's descriptors.
//!
//! Per listener: at most `max_connections` (more are closed at once and counted), at most a
//! quarter of them from one client address; a request
//! header must arrive within `header_timeout` (hyper's own timer); a connection with no
//! request in flight and no traffic for `idle_timeout` is closed, and so is one whose
//! reader stopped taking a response for as long (a stalled `/v1/events` subscriber). A
//! response that is streaming (`/v1/events` on a quiet node) is not idle. With TLS
//! (`--web-config`) the handshake must finish within `header_timeout` too.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, Router};
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Semaphore,
    time::{Instant, Sleep},
};
use tower_service::Service;

use crate::views::status::ConnCounts;

/// Largest request head accepted (hyper answers 431 beyond it).
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// A listener's connection counters (served on /v1/status and /metrics).
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    pub(crate) open: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) tls_failed: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
}

impl ConnStats {
    pub(crate) fn counts(&self, listener: &str) -> ConnCounts {
        ConnCounts {
            listener: listener.to_string(),
            open: self.open.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            tls_failed: self.tls_failed.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
        }
    }
}

/// The client's address, on every request of a TCP connection (None on the unix socket):
/// failed credentials are throttled per address (web/throttle.rs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) Option<IpAddr>);

/// A listener's peer address as the key connections and failures are counted by.
pub(crate) trait PeerAddr {
    fn ip(&self) -> Option<IpAddr>;
}

impl PeerAddr for std::net::SocketAddr {
    fn ip(&self) -> Option<IpAddr> {
        Some(std::net::SocketAddr::ip(self))
    }
}

impl PeerAddr for tokio::net::unix::SocketAddr {
    fn ip(&self) -> Option<IpAddr> {
        None
    }
}

/// Connections per client address, so that one client cannot take a listener's every
/// slot: at most a quarter of them each (at least one).
#[derive(Default)]
struct PerClient(std::sync::Mutex<HashMap<IpAddr, usize>>);

/// A client's hold on one of its connections.
struct ClientSlot(Arc<PerClient>, Option<IpAddr>);

impl PerClient {
    fn take(self: &Arc<Self>, ip: Option<IpAddr>, cap: usize) -> Option<ClientSlot> {
        let Some(ip) = ip else {
            return Some(ClientSlot(self.clone(), None));
        };
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), Some(ip)))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.1 {
            let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

/// A connection's byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Accepts connections forever, each served on its own task within `limits`, over TLS when
/// `tls` is given.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) where
    L: axum::serve::Listener,
    L::Addr: PeerAddr,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let client_cap = (limits.max_connections / 4).max(1);
    loop {
        // axum's Listener retries accept errors (EMFILE included) after a pause itself.
        let (io, addr) = listener.accept().await;
        let ip = addr.ip();
        let Some(client) = per_client.take(ip, client_cap) else {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            log::debug!("closing a connection: its client has {client_cap} open already");
            drop(io);
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "closing a connection: {} already open",
                limits.max_connections
            );
            drop(io);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let conn = connection(io, ip, app.clone(), limits, stats.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = (permit, client);
            conn.await;
        });
    }
}

/// Serves one connection from `ip` (None on the unix socket): its TLS handshake, then HTTP/1 until either side
/// closes it or a limit does.
async fn connection<I>(
    io: I,
    ip: Option<IpAddr>,
    app: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let in_flight = Arc::new(AtomicUsize::new(0));
    let io = Watched::new(io, limits.idle_timeout, in_flight.clone());
    let Some(io) = handshake(io, tls, limits.header_timeout, &stats).await else {
        stats.open.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
        let guard = InFlight::new(in_flight.clone());
        let mut app = app.clone();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(Peer(ip));
        async move {
            let resp = app.call(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                Body::new(Guarded {
                    body,
                    _guard: guard,
                })
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        let timed_out = e.is_timeout()
            || std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut);
        if timed_out {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        log::debug!("HTTP connection ended: {e}");
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

/// The connection's stream: plain, or TLS once the handshake finished within `timeout`
/// (None, counted, when it failed or took longer).
async fn handshake<I: Io + 'static>(
    io: I,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeout: Duration,
    stats: &ConnStats,
) -> Option<Box<dyn Io>> {
    let Some(acceptor) = tls else {
        return Some(Box::new(io));
    };
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        Ok(Err(e)) => {
            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
            log::debug!("TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Counts a request as in flight until its response body is dropped (sent or abandoned).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body carrying its request's [`InFlight`] guard.
struct Guarded {
    body: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket with an inactivity deadline, pushed back by every byte moved. When
/// it passes, a pending read fails if no request is in flight (idle keep-alive, a client
/// that never sends) and a pending write fails always (a reader that stopped reading).
struct Watched<IO> {
    io: IO,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    in_flight: Arc<AtomicUsize>,
    /// The last write could not proceed (the peer is not reading).
    write_blocked: bool,
}

impl<IO> Watched<IO> {
    fn new(io: IO, timeout: Duration, in_flight: Arc<AtomicUsize>) -> Self {
        Watched {
            io,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            in_flight,
            write_blocked: false,
        }
    }

    fn touch(&mut self) {
        let at = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(at);
    }

    /// Whether the deadline has passed (registering a wakeup for it otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection inactive for too long")
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.expired(cx) {
                    if self.write_blocked || self.in_flight.load(Ordering::Relaxed) == 0 {
                        return Poll::Ready(Err(timed_out()));
                    }
                    // A response is streaming: quiet is fine; look again a period later.
                    self.touch();
                    let _ = self.expired(cx);
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.write_blocked = false;
                if r.as_ref().is_ok_and(|&n| n > 0) {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.write_blocked = true;
                if self.expired(cx) {
                    return Poll::Ready(Err(timed_out()));
                }
                Poll::Pending
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
