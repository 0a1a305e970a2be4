//! The Mesos-DNS HTTP API (`/v1/hosts/{host}`, `/v1/services/{service}`, `/v1/enumerate`,
//! `/v1/axfr`), answered from the published `Records`.
//!
//! Pure rendering: each function takes the [`Records`] being served (and the config where
//! Mesos-DNS reports configuration) and returns the JSON body, shaped as mesosphere/mesos-dns
//! `resolver/resolver.go` (`RestHost`, `RestService`, `RestEnumerate`, `RestAXFR`) and
//! `models/models.go` write it. The admin server (`crate::admin`) owns routing, methods and the
//! before-ready answer. Imports `config` and `dns::records` only.
//!
//! Where Mesos-DNS's output depends on Go map iteration order (several IPs for one name, the
//! `First` IP of an SRV target, AXFR value lists), ours is sorted: IPv4 before IPv6, each in
//! address order. Names in the maps are the ones we serve, DC/OS names included (Mesos-DNS has
//! only its own domain).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::records::{EnumerableFramework, Records, Srv};
use crate::config::Config;

/// The name Mesos-DNS looks up for a path parameter: `.*` wildcards removed (`cleanWild`),
/// lowercased, with a trailing dot.
pub fn lookup_name(param: &str) -> String {
    let mut name = param.replace(".*", "").to_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// `GET /v1/hosts/{host}`: every A and AAAA address of the name, as `[{"host","ip"}]` (IPv4 first);
/// `[{"host":"","ip":""}]` when there is none.
pub fn hosts_json(records: &Records, host: &str) -> String {
    #[derive(Serialize)]
    struct Record<'a> {
        host: &'a str,
        ip: String,
    }
    let name = lookup_name(host);
    let mut out: Vec<Record<'_>> = records
        .hosts
        .get(&name)
        .into_iter()
        .flatten()
        .map(|ip| Record {
            host: &name,
            ip: ip.to_string(),
        })
        .collect();
    if out.is_empty() {
        out.push(Record {
            host: "",
            ip: String::new(),
        });
    }
    to_json(&out)
}

/// `GET /v1/services/{service}`: per SRV target of the name, one `{"service","host","ip","port"}`
/// with the target's first IPv4 address and one with its first IPv6 address (a target without
/// addresses is left out); `service` echoes the path parameter as given, `port` is a string.
/// `[{"service":"","host":"","ip":"","port":""}]` when there is none.
pub fn services_json(records: &Records, service: &str) -> String {
    #[derive(Serialize)]
    struct Record<'a> {
        service: &'a str,
        host: &'a str,
        ip: String,
        port: String,
    }
    let name = lookup_name(service);
    let mut out = Vec::new();
    for Srv { target, port } in records.srvs.get(&name).into_iter().flatten() {
        let ips = records.hosts.get(target.as_str());
        let first_v4 = ips.and_then(|s| s.iter().find(|ip| ip.is_ipv4()));
        let first_v6 = ips.and_then(|s| s.iter().find(|ip| ip.is_ipv6()));
        for ip in first_v4.into_iter().chain(first_v6) {
            out.push(Record {
                service,
                host: target,
                ip: ip.to_string(),
                port: port.to_string(),
            });
        }
    }
    if out.is_empty() {
        out.push(Record {
            service: "",
            host: "",
            ip: String::new(),
            port: String::new(),
        });
    }
    to_json(&out)
}

/// `GET /v1/enumerate`: Mesos-DNS `EnumerationData`. As Go encodes its nil slices, no frameworks
/// is `"frameworks": null` and a task without records has `"records": null`; a framework's
/// `tasks` is always an array.
pub fn enumerate_json<'a>(records: &'a Records) -> String {
    #[derive(Serialize)]
    struct Enumeration<'a> {
        frameworks: Option<Vec<Framework<'a>>>,
    }
    #[derive(Serialize)]
    struct Framework<'a> {
        tasks: Vec<Task<'a>>,
        name: &'a str,
    }
    #[derive(Serialize)]
    struct Task<'a> {
        name: &'a str,
        id: &'a str,
        records: Option<&'a [super::records::EnumerableRecord]>,
    }
    let framework = |f: &'a EnumerableFramework| Framework {
        tasks: f
            .tasks
            .iter()
            .map(|t| Task {
                name: &t.name,
                id: &t.id,
                records: (!t.records.is_empty()).then_some(t.records.as_slice()),
            })
            .collect(),
        name: &f.name,
    };
    let frameworks = &records.enumeration.frameworks;
    let view = Enumeration {
        frameworks: (!frameworks.is_empty()).then(|| frameworks.iter().map(framework).collect()),
    };
    to_json(&view)
}

