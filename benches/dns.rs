//! The DNS query path: `Zone::compile` of a 10 000-name record set, and `respond` (parse +
//! answer into a reused buffer) for a hit, a miss (NXDOMAIN + SOA) and an SRV answer with
//! additional records. Also prints the heap allocations per `respond` (a counting allocator):
//! the hit path must not allocate.
//!
//! `cargo bench --bench dns` (add `-- --quick` for a fast pass).
//!
//! `cargo bench --bench dns -- --serve 127.0.0.1:5300 [--threads N] [--tokio] [--seconds S]`
//! serves the same zone on real sockets instead (for `dnsperf`), with the blocking-thread UDP
//! loops or, with `--tokio`, the tokio ones: how the UDP loop flavour was chosen.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group};
use ferryman::config::Config;
use ferryman::dns::Records;
use ferryman::dns::records::Srv;
use ferryman::dns::zone::{Ctx, Zone, respond};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// Counts allocations, to check that answering does not allocate.
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// 10 000 names: 5 000 task names with 2 IPs each, 2 500 canonical names (1 IP), 2 500 SRV
/// names with 2 targets each.
fn records() -> Records {
    let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
    let mut hosts = BTreeMap::new();
    let mut srvs = BTreeMap::new();
    for i in 0..5000u32 {
        hosts.insert(
            format!("app{i}.marathon.mesos."),
            BTreeSet::from([ip(2 * i), ip(2 * i + 1)]),
        );
    }
    for i in 0..2500u32 {
        hosts.insert(
            format!("app{i}-abcde-s1.marathon.slave.mesos."),
            BTreeSet::from([ip(100_000 + i)]),
        );
        let target = |j: u32| Srv {
            target: format!("app{}-abcde-s1.marathon.slave.mesos.", (i + j) % 2500),
            port: 31000 + j as u16,
        };
        srvs.insert(
            format!("_app{i}._tcp.marathon.mesos."),
            BTreeSet::from([target(0), target(1)]),
        );
    }
    Records {
        serial: 1,
        zones: vec!["mesos.".into()],
        hosts,
        srvs,
        ..Records::default()
    }
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(1, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    m.to_vec().unwrap()
}

fn bench(c: &mut Criterion) {
    let records = records();
    let dns = Config::default().dns;
    c.bench_function("zone_compile_10k_names", |b| {
        b.iter(|| Zone::compile(black_box(&records), &dns))
    });

    let zone = Zone::compile(&records, &dns);
    let cases = [
        (
            "respond_hit_a",
            query("app1234.marathon.mesos.", RecordType::A),
        ),
        (
            "respond_miss_nxdomain",
            query("nope1234.marathon.mesos.", RecordType::A),
        ),
        (
            "respond_srv_additionals",
            query("_app1234._tcp.marathon.mesos.", RecordType::SRV),
        ),
    ];
    let mut out = Vec::with_capacity(65535);
    for (name, q) in &cases {
        let mut rotation = 0u32;
        // Allocations per call, after a warm-up call.
        let ctx = Ctx {
            tcp: false,
            forwarding: false,
            rotation,
        };
        respond(Some(&zone), q, ctx, &mut out);
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..1000 {
            respond(Some(&zone), q, ctx, &mut out);
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        println!("{name}: {} allocations per query", allocs as f64 / 1000.0);
        c.bench_function(name, |b| {
            b.iter(|| {
                rotation = rotation.wrapping_add(1);
                let ctx = Ctx {
                    tcp: false,
                    forwarding: false,
                    rotation,
                };
                respond(Some(&zone), black_box(q), ctx, &mut out)
            })
        });
    }
}

/// `--serve ADDR`: serve the bench zone for `--seconds` (default 30).
fn serve(args: &[String]) {
    use std::sync::Arc;

    use ferryman::dns::server::{self, Sockets, UdpFlavour};

    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mut dns = Config::default().dns;
    dns.listen = arg("--serve").unwrap().parse().unwrap();
    dns.threads = arg("--threads").map_or(1, |t| t.parse().unwrap());
    let seconds: u64 = arg("--seconds").map_or(30, |t| t.parse().unwrap());
    let flavour = if args.iter().any(|a| a == "--tokio") {
        UdpFlavour::Tokio
    } else {
        UdpFlavour::Threads
    };
    let zone = Arc::new(arc_swap::ArcSwapOption::new(Some(Arc::new(Zone::compile(
        &records(),
        &dns,
    )))));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(dns.threads.max(1))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sockets = Sockets::bind(&dns).unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let stopper = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
            stopper.cancel();
        });
        eprintln!(
            "serving on {} ({flavour:?}, {} sockets)",
            dns.listen, dns.threads
        );
        server::serve_with(sockets, &dns, zone, None, token, flavour)
            .await
            .unwrap();
    });
}

criterion_group!(benches, bench);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        serve(&args);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
