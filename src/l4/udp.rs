//! The UDP proxy: a flow per client address (client → an upstream socket connected to the backend
//! picked for it), forgotten after `l4.udp_idle_timeout` without a datagram either way. At most
//! `l4.udp_max_flows` flows per listener: a new client past that evicts the least recently used.
//!
//! A flow whose backend leaves the pool (removed, or weight 0) is dropped at once; the client's
//! next datagram opens a new one (UDP has no connection to drain).
//!
//! Replies go out through the listening socket, which is bound to the VIP ip:port (or the service
//! port on `l4.bind`), so they carry the address the client sent to.
//!
//! Buffers: one 64 KiB datagram buffer per listener and one per runtime thread for replies, none
//! per flow.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::listeners::{Ctx, PoolHandle};
use crate::health::BackendState;
use crate::metrics::metrics;

/// Largest UDP payload.
const DATAGRAM: usize = 65_536;

thread_local! {
    /// Reply buffer of the runtime thread a flow's reply task runs on (no per-flow buffer).
    static REPLY_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; DATAGRAM]);
}

/// One client's flow.
struct Flow {
    upstream: Arc<UdpSocket>,
    backend: Arc<BackendState>,
    /// Ms since the listener started, of the last datagram either way.
    last: Arc<AtomicU64>,
    /// Position in the LRU index.
    seq: u64,
    /// Flow generation, so an idle report of an evicted flow does not remove its successor.
    id: u64,
    /// Stops the reply task when the flow is dropped (evicted, expired, listener gone).
    _stop: DropGuard,
}

/// The flow table of one listener: by client, plus an LRU index (`seq` → client).
struct Flows {
    by_client: HashMap<SocketAddr, Flow>,
    lru: BTreeMap<u64, SocketAddr>,
    next_seq: u64,
    max: usize,
}

impl Flows {
    fn touch(&mut self, client: SocketAddr) -> Option<&Flow> {
        let seq = self.next_seq;
        let flow = self.by_client.get_mut(&client)?;
        self.lru.remove(&flow.seq);
        flow.seq = seq;
        self.lru.insert(seq, client);
        self.next_seq += 1;
        Some(flow)
    }

    fn remove(&mut self, client: &SocketAddr) -> Option<Flow> {
        let flow = self.by_client.remove(client)?;
        self.lru.remove(&flow.seq);
        Some(flow)
    }

    /// Makes room for one more flow.
    fn evict_for_new(&mut self) {
        while self.by_client.len() >= self.max {
            let Some((_, client)) = self.lru.pop_first() else {
                break;
            };
            self.by_client.remove(&client);
            metrics().l4_udp_flows_evicted.inc();
        }
    }

    fn insert(&mut self, client: SocketAddr, mut flow: Flow) {
        flow.seq = self.next_seq;
        self.next_seq += 1;
        self.lru.insert(flow.seq, client);
        self.by_client.insert(client, flow);
    }
}

