//! Forwarding of names outside our zones to `dns.resolvers`, with an optional answer cache.
//!
//! Owns the upstream exchanges: the server hands [`Forwarder::forward`] a client's query as it
//! arrived and gets back the upstream's answer (bytes as the upstream sent them, with the client's
//! ID put back), or `None` when it should answer SERVFAIL itself. Imports `config` and the
//! `metrics` leaf only; spawns no tasks.
//!
//! # Behaviour
//!
//! - **Order and failover.** Resolvers are tried in the configured order, each at most once per
//!   query, each with its own `dns.forward_timeout`. The next resolver is tried when one times
//!   out, fails at the socket level, or answers SERVFAIL, REFUSED or NOTIMP (it cannot or will not
//!   answer; another may). NOERROR, NXDOMAIN, FORMERR (the query itself is at fault, another
//!   resolver would say the same) and every other rcode are final and go back to the client. When
//!   every resolver failed and at least one answered SERVFAIL/REFUSED/NOTIMP, the last such answer
//!   goes back (it may carry extended error details); when none answered at all, `None`.
//! - **Bounded.** At most `dns.forward_max_inflight` queries are sent upstream at once. A query
//!   that finds them all taken is not queued: `forward` returns `None` at once and counts
//!   `result="busy"`. A query holds its slot for at most `resolvers × timeout` (twice that when
//!   truncated answers are retried over TCP), so an upstream that never answers costs at most
//!   `max_inflight` sockets and buffers, never a growing pile of them, and no tasks (the caller's
//!   future does the work; dropping it closes the socket and frees the slot).
//! - **Spoofing resistance.** Every upstream exchange uses a fresh random 16-bit ID and a fresh
//!   socket on a kernel-chosen (randomised) ephemeral port, connected to the upstream so that
//!   datagrams from other addresses never reach us. An answer is used only when it is a response
//!   (QR set) with our ID, the query's opcode, and exactly the query's question (name compared
//!   case-insensitively, type and class); other datagrams on the socket are ignored (counted
//!   `kind="mismatch"`) and the exchange keeps waiting until its timeout.
//! - **Transport.** Upstreams are asked over UDP with the client's own message (EDNS options,
//!   payload size and flags untouched, only the ID replaced). When the upstream answer is
//!   truncated (TC) and the client came over TCP, the query is repeated to the same upstream over
//!   TCP; a UDP client gets the truncated answer and retries over TCP itself.
//! - **Cache** (`dns.forward_cache_entries`, 0 = off). Keyed by (question name, lowercased;
//!   qtype; qclass; EDNS present; DO bit; CD bit). Only complete (not truncated) NOERROR and
//!   NXDOMAIN answers to standard queries are stored. A positive answer lives for the smallest
//!   TTL among its records; a negative one (NXDOMAIN, or NOERROR without answers) for
//!   min(smallest TTL, SOA minimum) and only when it carries the SOA (RFC 2308); never longer than
//!   [`MAX_CACHE_TTL`]; a TTL of 0 is not stored. Served answers carry the client's ID and RD bit
//!   and TTLs reduced by the seconds spent in the cache. A cached answer larger than a UDP
//!   client's payload limit is not served (the query goes upstream instead). At most
//!   `forward_cache_entries` entries; the oldest stored entry goes first when full.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::config::DnsConfig;

/// Longest time any answer stays in the cache, whatever its TTL (unbound's `cache-max-ttl`
/// default).
pub const MAX_CACHE_TTL: u32 = 86_400;

/// Smallest UDP payload every DNS client accepts (RFC 1035).
const MIN_UDP_PAYLOAD: usize = 512;

/// Why one upstream exchange failed; the `kind` label of `dns_upstream_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamError {
    /// No valid answer within `dns.forward_timeout`.
    Timeout,
    /// Socket error (refused, unreachable, reset, …).
    Io,
    /// TCP answer that does not match the query (wrong ID or question, not a response).
    Mismatch,
}

impl UpstreamError {
    fn kind(self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Io => "io",
            UpstreamError::Mismatch => "mismatch",
        }
    }
}

/// What a client asked, as far as forwarding and caching care.
struct ClientQuery {
    id: u16,
    recursion_desired: bool,
    query: Query,
    key: CacheKey,
    /// Largest UDP answer the client accepts (its EDNS payload size, at least 512).
    udp_limit: usize,
}

impl ClientQuery {
    /// `None` for anything but a standard query with exactly one question.
    fn parse(bytes: &[u8]) -> Option<ClientQuery> {
        let msg = Message::from_vec(bytes).ok()?;
        if msg.metadata.message_type != MessageType::Query
            || msg.metadata.op_code != OpCode::Query
            || msg.queries.len() != 1
        {
            return None;
        }
        let query = msg.queries.first()?.clone();
        let key = CacheKey {
            name: query.name().to_lowercase(),
            qtype: query.query_type(),
            qclass: query.query_class(),
            edns: msg.edns.is_some(),
            dnssec_ok: msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            checking_disabled: msg.metadata.checking_disabled,
        };
        Some(ClientQuery {
            id: msg.metadata.id,
            recursion_desired: msg.metadata.recursion_desired,
            query,
            key,
            udp_limit: usize::from(msg.max_payload()).max(MIN_UDP_PAYLOAD),
        })
    }
}

/// One upstream's answer that passed the checks.
struct Answer {
    /// As the upstream sent it (our upstream ID still in it).
    bytes: Vec<u8>,
    rcode: ResponseCode,
    truncated: bool,
}

// === impl Forwarder ===

/// Sends queries for names outside our zones to the configured resolvers.
pub struct Forwarder {
    resolvers: Vec<SocketAddr>,
    /// `upstream` metric label per resolver.
    labels: Vec<String>,
    timeout: Duration,
    inflight: Semaphore,
    max_inflight: usize,
    cache: Option<Cache>,
}

