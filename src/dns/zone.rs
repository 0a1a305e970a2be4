//! `Records` → `Zone`: every answer pre-encoded in wire format, looked up by lowercased name; and
//! the query path ([`respond`]): parse one query, write its answer into a reused buffer.
//!
//! # Layout
//! Every resource record is encoded once, at compile time, by hickory-proto (`Record` +
//! `BinEncoder`, names uncompressed) and stored without its owner name: type, class, TTL, rdlength
//! and rdata, in one byte arena. Answering writes a 2-byte compression pointer as the owner
//! (`0xC00C`, the question name, so the answer echoes the client's spelling and case) and copies
//! the stored bytes. Names are keyed by their lowercased wire form in a hash map; each name holds
//! its RRsets (A, AAAA, SRV, PTR, and SOA/NS at a zone apex).
//!
//! # Answers (Mesos-DNS `resolver/resolver.go` as reference, RFC 1034/2308 where it differs)
//! - A, AAAA, SRV, PTR, SOA, NS and ANY (every RRset at the name). AA on every answer from our
//!   data; RD copied; RA when forwarding is configured. TTL = `dns.ttl`.
//! - SRV answers carry the A/AAAA records of their targets in the additional section (as
//!   Mesos-DNS does; it adds only the first A/AAAA of each target, we add all of them, each target
//!   once). NS answers carry the name server's addresses when the zone has them.
//! - SOA and NS at each apex of `Records::zones` (serial = `Records::serial`, mname = NS target =
//!   `dns.soa_mname`, rname and timers from `dns.soa_*`). Mesos-DNS puts the SOA/NS into the
//!   authority section for *any* name asked for SOA/NS; we answer them at the apex only, in the
//!   answer section, as RFC 1034 servers do (`dig SOA mesos` works as with BIND/unbound).
//! - Unknown name inside one of our zones: NXDOMAIN with the zone's SOA in the authority section
//!   (Mesos-DNS answers NOERROR without SOA for unknown SRV names; the issue asks for NXDOMAIN).
//!   Existing name, missing type: NOERROR with no answers (NODATA) and the SOA. Empty
//!   non-terminals (`marathon.mesos.` when only `app.marathon.mesos.` exists) exist: NODATA, not
//!   NXDOMAIN (RFC 8020: an NXDOMAIN would deny everything below the name).
//! - PTR names for the IPs in `Records::ptrs` are answered; other names outside our zones (and
//!   other types at those reverse names) are [`Outcome::Forward`]: the server forwards them or
//!   answers REFUSED when there are no resolvers. Zone transfers (AXFR/IXFR) are REFUSED (the
//!   HTTP `/v1/axfr` serves the records).
//! - The answers of one RRset rotate: the first record is `rotation % n`, where the caller passes
//!   a counter it increments per query (per worker, so no cache line is shared between threads).
//!
//! # Query parsing
//! hickory-proto's `BinDecoder` reads the header and walks the message, but the question name is
//! read label by label into a stack buffer (lowercased) instead of into a `Name`, which would
//! allocate for names over 32 bytes (`_http._tcp.web.marathon.slave.mesos.`): the hit path does not
//! allocate. A compression pointer in the only question can only point back into the header or
//! into the name itself (a loop), so it is FORMERR. The remaining records are skipped, and an OPT
//! record in the additional section gives the EDNS payload size. Malformed or qdcount != 1:
//! FORMERR; opcode other than QUERY: NOTIMP; EDNS version > 0: BADVERS; shorter than a header or a
//! response (QR=1): dropped. The fuzz target and a test check the parser against hickory's full
//! `Message` decoder.
//!
//! # Sizes
//! Over UDP the limit is 512 bytes without EDNS, else the advertised payload size clamped to
//! 512..=[`MAX_UDP_PAYLOAD`] (1232: the DNS Flag Day 2020 value, a 1280-byte IPv6 minimum MTU
//! minus headers, so answers are never IP-fragmented). Over TCP the limit is 65535. When the
//! answers do not fit, the TC bit is set and the answers that fit are kept (as Mesos-DNS does);
//! additional records that do not fit are left out without TC (RFC 2181 9).

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder, NameEncoding};

use super::Records;
use crate::config::DnsConfig;

/// Length of a DNS header.
pub const HEADER_LEN: usize = 12;
/// The largest UDP payload we send (and advertise in our OPT record): DNS Flag Day 2020's 1232
/// bytes, which fit a 1280-byte IPv6 packet, so no answer is ever fragmented.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The UDP limit without EDNS (RFC 1035), and the smallest payload size we honour.
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// The largest message over TCP (2-byte length prefix).
pub const MAX_TCP_MESSAGE: usize = 65535;

/// Record type codes used on the query path.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// Response codes (the low 4 bits; BADVERS is an extended code carried in the OPT record).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const BADVERS: u16 = 16;
}

const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

// === Query parsing ===

/// The EDNS part of a query (its OPT record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdnsInfo {
    /// Advertised UDP payload size (the OPT class), not yet clamped.
    pub payload: u16,
    pub version: u8,
    /// The DO bit (echoed; we never sign).
    pub dnssec_ok: bool,
}

/// One parsed query: borrowed from the datagram, plus the lowercased question name on the stack.
#[derive(Clone)]
pub struct Question<'a> {
    pub id: u16,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    /// The question section as sent: name, type, class.
    pub raw: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<EdnsInfo>,
    /// Lowercased wire name, `lower[..lower_len]`.
    lower: [u8; 255],
    lower_len: u8,
}

impl Question<'_> {
    /// The lowercased question name in wire format (with the root label).
    pub fn lower_name(&self) -> &[u8] {
        &self.lower[..usize::from(self.lower_len)]
    }

    /// Length of the question name in wire format.
    fn name_len(&self) -> usize {
        usize::from(self.lower_len)
    }
}

/// Why a datagram is not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a header.
    Short,
    /// QR set: a response, never answered (no reflection loops).
    Response,
}

impl DropReason {
    /// The `reason` label of `dns_dropped`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::Response => "response",
        }
    }
}

/// What [`parse`] made of a datagram.
pub enum Parsed<'a> {
    Query(Box<Question<'a>>),
    /// Answer with this rcode and no question (FORMERR, NOTIMP).
    Error {
        id: u16,
        flags: u8,
        rcode: u16,
    },
    Drop(DropReason),
}

/// Parses `msg` as one query. Never panics on any input.
pub fn parse(msg: &[u8]) -> Parsed<'_> {
    match parse_inner(msg) {
        Ok(q) => Parsed::Query(Box::new(q)),
        Err(e) => e,
    }
}

