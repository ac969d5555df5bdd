//! The HTTP endpoint that serves the metrics, with the limits that keep slow or crowding
//! clients from holding it.
use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    http::{Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::{CONTENT_TYPE, HttpMetrics, MetricsError, SnapshotFn, render};

/// How the metrics server bounds what clients can hold: a Prometheus scrape sends its request
/// at once and reads the answer at once, so anything slower is a client to cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open from its accept to the end of its response (a
    /// client that does not read the response is cut off here).
    pub connection_timeout: Duration,
    /// Connections open at once. A new one past it closes the oldest connection still sending
    /// its request (so a scrape gets through a crowd of half-sent requests), or is itself
    /// closed when every open connection is being answered.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_connections: 16,
        }
    }
}

#[derive(Debug, Default)]
struct HttpStats {
    over_limit: AtomicU64,
    header_timeout: AtomicU64,
    response_timeout: AtomicU64,
}

impl HttpStats {
    fn metrics(&self) -> HttpMetrics {
        HttpMetrics {
            closed_over_limit: self.over_limit.load(Ordering::Relaxed),
            closed_header_timeout: self.header_timeout.load(Ordering::Relaxed),
            closed_response_timeout: self.response_timeout.load(Ordering::Relaxed),
        }
    }
}

/// One open connection, oldest first in [`Slots`].
struct Slot {
    id: u64,
    /// Its request headers are in: it is being answered, not a candidate for eviction.
    answering: Arc<AtomicBool>,
    close: Arc<tokio::sync::Notify>,
}

type Slots = Arc<Mutex<VecDeque<Slot>>>;

/// How often a failing accept (say, out of file descriptors) is logged at most.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Serves GET /metrics (text format 0.0.4 content type) and GET / (a one-line pointer to
/// /metrics) until `shutdown` resolves, with [`ServerLimits::default`]. A snapshot error
/// answers 500 with the error text (and does not stop the server).
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: SnapshotFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    serve_with_limits(listener, source, shutdown, ServerLimits::default()).await
}

/// [`serve`] with other limits. One request per connection (no keep-alive).
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    source: SnapshotFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
) -> Result<(), MetricsError> {
    let stats = Arc::new(HttpStats::default());
    let slots: Slots = Arc::default();
    let mut connections = tokio::task::JoinSet::new();
    let mut next_id: u64 = 0;
    let mut last_accept_warn: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    let cap = limits.max_connections.max(1);
    // One permit per open socket, released only once its descriptor is closed: an evicted
    // connection closes in its own task, and until it has, no new one is accepted. So the
    // server never holds more than cap + 1 sockets (the one over the cap is what evicts), however
    // fast connections arrive and however busy the machine is.
    let sockets = Arc::new(tokio::sync::Semaphore::new(cap + 1));
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            permit = sockets.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: not fatal. Back
                    // off a little so a persistent error does not spin.
                    if last_accept_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_INTERVAL) {
                        last_accept_warn = Some(Instant::now());
                        tracing::warn!(
                            error = %e,
                            "the metrics server cannot accept a connection (logged at most \
                             once a minute)"
                        );
                    }
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let answering = Arc::new(AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        {
            let mut open = slots.lock().unwrap_or_else(|e| e.into_inner());
            if open.len() >= cap {
                stats.over_limit.fetch_add(1, Ordering::Relaxed);
                match open
                    .iter()
                    .position(|s| !s.answering.load(Ordering::Relaxed))
                {
                    Some(oldest) => {
                        if let Some(evicted) = open.remove(oldest) {
                            evicted.close.notify_one();
                        }
                    }
                    None => {
                        drop(stream);
                        continue;
                    }
                }
            }
            next_id += 1;
            open.push_back(Slot {
                id: next_id,
                answering: answering.clone(),
                close: close.clone(),
            });
        }
        let connection = serve_connection(
            stream,
            source.clone(),
            stats.clone(),
            limits,
            Connection {
                id: next_id,
                answering,
                close,
                slots: slots.clone(),
            },
        );
        connections.spawn(async move {
            // The socket is closed when `serve_connection` returns; only then the permit goes.
            connection.await;
            drop(permit);
        });
    }
    // Open connections are abandoned: a scrape in flight sees its connection closed.
    connections.shutdown().await;
    Ok(())
}

struct Connection {
    id: u64,
    answering: Arc<AtomicBool>,
    close: Arc<tokio::sync::Notify>,
    slots: Slots,
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    source: SnapshotFn,
    stats: Arc<HttpStats>,
    limits: ServerLimits,
    conn: Connection,
) {
    let answering = conn.answering.clone();
    let page_stats = stats.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        answering.store(true, Ordering::Relaxed);
        let source = source.clone();
        let stats = page_stats.clone();
        async move { Ok::<_, Infallible>(route(request, source, stats).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = served => {
            if let Err(e) = result
                && e.is_timeout()
            {
                stats.header_timeout.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Evicted for a newer connection (already counted).
        () = conn.close.notified() => {}
        () = tokio::time::sleep(limits.connection_timeout) => {
            if conn.answering.load(Ordering::Relaxed) {
                stats.response_timeout.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.header_timeout.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut open = conn.slots.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = open.iter().position(|s| s.id == conn.id) {
        open.remove(i);
    }
}

async fn route(
    request: Request<hyper::body::Incoming>,
    source: SnapshotFn,
    stats: Arc<HttpStats>,
) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    match request.uri().path() {
        "/metrics" => metrics_page(source, stats.metrics()).await,
        "/" => index_page().await.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn index_page() -> &'static str {
    "sip-xdp: Prometheus metrics are at /metrics\n"
}

async fn metrics_page(source: SnapshotFn, http: HttpMetrics) -> Response {
    // Reading the maps is a series of blocking syscalls (one per tracked source when counting
    // bans), so it runs off the async workers.
    let outcome = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut snapshot =
            source().map_err(|e| format!("reading the sip-xdp state for metrics failed: {e:#}"))?;
        snapshot.http = http;
        render(&snapshot).map_err(|e| e.to_string())
    })
    .await;
    let error = match outcome {
        Ok(Ok(body)) => return ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Ok(Err(error)) => error,
        Err(join) => format!(
            "reading the sip-xdp state for metrics did not finish: {join}; this is a bug in \
             sip-xdp, please report it"
        ),
    };
    tracing::warn!(error = %error, "metrics scrape failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{error}\n"),
    )
        .into_response()
}
