//! UDP and TCP query loops on `dns.listen`, and the task that swaps in a new zone per snapshot.
//!
//! - **UDP**: `dns.threads` sockets (0 = one per core) bound to the same address with
//!   SO_REUSEPORT, so the kernel spreads datagrams over them; each is served by a dedicated OS
//!   thread with blocking `recv_from`/`send_to` (a 100 ms read timeout lets it see the stop
//!   flag). Measured against one tokio task per socket on the same sockets
//!   (`benches/dns.rs --serve`, dnsperf on the other core, 10 000-name zone, 60 % hits, 20 %
//!   NXDOMAIN, 20 % SRV, one socket, alternating 10 s runs on a shared 2-core VM): threads
//!   median 104k qps (91-114k, 3 runs) vs tokio 88k (84-110k); a second set of 5 pairs, with
//!   other builds running, threads 64k (47-88k) vs tokio 55k (46-59k), threads ahead in 4 of 5
//!   pairs. The blocking loop does one syscall per receive and one per send; tokio adds
//!   readiness bookkeeping and wake-ups per datagram. recvmmsg would need `unsafe` (the crate
//!   forbids it) for a gain dnsperf on one core cannot show. Buffers are reused: the hit path
//!   does not allocate (counted in `benches/dns.rs`). Queries for names outside our zones are
//!   handed to the tokio runtime ([`Forwarder`]), and the answer is sent from the socket the
//!   query came in on.
//! - **TCP**: a tokio listener; a semaphore of `dns.tcp_max_connections` permits is acquired
//!   *before* `accept`, so excess clients wait in the kernel backlog. Each connection reads
//!   2-byte-length-framed queries one after the other (pipelining: answers go back in order),
//!   closes after `dns.tcp_idle_timeout` without a complete query, and never truncates. A
//!   frame shorter than a header closes the connection; a forwarded query is awaited before the
//!   next frame is read.
//! - **Zone updates**: a task follows the published snapshots; for the newest one (several that
//!   arrive during a build are coalesced) it builds `Records` and the [`Zone`] on the blocking
//!   pool and swaps both in. Queries before the first snapshot get SERVFAIL.
//!
//! Everything stops when the shutdown token fires.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus::IntCounter;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::RecordsHandle;
use super::forward::Forwarder;
use super::records::Records;
use super::zone::{self, Ctx, Outcome, Zone, rcode, rtype};
use crate::config::{Config, DnsConfig};
use crate::metrics::metrics;
use crate::model::Snapshots;

/// How often a blocked UDP thread wakes up to check for shutdown.
const UDP_POLL: Duration = Duration::from_millis(100);
/// Receive buffer: the largest UDP payload.
const RECV_BUF: usize = 65535;

/// The bound DNS sockets: UDP and TCP on one address and port (`main` binds them before anything
/// starts, so a port in use fails start-up and names `dns.listen`).
pub struct Sockets {
    /// One per UDP thread, all on the same address (SO_REUSEPORT).
    pub udp: Vec<UdpSocket>,
    pub tcp: std::net::TcpListener,
}

