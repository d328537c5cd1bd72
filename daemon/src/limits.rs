//! What one connection or request may make the daemon spend, on every listener (the TLS/TCP
//! inference listener and the admin socket): a request body must keep arriving (`[server]
//! body_timeout`, `body_min_rate`), a response write may not stay blocked on a client that does
//! not read (`send_timeout`), connections are capped per listener and per uid on the socket
//! (below the file-descriptor limit), and accept failures back off instead of spinning.
//!
//! Invariant: every connection either listener accepts is served through [`serve_http1`], so
//! no connection escapes the timeouts, and holds a [`ConnPermit`] for as long as it is open.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// The pace a request body must keep.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// Longest gap between two parts of the body (and before the first).
    pub idle: Duration,
    /// Bytes per second the body must average once `idle` has passed since it began.
    pub min_rate: u64,
}

/// A request body that did not keep its pace; the connection is answered 408 (where a handler
/// still can) and closed.
#[derive(Debug, thiserror::Error)]
pub enum TooSlow {
    /// Nothing arrived for the idle time.
    #[error("the request body stalled: no byte for {idle_s} s ({received} bytes received)")]
    Stalled {
        /// The idle limit, seconds.
        idle_s: u64,
        /// Bytes received before it stalled.
        received: u64,
    },
    /// Bytes arrive, but too slowly.
    #[error("the request body arrives too slowly: {received} bytes in {elapsed_s} s (the minimum is {min_rate} bytes/s after the first {idle_s} s)")]
    Trickle {
        /// Bytes received so far.
        received: u64,
        /// Seconds since the body began.
        elapsed_s: u64,
        /// The minimum rate.
        min_rate: u64,
        /// The grace time, seconds.
        idle_s: u64,
    },
}

/// A body that fails with [`TooSlow`] when it does not keep its [`BodyPace`].
pub struct PacedBody<B> {
    inner: B,
    pace: BodyPace,
    start: tokio::time::Instant,
    last: tokio::time::Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
}

impl<B> PacedBody<B> {
    /// Starts the clocks now.
    pub fn new(inner: B, pace: BodyPace) -> Self {
        let now = tokio::time::Instant::now();
        let mut b = PacedBody {
            inner,
            pace,
            start: now,
            last: now,
            received: 0,
            timer: Box::pin(tokio::time::sleep(pace.idle)),
        };
        b.rearm();
        b
    }

    /// The next instant by which more must have arrived.
    fn deadline(&self) -> tokio::time::Instant {
        let idle = self.last + self.pace.idle;
        let rate = self.start
            + self.pace.idle
            + Duration::from_secs_f64(self.received as f64 / self.pace.min_rate.max(1) as f64);
        idle.min(rate)
    }

    fn rearm(&mut self) {
        let d = self.deadline();
        self.timer.as_mut().reset(d);
    }

    fn why(&self) -> TooSlow {
        let now = tokio::time::Instant::now();
        if now >= self.last + self.pace.idle {
            TooSlow::Stalled {
                idle_s: self.pace.idle.as_secs(),
                received: self.received,
            }
        } else {
            TooSlow::Trickle {
                received: self.received,
                elapsed_s: (now - self.start).as_secs(),
                min_rate: self.pace.min_rate,
                idle_s: self.pace.idle.as_secs(),
            }
        }
    }
}

