//! One client connection: TLS handshake or HTTP/2 prior-knowledge detection, hyper's HTTP/1.1
//! or HTTP/2 server, and a watchdog for the limits hyper does not enforce itself (first request
//! head deadline, keep-alive idle time, the shutdown bound).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::framing::Framing;
use super::{Ctx, Handler};
use crate::l7::stats::{self, ConnGuard};
use crate::l7::{ConnInfo, Frontend, proxy};

/// The client preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long in-flight requests may take to finish once ferryman shuts down, and how long an
/// idle connection may take to close after being told to.
pub(super) const GRACE: Duration = Duration::from_secs(5);

/// How long an HTTP/1 connection on a plain listener stays idle between requests before it
/// is parked: hyper's connection (its 8 KiB read and 8 KiB write buffers and parser state) is
/// taken apart and the socket waited on alone, until the next request arrives. Short enough
/// that thousands of idle keep-alive connections cost little memory; long enough that a busy
/// connection is never taken apart between requests.
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);

/// What one client connection holds while it is open: a `l7.max_connections` permit and the
/// frontend's connection gauge. It lives in the connection's IO so that an upgraded
/// connection (WebSocket), which outlives hyper's connection task, still holds both.
pub(super) struct Hold {
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) _guard: ConnGuard,
}

/// Serves one accepted connection until it ends, `closed` (its listener was removed: in-flight
/// requests finish, then it closes) or the edge shuts down (the same, bounded by [`GRACE`]).
pub(super) async fn serve<H: Handler>(
    ctx: Arc<Ctx<H>>,
    stream: TcpStream,
    client: SocketAddr,
    frontend: Frontend,
    hold: Hold,
    closed: CancellationToken,
) {
    // Responses are written whole by hyper (one write per head+body chunk): Nagle only delays.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%client, error = %e, "TCP_NODELAY");
    }
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(%client, error = %e, "accepted socket has no local address");
            return;
        }
    };
    if frontend == Frontend::Https {
        // Boxed: the TLS state is big and would size every plain connection's task too.
        Box::pin(serve_tls(
            ctx, stream, client, local, frontend, hold, closed,
        ))
        .await;
    } else {
        let first_head = ctx.header_read_timeout;
        let mut stream = stream;
        let state = Arc::new(ConnState::new());
        // The first request head is due within `header_read_timeout` from accept, detection
        // included (hyper's own timer starts with the HTTP/1 parser, after detection).
        let sniffed = tokio::time::timeout(first_head, sniff(&mut stream));
        let Some(sniffed) = until_closed(sniffed, &ctx.shutdown, &closed).await else {
            return;
        };
        let (prefix, h2) = match sniffed {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "client connection failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%client, "no request head within l7.header_read_timeout");
                return;
            }
        };
        let info = ConnInfo {
            frontend,
            client,
            local,
            tls: false,
            sni: None,
        };
        let io = ClientIo::new(stream, prefix, !h2, state.clone(), hold);
        run(ctx, io, h2, info, state, closed).await;
    }
}

/// [`serve`] on the TLS frontend: the handshake (bounded by `l7.header_read_timeout`), then
/// HTTP/2 or HTTP/1.1 as ALPN chose.
async fn serve_tls<H: Handler>(
    ctx: Arc<Ctx<H>>,
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    frontend: Frontend,
    hold: Hold,
    closed: CancellationToken,
) {
    let Some(tls) = &ctx.tls else {
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls());
    let handshake = tokio::time::timeout(ctx.header_read_timeout, acceptor.accept(stream));
    let Some(handshake) = until_closed(handshake, &ctx.shutdown, &closed).await else {
        return;
    };
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%client, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%client, "TLS handshake timed out");
            return;
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let sni = stream
        .get_ref()
        .1
        .server_name()
        .map(|n| n.to_ascii_lowercase().into_boxed_str());
    let info = ConnInfo {
        frontend,
        client,
        local,
        tls: true,
        sni,
    };
    let state = Arc::new(ConnState::new());
    let io = ClientIo::new(stream, Prefix::default(), !h2, state.clone(), hold);
    run(ctx, io, h2, info, state, closed).await;
}