impl Sockets {
    /// Binds `dns.listen` for UDP (`dns.threads` sockets, 0 = one per core) and TCP (the same
    /// port when it is 0: the kernel picks a free UDP port, which may be taken for TCP, so that
    /// case tries again with another port, a bounded number of times).
    pub fn bind(dns: &DnsConfig) -> io::Result<Sockets> {
        const PORT_ZERO_ATTEMPTS: usize = 64;
        let attempts = if dns.listen.port() == 0 {
            PORT_ZERO_ATTEMPTS
        } else {
            1
        };
        let mut last = None;
        for _ in 0..attempts {
            match Sockets::bind_once(dns) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
    }

    fn bind_once(dns: &DnsConfig) -> io::Result<Sockets> {
        let threads = match dns.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let first = udp_socket(dns.listen)?;
        let addr = first.local_addr()?;
        let mut udp = vec![first];
        for _ in 1..threads {
            udp.push(udp_socket(addr)?);
        }
        let tcp = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        tcp.set_reuse_address(true)?;
        if addr.is_ipv6() {
            tcp.set_only_v6(false).ok();
        }
        tcp.bind(&addr.into())?;
        tcp.listen(1024)?;
        Ok(Sockets {
            udp,
            tcp: tcp.into(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A UDP socket with SO_REUSEPORT bound to `addr`.
fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false).ok();
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Serves DNS on `sockets` until `shutdown`, swapping in a new zone (and `records`) for every
/// published snapshot.
pub async fn run(
    sockets: Sockets,
    config: Arc<Config>,
    snapshots: Snapshots,
    records: RecordsHandle,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let zone: Arc<ArcSwapOption<Zone>> = Arc::default();
    let updates = tokio::spawn(update_zone(
        config.clone(),
        snapshots,
        zone.clone(),
        records,
        shutdown.clone(),
    ));
    let forwarder = Forwarder::new(&config.dns);
    let served = serve(sockets, &config.dns, zone, forwarder, shutdown).await;
    updates.await.ok();
    served
}

/// The shared state of the query loops.
struct Shared {
    zone: Arc<ArcSwapOption<Zone>>,
    forwarder: Option<Arc<Forwarder>>,
    metrics: QueryMetrics,
}

/// How UDP sockets are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpFlavour {
    /// One OS thread per socket, blocking `recv_from`/`send_to` (the default: measured faster).
    Threads,
    /// One tokio task per socket (kept for the measurement in `benches/dns.rs`).
    Tokio,
}

/// Serves queries from `zone` (`None` = not ready: SERVFAIL) until `shutdown`. `run` without the
/// zone-update task, for tests and benchmarks that install their own zone.
pub async fn serve(
    sockets: Sockets,
    dns: &DnsConfig,
    zone: Arc<ArcSwapOption<Zone>>,
    forwarder: Option<Arc<Forwarder>>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with(sockets, dns, zone, forwarder, shutdown, UdpFlavour::Threads).await
}

/// [`serve`] with a choice of UDP loop.
pub async fn serve_with(
    sockets: Sockets,
    dns: &DnsConfig,
    zone: Arc<ArcSwapOption<Zone>>,
    forwarder: Option<Arc<Forwarder>>,
    shutdown: CancellationToken,
    flavour: UdpFlavour,
) -> io::Result<()> {
    let shared = Arc::new(Shared {
        zone,
        forwarder,
        metrics: QueryMetrics::new(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let handle = tokio::runtime::Handle::current();
    let mut threads = Vec::new();
    let mut tasks = JoinSet::new();
    for (i, sock) in sockets.udp.into_iter().enumerate() {
        match flavour {
            UdpFlavour::Threads => {
                sock.set_read_timeout(Some(UDP_POLL))?;
                let (shared, stop, handle) = (shared.clone(), stop.clone(), handle.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || udp_loop(Arc::new(sock), &shared, &stop, &handle))?;
                threads.push(thread);
            }
            UdpFlavour::Tokio => {
                sock.set_nonblocking(true)?;
                let sock = tokio::net::UdpSocket::from_std(sock)?;
                tasks.spawn(udp_task(sock, shared.clone(), shutdown.clone()));
            }
        }
    }
    sockets.tcp.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(sockets.tcp)?;
    tcp_accept(listener, dns, shared, shutdown.clone()).await;
    stop.store(true, Ordering::Relaxed);
    tasks.join_all().await;
    tokio::task::spawn_blocking(move || {
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a DNS UDP thread panicked");
            }
        }
    })
    .await
    .ok();
    Ok(())
}

// === UDP ===

/// What to do with a UDP datagram after [`udp_answer`].
enum UdpAction {
    /// Send `out`.
    Send,
    /// Hand the query to the forwarder.
    Forward(u16, Arc<Forwarder>),
    Nothing,
}

/// Answers one datagram into `out` (shared by both UDP loop flavours).
fn udp_answer(shared: &Shared, query: &[u8], ctx: Ctx, out: &mut Vec<u8>) -> UdpAction {
    let outcome = {
        let zone = shared.zone.load();
        zone::respond(zone.as_deref(), query, ctx, out)
    };
    match outcome {
        Outcome::Answered {
            qtype,
            rcode,
            truncated,
        } => {
            shared.metrics.count(qtype, rcode);
            if truncated {
                metrics().dns_truncated.inc();
            }
            UdpAction::Send
        }
        Outcome::Forward { qtype } => match &shared.forwarder {
            Some(fwd) => UdpAction::Forward(qtype, fwd.clone()),
            None => {
                zone::error_response(query, rcode::REFUSED, ctx, out);
                shared.metrics.count(qtype, rcode::REFUSED);
                UdpAction::Send
            }
        },
        Outcome::Dropped(reason) => {
            metrics()
                .dns_dropped
                .with_label_values(&[reason.label()])
                .inc();
            UdpAction::Nothing
        }
    }
}

/// One UDP socket's loop: blocking receive, answer, send; until `stop`.
fn udp_loop(
    sock: Arc<UdpSocket>,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    handle: &tokio::runtime::Handle,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::with_capacity(RECV_BUF);
    let mut rotation = 0u32;
    let forwarding = shared.forwarder.is_some();
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // ICMP errors of earlier sends may surface here; the socket stays usable.
                tracing::debug!("dns udp receive: {e}");
                continue;
            }
        };
        rotation = rotation.wrapping_add(1);
        let ctx = Ctx {
            tcp: false,
            forwarding,
            rotation,
        };
        let query = &buf[..n];
        match udp_answer(shared, query, ctx, &mut out) {
            UdpAction::Send => send(&sock, &out, peer),
            UdpAction::Forward(qtype, fwd) => {
                let (sock, shared) = (sock.clone(), shared.clone());
                let query = query.to_vec();
                handle.spawn(async move {
                    let mut out = Vec::new();
                    forward(&fwd, &query, ctx, qtype, &shared.metrics, &mut out).await;
                    send(&sock, &out, peer);
                });
            }
            UdpAction::Nothing => {}
        }
    }
}

/// The tokio flavour of [`udp_loop`], kept to measure against it (`benches/dns.rs --serve
/// ... --tokio`): one task per socket, `recv_from`/`send_to` through the reactor.
async fn udp_task(sock: tokio::net::UdpSocket, shared: Arc<Shared>, shutdown: CancellationToken) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::with_capacity(RECV_BUF);
    let mut rotation = 0u32;
    let forwarding = shared.forwarder.is_some();
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("dns udp receive: {e}");
                    continue;
                }
            },
        };
        rotation = rotation.wrapping_add(1);
        let ctx = Ctx {
            tcp: false,
            forwarding,
            rotation,
        };
        let query = &buf[..n];
        match udp_answer(&shared, query, ctx, &mut out) {
            UdpAction::Send => {
                if let Err(e) = sock.send_to(&out, peer).await {
                    tracing::debug!("dns udp send to {peer}: {e}");
                }
            }
            UdpAction::Forward(qtype, fwd) => {
                let (sock, shared) = (sock.clone(), shared.clone());
                let query = query.to_vec();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    forward(&fwd, &query, ctx, qtype, &shared.metrics, &mut out).await;
                    sock.send_to(&out, peer).await.ok();
                });
            }
            UdpAction::Nothing => {}
        }
    }
}