/// Like [`parse`], into a caller-owned `Question` (no allocation: the hit path).
fn parse_inner(msg: &[u8]) -> Result<Question<'_>, Parsed<'_>> {
    if msg.len() < HEADER_LEN {
        return Err(Parsed::Drop(DropReason::Short));
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = msg[2];
    if flags & 0x80 != 0 {
        return Err(Parsed::Drop(DropReason::Response));
    }
    let error = |rcode| Parsed::Error { id, flags, rcode };
    if (flags >> 3) & 0x0f != 0 {
        return Err(error(rcode::NOTIMP));
    }
    let formerr = |_| error(rcode::FORMERR);
    let mut d = BinDecoder::new(msg);
    let _ = d.read_slice(4).map_err(formerr)?;
    let qdcount = d.read_u16().map_err(formerr)?.unverified();
    let ancount = d.read_u16().map_err(formerr)?.unverified();
    let nscount = d.read_u16().map_err(formerr)?.unverified();
    let arcount = d.read_u16().map_err(formerr)?.unverified();
    if qdcount != 1 {
        return Err(error(rcode::FORMERR));
    }
    let mut lower = [0u8; 255];
    let mut n = 0usize;
    loop {
        let len = usize::from(d.read_u8().map_err(formerr)?.unverified());
        if len & 0xc0 != 0 {
            // A compression pointer (or an obsolete extended label type).
            return Err(error(rcode::FORMERR));
        }
        if n + 1 + len > 255 {
            return Err(error(rcode::FORMERR));
        }
        lower[n] = len as u8;
        n += 1;
        if len == 0 {
            break;
        }
        let label = d.read_slice(len).map_err(formerr)?.unverified();
        for (dst, b) in lower[n..n + len].iter_mut().zip(label) {
            *dst = b.to_ascii_lowercase();
        }
        n += len;
    }
    let qtype = d.read_u16().map_err(formerr)?.unverified();
    let qclass = d.read_u16().map_err(formerr)?.unverified();
    let raw = &msg[HEADER_LEN..d.index()];
    let mut edns = None;
    let records = u32::from(ancount) + u32::from(nscount) + u32::from(arcount);
    for i in 0..records {
        let additional = i >= u32::from(ancount) + u32::from(nscount);
        let root = skip_name(&mut d).ok_or(error(rcode::FORMERR))?;
        let rtype = d.read_u16().map_err(formerr)?.unverified();
        let class = d.read_u16().map_err(formerr)?.unverified();
        let ttl = d.read_u32().map_err(formerr)?.unverified();
        let rdlen = d.read_u16().map_err(formerr)?.unverified();
        let _ = d.read_slice(usize::from(rdlen)).map_err(formerr)?;
        if rtype == rtype::OPT {
            // RFC 6891 6.1.1: one OPT, in the additional section, owned by the root.
            if !additional || !root || edns.is_some() {
                return Err(error(rcode::FORMERR));
            }
            edns = Some(EdnsInfo {
                payload: class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
            });
        }
    }
    Ok(Question {
        id,
        recursion_desired: flags & 0x01 != 0,
        checking_disabled: msg[3] & 0x10 != 0,
        raw,
        qtype,
        qclass,
        edns,
        lower,
        lower_len: n as u8,
    })
}

/// Skips a (possibly compressed) name; `Some(true)` when it is the root name.
fn skip_name(d: &mut BinDecoder<'_>) -> Option<bool> {
    let mut first = true;
    loop {
        let len = d.read_u8().ok()?.unverified();
        match len & 0xc0 {
            0x00 if len == 0 => return Some(first),
            0x00 => {
                d.read_slice(usize::from(len)).ok()?;
            }
            0xc0 => {
                // A pointer ends the name; we never follow it (no loops to detect).
                d.read_u8().ok()?;
                return Some(false);
            }
            _ => return None,
        }
        first = false;
    }
}

// === Zone ===

/// One pre-encoded resource record.
#[derive(Debug, Clone, Copy)]
struct Rr {
    /// `data[off..off + len]`: type, class, TTL, rdlength, rdata (no owner).
    off: u32,
    len: u16,
    /// Offset in the record (after the 2-byte owner pointer is accounted for by the caller) of
    /// the name whose addresses go in the additional section, 0 = none.
    target: u16,
    /// Identifies the target name (to add each target's addresses once), `u32::MAX` = none.
    target_id: u32,
    /// `extras[extra_start..extra_start + extra_len]`: the target's A/AAAA records.
    extra_start: u32,
    extra_len: u32,
}

/// One RRset of a name.
#[derive(Debug, Clone, Copy)]
struct Set {
    rtype: u16,
    start: u32,
    len: u32,
}

/// A name in the zone.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The closest enclosing zone (index into `Zone::apexes`), `u16::MAX` = none (a PTR name).
    zone: u16,
    /// `Zone::sets[sets_start..sets_start + sets_len]`.
    sets_start: u32,
    sets_len: u16,
}

const NO_ZONE: u16 = u16::MAX;

/// One zone we are authoritative for.
#[derive(Debug, Clone)]
struct Apex {
    /// Lowercased wire name.
    wire: Box<[u8]>,
    /// The SOA record body, for the authority section of NXDOMAIN/NODATA.
    soa: Rr,
}

/// Record counts by type, for the `dns_zone_records` gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub a: usize,
    pub aaaa: usize,
    pub srv: usize,
    pub ptr: usize,
    pub soa: usize,
    pub ns: usize,
}

/// An immutable, compiled zone: what the query loops answer from.
pub struct Zone {
    names: HashMap<Box<[u8]>, Node>,
    apexes: Vec<Apex>,
    sets: Vec<Set>,
    rrs: Vec<Rr>,
    /// `(off, len)` of additional records in `data`.
    extras: Vec<(u32, u16)>,
    data: Vec<u8>,
    /// Our OPT record (root owner, payload [`MAX_UDP_PAYLOAD`], version 0), for EDNS answers.
    opt: Vec<u8>,
    counts: RecordCounts,
    serial: u64,
}

/// Encodes `rdata` as a record owned by the root with `ttl`, and returns it without the owner.
fn encode(scratch: &mut Vec<u8>, ttl: u32, rdata: RData) -> Option<Vec<u8>> {
    scratch.clear();
    let record = Record::from_rdata(Name::root(), ttl, rdata);
    let mut enc = BinEncoder::new(scratch);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    record.emit(&mut enc).ok()?;
    // The root owner is one zero byte.
    Some(scratch[1..].to_vec())
}