/// `f`, or `None` when the edge shuts down or the listener closes first (a connection that
/// has not sent a request yet has nothing to finish).
async fn until_closed<F: Future>(
    f: F,
    shutdown: &CancellationToken,
    closed: &CancellationToken,
) -> Option<F::Output> {
    tokio::select! {
        r = f => Some(r),
        () = shutdown.cancelled() => None,
        () = closed.cancelled() => None,
    }
}

/// Reads until the bytes stop matching the HTTP/2 preface (HTTP/1) or match it whole (HTTP/2
/// with prior knowledge); `None` when the client closed first.
async fn sniff(stream: &mut TcpStream) -> io::Result<Option<(Prefix, bool)>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(None);
        }
        len += n;
        let h2 = if buf[..len] != H2_PREFACE[..len] {
            false
        } else if len == H2_PREFACE.len() {
            true
        } else {
            continue;
        };
        let prefix = Prefix {
            bytes: Bytes::copy_from_slice(&buf[..len]),
            seen: false,
        };
        return Ok(Some((prefix, h2)));
    }
}

async fn run<H: Handler, S>(
    ctx: Arc<Ctx<H>>,
    io: ClientIo<S>,
    h2: bool,
    info: ConnInfo,
    state: Arc<ConnState>,
    closed: CancellationToken,
) where
    S: Park + AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = info.client;
    let per = Arc::new(PerConn {
        handler: ctx.handler.clone(),
        info: Arc::new(info),
        state: state.clone(),
        h1: !h2,
    });
    let mut service = service_fn(move |req| {
        let per = per.clone();
        async move { Ok::<_, std::convert::Infallible>(per.call(req).await) }
    });
    let mut io = TokioIo::new(io);
    let mut watch = Watch {
        state: &state,
        first_head: ctx.header_read_timeout,
        idle: ctx.idle_timeout,
        closed: &closed,
        shutdown: &ctx.shutdown,
        may_park: !h2 && io.inner().inner.parkable(),
    };
    let result = if h2 {
        let conn = ctx.h2.serve_connection(io, service);
        // Boxed: HTTP/2's connection state would size every HTTP/1 connection's task too.
        let mut conn = Box::pin(conn);
        watch.drive(conn.as_mut(), |c| c.graceful_shutdown()).await
    } else {
        loop {
            let mut conn = ctx.h1.serve_connection(io, service).with_upgrades();
            match watch
                .drive(Pin::new(&mut conn), |c| c.graceful_shutdown())
                .await
            {
                Ok(End::Park) => {}
                other => break other,
            }
            let Some(parts) = conn.into_parts() else {
                break Ok(End::Done);
            };
            service = parts.service;
            let mut client_io = parts.io.into_inner();
            let unparsed = !parts.read_buf.is_empty();
            // A copy: `read_buf` shares (and so keeps) hyper's whole read buffer.
            client_io.prefix = Prefix {
                bytes: Bytes::copy_from_slice(&parts.read_buf),
                seen: true,
            };
            drop(parts.read_buf);
            // hyper stopped between two requests with nothing unparsed: wait for the next
            // request on the socket alone. Otherwise (stray bytes, such as empty lines, read
            // after a request) hyper takes over again at once, and this connection no longer
            // parks.
            if !unparsed && client_io.between_requests() {
                ctx.parks.fetch_add(1, Ordering::Relaxed);
                let woke = watch.parked(&client_io.inner, &ctx.stats).await;
                if let Some(why) = woke {
                    break Ok(End::Dropped(why));
                }
            } else {
                watch.may_park = false;
            }
            io = TokioIo::new(client_io);
        }
    };
    match result {
        Ok(End::Done | End::Park) => {}
        Ok(End::Dropped(why)) => tracing::debug!(%client, why, "client connection closed"),
        Err(e) => tracing::debug!(%client, error = %e, "client connection ended with an error"),
    }
}