fn send(sock: &UdpSocket, out: &[u8], peer: SocketAddr) {
    if out.is_empty() {
        return;
    }
    if let Err(e) = sock.send_to(out, peer) {
        tracing::debug!("dns udp send to {peer}: {e}");
    }
}

/// Forwards `query` and writes the upstream answer (or SERVFAIL) into `out`. Over UDP an
/// upstream answer larger than the client's limit is replaced by an empty one with TC set.
async fn forward(
    fwd: &Forwarder,
    query: &[u8],
    ctx: Ctx,
    qtype: u16,
    m: &QueryMetrics,
    out: &mut Vec<u8>,
) {
    match fwd.forward(query, ctx.tcp).await {
        Some(answer) if answer.len() >= zone::HEADER_LEN => {
            if !ctx.tcp && answer.len() > zone::udp_limit(query) {
                zone::error_response(query, rcode::NOERROR, ctx, out);
                if out.len() > 2 {
                    out[2] |= 0x02;
                }
                metrics().dns_truncated.inc();
            } else {
                *out = answer;
            }
            m.count(qtype, u16::from(out[3] & 0x0f));
        }
        _ => {
            zone::error_response(query, rcode::SERVFAIL, ctx, out);
            m.count(qtype, rcode::SERVFAIL);
        }
    }
}

// === TCP ===

