//! The accept loop: ingest faces the internet, so every connection is bounded in time
//! and number before any request of it reaches a handler.
//!
//! `axum::serve` has no connection cap and no header timeout: idle and header-dripping
//! connections stayed open for as long as the client liked, and enough of them ran
//! the process out of file descriptors. Here each connection is served by hyper's
//! HTTP/1 server with a header-read timeout, wrapped in a read/write inactivity timeout
//! (`tokio-io-timeout`), counted against a global cap and a per-address cap, and
//! watched by hyper-util's `GracefulShutdown` so that shutdown drains it.
//!
//! HTTP/1 only: TradingView and the reverse proxies in front of ingest speak HTTP/1.1
//! to it, and cleartext HTTP/2 would only add an attack surface with its own limits.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::source::Sources;

/// Default `HOOX_HEADER_READ_TIMEOUT_MS`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 5_000;
/// Default `HOOX_IDLE_TIMEOUT_MS`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Default `HOOX_BODY_READ_TIMEOUT_MS`.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 5_000;
/// Default `HOOX_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4_096;
/// Default `HOOX_MAX_CONNECTIONS_PER_IP`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 64;

/// hyper's read buffer, and so the largest request head it will hold: the router
/// answers heads over its own, smaller limits with an envelope; hyper answers a head
/// over this one with a bare 431 (see the README).
const MAX_BUF_SIZE: usize = 64 * 1024;
/// Most headers hyper parses, above the router's own limit for the same reason.
const MAX_HEADERS: usize = 256;
/// Pause after a failed `accept` (out of file descriptors, say), so that the loop does
/// not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connection limits and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From when the server waits for a request until its head is complete.
    pub header_read_timeout: Duration,
    /// Longest time without a byte moving either way.
    pub idle_timeout: Duration,
    /// Longest time a webhook body may take (answered 408).
    pub body_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one address (trusted proxies exempt).
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP as usize,
        }
    }
}

/// Serves `app` on `listener` until `token` is cancelled; then stops accepting, lets
/// every request in flight finish, closes idle connections, and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    sources: Arc<Sources>,
    token: CancellationToken,
) {
    let http = http1(limits.header_read_timeout);
    // A trusted proxy keeps idle upstream connections to reuse; closing one as the proxy
    // sends on it fails that request, so proxies get the idle timeout between requests.
    // They are trusted not to drip headers.
    let proxy_http = http1(limits.idle_timeout.max(limits.header_read_timeout));
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = PerIp::new(limits.max_connections_per_ip, sources);
    let graceful = GracefulShutdown::new();

    loop {
        // Waiting for a free slot before accepting leaves further connections in the
        // kernel's backlog, where they cost no file descriptor of ours.
        let permit = tokio::select! {
            () = token.cancelled() => break,
            permit = Arc::clone(&open).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.claim(peer.ip()) else {
            tracing::debug!(peer.ip = %peer.ip(), "connection refused: per-address cap reached");
            continue;
        };
        let builder = if slot.ip.is_none() {
            &proxy_http
        } else {
            &http
        };
        let connection = builder.serve_connection(
            with_idle_timeout(stream, limits.idle_timeout),
            service(app.clone(), peer),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, peer.ip = %peer.ip(), "connection ended with an error");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// hyper's HTTP/1 server with `header_read_timeout`, which runs whenever it waits for a
/// request head: for the first request, and between requests on a kept-alive connection.
fn http1(header_read_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_BUF_SIZE)
        .max_headers(MAX_HEADERS);
    http
}

/// The stream, closed when no byte moves either way for `idle`.
fn with_idle_timeout(
    stream: TcpStream,
    idle: Duration,
) -> TokioIo<std::pin::Pin<Box<TimeoutStream<TcpStream>>>> {
    let mut stream = TimeoutStream::new(stream);
    stream.set_read_timeout(Some(idle));
    stream.set_write_timeout(Some(idle));
    TokioIo::new(Box::pin(stream))
}

/// The router as a hyper service for one connection, telling handlers its peer.
fn service(
    app: Router,
    peer: SocketAddr,
) -> TowerToHyperService<
    tower::util::MapRequest<Router, impl FnMut(Request<Incoming>) -> Request<Incoming> + Clone>,
> {
    TowerToHyperService::new(app.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }))
}

/// Open connections per peer address.
struct PerIp {
    cap: usize,
    sources: Arc<Sources>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct Slot {
    owner: Arc<PerIp>,
    /// The counted address; `None` for a trusted proxy, which is not counted.
    ip: Option<IpAddr>,
}

impl PerIp {
    fn new(cap: usize, sources: Arc<Sources>) -> Arc<Self> {
        Arc::new(Self {
            cap,
            sources,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, unless it has `cap` open already.
    /// Trusted proxies carry everyone's traffic, so they are not counted.
    fn claim(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        if self.sources.is_trusted_proxy(ip) {
            return Some(Slot {
                owner: Arc::clone(self),
                ip: None,
            });
        }
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: Arc::clone(self),
            ip: Some(ip),
        })
    }

    /// Every update is a whole increment or decrement under the lock, so a panic
    /// elsewhere cannot leave the map half-changed: a poisoned lock is safe to reuse.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut open = self.owner.lock();
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}