/// `name` (absolute or not) as a hickory `Name`, fully qualified.
fn fqdn(name: &str) -> Option<Name> {
    let mut n = Name::from_ascii(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// The lowercased wire form of `name`.
fn wire(name: &Name) -> Option<Box<[u8]>> {
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::UncompressedLowercase);
    name.emit(&mut enc).ok()?;
    Some(buf.into_boxed_slice())
}

/// Label start offsets of a wire name (the root label included).
fn label_starts(wire: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = Some(0usize);
    std::iter::from_fn(move || {
        let i = at?;
        let len = usize::from(*wire.get(i)?);
        at = if len == 0 { None } else { Some(i + 1 + len) };
        Some(i)
    })
}

/// Builder state of [`Zone::compile`].
#[derive(Default)]
struct Builder {
    /// Per name: the records by type, in insertion order (deduplicated by the sets in Records).
    names: HashMap<Box<[u8]>, Vec<(u16, PendingRr)>>,
    data: Vec<u8>,
}

/// A record before its additional records are resolved.
struct PendingRr {
    off: u32,
    len: u16,
    /// Offset of the target name in the record body (+2 for the owner pointer), and the name.
    target: Option<(u16, Box<[u8]>)>,
}

impl Builder {
    fn push(
        &mut self,
        owner: Box<[u8]>,
        rtype: u16,
        body: &[u8],
        target: Option<(u16, Box<[u8]>)>,
    ) {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(body);
        let rr = PendingRr {
            off,
            len: body.len() as u16,
            target,
        };
        self.names.entry(owner).or_default().push((rtype, rr));
    }
}

impl Zone {
    /// Compiles `records` under `dns` (TTL, SOA fields). Names that are not valid domain names
    /// are skipped (Records only holds sanitised names, so this does not happen in practice).
    pub fn compile(records: &Records, dns: &DnsConfig) -> Zone {
        let ttl = dns.ttl;
        let mut scratch = Vec::with_capacity(512);
        let mut b = Builder::default();
        let mut counts = RecordCounts::default();

        for (name, ips) in &records.hosts {
            let Some(owner) = fqdn(name).and_then(|n| wire(&n)) else {
                continue;
            };
            for ip in ips {
                let (rt, rdata) = match ip {
                    IpAddr::V4(v4) => (rtype::A, RData::A(A(*v4))),
                    IpAddr::V6(v6) => (rtype::AAAA, RData::AAAA(AAAA(*v6))),
                };
                if let Some(body) = encode(&mut scratch, ttl, rdata) {
                    b.push(owner.clone(), rt, &body, None);
                    if rt == rtype::A {
                        counts.a += 1;
                    } else {
                        counts.aaaa += 1;
                    }
                }
            }
        }
        for (name, srvs) in &records.srvs {
            let Some(owner) = fqdn(name).and_then(|n| wire(&n)) else {
                continue;
            };
            // Sorted by target, so equal targets are adjacent (each target's addresses are
            // added once even after rotation; see `write_answer`).
            let mut srvs: Vec<_> = srvs.iter().collect();
            srvs.sort_by_cached_key(|s| s.target.to_ascii_lowercase());
            for srv in srvs {
                let Some(target) = fqdn(&srv.target) else {
                    continue;
                };
                let Some(target_wire) = wire(&target) else {
                    continue;
                };
                let rdata = RData::SRV(SRV::new(0, 0, srv.port, target));
                if let Some(body) = encode(&mut scratch, ttl, rdata) {
                    // type, class, ttl, rdlength (10) + priority, weight, port (6).
                    b.push(
                        owner.clone(),
                        rtype::SRV,
                        &body,
                        Some((2 + 16, target_wire)),
                    );
                    counts.srv += 1;
                }
            }
        }
        for (ip, names) in &records.ptrs {
            let Some(owner) = wire(&Name::from(*ip)) else {
                continue;
            };
            for name in names {
                let Some(target) = fqdn(name) else {
                    continue;
                };
                if let Some(body) = encode(&mut scratch, ttl, RData::PTR(PTR(target))) {
                    b.push(owner.clone(), rtype::PTR, &body, None);
                    counts.ptr += 1;
                }
            }
        }

        // Zone apexes: SOA and NS.
        let mname = fqdn(&dns.soa_mname).unwrap_or_else(Name::root);
        let rname = fqdn(&dns.soa_rname).unwrap_or_else(Name::root);
        let mname_wire = wire(&mname).unwrap_or_else(|| Box::new([0]));
        let mut apex_wires = Vec::new();
        for zone in &records.zones {
            let Some(apex) = fqdn(zone).and_then(|n| wire(&n)) else {
                continue;
            };
            if apex_wires.contains(&apex) {
                continue;
            }
            let soa = SOA::new(
                mname.clone(),
                rname.clone(),
                // The SOA serial is 32 bits; snapshot versions wrap (RFC 1982 arithmetic).
                records.serial as u32,
                dns.soa_refresh as i32,
                dns.soa_retry as i32,
                dns.soa_expire as i32,
                dns.soa_minttl,
            );
            if let Some(body) = encode(&mut scratch, ttl, RData::SOA(soa)) {
                b.push(apex.clone(), rtype::SOA, &body, None);
                counts.soa += 1;
            }
            if let Some(body) = encode(&mut scratch, ttl, RData::NS(NS(mname.clone()))) {
                b.push(
                    apex.clone(),
                    rtype::NS,
                    &body,
                    Some((2 + 10, mname_wire.clone())),
                );
                counts.ns += 1;
            }
            apex_wires.push(apex);
        }

        // Closest enclosing zone of a wire name.
        let enclosing = |name: &[u8]| -> u16 {
            for start in label_starts(name) {
                let suffix = &name[start..];
                if let Some(i) = apex_wires.iter().position(|a| &a[..] == suffix) {
                    return i as u16;
                }
            }
            NO_ZONE
        };

        // Empty non-terminals between each in-zone name and its apex.
        let mut ents: std::collections::HashSet<Box<[u8]>> = std::collections::HashSet::new();
        for name in b.names.keys() {
            let zone = enclosing(name);
            if zone == NO_ZONE {
                continue;
            }
            let apex_len = apex_wires[usize::from(zone)].len();
            for start in label_starts(name).skip(1) {
                let suffix = &name[start..];
                if suffix.len() <= apex_len {
                    break;
                }
                if ents.contains(suffix) {
                    // Its ancestors are in already.
                    break;
                }
                if !b.names.contains_key(suffix) {
                    ents.insert(Box::<[u8]>::from(suffix));
                }
            }
        }

        // Flatten: nodes, sets, records, additional records.
        let data = b.data;
        let mut zone = Zone {
            names: HashMap::with_capacity(b.names.len() + ents.len()),
            apexes: Vec::new(),
            sets: Vec::new(),
            rrs: Vec::new(),
            extras: Vec::new(),
            data,
            opt: Vec::new(),
            counts,
            serial: records.serial,
        };
        // Addresses of each name, for additional records, as (off, len) in `data`.
        let mut addresses: HashMap<&[u8], Vec<(u32, u16)>> = HashMap::new();
        for (name, rrs) in &b.names {
            for (rt, rr) in rrs {
                if *rt == rtype::A || *rt == rtype::AAAA {
                    addresses
                        .entry(&name[..])
                        .or_default()
                        .push((rr.off, rr.len));
                }
            }
        }
        let mut target_ids: HashMap<&[u8], u32> = HashMap::new();
        for (name, rrs) in &b.names {
            let sets_start = zone.sets.len() as u32;
            let mut types: Vec<u16> = rrs.iter().map(|(t, _)| *t).collect();
            types.sort_unstable();
            types.dedup();
            for t in types {
                let start = zone.rrs.len() as u32;
                for (_, rr) in rrs.iter().filter(|(rt, _)| *rt == t) {
                    let mut out = Rr {
                        off: rr.off,
                        len: rr.len,
                        target: 0,
                        target_id: u32::MAX,
                        extra_start: 0,
                        extra_len: 0,
                    };
                    if let Some((at, target)) = &rr.target
                        && let Some(addrs) = addresses.get(&target[..])
                    {
                        let next = target_ids.len() as u32;
                        out.target = *at;
                        out.target_id = *target_ids.entry(&target[..]).or_insert(next);
                        out.extra_start = zone.extras.len() as u32;
                        out.extra_len = addrs.len() as u32;
                        zone.extras.extend_from_slice(addrs);
                    }
                    zone.rrs.push(out);
                }
                zone.sets.push(Set {
                    rtype: t,
                    start,
                    len: zone.rrs.len() as u32 - start,
                });
            }
            let node = Node {
                zone: enclosing(name),
                sets_start,
                sets_len: (zone.sets.len() as u32 - sets_start) as u16,
            };
            zone.names.insert(name.clone(), node);
        }
        for ent in ents {
            let node = Node {
                zone: enclosing(&ent),
                sets_start: 0,
                sets_len: 0,
            };
            zone.names.insert(ent, node);
        }
        for apex in apex_wires {
            let soa = zone
                .names
                .get(&apex)
                .and_then(|n| zone.set(n, rtype::SOA))
                .map(|s| zone.rrs[s.start as usize])
                .unwrap_or(Rr {
                    off: 0,
                    len: 0,
                    target: 0,
                    target_id: u32::MAX,
                    extra_start: 0,
                    extra_len: 0,
                });
            zone.apexes.push(Apex { wire: apex, soa });
        }
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        edns.set_version(0);
        let mut opt = Vec::with_capacity(16);
        let mut enc = BinEncoder::new(&mut opt);
        if Record::from(&edns).emit(&mut enc).is_ok() {
            zone.opt = opt;
        }
        zone
    }

    /// Records by type, for metrics.
    pub fn counts(&self) -> RecordCounts {
        self.counts
    }

    /// The SOA serial source (`Records::serial`).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Number of names (empty non-terminals included).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn set(&self, node: &Node, rt: u16) -> Option<&Set> {
        self.node_sets(node).iter().find(|s| s.rtype == rt)
    }

    fn node_sets(&self, node: &Node) -> &[Set] {
        let start = node.sets_start as usize;
        &self.sets[start..start + usize::from(node.sets_len)]
    }

    fn bytes(&self, off: u32, len: u16) -> &[u8] {
        let off = off as usize;
        &self.data[off..off + usize::from(len)]
    }

    /// Closest enclosing zone of a lowercased wire name.
    fn enclosing(&self, name: &[u8]) -> Option<usize> {
        for start in label_starts(name) {
            let suffix = &name[start..];
            if let Some(i) = self
                .apexes
                .iter()
                .position(|a| a.wire.len() == suffix.len() && &a.wire[..] == suffix)
            {
                return Some(i);
            }
        }
        None
    }
}