/// How [`Watch::drive`] ended a connection.
enum End {
    /// hyper finished it (client closed, keep-alive over, graceful shutdown done, upgrade).
    Done,
    /// Dropped by the watchdog.
    Dropped(&'static str),
    /// Idle for [`PARK_AFTER`] between requests with every response written: the caller
    /// takes hyper's connection apart (only when [`Watch::may_park`]).
    Park,
}

/// A client stream an idle HTTP/1 connection can wait on without hyper. Plain TCP can: its
/// readiness says a request is coming. TLS cannot: rustls may hold decrypted bytes already.
pub(super) trait Park {
    fn parkable(&self) -> bool;
    /// Resolves when the stream has bytes (or EOF, or an error) to read.
    fn readable(&self) -> impl Future<Output = ()> + Send;
}

impl Park for TcpStream {
    fn parkable(&self) -> bool {
        true
    }

    async fn readable(&self) {
        // An error shows up again on the next read, which hyper then reports.
        let _ = TcpStream::readable(self).await;
    }
}

impl Park for tokio_rustls::server::TlsStream<TcpStream> {
    fn parkable(&self) -> bool {
        false
    }

    async fn readable(&self) {
        std::future::pending().await
    }
}

/// The connection watchdog: one timer per connection, re-armed only when it fires.
struct Watch<'a> {
    state: &'a ConnState,
    first_head: Duration,
    idle: Duration,
    closed: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    /// Whether [`End::Park`] may be returned (HTTP/1 on a [`Park`]able stream).
    may_park: bool,
}

impl Watch<'_> {
    /// Polls `conn` to its end, enforcing:
    /// - the first request within `first_head` of the start (hyper's HTTP/1 header timer
    ///   covers later heads; HTTP/2 has none);
    /// - `idle` with no request in flight → graceful shutdown (hyper has no idle timeout; its
    ///   HTTP/1 header timer also runs between keep-alive requests, so HTTP/1's idle time is
    ///   the smaller of the two timeouts, as HAProxy's `timeout http-keep-alive` defaults to
    ///   `timeout http-request`);
    /// - `closed` → graceful shutdown; `shutdown` → graceful shutdown, dropped after [`GRACE`].
    /// - with `may_park`, [`End::Park`] once idle for [`PARK_AFTER`] after a request, every
    ///   response written out.
    async fn drive<C, F>(&self, mut conn: Pin<&mut C>, graceful: F) -> Result<End, hyper::Error>
    where
        C: Future<Output = Result<(), hyper::Error>>,
        F: Fn(Pin<&mut C>),
    {
        // The longest the timer sleeps while nothing is due: `idle`, or PARK_AFTER when the
        // connection may park (a request may end at any time and be followed by silence).
        let tick = if self.may_park {
            self.idle.min(PARK_AFTER)
        } else {
            self.idle
        };
        let timer = tokio::time::sleep_until(self.state.born + self.first_head.min(tick));
        let mut timer = std::pin::pin!(timer);
        let mut draining = false;
        let mut forced: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                r = conn.as_mut() => return r.map(|()| End::Done),
                () = self.shutdown.cancelled(), if forced.is_none() => {
                    if !draining {
                        graceful(conn.as_mut());
                        draining = true;
                    }
                    let until = Instant::now() + GRACE;
                    forced = Some(until);
                    timer.as_mut().reset(until);
                }
                () = self.closed.cancelled(), if !draining => {
                    graceful(conn.as_mut());
                    draining = true;
                }
                () = timer.as_mut() => {
                    let now = Instant::now();
                    if forced.is_some_and(|f| now >= f) {
                        return Ok(End::Dropped("not finished within the grace period"));
                    }
                    match self.state.due(self.first_head, self.idle) {
                        // Busy: a request ending from now on is due `idle` after its end at
                        // the earliest (parked PARK_AFTER after), so this never wakes too late.
                        None => timer.as_mut().reset(now + tick),
                        // Before the first request, wake at least every `tick` too: the first
                        // request may come and go well before `first_head`.
                        Some(due) if due > now && self.state.requests() == 0 => {
                            timer.as_mut().reset(due.min(now + tick));
                        }
                        Some(due) if due > now && self.may_park && !draining => {
                            let park_at = due - self.idle + PARK_AFTER;
                            if now >= park_at && self.state.between_requests() {
                                return Ok(End::Park);
                            }
                            // Not yet idle long enough, or a response is still being
                            // written: look again later.
                            let next = if now >= park_at { now + PARK_AFTER } else { park_at };
                            timer.as_mut().reset(due.min(next));
                        }
                        Some(due) if due > now => timer.as_mut().reset(due),
                        Some(_) if self.state.requests() == 0 => {
                            return Ok(End::Dropped("no request head within l7.header_read_timeout"));
                        }
                        Some(_) => {
                            if !draining {
                                graceful(conn.as_mut());
                                draining = true;
                            }
                            let until = now + GRACE;
                            forced = Some(until);
                            timer.as_mut().reset(until);
                        }
                    }
                }
            }
        }
    }
}