/// Accepts TCP connections (at most `dns.tcp_max_connections` at once) until `shutdown`.
async fn tcp_accept(
    listener: tokio::net::TcpListener,
    dns: &DnsConfig,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(dns.tcp_max_connections));
    let idle = dns.tcp_idle_timeout;
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("dns tcp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
        let (shared, token) = (shared.clone(), shutdown.clone());
        conns.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                r = tcp_conn(stream, &shared, idle) => {
                    if let Err(e) = r {
                        tracing::debug!("dns tcp connection: {e}");
                    }
                }
            }
            drop(permit);
        });
    }
    conns.shutdown().await;
}

/// One TCP connection: length-prefixed queries answered in order until EOF, an error or
/// `idle` without a complete query.
async fn tcp_conn(
    stream: tokio::net::TcpStream,
    shared: &Shared,
    idle: Duration,
) -> io::Result<()> {
    stream.set_nodelay(true).ok();
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::new(rd);
    let mut query = vec![0u8; zone::MAX_TCP_MESSAGE];
    let mut out = Vec::with_capacity(4096);
    let mut frame = Vec::with_capacity(4096);
    let mut rotation = 0u32;
    let forwarding = shared.forwarder.is_some();
    loop {
        let read = async {
            let len = usize::from(rd.read_u16().await?);
            rd.read_exact(&mut query[..len]).await?;
            io::Result::Ok(len)
        };
        let len = match tokio::time::timeout(idle, read).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        rotation = rotation.wrapping_add(1);
        let ctx = Ctx {
            tcp: true,
            forwarding,
            rotation,
        };
        let q = &query[..len];
        let outcome = {
            let zone = shared.zone.load();
            zone::respond(zone.as_deref(), q, ctx, &mut out)
        };
        match outcome {
            Outcome::Answered { qtype, rcode, .. } => shared.metrics.count(qtype, rcode),
            Outcome::Forward { qtype } => match &shared.forwarder {
                Some(fwd) => forward(fwd, q, ctx, qtype, &shared.metrics, &mut out).await,
                None => {
                    zone::error_response(q, rcode::REFUSED, ctx, &mut out);
                    shared.metrics.count(qtype, rcode::REFUSED);
                }
            },
            Outcome::Dropped(reason) => {
                metrics()
                    .dns_dropped
                    .with_label_values(&[reason.label()])
                    .inc();
                // Nothing sensible to answer on a stream that carries garbage.
                return Ok(());
            }
        }
        if out.is_empty() || out.len() > zone::MAX_TCP_MESSAGE {
            continue;
        }
        frame.clear();
        frame.extend_from_slice(&(out.len() as u16).to_be_bytes());
        frame.extend_from_slice(&out);
        wr.write_all(&frame).await?;
    }
}

// === Zone updates ===