impl<B> HttpBody for PacedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.received += d.len() as u64;
                    this.last = tokio::time::Instant::now();
                    this.rearm();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    let why = this.why();
                    // Armed again so that a caller polling after the error is not woken in a loop.
                    this.last = tokio::time::Instant::now();
                    this.rearm();
                    return Poll::Ready(Some(Err(Box::new(why))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `e` (a body read error) was a [`TooSlow`].
pub fn too_slow<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a TooSlow> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<TooSlow>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// A stream whose writes fail once one has stayed blocked longer than the send timeout (a
/// client that sends requests but never reads the answers cannot pin the connection).
pub struct SendTimeout<T> {
    inner: T,
    timeout: Duration,
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<T> SendTimeout<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        SendTimeout {
            inner,
            timeout,
            blocked: None,
        }
    }

    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let timeout = self.timeout;
        let t = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if t.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading the response",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx).map(|r| r.map(|()| 0)),
            done => {
                self.blocked = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            done => {
                self.blocked = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx).map(|r| r.map(|()| 0)),
            done => {
                self.blocked = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The timeouts of one HTTP/1.1 connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    /// Time to send a request head, and longest idle keep-alive gap between requests.
    pub header: Duration,
    /// The body's pace.
    pub body: BodyPace,
    /// Longest blocked response write.
    pub send: Duration,
}

impl ConnTimeouts {
    /// From `[server]`.
    pub fn from_config(s: &airlock_config::Server) -> Self {
        ConnTimeouts {
            header: s.header_read_timeout.get(),
            body: BodyPace {
                idle: s.body_timeout.get(),
                min_rate: s.body_min_rate.0,
            },
            send: s.send_timeout.get(),
        }
    }
}

/// Serves `app` on one accepted stream with every timeout, until the client closes, a timeout
/// ends it, or `shutdown` (then the request in flight finishes first).
pub async fn serve_http1<T>(
    stream: T,
    app: Router,
    t: ConnTimeouts,
    shutdown: CancellationToken,
    peer: &str,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let pace = t.body;
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            // A request without a body (GET, Content-Length: 0) needs no clock.
            let req = req.map(|b| {
                if b.is_end_stream() {
                    Body::new(b)
                } else {
                    Body::new(PacedBody::new(b, pace))
                }
            });
            tower::ServiceExt::oneshot(app, req).await
        }
    });
    // The header timeout also bounds an idle keep-alive connection: hyper arms it whenever it
    // waits for the next request head.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(t.header)
        .keep_alive(true)
        .serve_connection(TokioIo::new(SendTimeout::new(stream, t.send)), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// At most one warning per period; counts what it held back.
pub struct RateLimited {
    period: Duration,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl RateLimited {
    /// One warning per `period`.
    pub const fn new(period: Duration) -> Self {
        RateLimited {
            period,
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning may be logged now (`n` were held back since the last one).
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|l| now < l + self.period) {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

/// A cap on the connections open at once on one listener, and per key (the peer's uid on the
/// socket).
pub struct ConnCap {
    listener: &'static str,
    max: usize,
    max_per_key: usize,
    open: Mutex<(usize, HashMap<u32, usize>)>,
    refused: RateLimited,
}

/// One open connection's place under its cap; released when dropped.
pub struct ConnPermit {
    cap: Arc<ConnCap>,
    key: Option<u32>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.cap.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(k) = self.key {
            if let Some(n) = open.1.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(&k);
                }
            }
        }
    }
}

impl ConnCap {
    /// `max` connections on `listener`, `max_per_key` of them per key.
    pub fn new(listener: &'static str, max: usize, max_per_key: usize) -> Arc<Self> {
        Arc::new(ConnCap {
            listener,
            max,
            max_per_key,
            open: Mutex::new((0, HashMap::new())),
            refused: RateLimited::new(Duration::from_secs(10)),
        })
    }

    /// A place for one more connection (of `key`), or `None` (logged, at most every 10 s) when
    /// the cap is reached: the caller closes the connection at once.
    pub fn admit(self: &Arc<Self>, key: Option<u32>) -> Option<ConnPermit> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let per = key.map(|k| open.1.get(&k).copied().unwrap_or(0));
        let why = if open.0 >= self.max {
            Some(format!("{} connections are open (the cap)", self.max))
        } else if per.is_some_and(|n| n >= self.max_per_key) {
            Some(format!(
                "uid {} has {} connections open (the cap per uid)",
                key.unwrap_or_default(),
                self.max_per_key
            ))
        } else {
            None
        };
        if let Some(why) = why {
            drop(open);
            if let Some(held) = self.refused.allow() {
                tracing::warn!(
                    listener = self.listener,
                    refused_since_last_warning = held,
                    "connection refused: {why}"
                );
            }
            return None;
        }
        open.0 += 1;
        if let Some(k) = key {
            *open.1.entry(k).or_insert(0) += 1;
        }
        Some(ConnPermit {
            cap: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// What an accept loop does after a failed `accept`: out of descriptors or memory, it waits,
/// longer each time (10 ms doubling to 1 s) — the loop never spins — and warns at most every
/// 10 s with the number of failures in between. Other failures (a peer that went away) retry
/// at once.
pub struct AcceptBackoff {
    listener: &'static str,
    delay: Duration,
    warn: RateLimited,
}

impl AcceptBackoff {
    /// For the listener named `listener`.
    pub fn new(listener: &'static str) -> Self {
        AcceptBackoff {
            listener,
            delay: Duration::ZERO,
            warn: RateLimited::new(Duration::from_secs(10)),
        }
    }

    /// After a successful accept.
    pub fn ok(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// After a failed accept.
    pub async fn failed(&mut self, e: std::io::Error) {
        let exhausted = matches!(
            e.raw_os_error(),
            Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
        );
        if !exhausted {
            tracing::debug!(listener = self.listener, error = %e, "accept failed");
            return;
        }
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        if let Some(held) = self.warn.allow() {
            tracing::warn!(
                listener = self.listener,
                error = %e,
                failures_since_last_warning = held,
                retry_ms = self.delay.as_millis() as u64,
                "accept failed: out of resources; backing off"
            );
        }
        tokio::time::sleep(self.delay).await;
    }
}

/// What an accept loop does with one accepted connection (plain or TLS): serve it until the
/// client closes, a timeout ends it, or `shutdown` (then what is in flight finishes first).
pub trait ConnHandler: Clone + Send + Sync + 'static {
    /// Serves one connection.
    fn serve<T>(
        self,
        stream: T,
        peer: String,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static;
}

/// One listener's accept loop, shared by every TCP front end (HTTP/1.1, gRPC over HTTP/2):
/// each connection is admitted under `cap` (over it: closed at once, the client retries
/// elsewhere), gets TCP_NODELAY, a TLS handshake within `handshake` when `tls` is given, and
/// is served by `handler`. On `shutdown` the listener closes at once and open connections get
/// `drain` to finish what they have in flight.
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop<H: ConnHandler>(
    name: &'static str,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake: Duration,
    cap: Arc<ConnCap>,
    handler: H,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    let mut backoff = AcceptBackoff::new(name);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => { backoff.ok(); x }
                Err(e) => { backoff.failed(e).await; continue; }
            },
        };
        let Some(permit) = cap.admit(None) else {
            continue;
        };
        // Responses go out in one write; without NODELAY, delayed ACKs stall clients by 40 ms.
        let _ = stream.set_nodelay(true);
        let (handler, token, tls) = (handler.clone(), shutdown.clone(), tls.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let peer = peer.to_string();
            match tls {
                None => handler.serve(stream, peer, token).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => handler.serve(tls_stream, peer, token).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Stop listening at once: new clients are refused (a load balancer moves on) while the
    // connections we have finish.
    drop(listener);
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(
            listener = name,
            connections = tracker.len(),
            timeout_s = drain.as_secs(),
            "shutdown timeout passed with connections still open; exiting anyway"
        );
    }
}

/// Descriptors kept for everything but connections (models, the state database, logs,
/// ONNX Runtime, imports).
pub const FD_RESERVE: u64 = 256;

/// Raises the soft file-descriptor limit towards `wanted` (never above the hard limit) and
/// returns the soft limit in force.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft >= wanted {
        return soft;
    }
    let target = wanted.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => target,
        Err(_) => soft,
    }
}

/// The connection caps that fit under the descriptor limit: `(inference, admin)`. Caps that
/// do not fit are lowered, with a warning naming the limit and `LimitNOFILE=`.
pub fn fit_caps(server: u32, admin: u32) -> (usize, usize) {
    let (server, admin) = (u64::from(server), u64::from(admin));
    let limit = raise_fd_limit(server + admin + FD_RESERVE);
    if server + admin + FD_RESERVE <= limit {
        return (server as usize, admin as usize);
    }
    let room = limit.saturating_sub(FD_RESERVE).max(32);
    let admin_fit = admin.min(room / 8).max(4);
    let server_fit = room.saturating_sub(admin_fit).max(16);
    tracing::warn!(
        fd_limit = limit,
        server_max_connections = server_fit,
        admin_max_connections = admin_fit,
        "the file-descriptor limit is too low for the configured connection caps; caps lowered (raise LimitNOFILE= in the unit)"
    );
    (server_fit as usize, admin_fit as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_key_and_release_on_drop() {
        let cap = ConnCap::new("test", 3, 2);
        let a = cap.admit(Some(1)).expect("first");
        let b = cap.admit(Some(1)).expect("second");
        assert!(cap.admit(Some(1)).is_none(), "third of uid 1");
        let c = cap.admit(Some(2)).expect("uid 2");
        assert!(cap.admit(Some(3)).is_none(), "listener full");
        drop(a);
        assert!(cap.admit(Some(1)).is_some(), "released");
        drop((b, c));
        assert_eq!(cap.open(), 0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_stalled_body_fails_and_a_steady_one_passes() {
        use http_body_util::BodyExt;
        let pace = BodyPace {
            idle: Duration::from_secs(2),
            min_rate: 100,
        };
        // Never sends anything.
        let (_tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
        let e = PacedBody::new(body, pace)
            .collect()
            .await
            .expect_err("stalled");
        assert!(
            matches!(too_slow(&*e), Some(TooSlow::Stalled { .. })),
            "{e}"
        );
        // 1 byte every second: never idle for 2 s, but far below 100 bytes/s.
        let (mut tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
        tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send_data(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
            }
        });
        let e = PacedBody::new(body, pace)
            .collect()
            .await
            .expect_err("trickle");
        assert!(
            matches!(too_slow(&*e), Some(TooSlow::Trickle { .. })),
            "{e}"
        );
        // 200 bytes/s for 5 s, then the end.
        let (mut tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
        tokio::spawn(async move {
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send_data(Bytes::from_static(&[0; 20])).await;
            }
        });
        let got = PacedBody::new(body, pace).collect().await.expect("steady");
        assert_eq!(got.to_bytes().len(), 1000);
    }
}