// === Answering ===

/// How a query was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `out` holds the response.
    Answered {
        qtype: u16,
        rcode: u16,
        truncated: bool,
    },
    /// Not ours: forward the query (or answer REFUSED, see [`respond`]).
    Forward { qtype: u16 },
    /// No response.
    Dropped(DropReason),
}

/// Per-query context the server passes in.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// The query came over TCP (65535-byte limit, never TC).
    pub tcp: bool,
    /// Forwarding is configured: RA set; names outside our zones are [`Outcome::Forward`]. Without
    /// it they are answered REFUSED.
    pub forwarding: bool,
    /// A counter the caller increments per query: the rotation of RRsets.
    pub rotation: u32,
}

/// Answers `query` into `out` (cleared first). `zone` is `None` before the first snapshot
/// (SERVFAIL). Never panics on any input.
pub fn respond(zone: Option<&Zone>, query: &[u8], ctx: Ctx, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    let q = match parse_inner(query) {
        Ok(q) => q,
        Err(Parsed::Drop(reason)) => return Outcome::Dropped(reason),
        Err(Parsed::Error { id, flags, rcode }) => {
            write_error(id, flags, rcode, ctx.forwarding, out);
            return Outcome::Answered {
                qtype: 0,
                rcode,
                truncated: false,
            };
        }
        Err(Parsed::Query(_)) => unreachable!("parse_inner returns queries as Ok"),
    };
    if let Some(e) = q.edns
        && e.version > 0
    {
        return simple(&q, rcode::BADVERS, ctx, out, false);
    }
    let Some(zone) = zone else {
        return simple(&q, rcode::SERVFAIL, ctx, out, false);
    };
    zone.answer(&q, ctx, out)
}

/// An answer with `rcode` and the question echoed (no records): SERVFAIL when forwarding failed,
/// REFUSED without resolvers. `query` must parse (else FORMERR is written).
pub fn error_response(query: &[u8], rc: u16, ctx: Ctx, out: &mut Vec<u8>) {
    out.clear();
    match parse_inner(query) {
        Ok(q) => {
            simple(&q, rc, ctx, out, false);
        }
        Err(Parsed::Error { id, flags, rcode }) => {
            write_error(id, flags, rcode, ctx.forwarding, out)
        }
        Err(_) => {}
    }
}

/// Header-only error answer (FORMERR, NOTIMP): ID, opcode and RD copied.
fn write_error(id: u16, flags: u8, rc: u16, forwarding: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0x80 | (flags & 0x79));
    out.push(if forwarding { 0x80 } else { 0 } | (rc & 0x0f) as u8);
    out.extend_from_slice(&[0; 8]);
}

/// Writes the header and question; counts are patched by [`finish`].
fn start(q: &Question<'_>, rc: u16, authoritative: bool, forwarding: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&q.id.to_be_bytes());
    let mut f1 = 0x80u8;
    if authoritative {
        f1 |= 0x04;
    }
    if q.recursion_desired {
        f1 |= 0x01;
    }
    out.push(f1);
    let mut f2 = (rc & 0x0f) as u8;
    if forwarding {
        f2 |= 0x80;
    }
    if q.checking_disabled {
        f2 |= 0x10;
    }
    out.push(f2);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(q.raw);
}

/// The message size limit for `q` over this transport.
fn limit(q: &Question<'_>, tcp: bool) -> usize {
    if tcp {
        return MAX_TCP_MESSAGE;
    }
    match q.edns {
        Some(e) => usize::from(e.payload.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)),
        None => usize::from(MIN_UDP_PAYLOAD),
    }
}

/// Our OPT record, with the extended rcode bits of `rc` and the DO bit echoed.
fn write_opt(q: &Question<'_>, rc: u16, opt: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(e) = q.edns else {
        return false;
    };
    let at = out.len();
    if opt.len() == 11 {
        out.extend_from_slice(opt);
    } else {
        // root, OPT, payload, ttl, rdlength 0
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    // TTL: extended rcode (upper 8 bits of 12), version, DO.
    out[at + 5] = (rc >> 4) as u8;
    out[at + 6] = 0;
    out[at + 7] = if e.dnssec_ok { 0x80 } else { 0 };
    true
}

fn set_counts(out: &mut [u8], an: u16, ns: u16, ar: u16) {
    out[6..8].copy_from_slice(&an.to_be_bytes());
    out[8..10].copy_from_slice(&ns.to_be_bytes());
    out[10..12].copy_from_slice(&ar.to_be_bytes());
}

/// Question echoed, no records, `rc`; OPT when the query had one.
fn simple(q: &Question<'_>, rc: u16, ctx: Ctx, out: &mut Vec<u8>, authoritative: bool) -> Outcome {
    start(q, rc, authoritative, ctx.forwarding, out);
    let ar = u16::from(write_opt(q, rc, &[], out));
    set_counts(out, 0, 0, ar);
    Outcome::Answered {
        qtype: q.qtype,
        rcode: rc,
        truncated: false,
    }
}