impl Forwarder {
    /// `None` when `dns.resolvers` is empty (such queries are REFUSED).
    pub fn new(dns: &DnsConfig) -> Option<Arc<Forwarder>> {
        if dns.resolvers.is_empty() {
            return None;
        }
        let max_inflight = dns.forward_max_inflight.max(1);
        Some(Arc::new(Forwarder {
            resolvers: dns.resolvers.clone(),
            labels: dns.resolvers.iter().map(ToString::to_string).collect(),
            timeout: dns.forward_timeout,
            inflight: Semaphore::new(max_inflight),
            max_inflight,
            cache: (dns.forward_cache_entries > 0).then(|| Cache::new(dns.forward_cache_entries)),
        }))
    }

    /// The upstream answer to `query` (a whole DNS message as the client sent it; the answer
    /// carries the client's ID), or `None` when no resolver answered in time or too many queries
    /// are in flight (the caller answers SERVFAIL). `tcp`: the client asked over TCP, so the
    /// answer may be larger than a UDP payload.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let client = ClientQuery::parse(query)?;
        let m = crate::metrics::metrics();

        if let Some(cache) = &self.cache {
            let limit = if tcp { usize::MAX } else { client.udp_limit };
            if let Some(answer) = cache.get(&client, limit) {
                m.dns_cache_hits.inc();
                return Some(answer);
            }
        }

        let Ok(_slot) = self.inflight.try_acquire() else {
            m.dns_forwarded.with_label_values(&["busy"]).inc();
            return None;
        };

        let mut all_timeouts = true;
        let mut refusal: Option<Vec<u8>> = None;
        for (i, &upstream) in self.resolvers.iter().enumerate() {
            let label = self.labels.get(i).map_or("", String::as_str);
            let answer = match self.exchange(upstream, label, query, &client, tcp).await {
                Ok(answer) => answer,
                Err(e) => {
                    all_timeouts &= e == UpstreamError::Timeout;
                    m.dns_upstream_errors
                        .with_label_values(&[label, e.kind()])
                        .inc();
                    tracing::debug!(upstream = %upstream, kind = e.kind(), "upstream failed");
                    continue;
                }
            };
            let mut bytes = answer.bytes;
            set_id(&mut bytes, client.id);
            let failed = match answer.rcode {
                ResponseCode::ServFail => Some("servfail"),
                ResponseCode::Refused => Some("refused"),
                ResponseCode::NotImp => Some("notimp"),
                _ => None,
            };
            if let Some(kind) = failed {
                all_timeouts = false;
                m.dns_upstream_errors
                    .with_label_values(&[label, kind])
                    .inc();
                tracing::debug!(upstream = %upstream, kind, "upstream answered with a failure");
                refusal = Some(bytes);
                continue;
            }
            m.dns_forwarded.with_label_values(&["ok"]).inc();
            if let Some(cache) = &self.cache
                && !answer.truncated
            {
                cache.insert(client.key, &bytes);
            }
            return Some(bytes);
        }
        let result = if all_timeouts { "timeout" } else { "error" };
        m.dns_forwarded.with_label_values(&[result]).inc();
        refusal
    }

    /// Queries being sent upstream right now.
    pub fn inflight(&self) -> usize {
        self.max_inflight
            .saturating_sub(self.inflight.available_permits())
    }

    /// Answers held in the cache (expired ones included until they are looked up or pushed out).
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, Cache::len)
    }

    /// One query to one upstream: UDP, then TCP when the answer is truncated and the client came
    /// over TCP. Each leg has its own timeout.
    async fn exchange(
        &self,
        upstream: SocketAddr,
        label: &str,
        query: &[u8],
        client: &ClientQuery,
        tcp: bool,
    ) -> Result<Answer, UpstreamError> {
        let started = std::time::Instant::now();
        let mut msg = query.to_vec();
        let id = rand::random::<u16>();
        set_id(&mut msg, id);
        // A UDP client can only take what it advertised; for a TCP client any size will do.
        let limit = if tcp {
            usize::from(u16::MAX)
        } else {
            client.udp_limit
        };
        let answer = tokio::time::timeout(
            self.timeout,
            udp_exchange(upstream, &msg, id, &client.query, limit),
        )
        .await
        .map_err(|_| UpstreamError::Timeout)??;
        let answer = if answer.truncated && tcp {
            let id = rand::random::<u16>();
            set_id(&mut msg, id);
            tokio::time::timeout(
                self.timeout,
                tcp_exchange(upstream, &msg, id, &client.query),
            )
            .await
            .map_err(|_| UpstreamError::Timeout)??
        } else {
            answer
        };
        crate::metrics::metrics()
            .dns_upstream_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        Ok(answer)
    }
}

/// Sends `msg` over a fresh UDP socket connected to `upstream` and waits for the first datagram
/// that answers it; others (and answers larger than `udp_limit`, which the client could not take)
/// are counted and ignored. No timeout of its own.
async fn udp_exchange(
    upstream: SocketAddr,
    msg: &[u8],
    id: u16,
    query: &Query,
    udp_limit: usize,
) -> Result<Answer, UpstreamError> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io_error)?;
    socket.connect(upstream).await.map_err(io_error)?;
    socket.send(msg).await.map_err(io_error)?;
    // One byte more than the client accepts, so that an oversize datagram is seen as such.
    let mut buf = vec![0u8; udp_limit.saturating_add(1).min(usize::from(u16::MAX) + 1)];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io_error)?;
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        match check_answer(datagram, id, query) {
            Some(header) if n <= udp_limit => {
                return Ok(Answer {
                    bytes: datagram.to_vec(),
                    rcode: header.metadata.response_code,
                    truncated: header.metadata.truncation,
                });
            }
            _ => {
                tracing::trace!(upstream = %upstream, len = n, "ignoring a datagram that does not answer the query");
                crate::metrics::metrics()
                    .dns_upstream_errors
                    .with_label_values(&[&upstream.to_string(), UpstreamError::Mismatch.kind()])
                    .inc();
            }
        }
    }
}