/// Serves one UDP listener until `stop` or subsystem shutdown.
pub(crate) async fn serve(
    socket: UdpSocket,
    pool: Arc<PoolHandle>,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let start = Instant::now();
    let mut flows = Flows {
        by_client: HashMap::new(),
        lru: BTreeMap::new(),
        next_seq: 0,
        max: ctx.settings.udp_max_flows.max(1),
    };
    let mut next_id = 0u64;
    // Reply tasks report flows that went idle: (client, flow id).
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut buf = vec![0u8; DATAGRAM];
    let gauge = metrics().l4_udp_flows.clone();
    let mut counted = 0i64;
    let mut changes = pool.subscribe();
    let mut pool_open = true;
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => break,
            changed = changes.changed(), if pool_open => {
                if changed.is_err() {
                    pool_open = false;
                } else {
                    // Flows to a backend that left the pool (removed, weight 0) are dropped: the
                    // client's next datagram picks a backend again.
                    let current = pool.load();
                    let gone: Vec<SocketAddr> = flows
                        .by_client
                        .iter()
                        .filter(|(_, f)| !current.serves(f.backend.id))
                        .map(|(c, _)| *c)
                        .collect();
                    for client in gone {
                        flows.remove(&client);
                    }
                }
                None
            }
            Some((client, id)) = idle_rx.recv() => {
                if flows.by_client.get(&client).is_some_and(|f| f.id == id) {
                    flows.remove(&client);
                }
                None
            }
            r = socket.recv_from(&mut buf) => Some(r),
        };
        if let Some(r) = got {
            match r {
                Ok((n, client)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    forward(
                        data,
                        client,
                        &socket,
                        &pool,
                        &ctx,
                        &mut flows,
                        &mut next_id,
                        &idle_tx,
                        start,
                    )
                    .await;
                }
                // ICMP errors surface here on some kernels (ECONNREFUSED); keep serving.
                Err(e) => tracing::debug!(error = %e, "l4 udp receive failed"),
            }
        }
        let now = flows.by_client.len() as i64;
        gauge.add(now - counted);
        counted = now;
    }
    gauge.sub(counted);
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    data: &[u8],
    client: SocketAddr,
    socket: &Arc<UdpSocket>,
    pool: &PoolHandle,
    ctx: &Ctx,
    flows: &mut Flows,
    next_id: &mut u64,
    idle_tx: &mpsc::UnboundedSender<(SocketAddr, u64)>,
    start: Instant,
) {
    let ms = start.elapsed().as_millis() as u64;
    if flows.touch(client).is_none() {
        let Some(flow) = open_flow(client, socket, pool, ctx, *next_id, idle_tx, start).await
        else {
            metrics()
                .l4_refused
                .with_label_values(&["no_backend"])
                .inc();
            return;
        };
        *next_id += 1;
        flows.evict_for_new();
        flows.insert(client, flow);
    }
    let Some(flow) = flows.by_client.get(&client) else {
        return;
    };
    flow.last.store(ms, Ordering::Relaxed);
    // Not `try_send`: a new socket is not known writable until the reactor has polled it once.
    // A UDP send waits only while the socket's send buffer is full.
    match flow.upstream.send(data).await {
        Ok(n) => {
            flow.backend.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(backend = %flow.backend.addr, error = %e, "l4 udp send failed"),
    }
}

/// Picks a backend and opens the flow's upstream socket; spawns its reply task.
async fn open_flow(
    client: SocketAddr,
    socket: &Arc<UdpSocket>,
    pool: &PoolHandle,
    ctx: &Ctx,
    id: u64,
    idle_tx: &mpsc::UnboundedSender<(SocketAddr, u64)>,
    start: Instant,
) -> Option<Flow> {
    let pool = pool.load();
    let i = pool.balancer.pick(client.ip(), &pool.backends, &[])?;
    let backend = pool.backends.get(i)?.clone();
    let local: IpAddr = match backend.addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let upstream = match UdpSocket::bind(SocketAddr::new(local, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "l4 udp: cannot open an upstream socket");
            return None;
        }
    };
    if let Err(e) = upstream.connect(backend.addr).await {
        tracing::debug!(backend = %backend.addr, error = %e, "l4 udp connect failed");
        backend.report_connect_failure();
        return None;
    }
    let upstream = Arc::new(upstream);
    let last = Arc::new(AtomicU64::new(start.elapsed().as_millis() as u64));
    let stop = ctx.shutdown.child_token();
    ctx.tasks.spawn(replies(
        upstream.clone(),
        socket.clone(),
        client,
        backend.clone(),
        last.clone(),
        ctx.settings.udp_idle_timeout,
        start,
        stop.clone(),
        (idle_tx.clone(), id),
    ));
    Some(Flow {
        upstream,
        backend,
        last,
        seq: 0,
        id,
        _stop: stop.drop_guard(),
    })
}

/// Sends the backend's datagrams back to the client from the listening socket, until the flow is
/// dropped or idle (then reports it to the listener).
#[allow(clippy::too_many_arguments)]
async fn replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    backend: Arc<BackendState>,
    last: Arc<AtomicU64>,
    idle: Duration,
    start: Instant,
    stop: CancellationToken,
    (idle_tx, id): (mpsc::UnboundedSender<(SocketAddr, u64)>, u64),
) {
    backend.active.fetch_add(1, Ordering::Relaxed);
    backend.total.fetch_add(1, Ordering::Relaxed);
    let deadline =
        |last: &AtomicU64| start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
    let sleep = tokio::time::sleep_until(deadline(&last));
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = &mut sleep => {
                let until = deadline(&last);
                if until <= Instant::now() {
                    let _ = idle_tx.send((client, id));
                    break;
                }
                sleep.as_mut().reset(until);
            }
            r = upstream.readable() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "l4 udp upstream failed");
                    let _ = idle_tx.send((client, id));
                    break;
                }
                relay(&upstream, &socket, client, &backend);
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }
    }
    backend.active.fetch_sub(1, Ordering::Relaxed);
}

/// Moves every datagram waiting on `upstream` to `client` (non-blocking on both sockets).
fn relay(upstream: &UdpSocket, socket: &UdpSocket, client: SocketAddr, backend: &BackendState) {
    REPLY_BUF.with_borrow_mut(|buf| {
        loop {
            match upstream.try_recv(buf) {
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default();
                    match socket.try_send_to(data, client) {
                        Ok(sent) => {
                            backend.bytes_out.fetch_add(sent as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            tracing::debug!(client = %client, error = %e, "l4 udp reply failed")
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ECONNREFUSED from an ICMP port unreachable: the datagram is lost.
                    tracing::debug!(backend = %backend.addr, error = %e, "l4 udp upstream receive failed");
                    return;
                }
            }
        }
    });
}