impl Zone {
    /// Answers a parsed query from this zone.
    fn answer(&self, q: &Question<'_>, ctx: Ctx, out: &mut Vec<u8>) -> Outcome {
        let name = q.lower_name();
        let node = self.names.get(name);
        let in_zone = match node {
            Some(n) if n.zone != NO_ZONE => Some(usize::from(n.zone)),
            Some(_) => None,
            None => self.enclosing(name),
        };
        if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
            return Outcome::Forward { qtype: q.qtype };
        }
        let Some(node) = node else {
            return match in_zone {
                Some(z) => self.negative(q, z, rcode::NXDOMAIN, ctx, out),
                None => Outcome::Forward { qtype: q.qtype },
            };
        };
        let sets = self.node_sets(node);
        let wanted = |s: &&Set| q.qtype == rtype::ANY || s.rtype == q.qtype;
        if !sets.iter().any(|s| wanted(&s)) {
            return match in_zone {
                Some(_) if q.qtype == rtype::AXFR || q.qtype == rtype::IXFR => {
                    simple(q, rcode::REFUSED, ctx, out, false)
                }
                Some(z) => self.negative(q, z, rcode::NOERROR, ctx, out),
                None => Outcome::Forward { qtype: q.qtype },
            };
        }

        let limit = limit(q, ctx.tcp);
        let reserve = if q.edns.is_some() { 11 } else { 0 };
        start(q, rcode::NOERROR, true, ctx.forwarding, out);
        let answers_at = out.len();
        let mut an = 0u16;
        let mut truncated = false;
        'sets: for set in sets.iter().filter(wanted) {
            let n = set.len as usize;
            let first = ctx.rotation as usize % n;
            for i in 0..n {
                let rr = &self.rrs[set.start as usize + (first + i) % n];
                if out.len() + 2 + usize::from(rr.len) + reserve > limit || an == u16::MAX {
                    truncated = true;
                    break 'sets;
                }
                out.extend_from_slice(&[0xc0, 0x0c]);
                out.extend_from_slice(self.bytes(rr.off, rr.len));
                an += 1;
            }
        }

        // Additional: the addresses of SRV/NS targets, each target once, while they fit.
        let mut ar = 0u16;
        if !truncated {
            let mut at = answers_at;
            let mut prev = u32::MAX;
            let mut first_target = u32::MAX;
            let mut written = 0u16;
            'extra: for set in sets.iter().filter(wanted) {
                let n = set.len as usize;
                let first = ctx.rotation as usize % n;
                for i in 0..n {
                    if written == an {
                        break 'extra;
                    }
                    let rr = &self.rrs[set.start as usize + (first + i) % n];
                    let rr_at = at;
                    at += 2 + usize::from(rr.len);
                    written += 1;
                    if rr.target_id == u32::MAX {
                        continue;
                    }
                    // Targets are sorted within a set, so a repeated target is the previous one
                    // or, after the rotation wrapped, the first one.
                    if rr.target_id == prev || rr.target_id == first_target {
                        continue;
                    }
                    if first_target == u32::MAX {
                        first_target = rr.target_id;
                    }
                    prev = rr.target_id;
                    let ptr = rr_at + usize::from(rr.target);
                    if ptr > 0x3fff {
                        continue;
                    }
                    let extras = &self.extras
                        [rr.extra_start as usize..(rr.extra_start + rr.extra_len) as usize];
                    for &(off, len) in extras {
                        if out.len() + 2 + usize::from(len) + reserve > limit || ar == u16::MAX - 1
                        {
                            break 'extra;
                        }
                        out.extend_from_slice(&(0xc000 | ptr as u16).to_be_bytes());
                        out.extend_from_slice(self.bytes(off, len));
                        ar += 1;
                    }
                }
            }
        }
        if truncated {
            out[2] |= 0x02;
        }
        if write_opt(q, rcode::NOERROR, &self.opt, out) {
            ar += 1;
        }
        set_counts(out, an, 0, ar);
        Outcome::Answered {
            qtype: q.qtype,
            rcode: rcode::NOERROR,
            truncated,
        }
    }

    /// NXDOMAIN or NODATA: no answers, the zone's SOA in the authority section.
    fn negative(
        &self,
        q: &Question<'_>,
        zone: usize,
        rc: u16,
        ctx: Ctx,
        out: &mut Vec<u8>,
    ) -> Outcome {
        start(q, rc, true, ctx.forwarding, out);
        let apex = &self.apexes[zone];
        let mut ns = 0;
        if apex.soa.len > 0 {
            // The apex is a suffix of the question name: point into it.
            let ptr = HEADER_LEN + q.name_len() - apex.wire.len();
            out.extend_from_slice(&(0xc000 | ptr as u16).to_be_bytes());
            out.extend_from_slice(self.bytes(apex.soa.off, apex.soa.len));
            ns = 1;
        }
        let ar = u16::from(write_opt(q, rc, &self.opt, out));
        set_counts(out, 0, ns, ar);
        Outcome::Answered {
            qtype: q.qtype,
            rcode: rc,
            truncated: false,
        }
    }
}

/// The UDP answer size limit for a raw query: its EDNS payload size clamped to
/// 512..=[`MAX_UDP_PAYLOAD`], 512 without EDNS or when it does not parse.
pub fn udp_limit(query: &[u8]) -> usize {
    match parse_inner(query) {
        Ok(q) => limit(&q, false),
        Err(_) => usize::from(MIN_UDP_PAYLOAD),
    }
}

/// The fuzz body, shared by the cargo-fuzz target (`tests/fuzz`) and a unit test: answers any
/// input from a sample zone and checks that every answer is a well-formed message for it.
#[doc(hidden)]
pub mod fuzz {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;

    use hickory_proto::op::{Message, MessageType};

    use super::{Ctx, Outcome, Parsed, Zone, parse};
    use crate::config::Config;
    use crate::dns::Records;
    use crate::dns::records::Srv;