/// Sends `msg` to `upstream` over a new TCP connection and reads one answer. No timeout of its
/// own.
async fn tcp_exchange(
    upstream: SocketAddr,
    msg: &[u8],
    id: u16,
    query: &Query,
) -> Result<Answer, UpstreamError> {
    let len = u16::try_from(msg.len()).map_err(|_| UpstreamError::Io)?;
    let mut stream = TcpStream::connect(upstream).await.map_err(io_error)?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await.map_err(io_error)?;
    let len = stream.read_u16().await.map_err(io_error)?;
    let mut bytes = vec![0u8; usize::from(len)];
    stream.read_exact(&mut bytes).await.map_err(io_error)?;
    let header = check_answer(&bytes, id, query).ok_or(UpstreamError::Mismatch)?;
    Ok(Answer {
        rcode: header.metadata.response_code,
        truncated: header.metadata.truncation,
        bytes,
    })
}

fn io_error(e: io::Error) -> UpstreamError {
    tracing::trace!(error = %e, "upstream socket error");
    UpstreamError::Io
}

/// The header of `bytes` when it answers `query` sent with `id`: a response (QR set), opcode
/// QUERY, our ID, and exactly the same single question (name case-insensitively).
fn check_answer(bytes: &[u8], id: u16, query: &Query) -> Option<Header> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    if header.metadata.id != id
        || header.metadata.message_type != MessageType::Response
        || header.metadata.op_code != OpCode::Query
        || header.counts.queries != 1
    {
        return None;
    }
    let question = Query::read(&mut decoder).ok()?;
    (question.name() == query.name()
        && question.query_type() == query.query_type()
        && question.query_class() == query.query_class())
    .then_some(header)
}

/// Writes `id` into the first two bytes of a DNS message (no-op on a message shorter than that).
fn set_id(msg: &mut [u8], id: u16) {
    if let Some(head) = msg.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}

// === impl Cache ===

/// What a cached answer is stored under: two queries with equal keys get the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    /// Lowercased (hickory's `Name` also compares and hashes case-insensitively).
    name: Name,
    qtype: RecordType,
    qclass: DNSClass,
    /// The client sent an OPT record (an answer to a client without one must not carry one).
    edns: bool,
    dnssec_ok: bool,
    checking_disabled: bool,
}

struct CacheEntry {
    message: Arc<Message>,
    stored: Instant,
    expires: Instant,
    /// Which insertion this entry came from (matches its place in `order`).
    generation: u64,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<CacheKey, CacheEntry>,
    /// Keys in insertion order, with the generation of that insertion; stale pairs (the key was
    /// stored again or removed since) are skipped when popped.
    order: VecDeque<(CacheKey, u64)>,
    next_generation: u64,
}

/// Forwarded answers, bounded in entries and never kept past their TTL.
struct Cache {
    capacity: usize,
    inner: Mutex<CacheInner>,
    /// Seconds added to the clock, so tests can move time forward.
    #[cfg(test)]
    skew: std::sync::atomic::AtomicU64,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            inner: Mutex::new(CacheInner::default()),
            #[cfg(test)]
            skew: Default::default(),
        }
    }

    #[cfg(not(test))]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[cfg(test)]
    fn now(&self) -> Instant {
        let skew = self.skew.load(std::sync::atomic::Ordering::SeqCst);
        Instant::now() + Duration::from_secs(skew)
    }

    fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answer for `client`, re-encoded with the client's ID and RD bit and TTLs
    /// reduced by the time spent in the cache; `None` when absent, expired or larger than `limit`.
    fn get(&self, client: &ClientQuery, limit: usize) -> Option<Vec<u8>> {
        let now = self.now();
        let (message, stored) = {
            let mut inner = self.lock();
            let entry = inner.map.get(&client.key)?;
            if entry.expires <= now {
                inner.map.remove(&client.key);
                return None;
            }
            (entry.message.clone(), entry.stored)
        };
        let elapsed = u32::try_from(now.duration_since(stored).as_secs()).unwrap_or(u32::MAX);
        let mut message = Message::clone(&message);
        message.metadata.id = client.id;
        message.metadata.recursion_desired = client.recursion_desired;
        for record in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
            .chain(message.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(elapsed);
        }
        let bytes = message.to_bytes().ok()?;
        (bytes.len() <= limit).then_some(bytes)
    }

    /// Stores `answer` under `key` when it is cacheable (see the module docs).
    fn insert(&self, key: CacheKey, answer: &[u8]) {
        let Ok(message) = Message::from_vec(answer) else {
            return;
        };
        let Some(ttl) = cache_ttl(&message) else {
            return;
        };
        let stored = self.now();
        let expires = stored + Duration::from_secs(u64::from(ttl));
        let mut inner = self.lock();
        let inner = &mut *inner;
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.order.push_back((key.clone(), generation));
        inner.map.insert(
            key,
            CacheEntry {
                message: Arc::new(message),
                stored,
                expires,
                generation,
            },
        );
        // Push out the oldest insertions while over capacity, and drop stale order pairs so that
        // `order` stays within twice the capacity.
        while inner.map.len() > self.capacity || inner.order.len() > 2 * self.capacity {
            let Some((old, old_generation)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .map
                .get(&old)
                .is_some_and(|e| e.generation == old_generation)
            {
                inner.map.remove(&old);
            }
        }
    }
}