/// Follows `snapshots`: for each new one, builds the records and the zone off the runtime and
/// swaps them in. Snapshots published while a build runs are coalesced into the newest.
async fn update_zone(
    config: Arc<Config>,
    snapshots: Snapshots,
    zone: Arc<ArcSwapOption<Zone>>,
    records: RecordsHandle,
    shutdown: CancellationToken,
) {
    let mut rx = snapshots.subscribe();
    let m = metrics();
    loop {
        let snapshot = rx.borrow_and_update().clone();
        if snapshot.version > 0 {
            let config = config.clone();
            let built = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let r = Records::build(&snapshot, &config);
                let z = Zone::compile(&r, &config.dns);
                (r, z, started.elapsed())
            })
            .await;
            match built {
                Ok((r, z, took)) => {
                    let c = z.counts();
                    for (t, n) in [
                        ("A", c.a),
                        ("AAAA", c.aaaa),
                        ("SRV", c.srv),
                        ("PTR", c.ptr),
                        ("SOA", c.soa),
                        ("NS", c.ns),
                    ] {
                        m.dns_zone_records.with_label_values(&[t]).set(n as i64);
                    }
                    let old_zone = zone.swap(Some(Arc::new(z)));
                    let old_records = records.swap(Some(Arc::new(r)));
                    // Freeing a large zone and record set takes tens of milliseconds (half a
                    // million small allocations for 10 000 tasks): not on a runtime worker.
                    tokio::task::spawn_blocking(move || drop((old_zone, old_records)));
                    m.dns_zone_swaps.inc();
                    m.dns_zone_build_duration.observe(took.as_secs_f64());
                    tracing::debug!("dns zone swapped in ({took:?})");
                }
                Err(e) => tracing::error!("dns zone build failed: {e}"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

// === Metrics ===

const QTYPES: [(u16, &str); 7] = [
    (rtype::A, "A"),
    (rtype::AAAA, "AAAA"),
    (rtype::SRV, "SRV"),
    (rtype::PTR, "PTR"),
    (rtype::SOA, "SOA"),
    (rtype::NS, "NS"),
    (rtype::ANY, "ANY"),
];
const RCODES: [(u16, &str); 7] = [
    (rcode::NOERROR, "NOERROR"),
    (rcode::FORMERR, "FORMERR"),
    (rcode::SERVFAIL, "SERVFAIL"),
    (rcode::NXDOMAIN, "NXDOMAIN"),
    (rcode::NOTIMP, "NOTIMP"),
    (rcode::REFUSED, "REFUSED"),
    (rcode::BADVERS, "BADVERS"),
];

/// `dns_queries{qtype,rcode}` resolved once: no label look-up per query.
struct QueryMetrics {
    /// `(QTYPES.len() + 1) × (RCODES.len() + 1)`, the last of each = `other`.
    counters: Vec<IntCounter>,
}

impl QueryMetrics {
    fn new() -> QueryMetrics {
        let m = &metrics().dns_queries;
        let qtypes = QTYPES.iter().map(|q| q.1).chain(["other"]);
        let mut counters = Vec::new();
        for q in qtypes {
            for r in RCODES.iter().map(|r| r.1).chain(["other"]) {
                counters.push(m.with_label_values(&[q, r]));
            }
        }
        QueryMetrics { counters }
    }

    fn count(&self, qtype: u16, rc: u16) {
        let q = QTYPES
            .iter()
            .position(|t| t.0 == qtype)
            .unwrap_or(QTYPES.len());
        let r = RCODES
            .iter()
            .position(|t| t.0 == rc)
            .unwrap_or(RCODES.len());
        if let Some(c) = self.counters.get(q * (RCODES.len() + 1) + r) {
            c.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    use tokio::net::{TcpStream, UdpSocket};
    use tokio::time::timeout;

    use super::*;
    use crate::dns::zone::fuzz::sample_zone;
    use crate::model::state::{ClusterState, Framework};
    use crate::model::{Publisher, UpdateKind};

    const WAIT: Duration = Duration::from_secs(5);

    fn dns() -> DnsConfig {
        let mut d = Config::default().dns;
        d.listen = "127.0.0.1:0".parse().unwrap();
        d.threads = 2;
        d.tcp_max_connections = 4;
        d.tcp_idle_timeout = Duration::from_secs(2);
        d
    }

    struct Server {
        addr: SocketAddr,
        zone: Arc<ArcSwapOption<Zone>>,
        token: CancellationToken,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    fn start(zone: Option<Zone>, dns: DnsConfig) -> Server {
        let sockets = Sockets::bind(&dns).unwrap();
        assert_eq!(sockets.udp.len(), 2);
        let addr = sockets.local_addr().unwrap();
        let zone = Arc::new(ArcSwapOption::new(zone.map(Arc::new)));
        let token = CancellationToken::new();
        let task = tokio::spawn({
            let (zone, token) = (zone.clone(), token.clone());
            async move { serve(sockets, &dns, zone, None, token).await }
        });
        Server {
            addr,
            zone,
            token,
            task,
        }
    }

    impl Server {
        async fn stop(self) {
            self.token.cancel();
            timeout(WAIT, self.task).await.unwrap().unwrap().unwrap();
        }
    }

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    async fn udp(addr: SocketAddr, q: &[u8]) -> Message {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(q, addr).await.unwrap();
        let mut buf = vec![0; 65535];
        let n = timeout(WAIT, s.recv(&mut buf)).await.unwrap().unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    async fn tcp_send(s: &mut TcpStream, q: &[u8]) {
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(q);
        s.write_all(&f).await.unwrap();
    }

    async fn tcp_read(s: &mut TcpStream) -> Message {
        let len = timeout(WAIT, s.read_u16()).await.unwrap().unwrap();
        let mut buf = vec![0; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_and_tcp_answer_from_the_zone() {
        let srv = start(Some(sample_zone()), dns());
        let m = udp(srv.addr, &query("web.marathon.mesos.", RecordType::A, None)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 2);
        let m = udp(srv.addr, &query("nope.mesos.", RecordType::A, None)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        // Outside our zones, no resolvers: REFUSED.
        let m = udp(srv.addr, &query("example.com.", RecordType::A, None)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.recursion_available);

        // Truncated over UDP, complete over TCP.
        let big = query("big.marathon.mesos.", RecordType::A, None);
        let m = udp(srv.addr, &big).await;
        assert!(m.metadata.truncation);
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        tcp_send(&mut s, &big).await;
        let m = tcp_read(&mut s).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
        // Pipelined: three queries in one write, three answers in order.
        let mut f = Vec::new();
        for name in ["web.marathon.mesos.", "nope.mesos.", "example.com."] {
            let q = query(name, RecordType::A, None);
            f.extend_from_slice(&(q.len() as u16).to_be_bytes());
            f.extend_from_slice(&q);
        }
        s.write_all(&f).await.unwrap();
        let rcodes = [
            tcp_read(&mut s).await.metadata.response_code,
            tcp_read(&mut s).await.metadata.response_code,
            tcp_read(&mut s).await.metadata.response_code,
        ];
        assert_eq!(
            rcodes,
            [
                ResponseCode::NoError,
                ResponseCode::NXDomain,
                ResponseCode::Refused
            ]
        );
        srv.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servfail_until_a_zone_is_installed() {
        let srv = start(None, dns());
        let q = query("web.marathon.mesos.", RecordType::A, None);
        let m = udp(srv.addr, &q).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        srv.zone.store(Some(Arc::new(sample_zone())));
        let m = udp(srv.addr, &q).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        srv.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_datagrams_and_frames_do_not_stop_the_server() {
        let srv = start(Some(sample_zone()), dns());
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Random bytes, a short header, a response, a pointer loop: dropped or FORMERR.
        let mut garbage: Vec<Vec<u8>> = vec![vec![], vec![1, 2, 3], vec![0xff; 40]];
        let mut resp = query("web.marathon.mesos.", RecordType::A, None);
        resp[2] |= 0x80;
        garbage.push(resp);
        garbage.push(vec![
            0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ]);
        for g in &garbage {
            s.send_to(g, srv.addr).await.unwrap();
        }
        let m = udp(srv.addr, &query("web.marathon.mesos.", RecordType::A, None)).await;
        assert_eq!(m.answers.len(), 2);

        // A length prefix larger than what follows, then EOF; a prefix shorter than a header;
        // an oversize (65535) frame of garbage.
        let mut c = TcpStream::connect(srv.addr).await.unwrap();
        c.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
        drop(c);
        let mut c = TcpStream::connect(srv.addr).await.unwrap();
        c.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
        let mut buf = [0u8; 2];
        // Closed without an answer.
        assert!(matches!(
            timeout(WAIT, c.read(&mut buf)).await.unwrap(),
            Ok(0) | Err(_)
        ));
        let mut c = TcpStream::connect(srv.addr).await.unwrap();
        let mut frame = vec![0xff, 0xff];
        frame.extend(std::iter::repeat_n(0u8, 65535));
        c.write_all(&frame).await.unwrap();
        let m = tcp_read(&mut c).await;
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        tcp_send(&mut c, &query("web.marathon.mesos.", RecordType::A, None)).await;
        assert_eq!(tcp_read(&mut c).await.answers.len(), 2);
        srv.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_connections_are_limited_and_idle_ones_closed() {
        let mut d = dns();
        d.tcp_max_connections = 1;
        d.tcp_idle_timeout = Duration::from_millis(300);
        let srv = start(Some(sample_zone()), d);
        let q = query("web.marathon.mesos.", RecordType::A, None);
        let mut first = TcpStream::connect(srv.addr).await.unwrap();
        tcp_send(&mut first, &q).await;
        tcp_read(&mut first).await;
        // The second connection waits in the backlog until the first is closed (idle).
        let mut second = TcpStream::connect(srv.addr).await.unwrap();
        tcp_send(&mut second, &q).await;
        let started = Instant::now();
        assert_eq!(tcp_read(&mut second).await.answers.len(), 2);
        assert!(started.elapsed() >= Duration::from_millis(200));
        let mut buf = [0u8; 1];
        assert_eq!(
            timeout(WAIT, first.read(&mut buf)).await.unwrap().unwrap(),
            0
        );
        srv.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_swaps_in_a_zone_for_each_snapshot() {
        let mut config = Config::default();
        config.dns.listen = "127.0.0.1:0".parse().unwrap();
        config.dns.threads = 1;
        let config = Arc::new(config);
        let (mut publisher, snapshots) = Publisher::new(config.clone());
        let sockets = Sockets::bind(&config.dns).unwrap();
        let addr = sockets.local_addr().unwrap();
        let records = RecordsHandle::default();
        let token = CancellationToken::new();
        let task = tokio::spawn(run(
            sockets,
            config.clone(),
            snapshots,
            records.clone(),
            token.clone(),
        ));
        let q = query("leader.mesos.", RecordType::A, None);
        assert_eq!(
            udp(addr, &q).await.metadata.response_code,
            ResponseCode::ServFail
        );
        let swaps = metrics().dns_zone_swaps.get();
        let mut state = ClusterState::default();
        state.frameworks.insert(
            "fw".into(),
            Framework {
                id: "fw".into(),
                name: "marathon".into(),
                ..Framework::default()
            },
        );
        publisher.update(Arc::new(state), UpdateKind::Full);
        let version = publisher.current().version;
        assert!(version > 0);
        let deadline = Instant::now() + WAIT;
        while records.load().as_ref().map(|r| r.serial) != Some(version) {
            assert!(Instant::now() < deadline, "records not swapped in");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(metrics().dns_zone_swaps.get() > swaps);
        assert_ne!(
            udp(addr, &q).await.metadata.response_code,
            ResponseCode::ServFail
        );
        token.cancel();
        timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    }

    /// A test upstream: answers every query with one A record 9.9.9.9, or never when `mute`.
    async fn upstream(mute: bool) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            while let Ok((n, peer)) = s.recv_from(&mut buf).await {
                if mute {
                    continue;
                }
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut a = Message::response(q.metadata.id, OpCode::Query);
                a.metadata.recursion_desired = q.metadata.recursion_desired;
                a.metadata.recursion_available = true;
                let name = q.queries[0].name().clone();
                a.add_query(q.queries[0].clone());
                a.add_answer(hickory_proto::rr::Record::from_rdata(
                    name,
                    30,
                    hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(
                        std::net::Ipv4Addr::new(9, 9, 9, 9),
                    )),
                ));
                s.send_to(&a.to_vec().unwrap(), peer).await.ok();
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_outside_our_zones_are_forwarded_with_ra_and_servfail_on_timeout() {
        for (mute, over_tcp) in [(false, false), (false, true), (true, false)] {
            let mut d = dns();
            d.resolvers = vec![upstream(mute).await];
            d.forward_timeout = Duration::from_millis(200);
            let forwarder = Forwarder::new(&d);
            let sockets = Sockets::bind(&d).unwrap();
            let addr = sockets.local_addr().unwrap();
            let zone = Arc::new(ArcSwapOption::new(Some(Arc::new(sample_zone()))));
            let token = CancellationToken::new();
            let task = tokio::spawn({
                let token = token.clone();
                async move { serve(sockets, &d, zone, forwarder, token).await }
            });
            let q = query("example.com.", RecordType::A, None);
            let m = if over_tcp {
                let mut s = TcpStream::connect(addr).await.unwrap();
                tcp_send(&mut s, &q).await;
                tcp_read(&mut s).await
            } else {
                udp(addr, &q).await
            };
            assert_eq!(m.metadata.id, 7);
            if mute {
                assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            } else {
                assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                assert_eq!(m.answers.len(), 1, "tcp {over_tcp}");
            }
            assert!(m.metadata.recursion_available);
            // Our own names still answered, now with RA.
            let m = udp(addr, &query("web.marathon.mesos.", RecordType::A, None)).await;
            assert!(m.metadata.authoritative && m.metadata.recursion_available);
            token.cancel();
            timeout(WAIT, task).await.unwrap().unwrap().unwrap();
        }
    }
}