impl Watch<'_> {
    /// Waits, with hyper's connection taken apart, until the client sends its next request
    /// (`None`), or the connection is due to close (`Some(why)`): idle timeout, listener
    /// removed, shutdown. Counted in `ferryman_l7_parked_connections` meanwhile.
    async fn parked<S: Park>(&self, stream: &S, stats: &stats::Stats) -> Option<&'static str> {
        let _parked = stats.parked();
        let due = self
            .state
            .due(self.first_head, self.idle)
            .unwrap_or_else(Instant::now);
        tokio::select! {
            () = stream.readable() => None,
            () = tokio::time::sleep_until(due) => Some("idle for l7.idle_timeout"),
            () = self.closed.cancelled() => Some("listener closed"),
            () = self.shutdown.cancelled() => Some("shutting down"),
        }
    }
}

/// Per-connection counters shared by the service, the IO and the watchdog.
pub(super) struct ConnState {
    born: Instant,
    in_flight: AtomicU32,
    /// Requests handed to the service so far.
    requests: AtomicU64,
    /// When `in_flight` last fell to 0, in ms since `born`.
    last_done_ms: AtomicU64,
    /// [`Framing::conflict`] as the IO found it (0: none).
    conflict: AtomicU64,
    /// A 101 went out: what follows on the connection is not HTTP/1.
    upgraded: AtomicBool,
    /// Every byte hyper wrote has been flushed (no write since the last completed flush).
    flushed: AtomicBool,
    /// The client has sent complete requests only ([`Framing::between_requests`]).
    between: AtomicBool,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
            conflict: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            flushed: AtomicBool::new(true),
            between: AtomicBool::new(true),
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Between requests: none in flight, nothing of the next one read, every response byte
    /// handed to the socket.
    fn between_requests(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.between.load(Ordering::Acquire)
            && self.flushed.load(Ordering::Acquire)
            && !self.upgraded.load(Ordering::Acquire)
    }

    /// When the connection is due to close if nothing happens; `None` while a request is in
    /// flight.
    fn due(&self, first_head: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.requests() == 0 {
            return Some(self.born + first_head);
        }
        let done = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(self.born + done + idle)
    }
}