/// `GET /v1/axfr`: Mesos-DNS `models.AXFR`: TTL, serial, refresh interval, SOA names, domain,
/// and the A, AAAA and SRV record sets as name → list of strings (`"ip"`, `"host:port"`).
pub fn axfr_json(records: &Records, config: &Config) -> String {
    type RecordSet<'a> = BTreeMap<&'a str, Vec<String>>;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Axfr<'a> {
        #[serde(rename = "TTL")]
        ttl: u32,
        serial: u32,
        refresh_seconds: u64,
        mname: String,
        rname: String,
        domain: &'a str,
        records: AxfrRecords<'a>,
    }
    #[derive(Serialize)]
    struct AxfrRecords<'a> {
        #[serde(rename = "As")]
        a: RecordSet<'a>,
        #[serde(rename = "AAAAs")]
        aaaa: RecordSet<'a>,
        #[serde(rename = "SRVs")]
        srv: RecordSet<'a>,
    }
    let mut a = RecordSet::new();
    let mut aaaa = RecordSet::new();
    for (name, ips) in &records.hosts {
        let (v4, v6): (Vec<&IpAddr>, Vec<&IpAddr>) = ips.iter().partition(|ip| ip.is_ipv4());
        for (set, ips) in [(&mut a, v4), (&mut aaaa, v6)] {
            if !ips.is_empty() {
                set.insert(name, ips.iter().map(ToString::to_string).collect());
            }
        }
    }
    let srv = records
        .srvs
        .iter()
        .filter(|(_, targets)| !targets.is_empty())
        .map(|(name, targets)| {
            let targets = targets
                .iter()
                .map(|s| join_host_port(&s.target, s.port))
                .collect();
            (name.as_str(), targets)
        })
        .collect();
    let dns = &config.dns;
    let poll = config.discovery.poll_interval;
    let view = Axfr {
        ttl: dns.ttl,
        // SOA serials are 32-bit and compared modulo 2^32 (RFC 1982): wrapping is the intent.
        serial: records.serial as u32,
        refresh_seconds: poll.as_secs() + u64::from(poll.subsec_nanos() > 0),
        mname: soa_name(&dns.soa_mname),
        rname: soa_name(&dns.soa_rname),
        domain: &dns.domain,
        records: AxfrRecords { a, aaaa, srv },
    };
    to_json(&view)
}

/// A SOA name as Mesos-DNS reports it: `@` read as `.`, exactly one trailing dot.
fn soa_name(name: &str) -> String {
    format!("{}.", name.replace('@', ".").trim_end_matches('.'))
}

/// Go's `net.JoinHostPort`: brackets around a host that contains a colon.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("strings, numbers and maps with string keys serialise")
}