/// How long `message` may be cached, in seconds; `None` when it must not be.
fn cache_ttl(message: &Message) -> Option<u32> {
    let metadata = &message.metadata;
    if metadata.truncation
        || metadata.op_code != OpCode::Query
        || message.signature.is_some()
        || !matches!(
            metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        )
    {
        return None;
    }
    let records = message
        .answers
        .iter()
        .chain(&message.authorities)
        .chain(&message.additionals);
    let mut ttl = records.map(|r| r.ttl).min().unwrap_or(MAX_CACHE_TTL);
    let negative = metadata.response_code == ResponseCode::NXDomain || message.answers.is_empty();
    if negative {
        // RFC 2308: a negative answer is cacheable only with the zone's SOA, for at most its
        // minimum field (and the SOA record's own TTL, already in `ttl`).
        let minimum = message.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.minimum),
            _ => None,
        })?;
        ttl = ttl.min(minimum);
    }
    let ttl = ttl.min(MAX_CACHE_TTL);
    (ttl > 0).then_some(ttl)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv4Addr};
    use std::str::FromStr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hickory_proto::op::Edns;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, SOA, TXT};

    use super::*;
    use crate::config::Config;

    // === helpers ===

    fn config(
        resolvers: &[SocketAddr],
        timeout_ms: u64,
        inflight: usize,
        cache: usize,
    ) -> DnsConfig {
        let list: Vec<String> = resolvers.iter().map(|r| format!("\"{r}\"")).collect();
        let text = format!(
            "[dns]\nresolvers = [{}]\nforward_timeout = \"{timeout_ms}ms\"\n\
             forward_max_inflight = {inflight}\nforward_cache_entries = {cache}\n",
            list.join(", ")
        );
        Config::parse(&text).expect("valid test config").dns
    }

    /// A client query: `edns` = Some((payload, DO)).
    fn query(id: u16, name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        if let Some((payload, dnssec_ok)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e.set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn parse(bytes: &[u8]) -> Message {
        Message::from_vec(bytes).expect("a valid DNS message")
    }

    /// The response skeleton for `req`.
    fn reply(req: &Message, rcode: ResponseCode) -> Message {
        let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = req.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.response_code = rcode;
        m.add_queries(req.queries.clone());
        if let Some(e) = &req.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(e.max_payload());
            m.set_edns(edns);
        }
        m
    }

    fn a_record(name: &Name, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(name.clone(), ttl, RData::A(A::from(Ipv4Addr::from(ip))))
    }

    fn soa_record(ttl: u32, minimum: u32) -> Record {
        let soa = SOA::new(
            Name::from_str("ns.example.").unwrap(),
            Name::from_str("root.example.").unwrap(),
            1,
            3600,
            600,
            86400,
            minimum,
        );
        Record::from_rdata(Name::from_str("example.").unwrap(), ttl, RData::SOA(soa))
    }

    /// `A 192.0.2.1` for the question, TTL 300.
    fn answer_a(req: &Message) -> Vec<Vec<u8>> {
        let mut m = reply(req, ResponseCode::NoError);
        let name = req.queries[0].name().clone();
        m.add_answer(a_record(&name, 300, [192, 0, 2, 1]));
        vec![m.to_vec().unwrap()]
    }

    fn answer_rcode(
        rcode: ResponseCode,
    ) -> impl Fn(&Message) -> Vec<Vec<u8>> + Send + Sync + 'static {
        move |req| vec![reply(req, rcode).to_vec().unwrap()]
    }

    type Behaviour = dyn Fn(&Message) -> Vec<Vec<u8>> + Send + Sync;

    /// A test upstream on 127.0.0.1: UDP answers with `udp(query)` (zero or more datagrams, in
    /// order), TCP on the same port with the first message of `tcp(query)`.
    struct Upstream {
        addr: SocketAddr,
        /// Queries received over UDP: (upstream ID, client source port).
        seen: Arc<Mutex<Vec<(u16, u16)>>>,
        tcp_queries: Arc<AtomicUsize>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            for t in &self.tasks {
                t.abort();
            }
        }
    }

    impl Upstream {
        async fn start(
            udp: impl Fn(&Message) -> Vec<Vec<u8>> + Send + Sync + 'static,
            tcp: impl Fn(&Message) -> Vec<Vec<u8>> + Send + Sync + 'static,
        ) -> Upstream {
            // One port for UDP and TCP: a free UDP port may be taken for TCP (other tests churn
            // through TCP ports), so try a bounded number of ports.
            let mut bound = None;
            for _ in 0..64 {
                let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let addr = socket.local_addr().unwrap();
                if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
                    bound = Some((socket, addr, listener));
                    break;
                }
            }
            let (socket, addr, listener) = bound.expect("a port free for both UDP and TCP");
            let seen = Arc::new(Mutex::new(Vec::new()));
            let tcp_queries = Arc::new(AtomicUsize::new(0));
            let udp: Arc<Behaviour> = Arc::new(udp);
            let tcp: Arc<Behaviour> = Arc::new(tcp);
            let seen2 = seen.clone();
            let udp_task = tokio::spawn(async move {
                let mut buf = vec![0u8; 65535];
                loop {
                    let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    let req = parse(&buf[..n]);
                    seen2.lock().unwrap().push((req.metadata.id, peer.port()));
                    for datagram in udp(&req) {
                        let _ = socket.send_to(&datagram, peer).await;
                    }
                }
            });
            let counter = tcp_queries.clone();
            let tcp_task = tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let len = stream.read_u16().await.unwrap();
                    let mut buf = vec![0u8; usize::from(len)];
                    stream.read_exact(&mut buf).await.unwrap();
                    counter.fetch_add(1, Ordering::SeqCst);
                    if let Some(answer) = tcp(&parse(&buf)).into_iter().next() {
                        let mut out = (answer.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&answer);
                        let _ = stream.write_all(&out).await;
                    }
                }
            });
            Upstream {
                addr,
                seen,
                tcp_queries,
                tasks: vec![udp_task, tcp_task],
            }
        }

        async fn udp(
            behaviour: impl Fn(&Message) -> Vec<Vec<u8>> + Send + Sync + 'static,
        ) -> Upstream {
            Upstream::start(behaviour, |_| Vec::new()).await
        }

        fn queries(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    /// Moves the cache's clock of `f` forward.
    fn advance(f: &Forwarder, secs: u64) {
        let cache = f.cache.as_ref().expect("a cache");
        cache.skew.fetch_add(secs, Ordering::SeqCst);
    }

    fn a_answers(m: &Message) -> BTreeSet<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    // === forwarding ===

    #[test]
    fn no_resolvers_no_forwarder() {
        assert!(Forwarder::new(&config(&[], 100, 1, 0)).is_none());
    }

    #[tokio::test]
    async fn answers_carry_the_client_id_while_upstream_ids_and_ports_vary() {
        let up = Upstream::udp(answer_a).await;
        let f = Forwarder::new(&config(&[up.addr], 2000, 16, 0)).unwrap();
        for _ in 0..8 {
            let got = f
                .forward(&query(0xBEEF, "www.example.", RecordType::A, None), false)
                .await;
            let got = parse(&got.expect("an answer"));
            assert_eq!(got.metadata.id, 0xBEEF);
            assert_eq!(got.metadata.message_type, MessageType::Response);
            assert_eq!(
                a_answers(&got),
                BTreeSet::from([Ipv4Addr::new(192, 0, 2, 1)])
            );
        }
        let seen = up.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 8);
        let ids: BTreeSet<u16> = seen.iter().map(|s| s.0).collect();
        let ports: BTreeSet<u16> = seen.iter().map(|s| s.1).collect();
        assert!(
            ids.len() > 1 && ids.iter().any(|&id| id != 0xBEEF),
            "ids {ids:?}"
        );
        assert!(
            ports.len() > 1,
            "one source port for all queries: {ports:?}"
        );
        assert_eq!(f.inflight(), 0);
    }

    #[tokio::test]
    async fn datagrams_that_do_not_answer_the_query_are_ignored() {
        let up = Upstream::udp(|req| {
            let good = reply(req, ResponseCode::NoError);
            let mut wrong_id = good.clone();
            wrong_id.metadata.id = req.metadata.id.wrapping_add(1);
            let mut wrong_name = good.clone();
            wrong_name.queries = vec![Query::query(
                Name::from_str("evil.example.").unwrap(),
                RecordType::A,
            )];
            wrong_name.add_answer(a_record(
                &Name::from_str("evil.example.").unwrap(),
                300,
                [6, 6, 6, 6],
            ));
            let mut wrong_type = good.clone();
            wrong_type.queries = vec![Query::query(
                req.queries[0].name().clone(),
                RecordType::AAAA,
            )];
            let mut not_response = good.clone();
            not_response.metadata.message_type = MessageType::Query;
            let mut spoofed = wrong_id.clone();
            spoofed.add_answer(a_record(req.queries[0].name(), 300, [6, 6, 6, 6]));
            let mut out: Vec<Vec<u8>> = [spoofed, wrong_name, wrong_type, not_response]
                .iter()
                .map(|m| m.to_vec().unwrap())
                .collect();
            out.push(vec![0xff; 7]); // garbage
            out.extend(answer_a(req));
            out
        })
        .await;
        let f = Forwarder::new(&config(&[up.addr], 2000, 16, 0)).unwrap();
        let got = f
            .forward(&query(7, "WWW.Example.", RecordType::A, None), false)
            .await;
        let got = parse(&got.expect("the genuine answer"));
        assert_eq!(got.metadata.id, 7);
        assert_eq!(
            a_answers(&got),
            BTreeSet::from([Ipv4Addr::new(192, 0, 2, 1)])
        );
    }

    #[tokio::test]
    async fn failover_on_timeout_servfail_refused_and_notimp() {
        let silent = Upstream::udp(|_| Vec::new()).await;
        let servfail = Upstream::udp(answer_rcode(ResponseCode::ServFail)).await;
        let refused = Upstream::udp(answer_rcode(ResponseCode::Refused)).await;
        let notimp = Upstream::udp(answer_rcode(ResponseCode::NotImp)).await;
        let good = Upstream::udp(answer_a).await;
        let order = [
            silent.addr,
            servfail.addr,
            refused.addr,
            notimp.addr,
            good.addr,
        ];
        let f = Forwarder::new(&config(&order, 200, 16, 0)).unwrap();
        let got = f
            .forward(&query(9, "a.example.", RecordType::A, None), false)
            .await;
        let got = parse(&got.expect("the last resolver answers"));
        assert_eq!(got.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_answers(&got).len(), 1);
        for up in [&silent, &servfail, &refused, &notimp, &good] {
            assert_eq!(up.queries(), 1, "each resolver asked once, in order");
        }
    }

    #[tokio::test]
    async fn nxdomain_and_formerr_are_final() {
        for rcode in [ResponseCode::NXDomain, ResponseCode::FormErr] {
            let first = Upstream::udp(answer_rcode(rcode)).await;
            let second = Upstream::udp(answer_a).await;
            let f = Forwarder::new(&config(&[first.addr, second.addr], 500, 16, 0)).unwrap();
            let got = f
                .forward(&query(3, "nope.example.", RecordType::A, None), false)
                .await;
            assert_eq!(parse(&got.unwrap()).metadata.response_code, rcode);
            assert_eq!(second.queries(), 0, "{rcode:?} must not fail over");
        }
    }

    #[tokio::test]
    async fn when_all_fail_the_last_failure_answer_or_none() {
        let servfail = Upstream::udp(answer_rcode(ResponseCode::ServFail)).await;
        let silent = Upstream::udp(|_| Vec::new()).await;
        let f = Forwarder::new(&config(&[servfail.addr, silent.addr], 100, 16, 0)).unwrap();
        let got = f
            .forward(&query(0x1234, "x.example.", RecordType::A, None), false)
            .await;
        let got = parse(&got.expect("the SERVFAIL answer goes back"));
        assert_eq!(
            (got.metadata.id, got.metadata.response_code),
            (0x1234, ResponseCode::ServFail)
        );

        let f = Forwarder::new(&config(&[silent.addr, silent.addr], 100, 16, 0)).unwrap();
        let started = std::time::Instant::now();
        assert!(
            f.forward(&query(1, "x.example.", RecordType::A, None), false)
                .await
                .is_none()
        );
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "two timeouts of 100 ms"
        );

        // A resolver nobody listens on (ICMP port unreachable → socket error, not a timeout).
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let f = Forwarder::new(&config(&[closed], 2000, 16, 0)).unwrap();
        let started = std::time::Instant::now();
        assert!(
            f.forward(&query(1, "x.example.", RecordType::A, None), false)
                .await
                .is_none()
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a refused port fails fast"
        );
    }

    #[tokio::test]
    async fn queries_that_cannot_be_forwarded_get_none() {
        let up = Upstream::udp(answer_a).await;
        let f = Forwarder::new(&config(&[up.addr], 500, 16, 0)).unwrap();
        for bad in [&b""[..], &[1, 2, 3][..], &[0xff; 40][..]] {
            assert!(f.forward(bad, false).await.is_none());
        }
        let mut two = Message::new(1, MessageType::Query, OpCode::Query);
        two.add_query(Query::query(Name::from_str("a.").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_str("b.").unwrap(), RecordType::A));
        assert!(f.forward(&two.to_vec().unwrap(), false).await.is_none());
        let mut response = parse(&query(1, "a.", RecordType::A, None));
        response.metadata.message_type = MessageType::Response;
        assert!(
            f.forward(&response.to_vec().unwrap(), false)
                .await
                .is_none()
        );
        assert_eq!(up.queries(), 0);
    }

    /// Many TXT strings: too big for 512 bytes.
    fn big_txt(req: &Message) -> Message {
        let mut m = reply(req, ResponseCode::NoError);
        let name = req.queries[0].name().clone();
        for i in 0..20 {
            let text = format!("{i:02}-{}", "x".repeat(60));
            m.add_answer(Record::from_rdata(
                name.clone(),
                300,
                RData::TXT(TXT::new(vec![text])),
            ));
        }
        m
    }

    #[tokio::test]
    async fn truncated_answers_are_retried_over_tcp_for_tcp_clients_only() {
        let up = Upstream::start(
            |req| {
                let mut m = reply(req, ResponseCode::NoError);
                m.metadata.truncation = true;
                vec![m.to_vec().unwrap()]
            },
            |req| vec![big_txt(req).to_vec().unwrap()],
        )
        .await;
        let f = Forwarder::new(&config(&[up.addr], 2000, 16, 100)).unwrap();
        let q = query(0x4242, "big.example.", RecordType::TXT, None);

        let udp = parse(&f.forward(&q, false).await.unwrap());
        assert!(
            udp.metadata.truncation,
            "a UDP client gets TC and retries itself"
        );
        assert_eq!(up.tcp_queries.load(Ordering::SeqCst), 0);

        let tcp = f.forward(&q, true).await.unwrap();
        assert!(tcp.len() > 512);
        let tcp = parse(&tcp);
        assert!(!tcp.metadata.truncation);
        assert_eq!((tcp.metadata.id, tcp.answers.len()), (0x4242, 20));
        assert_eq!(up.tcp_queries.load(Ordering::SeqCst), 1);

        // The full answer is cached, but never served to a UDP client that cannot take it.
        assert_eq!(f.cached(), 1);
        let udp = parse(&f.forward(&q, false).await.unwrap());
        assert!(udp.metadata.truncation);
        assert_eq!(
            up.queries(),
            3,
            "the cached answer is too big for UDP: asked upstream again"
        );
        let tcp = parse(&f.forward(&q, true).await.unwrap());
        assert_eq!(tcp.answers.len(), 20);
        assert_eq!(
            up.tcp_queries.load(Ordering::SeqCst),
            1,
            "served from the cache"
        );
    }

    #[tokio::test]
    async fn udp_answers_larger_than_the_client_takes_are_not_used_for_udp_clients() {
        // An upstream that ignores the 512-byte limit of a client without EDNS.
        let oversize = Upstream::udp(|req| vec![big_txt(req).to_vec().unwrap()]).await;
        let good = Upstream::udp(answer_a).await;
        let f = Forwarder::new(&config(&[oversize.addr, good.addr], 300, 16, 0)).unwrap();
        let q = query(8, "big.example.", RecordType::TXT, None);
        let udp = f.forward(&q, false).await.unwrap();
        assert!(udp.len() <= 512);
        assert_eq!(
            a_answers(&parse(&udp)).len(),
            1,
            "the next resolver's answer"
        );
        let tcp = parse(&f.forward(&q, true).await.unwrap());
        assert_eq!(tcp.answers.len(), 20, "a TCP client can take it");
        assert_eq!(good.queries(), 1);
    }

    #[tokio::test]
    async fn a_tcp_answer_that_does_not_match_fails_over() {
        let bad = Upstream::start(
            |req| {
                let mut m = reply(req, ResponseCode::NoError);
                m.metadata.truncation = true;
                vec![m.to_vec().unwrap()]
            },
            |req| {
                let mut m = big_txt(req);
                m.metadata.id = m.metadata.id.wrapping_add(1);
                vec![m.to_vec().unwrap()]
            },
        )
        .await;
        let good = Upstream::udp(answer_a).await;
        let f = Forwarder::new(&config(&[bad.addr, good.addr], 1000, 16, 0)).unwrap();
        let got = parse(
            &f.forward(&query(5, "big.example.", RecordType::A, None), true)
                .await
                .unwrap(),
        );
        assert_eq!(a_answers(&got).len(), 1);
        assert_eq!(bad.tcp_queries.load(Ordering::SeqCst), 1);
    }

    /// An upstream that never answers: in-flight queries stay at the limit, the rest are refused
    /// at once, every query ends after the timeout, and nothing is left behind (no tasks, no
    /// sockets, no slots).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_upstream_piles_up_nothing() {
        /// UDP sockets (of any process here) connected to `upstream`, from /proc/net/udp.
        fn sockets_to(upstream: SocketAddr) -> usize {
            let want = format!("0100007F:{:04X}", upstream.port());
            let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
            table
                .lines()
                .filter(|l| l.split_whitespace().nth(2) == Some(want.as_str()))
                .count()
        }
        let silent = Upstream::udp(|_| Vec::new()).await;
        let f = Forwarder::new(&config(&[silent.addr], 300, 4, 0)).unwrap();
        let metrics = tokio::runtime::Handle::current().metrics();
        let tasks_before = metrics.num_alive_tasks();
        let busy_before = crate::metrics::metrics()
            .dns_forwarded
            .with_label_values(&["busy"])
            .get();

        let done = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..64u16 {
            let f = f.clone();
            let done = done.clone();
            handles.push(tokio::spawn(async move {
                let r = f
                    .forward(&query(i, "slow.example.", RecordType::A, None), false)
                    .await;
                done.fetch_add(1, Ordering::SeqCst);
                r
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(f.inflight(), 4, "in flight is capped");
        assert_eq!(sockets_to(silent.addr), 4, "one socket per query in flight");
        assert_eq!(done.load(Ordering::SeqCst), 60, "the rest got None at once");
        let busy = crate::metrics::metrics()
            .dns_forwarded
            .with_label_values(&["busy"])
            .get();
        assert!(busy - busy_before >= 60);

        for h in handles {
            assert!(h.await.unwrap().is_none());
        }
        assert_eq!(f.inflight(), 0);
        assert_eq!(silent.queries(), 4);
        // Give the runtime a moment to retire the finished tasks.
        for _ in 0..50 {
            if metrics.num_alive_tasks() <= tasks_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            metrics.num_alive_tasks() <= tasks_before,
            "no task outlives its query"
        );
        assert_eq!(sockets_to(silent.addr), 0, "no socket outlives its query");

        // A caller that gives up early (drops the future) frees the slot too.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            f.forward(&query(1, "slow.example.", RecordType::A, None), false),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(f.inflight(), 0);
    }

    // === cache ===

    #[tokio::test]
    async fn cache_serves_with_decremented_ttls_until_the_ttl_ends() {
        let up = Upstream::udp(answer_a).await;
        let f = Forwarder::new(&config(&[up.addr], 2000, 16, 100)).unwrap();
        let q = |id| query(id, "www.example.", RecordType::A, None);
        let first = parse(&f.forward(&q(1), false).await.unwrap());
        assert_eq!(first.answers[0].ttl, 300);

        advance(&f, 100);
        // Case differs, same entry; the client's ID and RD bit come back.
        let mut other = parse(&query(2, "WWW.EXAMPLE.", RecordType::A, None));
        other.metadata.recursion_desired = false;
        let hit = parse(&f.forward(&other.to_vec().unwrap(), false).await.unwrap());
        assert_eq!(
            (hit.metadata.id, hit.metadata.recursion_desired),
            (2, false)
        );
        assert_eq!(hit.answers[0].ttl, 200);
        assert_eq!(a_answers(&hit), a_answers(&first));
        assert_eq!(up.queries(), 1);

        advance(&f, 200);
        let again = parse(&f.forward(&q(3), false).await.unwrap());
        assert_eq!(
            again.answers[0].ttl, 300,
            "expired at its TTL: fresh from upstream"
        );
        assert_eq!(up.queries(), 2);
    }

    #[tokio::test]
    async fn cache_key_separates_type_class_edns_do_and_cd() {
        let up = Upstream::udp(answer_a).await;
        let f = Forwarder::new(&config(&[up.addr], 2000, 16, 100)).unwrap();
        let mut cd = parse(&query(1, "k.example.", RecordType::A, None));
        cd.metadata.checking_disabled = true;
        let mut chaos = parse(&query(1, "k.example.", RecordType::A, None));
        chaos.queries[0].set_query_class(DNSClass::CH);
        let variants = [
            query(1, "k.example.", RecordType::A, None),
            query(1, "k.example.", RecordType::TXT, None),
            query(1, "k.example.", RecordType::A, Some((1232, false))),
            query(1, "k.example.", RecordType::A, Some((1232, true))),
            cd.to_vec().unwrap(),
            chaos.to_vec().unwrap(),
        ];
        for v in &variants {
            f.forward(v, false).await.unwrap();
        }
        assert_eq!(up.queries(), variants.len());
        for v in &variants {
            f.forward(v, false).await.unwrap();
        }
        assert_eq!(
            up.queries(),
            variants.len(),
            "each variant hit its own entry"
        );
        // A different EDNS payload size is the same entry.
        f.forward(
            &query(1, "k.example.", RecordType::A, Some((4096, false))),
            false,
        )
        .await
        .unwrap();
        assert_eq!(up.queries(), variants.len());
    }

    #[tokio::test]
    async fn negative_answers_are_cached_for_the_soa_minimum_and_only_with_a_soa() {
        let up = Upstream::udp(|req| {
            let name = req.queries[0].name().to_ascii();
            let mut m = reply(req, ResponseCode::NXDomain);
            if name.starts_with("withsoa") {
                m.add_authority(soa_record(3600, 30));
            } else if name.starts_with("nodata") {
                m.metadata.response_code = ResponseCode::NoError;
                m.add_authority(soa_record(10, 3600));
            }
            vec![m.to_vec().unwrap()]
        })
        .await;
        let f = Forwarder::new(&config(&[up.addr], 2000, 16, 100)).unwrap();
        for name in ["withsoa.example.", "nodata.example.", "nosoa.example."] {
            f.forward(&query(1, name, RecordType::A, None), false)
                .await
                .unwrap();
        }
        assert_eq!(f.cached(), 2, "NXDOMAIN without a SOA is not cached");

        advance(&f, 9);
        let hit = parse(
            &f.forward(&query(2, "withsoa.example.", RecordType::A, None), false)
                .await
                .unwrap(),
        );
        assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(hit.authorities[0].ttl, 3600 - 9);
        f.forward(&query(2, "nodata.example.", RecordType::A, None), false)
            .await
            .unwrap();
        assert_eq!(up.queries(), 3);

        // nodata: the SOA record's own TTL (10 s) bounds it; withsoa: the SOA minimum (30 s).
        advance(&f, 2);
        f.forward(&query(3, "nodata.example.", RecordType::A, None), false)
            .await
            .unwrap();
        f.forward(&query(3, "withsoa.example.", RecordType::A, None), false)
            .await
            .unwrap();
        assert_eq!(up.queries(), 4);
    }

    #[test]
    fn what_is_cached_and_for_how_long() {
        let req = parse(&query(1, "c.example.", RecordType::A, None));
        let name = req.queries[0].name().clone();
        let mut ok = reply(&req, ResponseCode::NoError);
        ok.add_answer(a_record(&name, 300, [1, 1, 1, 1]));
        ok.add_answer(a_record(&name, 60, [1, 1, 1, 2]));
        ok.add_authority(soa_record(120, 5));
        assert_eq!(cache_ttl(&ok), Some(60), "the smallest TTL of any record");
        let mut zero = ok.clone();
        zero.answers[0].ttl = 0;
        assert_eq!(cache_ttl(&zero), None);
        let mut long = reply(&req, ResponseCode::NoError);
        long.add_answer(a_record(&name, 7 * 86_400, [1, 1, 1, 1]));
        assert_eq!(cache_ttl(&long), Some(MAX_CACHE_TTL));
        let mut tc = ok.clone();
        tc.metadata.truncation = true;
        assert_eq!(cache_ttl(&tc), None);
        for rcode in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::FormErr,
        ] {
            let mut m = ok.clone();
            m.metadata.response_code = rcode;
            assert_eq!(cache_ttl(&m), None, "{rcode:?}");
        }
        let mut nodata_without_soa = reply(&req, ResponseCode::NoError);
        nodata_without_soa.add_additional(a_record(&name, 300, [1, 1, 1, 1]));
        assert_eq!(cache_ttl(&nodata_without_soa), None);
    }

    #[tokio::test]
    async fn cache_is_bounded_and_pushes_out_the_oldest() {
        let up = Upstream::udp(answer_a).await;
        let f = Forwarder::new(&config(&[up.addr], 2000, 16, 3)).unwrap();
        for i in 0..10 {
            let name = format!("n{i}.example.");
            f.forward(&query(1, &name, RecordType::A, None), false)
                .await
                .unwrap();
            assert!(f.cached() <= 3);
        }
        assert_eq!(f.cached(), 3);
        // The newest three are there, the oldest went.
        for i in 7..10 {
            f.forward(
                &query(1, &format!("n{i}.example."), RecordType::A, None),
                false,
            )
            .await
            .unwrap();
        }
        assert_eq!(up.queries(), 10);
        f.forward(&query(1, "n0.example.", RecordType::A, None), false)
            .await
            .unwrap();
        assert_eq!(up.queries(), 11);
        // Storing one name again and again keeps the bookkeeping bounded too.
        for _ in 0..50 {
            let key = ClientQuery::parse(&query(1, "n9.example.", RecordType::A, None))
                .unwrap()
                .key;
            let answer = answer_a(&parse(&query(1, "n9.example.", RecordType::A, None))).remove(0);
            f.cache.as_ref().unwrap().insert(key, &answer);
        }
        let inner = f.cache.as_ref().unwrap().lock();
        assert!(
            inner.map.len() <= 3 && inner.order.len() <= 6,
            "{} {}",
            inner.map.len(),
            inner.order.len()
        );
    }

    // === a real unbound ===

    /// An `unbound` on a loopback port serving a static zone; killed on drop.
    struct Unbound {
        child: std::process::Child,
        addr: SocketAddr,
        _dir: tempfile::TempDir,
    }

    impl Drop for Unbound {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn unbound_binary() -> Option<std::path::PathBuf> {
        let out = std::process::Command::new("sh")
            .args(["-c", "command -v unbound"])
            .output()
            .ok()?;
        let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
        if path.is_empty() {
            if std::env::var_os("FERRYMAN_REQUIRE_ALL").is_some() {
                panic!("unbound is required (FERRYMAN_REQUIRE_ALL) but not installed");
            }
            eprintln!("unbound not installed (apt-get install unbound); skipping");
            return None;
        }
        Some(path.into())
    }

    async fn start_unbound(binary: &std::path::Path) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  chroot: \"\"\n  \
             username: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  \
             logfile: \"\"\n  verbosity: 0\n  do-ip6: no\n  num-threads: 1\n  \
             access-control: 127.0.0.0/8 allow\n  local-zone: \"example.test.\" static\n  \
             local-data: \"example.test. 3600 IN SOA ns.example.test. root.example.test. 1 3600 600 86400 60\"\n  \
             local-data: \"www.example.test. 300 IN A 192.0.2.7\"\n",
            dir = dir.path().display()
        );
        for i in 0..20 {
            conf.push_str(&format!(
                "  local-data: 'big.example.test. 300 IN TXT \"{i:02}-{}\"'\n",
                "y".repeat(60)
            ));
        }
        conf.push_str("remote-control:\n  control-enable: no\n");
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start unbound");
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let unbound = Unbound {
            child,
            addr,
            _dir: dir,
        };
        // Wait until it answers (at most 10 s).
        let probe = Forwarder::new(&config(&[addr], 200, 4, 0)).unwrap();
        for _ in 0..50 {
            if probe
                .forward(&query(1, "www.example.test.", RecordType::A, None), false)
                .await
                .is_some()
            {
                return unbound;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("unbound did not start on {addr}");
    }

    #[tokio::test]
    async fn forwards_to_a_real_unbound() {
        let Some(binary) = unbound_binary() else {
            return;
        };
        let unbound = start_unbound(&binary).await;
        let f = Forwarder::new(&config(&[unbound.addr], 2000, 16, 100)).unwrap();

        let got = parse(
            &f.forward(
                &query(
                    0x0101,
                    "www.example.test.",
                    RecordType::A,
                    Some((1232, false)),
                ),
                false,
            )
            .await
            .unwrap(),
        );
        assert_eq!(got.metadata.id, 0x0101);
        assert_eq!(
            a_answers(&got),
            BTreeSet::from([Ipv4Addr::new(192, 0, 2, 7)])
        );

        let nx = parse(
            &f.forward(
                &query(0x0202, "nope.example.test.", RecordType::A, None),
                false,
            )
            .await
            .unwrap(),
        );
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(
            nx.authorities
                .iter()
                .any(|r| matches!(r.data, RData::SOA(_)))
        );
        assert_eq!(
            f.cached(),
            2,
            "the A answer and the NXDOMAIN (with its SOA)"
        );

        let q = query(0x0303, "big.example.test.", RecordType::TXT, None);
        let udp = parse(&f.forward(&q, false).await.unwrap());
        assert!(
            udp.metadata.truncation,
            "unbound truncates 20 long TXTs at 512 bytes"
        );
        let tcp = parse(&f.forward(&q, true).await.unwrap());
        assert!(!tcp.metadata.truncation);
        assert_eq!((tcp.metadata.id, tcp.answers.len()), (0x0303, 20));
    }
}