/// One request in flight (until its response body is dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: &Arc<ConnState>) -> (InFlight, u64) {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        let n = state.requests.fetch_add(1, Ordering::AcqRel) + 1;
        (InFlight(state.clone()), n)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        let ms = u64::try_from(s.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        s.last_done_ms.store(ms, Ordering::Release);
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the service closure of one connection holds.
struct PerConn<H> {
    handler: Arc<H>,
    info: Arc<ConnInfo>,
    state: Arc<ConnState>,
    h1: bool,
}

impl<H: Handler> PerConn<H> {
    async fn call(&self, req: Request<Incoming>) -> Response<GuardedBody> {
        let (guard, n) = InFlight::start(&self.state);
        if self.h1 && self.state.conflict.load(Ordering::Acquire) == n {
            tracing::debug!(
                client = %self.info.client,
                "request with both Content-Length and Transfer-Encoding: 400, connection closed"
            );
            return bad_request(guard);
        }
        // Boxed: hyper keeps room for one service future per connection, busy or idle, so
        // the (large) request future lives on the heap only while a request is in flight.
        let response = Box::pin(self.handler.handle(self.info.clone(), req)).await;
        if self.h1 && response.status() == StatusCode::SWITCHING_PROTOCOLS {
            self.state.upgraded.store(true, Ordering::Release);
        }
        response.map(|inner| GuardedBody {
            inner,
            _guard: guard,
        })
    }
}

/// 400 with `Connection: close` (hyper closes after writing it; the unread body is dropped).
fn bad_request(guard: InFlight) -> Response<GuardedBody> {
    let body = http_body_util::Full::new(Bytes::from_static(b"400 Bad Request\n"))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(GuardedBody {
        inner: body,
        _guard: guard,
    });
    *r.status_mut() = StatusCode::BAD_REQUEST;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// A response body that keeps its request counted as in flight until hyper drops it (after
/// the last byte was written, or when the client went away).
pub(super) struct GuardedBody {
    inner: proxy::Body,
    _guard: InFlight,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = proxy::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, proxy::BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Bytes read before hyper's connection started, replayed to it first: the bytes read while
/// detecting the protocol, or those an earlier hyper connection of this client had read but
/// not parsed.
#[derive(Default)]
struct Prefix {
    bytes: Bytes,
    /// Already followed by [`Framing`] (read through [`ClientIo`] before).
    seen: bool,
}

/// The client's stream as hyper sees it: replays the detection prefix, follows HTTP/1
/// framing ([`Framing`]) and holds the connection's permit and gauge.
struct ClientIo<S> {
    inner: S,
    prefix: Prefix,
    /// HTTP/1 only, until it stops.
    framing: Option<Box<Framing>>,
    state: Arc<ConnState>,
    _hold: Hold,
}

impl<S> ClientIo<S> {
    fn new(inner: S, prefix: Prefix, h1: bool, state: Arc<ConnState>, hold: Hold) -> Self {
        ClientIo {
            inner,
            prefix,
            framing: h1.then(Box::default),
            state,
            _hold: hold,
        }
    }

    /// Whether the client has sent nothing beyond complete requests so far.
    fn between_requests(&self) -> bool {
        self.framing.as_ref().is_some_and(|f| f.between_requests())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if !this.prefix.bytes.is_empty() {
            let n = this.prefix.bytes.len().min(buf.remaining());
            buf.put_slice(&this.prefix.bytes.split_to(n));
            if this.prefix.seen {
                return Poll::Ready(Ok(()));
            }
        } else {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        }
        if let Some(f) = &mut this.framing {
            if this.state.upgraded.load(Ordering::Acquire) {
                this.framing = None;
            } else {
                f.feed(&buf.filled()[before..]);
                if let Some(n) = f.conflict() {
                    this.state.conflict.store(n, Ordering::Release);
                }
                if f.stopped() {
                    this.framing = None;
                }
            }
            let between = this.framing.as_ref().is_some_and(|f| f.between_requests());
            this.state.between.store(between, Ordering::Release);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.state.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.state.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        if r.is_ok() {
            // hyper flushes the IO after its own buffer went out whole (h1 `Buffered`).
            this.state.flushed.store(true, Ordering::Release);
        }
        Poll::Ready(r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