/// Percent-decodes one URL path segment (`%2E` → `.`); `None` for a bad escape or non-UTF-8.
pub fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};

    use super::*;
    use crate::dns::records::{EnumerableRecord, EnumerableTask, Enumeration};

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn srv(target: &str, port: u16) -> Srv {
        Srv {
            target: target.into(),
            port,
        }
    }

    /// The cluster of the Mesos-DNS HTTP docs (docs/docs/http.md): nginx on three agents.
    fn records() -> Records {
        let mut r = Records {
            serial: 42,
            zones: vec!["mesos.".into()],
            ..Records::default()
        };
        r.hosts.insert(
            "nginx.marathon.mesos.".into(),
            ips(&["10.249.219.155", "10.190.238.173", "10.156.230.230"]),
        );
        r.hosts
            .insert("nginx-s0.marathon.mesos.".into(), ips(&["10.156.230.230"]));
        r.hosts
            .insert("nginx-s1.marathon.mesos.".into(), ips(&["10.190.238.173"]));
        r.hosts.insert(
            "nginx-s2.marathon.mesos.".into(),
            ips(&["10.249.219.155", "fd00::2", "10.249.219.156"]),
        );
        r.hosts
            .insert("v6.marathon.mesos.".into(), ips(&["fd00::1"]));
        r.srvs.insert(
            "_nginx._tcp.marathon.mesos.".into(),
            [
                srv("nginx-s2.marathon.mesos.", 31644),
                srv("nginx-s1.marathon.mesos.", 31667),
                srv("nginx-s0.marathon.mesos.", 31880),
                srv("gone.marathon.mesos.", 1),
            ]
            .into(),
        );
        r
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("valid JSON")
    }

    #[test]
    fn hosts_as_in_the_mesos_dns_docs() {
        // http.md: `curl .../v1/hosts/nginx.marathon.mesos` (no trailing dot in the request).
        let want = json!([
            {"host": "nginx.marathon.mesos.", "ip": "10.156.230.230"},
            {"host": "nginx.marathon.mesos.", "ip": "10.190.238.173"},
            {"host": "nginx.marathon.mesos.", "ip": "10.249.219.155"},
        ]);
        let r = records();
        assert_eq!(parse(&hosts_json(&r, "nginx.marathon.mesos")), want);
        // RestHost lowercases, drops `.*` wildcards and adds the trailing dot.
        assert_eq!(parse(&hosts_json(&r, "NGINX.Marathon.mesos.")), want);
        assert_eq!(parse(&hosts_json(&r, "nginx.*.marathon.mesos")), want);
        // A and AAAA together, A first.
        assert_eq!(
            parse(&hosts_json(&r, "nginx-s2.marathon.mesos")),
            json!([
                {"host": "nginx-s2.marathon.mesos.", "ip": "10.249.219.155"},
                {"host": "nginx-s2.marathon.mesos.", "ip": "10.249.219.156"},
                {"host": "nginx-s2.marathon.mesos.", "ip": "fd00::2"},
            ])
        );
        // Field order as Go writes the struct.
        assert_eq!(
            hosts_json(&r, "v6.marathon.mesos"),
            r#"[{"host":"v6.marathon.mesos.","ip":"fd00::1"}]"#
        );
    }

    #[test]
    fn unknown_host_is_one_empty_record() {
        assert_eq!(
            hosts_json(&records(), "nope.marathon.mesos"),
            r#"[{"host":"","ip":""}]"#
        );
        assert_eq!(
            hosts_json(&Records::default(), "google.com"),
            r#"[{"host":"","ip":""}]"#
        );
    }

    #[test]
    fn services_as_in_the_mesos_dns_docs() {
        // http.md: `curl .../v1/services/_nginx._tcp.marathon.mesos.`; a target without
        // addresses (`gone`) yields nothing, as RestService skips it.
        let r = records();
        let got = parse(&services_json(&r, "_nginx._tcp.marathon.mesos."));
        let want = json!([
            {"service": "_nginx._tcp.marathon.mesos.", "host": "nginx-s0.marathon.mesos.", "ip": "10.156.230.230", "port": "31880"},
            {"service": "_nginx._tcp.marathon.mesos.", "host": "nginx-s1.marathon.mesos.", "ip": "10.190.238.173", "port": "31667"},
            {"service": "_nginx._tcp.marathon.mesos.", "host": "nginx-s2.marathon.mesos.", "ip": "10.249.219.155", "port": "31644"},
            {"service": "_nginx._tcp.marathon.mesos.", "host": "nginx-s2.marathon.mesos.", "ip": "fd00::2", "port": "31644"},
        ]);
        assert_eq!(got, want);
        // The name is looked up lowercased with a trailing dot, but `service` echoes the request.
        let got = parse(&services_json(&r, "_NGINX._tcp.marathon.mesos"));
        assert_eq!(got.as_array().unwrap().len(), 4);
        assert_eq!(got[0]["service"], "_NGINX._tcp.marathon.mesos");
        assert_eq!(
            services_json(&r, "_nope._tcp.marathon.mesos."),
            r#"[{"service":"","host":"","ip":"","port":""}]"#
        );
        assert!(services_json(&r, "_nginx._tcp.marathon.mesos.").starts_with(
            r#"[{"service":"_nginx._tcp.marathon.mesos.","host":"nginx-s0.marathon.mesos.","ip":"10.156.230.230","port":"31880"}"#
        ));
    }

    #[test]
    fn enumerate_as_in_the_mesos_dns_docs() {
        // http.md's example, shortened to two of nginx's records.
        let r = Records {
            enumeration: Enumeration {
                frameworks: vec![
                    EnumerableFramework {
                        tasks: vec![],
                        name: "metronome".into(),
                    },
                    EnumerableFramework {
                        tasks: vec![EnumerableTask {
                            name: "nginx".into(),
                            id: "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001".into(),
                            records: vec![
                                EnumerableRecord {
                                    name: "nginx.marathon.mesos.".into(),
                                    host: "10.10.0.93".into(),
                                    rtype: "A".into(),
                                },
                                EnumerableRecord {
                                    name: "_nginx._tcp.marathon.mesos.".into(),
                                    host: "nginx-jhy6r-s1.marathon.mesos.:7564".into(),
                                    rtype: "SRV".into(),
                                },
                            ],
                        }],
                        name: "marathon".into(),
                    },
                ],
            },
            ..Records::default()
        };
        let want = json!({"frameworks": [
            {"tasks": [], "name": "metronome"},
            {"tasks": [{
                "name": "nginx",
                "id": "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001",
                "records": [
                    {"name": "nginx.marathon.mesos.", "host": "10.10.0.93", "rtype": "A"},
                    {"name": "_nginx._tcp.marathon.mesos.", "host": "nginx-jhy6r-s1.marathon.mesos.:7564", "rtype": "SRV"}
                ]}],
             "name": "marathon"}
        ]});
        let got = enumerate_json(&r);
        assert_eq!(parse(&got), want);
        assert!(got.starts_with(
            r#"{"frameworks":[{"tasks":[],"name":"metronome"},{"tasks":[{"name":"nginx","id":"#
        ));
    }

    #[test]
    fn enumerate_writes_empty_slices_as_go_does() {
        assert_eq!(
            enumerate_json(&Records::default()),
            r#"{"frameworks":null}"#
        );
        let mut r = Records::default();
        r.enumeration.frameworks.push(EnumerableFramework {
            tasks: vec![EnumerableTask {
                name: "t".into(),
                id: "t.1".into(),
                records: vec![],
            }],
            name: "f".into(),
        });
        assert_eq!(
            enumerate_json(&r),
            r#"{"frameworks":[{"tasks":[{"name":"t","id":"t.1","records":null}],"name":"f"}]}"#
        );
    }

    #[test]
    fn axfr_has_the_models_go_shape() {
        let config = Config::parse(
            "[dns]\nttl = 60\nsoa_mname = \"ns1.mesos\"\nsoa_rname = \"root@ns1.mesos\"\n\
             [discovery]\npoll_interval = \"1500ms\"\n",
        )
        .unwrap();
        let got = axfr_json(&records(), &config);
        assert!(
            got.starts_with(
                r#"{"TTL":60,"Serial":42,"RefreshSeconds":2,"Mname":"ns1.mesos.","Rname":"root.ns1.mesos.","Domain":"mesos","Records":{"As":{"#
            ),
            "{got}"
        );
        let v = parse(&got);
        assert_eq!(
            v["Records"]["As"]["nginx.marathon.mesos."],
            json!(["10.156.230.230", "10.190.238.173", "10.249.219.155"])
        );
        assert_eq!(
            v["Records"]["As"]["nginx-s2.marathon.mesos."],
            json!(["10.249.219.155", "10.249.219.156"])
        );
        assert_eq!(
            v["Records"]["AAAAs"],
            json!({"nginx-s2.marathon.mesos.": ["fd00::2"], "v6.marathon.mesos.": ["fd00::1"]})
        );
        assert!(v["Records"]["As"].get("v6.marathon.mesos.").is_none());
        assert_eq!(
            v["Records"]["SRVs"],
            json!({"_nginx._tcp.marathon.mesos.": [
                "gone.marathon.mesos.:1",
                "nginx-s0.marathon.mesos.:31880",
                "nginx-s1.marathon.mesos.:31667",
                "nginx-s2.marathon.mesos.:31644"]})
        );
        assert_eq!(
            v["Records"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["AAAAs", "As", "SRVs"]
        );

        // An empty zone still has every field; the record sets are empty objects.
        let empty = parse(&axfr_json(&Records::default(), &config));
        assert_eq!(empty["Records"], json!({"As": {}, "AAAAs": {}, "SRVs": {}}));
    }

    #[test]
    fn serial_wraps_to_32_bits_and_soa_names_get_one_dot() {
        let config = Config::parse("[dns]\nsoa_mname = \"ns1.mesos..\"\n").unwrap();
        let r = Records {
            serial: (1u64 << 32) + 7,
            ..Records::default()
        };
        let v = parse(&axfr_json(&r, &config));
        assert_eq!(v["Serial"], 7);
        assert_eq!(v["Mname"], "ns1.mesos.");
        assert_eq!(join_host_port("fd00::1", 53), "[fd00::1]:53");
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(
            decode_segment("a%2Eb%2emesos").as_deref(),
            Some("a.b.mesos")
        );
        assert_eq!(decode_segment("plain").as_deref(), Some("plain"));
        assert_eq!(decode_segment("bad%2"), None);
        assert_eq!(decode_segment("bad%zz"), None);
        assert_eq!(decode_segment("%ff"), None);
    }
}