    /// A small record set: A, AAAA, SRV with targets, PTR, 100 A records on one name, two zones.
    pub fn sample_records() -> Records {
        let ip = |s: &str| s.parse::<IpAddr>().expect("valid test IP");
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "web.marathon.mesos.".to_string(),
            BTreeSet::from([ip("10.0.0.1"), ip("10.0.0.2")]),
        );
        hosts.insert(
            "v6.marathon.mesos.".to_string(),
            BTreeSet::from([ip("fd00::1")]),
        );
        hosts.insert(
            "web-aaaaa-s1.marathon.slave.mesos.".to_string(),
            BTreeSet::from([ip("10.1.0.1")]),
        );
        hosts.insert(
            "web-bbbbb-s2.marathon.slave.mesos.".to_string(),
            BTreeSet::from([ip("10.1.0.2"), ip("fd00::2")]),
        );
        hosts.insert("ns1.mesos.".to_string(), BTreeSet::from([ip("10.0.0.53")]));
        hosts.insert(
            "big.marathon.mesos.".to_string(),
            (0..100u8)
                .map(|i| IpAddr::from([10, 2, 0, i]))
                .collect::<BTreeSet<_>>(),
        );
        hosts.insert(
            "db.marathon.l4lb.thisdcos.directory.".to_string(),
            BTreeSet::from([ip("11.0.0.1")]),
        );
        let mut srvs = BTreeMap::new();
        let srv = |t: &str, port| Srv {
            target: t.to_string(),
            port,
        };
        srvs.insert(
            "_web._tcp.marathon.mesos.".to_string(),
            BTreeSet::from([
                srv("web-aaaaa-s1.marathon.slave.mesos.", 31000),
                srv("web-aaaaa-s1.marathon.slave.mesos.", 31001),
                srv("web-bbbbb-s2.marathon.slave.mesos.", 31002),
            ]),
        );
        let mut ptrs = BTreeMap::new();
        ptrs.insert(
            ip("10.0.0.1"),
            BTreeSet::from(["web.marathon.mesos.".to_string()]),
        );
        ptrs.insert(
            ip("fd00::1"),
            BTreeSet::from(["v6.marathon.mesos.".to_string()]),
        );
        Records {
            serial: 42,
            zones: vec!["mesos.".into(), "l4lb.thisdcos.directory.".into()],
            hosts,
            srvs,
            ptrs,
            ..Records::default()
        }
    }

    /// The zone of [`sample_records`] under the default config.
    pub fn sample_zone() -> Zone {
        Zone::compile(&sample_records(), &Config::default().dns)
    }

    /// Answers `data` over UDP and TCP, with and without a zone; panics if an answer is not a
    /// well-formed response to it.
    pub fn check(zone: &Zone, data: &[u8], out: &mut Vec<u8>) {
        for (tcp, z) in [(false, Some(zone)), (true, Some(zone)), (false, None)] {
            let ctx = Ctx {
                tcp,
                forwarding: data.first().is_some_and(|b| b & 1 == 1),
                rotation: data.len() as u32,
            };
            let outcome = super::respond(z, data, ctx, out);
            match outcome {
                Outcome::Answered { truncated, .. } => {
                    let limit = if tcp {
                        super::MAX_TCP_MESSAGE
                    } else {
                        super::udp_limit(data)
                    };
                    assert!(out.len() <= limit, "answer of {} > {limit}", out.len());
                    assert!(!(tcp && truncated), "TC over TCP");
                    let m = Message::from_vec(out).expect("our answer parses");
                    assert_eq!(m.metadata.message_type, MessageType::Response);
                    assert_eq!(&out[..2], &data[..2], "ID echoed");
                }
                Outcome::Forward { .. } => {
                    assert!(matches!(parse(data), Parsed::Query(_)));
                }
                Outcome::Dropped(_) => {
                    assert!(data.len() < super::HEADER_LEN || data[2] & 0x80 != 0);
                }
            }
        }
        // What hickory reads as a one-question query, we read as the same question.
        if let Ok(m) = Message::from_vec(data)
            && m.metadata.message_type == MessageType::Query
            && u8::from(m.metadata.op_code) == 0
            && m.queries.len() == 1
            && let Parsed::Query(q) = parse(data)
        {
            let name = m.queries[0].name().to_lowercase().to_ascii();
            let mut ours = String::new();
            let wire = q.lower_name();
            let mut i = 0;
            while i < wire.len() && wire[i] != 0 {
                let len = usize::from(wire[i]);
                ours.push_str(&String::from_utf8_lossy(&wire[i + 1..i + 1 + len]));
                ours.push('.');
                i += 1 + len;
            }
            if ours.is_empty() {
                ours.push('.');
            }
            if name.is_ascii() && !name.contains('\\') {
                assert_eq!(name, ours);
            }
            assert_eq!(u16::from(m.queries[0].query_type()), q.qtype);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::str::FromStr;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};

    use super::fuzz::{check, sample_records, sample_zone};
    use super::*;
    use crate::config::Config;

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ctx(tcp: bool, rotation: u32) -> Ctx {
        Ctx {
            tcp,
            forwarding: false,
            rotation,
        }
    }

    fn ask_with(zone: Option<&Zone>, q: &[u8], c: Ctx) -> (Outcome, Option<Message>) {
        let mut out = Vec::new();
        let o = respond(zone, q, c, &mut out);
        let m = (!out.is_empty()).then(|| Message::from_vec(&out).expect("answer parses"));
        (o, m)
    }

    fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Message {
        let (_, m) = ask_with(Some(zone), &query(name, qtype, None), ctx(false, 0));
        m.expect("an answer")
    }

    fn ips(m: &Message) -> Vec<IpAddr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_and_aaaa_answers_are_authoritative_with_the_configured_ttl() {
        let z = sample_zone();
        let m = ask(&z, "web.marathon.mesos.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(m.metadata.recursion_desired, "RD copied");
        assert!(!m.metadata.recursion_available, "no forwarding: no RA");
        assert_eq!(m.metadata.id, 0x1234);
        let mut got = ips(&m);
        got.sort();
        assert_eq!(
            got,
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
        assert!(m.answers.iter().all(|r| r.ttl == 60));
        assert!(
            m.answers
                .iter()
                .all(|r| r.name.to_ascii() == "web.marathon.mesos.")
        );

        let m = ask(&z, "v6.marathon.mesos.", RecordType::AAAA);
        assert_eq!(ips(&m), ["fd00::1".parse::<IpAddr>().unwrap()]);

        let m = ask(&z, "db.marathon.l4lb.thisdcos.directory.", RecordType::A);
        assert_eq!(ips(&m), ["11.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn srv_answers_carry_the_targets_addresses_once_each() {
        let z = sample_zone();
        for rotation in 0..4 {
            let (_, m) = ask_with(
                Some(&z),
                &query("_web._tcp.marathon.mesos.", RecordType::SRV, None),
                ctx(false, rotation),
            );
            let m = m.unwrap();
            let mut srvs: Vec<(String, u16, u16, u16)> = m
                .answers
                .iter()
                .map(|r| match &r.data {
                    RData::SRV(s) => (s.target.to_ascii(), s.port, s.priority, s.weight),
                    other => panic!("not SRV: {other:?}"),
                })
                .collect();
            srvs.sort();
            assert_eq!(
                srvs,
                [
                    (
                        "web-aaaaa-s1.marathon.slave.mesos.".to_string(),
                        31000,
                        0,
                        0
                    ),
                    (
                        "web-aaaaa-s1.marathon.slave.mesos.".to_string(),
                        31001,
                        0,
                        0
                    ),
                    (
                        "web-bbbbb-s2.marathon.slave.mesos.".to_string(),
                        31002,
                        0,
                        0
                    ),
                ]
            );
            let mut extra: Vec<(String, String)> = m
                .additionals
                .iter()
                .map(|r| (r.name.to_ascii(), r.data.to_string()))
                .collect();
            extra.sort();
            assert_eq!(
                extra,
                [
                    (
                        "web-aaaaa-s1.marathon.slave.mesos.".into(),
                        "10.1.0.1".into()
                    ),
                    (
                        "web-bbbbb-s2.marathon.slave.mesos.".into(),
                        "10.1.0.2".into()
                    ),
                    (
                        "web-bbbbb-s2.marathon.slave.mesos.".into(),
                        "fd00::2".into()
                    ),
                ],
                "rotation {rotation}"
            );
        }
    }

    #[test]
    fn soa_and_ns_at_the_apex() {
        let z = sample_zone();
        let c = Config::default().dns;
        let m = ask(&z, "mesos.", RecordType::SOA);
        assert_eq!(m.answers.len(), 1);
        let RData::SOA(soa) = &m.answers[0].data else {
            panic!("not SOA")
        };
        assert_eq!(soa.serial, 42);
        assert_eq!(soa.mname.to_ascii(), format!("{}.", c.soa_mname));
        assert_eq!(soa.rname.to_ascii(), format!("{}.", c.soa_rname));
        assert_eq!(soa.refresh, c.soa_refresh as i32);
        assert_eq!(soa.minimum, c.soa_minttl);

        let m = ask(&z, "mesos.", RecordType::NS);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), format!("{}.", c.soa_mname));
        // Glue: ns1.mesos has an address in the sample records.
        assert_eq!(m.additionals.len(), 1);
        assert_eq!(m.additionals[0].data.to_string(), "10.0.0.53");

        let m = ask(&z, "l4lb.thisdcos.directory.", RecordType::SOA);
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn ptr_for_known_ips_and_forward_for_others() {
        let z = sample_zone();
        let m = ask(&z, "1.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "web.marathon.mesos.");
        let v6 = Name::from(IpAddr::from_str("fd00::1").unwrap()).to_ascii();
        let m = ask(&z, &v6, RecordType::PTR);
        assert_eq!(m.answers[0].data.to_string(), "v6.marathon.mesos.");
        let (o, m) = ask_with(
            Some(&z),
            &query("9.9.9.9.in-addr.arpa.", RecordType::PTR, None),
            ctx(false, 0),
        );
        assert_eq!(o, Outcome::Forward { qtype: rtype::PTR });
        assert!(m.is_none());
        let (o, _) = ask_with(
            Some(&z),
            &query("1.0.0.10.in-addr.arpa.", RecordType::A, None),
            ctx(false, 0),
        );
        assert_eq!(o, Outcome::Forward { qtype: rtype::A });
    }

    #[test]
    fn unknown_names_get_nxdomain_and_missing_types_nodata_both_with_the_soa() {
        let z = sample_zone();
        for (name, rc) in [
            ("nope.marathon.mesos.", ResponseCode::NXDomain),
            ("_nope._tcp.marathon.mesos.", ResponseCode::NXDomain),
            ("x.l4lb.thisdcos.directory.", ResponseCode::NXDomain),
            ("web.marathon.mesos.", ResponseCode::NoError),
            // Empty non-terminals exist.
            ("marathon.mesos.", ResponseCode::NoError),
            ("slave.mesos.", ResponseCode::NoError),
            ("_tcp.marathon.mesos.", ResponseCode::NoError),
        ] {
            let m = ask(&z, name, RecordType::AAAA);
            assert_eq!(m.metadata.response_code, rc, "{name}");
            assert!(m.metadata.authoritative);
            assert!(m.answers.is_empty(), "{name}");
            assert_eq!(m.authorities.len(), 1, "{name}");
            let soa = &m.authorities[0];
            assert_eq!(soa.record_type(), RecordType::SOA);
            let apex = if name.ends_with("directory.") {
                "l4lb.thisdcos.directory."
            } else {
                "mesos."
            };
            assert_eq!(soa.name.to_ascii(), apex, "{name}");
        }
    }

    #[test]
    fn servfail_before_the_first_zone_and_forward_outside_our_zones() {
        let (o, m) = ask_with(
            None,
            &query("web.marathon.mesos.", RecordType::A, None),
            ctx(false, 0),
        );
        assert_eq!(
            o,
            Outcome::Answered {
                qtype: rtype::A,
                rcode: rcode::SERVFAIL,
                truncated: false
            }
        );
        assert_eq!(m.unwrap().metadata.response_code, ResponseCode::ServFail);
        let z = sample_zone();
        let (o, _) = ask_with(
            Some(&z),
            &query("example.com.", RecordType::A, None),
            ctx(false, 0),
        );
        assert_eq!(o, Outcome::Forward { qtype: rtype::A });
        // A name that only ends like a zone is not in it.
        let (o, _) = ask_with(
            Some(&z),
            &query("xmesos.", RecordType::A, None),
            ctx(false, 0),
        );
        assert_eq!(o, Outcome::Forward { qtype: rtype::A });
        let mut out = Vec::new();
        error_response(
            &query("example.com.", RecordType::A, None),
            rcode::REFUSED,
            ctx(false, 0),
            &mut out,
        );
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert_eq!(m.queries.len(), 1);
    }

    #[test]
    fn lookups_ignore_case_and_echo_the_question() {
        let z = sample_zone();
        // hickory lowercases names it encodes: set the case in the wire bytes.
        let mut q = query("web.marathon.mesos.", RecordType::A, None);
        for i in [13, 15, 18, 20, 26, 28] {
            q[i] = q[i].to_ascii_uppercase();
        }
        assert_eq!(&q[13..16], b"WeB");
        let mut out = Vec::new();
        let o = respond(Some(&z), &q, ctx(false, 0), &mut out);
        assert!(matches!(o, Outcome::Answered { rcode: 0, .. }));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.answers.len(), 2);
        // The question is echoed as sent and the answers point to it.
        assert_eq!(&out[12..q.len()], &q[12..]);
        assert_eq!(&out[q.len()..q.len() + 2], &[0xc0, 0x0c]);
        let mut q = query("nope.mesos.", RecordType::A, None);
        q[13] = b'N';
        respond(Some(&z), &q, ctx(false, 0), &mut out);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn answers_rotate_between_queries() {
        let z = sample_zone();
        let q = query("web.marathon.mesos.", RecordType::A, None);
        let first = |r| ips(&ask_with(Some(&z), &q, ctx(false, r)).1.unwrap())[0];
        assert_ne!(first(0), first(1));
        assert_eq!(first(0), first(2));
    }

    #[test]
    fn any_returns_every_rrset_at_the_name() {
        let z = sample_zone();
        let m = ask(&z, "mesos.", RecordType::ANY);
        let mut types: Vec<_> = m.answers.iter().map(|r| r.record_type()).collect();
        types.sort();
        assert_eq!(types, [RecordType::NS, RecordType::SOA]);
        let m = ask(&z, "web.marathon.mesos.", RecordType::ANY);
        assert_eq!(m.answers.len(), 2);
    }

    #[test]
    fn udp_size_limits_truncate_and_tcp_does_not() {
        let z = sample_zone();
        let name = "big.marathon.mesos.";
        // Plain UDP: 512 bytes, TC.
        let (o, m) = ask_with(Some(&z), &query(name, RecordType::A, None), ctx(false, 0));
        let m = m.unwrap();
        assert!(matches!(
            o,
            Outcome::Answered {
                truncated: true,
                ..
            }
        ));
        assert!(m.metadata.truncation);
        assert!(m.to_vec().unwrap().len() <= 512);
        assert!(!m.answers.is_empty() && m.answers.len() < 100);
        assert!(m.edns.is_none());
        // EDNS 4096: clamped to 1232, OPT in the answer advertising 1232.
        let mut out = Vec::new();
        respond(
            Some(&z),
            &query(name, RecordType::A, Some(4096)),
            ctx(false, 0),
            &mut out,
        );
        assert!(out.len() <= 1232 && out.len() > 512, "{}", out.len());
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert_eq!(
            m.edns.as_ref().map(|e| e.max_payload()),
            Some(MAX_UDP_PAYLOAD)
        );
        // EDNS below 512 counts as 512.
        respond(
            Some(&z),
            &query(name, RecordType::A, Some(100)),
            ctx(false, 0),
            &mut out,
        );
        assert!(out.len() <= 512 && out.len() > 400);
        // A small answer with EDNS fits and is not truncated.
        let (_, m) = ask_with(
            Some(&z),
            &query("web.marathon.mesos.", RecordType::A, Some(1232)),
            ctx(false, 0),
        );
        let m = m.unwrap();
        assert!(!m.metadata.truncation);
        assert!(m.edns.is_some());
        // TCP: all 100, no TC.
        let (_, m) = ask_with(Some(&z), &query(name, RecordType::A, None), ctx(true, 0));
        let m = m.unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
    }

    fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
        [id, flags, qd, an, ns, ar]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect()
    }

    #[test]
    fn bad_input_gets_formerr_notimp_badvers_or_is_dropped() {
        let z = sample_zone();
        let rc = |q: &[u8]| match respond(Some(&z), q, ctx(false, 0), &mut Vec::new()) {
            Outcome::Answered { rcode, .. } => Some(rcode),
            _ => None,
        };
        // Shorter than a header, or a response: dropped.
        assert_eq!(
            respond(Some(&z), &[1, 2, 3], ctx(false, 0), &mut Vec::new()),
            Outcome::Dropped(DropReason::Short)
        );
        let mut resp = query("web.marathon.mesos.", RecordType::A, None);
        resp[2] |= 0x80;
        assert_eq!(
            respond(Some(&z), &resp, ctx(false, 0), &mut Vec::new()),
            Outcome::Dropped(DropReason::Response)
        );
        // 0 and 64 questions.
        assert_eq!(rc(&header(1, 0, 0, 0, 0, 0)), Some(rcode::FORMERR));
        let mut many = header(1, 0, 64, 0, 0, 0);
        for _ in 0..64 {
            many.extend_from_slice(&[
                3, b'w', b'e', b'b', 5, b'm', b'e', b's', b'o', b's', 0, 0, 1, 0, 1,
            ]);
        }
        assert_eq!(rc(&many), Some(rcode::FORMERR));
        // Truncated question.
        let q = query("web.marathon.mesos.", RecordType::A, None);
        for cut in 12..q.len() {
            assert_eq!(rc(&q[..cut]), Some(rcode::FORMERR), "cut at {cut}");
        }
        // Compression-pointer loops: to itself, to the header, two pointers to each other.
        let mut l = header(1, 0, 1, 0, 0, 0);
        l.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(rc(&l), Some(rcode::FORMERR));
        let mut l = header(1, 0, 1, 0, 0, 0);
        l.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(rc(&l), Some(rcode::FORMERR));
        let mut l = q.clone();
        l[11] = 1; // arcount 1: an additional record whose name loops
        l.extend_from_slice(&[
            0xc0,
            (l.len() + 2) as u8,
            0xc0,
            l.len() as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        assert!(matches!(
            rc(&l),
            Some(rcode::FORMERR) | Some(rcode::NOERROR)
        ));
        // Label over 63 (extended label types), name over 255.
        let mut l = header(1, 0, 1, 0, 0, 0);
        l.extend_from_slice(&[0x41, b'a', 0, 0, 1, 0, 1]);
        assert_eq!(rc(&l), Some(rcode::FORMERR));
        let mut l = header(1, 0, 1, 0, 0, 0);
        for _ in 0..5 {
            l.push(63);
            l.extend_from_slice(&[b'a'; 63]);
        }
        l.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(rc(&l), Some(rcode::FORMERR));
        // Opcode STATUS: NOTIMP.
        let mut s = q.clone();
        s[2] |= 2 << 3;
        assert_eq!(rc(&s), Some(rcode::NOTIMP));
        // EDNS version 1: BADVERS (extended rcode 16 in the OPT record).
        let mut m =
            Message::from_vec(&query("web.marathon.mesos.", RecordType::A, Some(1232))).unwrap();
        m.edns.as_mut().unwrap().set_version(1);
        let mut out = Vec::new();
        respond(Some(&z), &m.to_vec().unwrap(), ctx(false, 0), &mut out);
        let a = Message::from_vec(&out).unwrap();
        // Extended rcode 16 (BADVERS; hickory names it BADSIG, the same code).
        assert_eq!(u16::from(a.metadata.response_code), rcode::BADVERS);
        // Two OPT records: FORMERR.
        let mut two = query("web.marathon.mesos.", RecordType::A, Some(1232));
        let opt = two[two.len() - 11..].to_vec();
        two.extend_from_slice(&opt);
        two[11] = 2;
        assert_eq!(rc(&two), Some(rcode::FORMERR));
        // And valid queries are still answered.
        assert_eq!(rc(&q), Some(rcode::NOERROR));
    }

    #[test]
    fn the_fuzz_body_holds_on_random_and_mutated_inputs() {
        use rand::{Rng, SeedableRng};
        let z = sample_zone();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let seeds: Vec<Vec<u8>> = [
            ("web.marathon.mesos.", RecordType::A, None),
            ("_web._tcp.marathon.mesos.", RecordType::SRV, Some(1232)),
            ("big.marathon.mesos.", RecordType::A, Some(4096)),
            ("nope.mesos.", RecordType::AAAA, None),
            ("1.0.0.10.in-addr.arpa.", RecordType::PTR, None),
            ("example.com.", RecordType::A, Some(512)),
        ]
        .iter()
        .map(|(n, t, e)| query(n, *t, *e))
        .collect();
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        let mut n = 0;
        while n < 100_000 && started.elapsed() < std::time::Duration::from_secs(20) {
            let input: Vec<u8> = if n % 4 == 0 {
                let len = rng.random_range(0..80);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut s = seeds[n % seeds.len()].clone();
                for _ in 0..rng.random_range(1..4) {
                    match rng.random_range(0..3) {
                        0 => {
                            let i = rng.random_range(0..s.len());
                            s[i] = rng.random();
                        }
                        1 => s.truncate(rng.random_range(0..s.len().max(1))),
                        _ => {
                            let i = rng.random_range(0..=s.len());
                            s.insert(i, rng.random());
                        }
                    }
                    if s.is_empty() {
                        break;
                    }
                }
                s
            };
            check(&z, &input, &mut out);
            n += 1;
        }
        assert!(n >= 10_000, "only {n} inputs in the time bound");
    }

    #[test]
    fn compile_counts_and_keeps_unusual_inputs_safe() {
        let z = sample_zone();
        let c = z.counts();
        assert_eq!(
            (c.a, c.aaaa, c.srv, c.ptr, c.soa, c.ns),
            (106, 2, 3, 2, 2, 2)
        );
        assert_eq!(z.serial(), 42);
        // A name that is not a valid domain name is skipped, not a panic.
        let mut r = sample_records();
        r.hosts.insert(
            format!("{}.mesos.", "a".repeat(70)),
            [IpAddr::V4(Ipv4Addr::LOCALHOST)].into(),
        );
        let z = Zone::compile(&r, &Config::default().dns);
        assert_eq!(z.counts().a, 106);
    }
}
