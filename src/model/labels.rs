//! Label parsing for the model: VIP port labels (`VIP_0=/name:80`), the legacy task label form
//! (`vip_PORT0=tcp://1.2.3.4:5000`) and Marathon-LB's `HAPROXY_{n}_PORT` service-port override.
//!
//! Pure string functions, no allocation on the success path (results borrow from the label).
//! The rules are dcos-net's (`dcos_net_mesos_listener:handle_vip_labels` and
//! `handle_task_vip_label`, `dcos_l4lb_mesos_poller:key/3`), written down per function. Nothing here
//! panics on any input.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::snapshot::{Protocol, RejectReason};

/// The host part of a VIP label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipHost<'a> {
    /// The host parses as an IPv4 or IPv6 address (`1.2.3.4`, `fd01::1`; no brackets).
    Ip(IpAddr),
    /// Anything else is a named VIP, as written (`/foo`, `merp`, `[::1]`).
    Name(&'a str),
}

/// A parsed `HOST:PORT` VIP label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipLabel<'a> {
    pub host: VipHost<'a>,
    pub port: u16,
}

/// A parsed legacy task label `vip_portN=tcp://HOST:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyVip<'a> {
    /// `N`: index into the task's `ports` resource (`Task::host_ports`).
    pub index: usize,
    pub protocol: Protocol,
    pub label: VipLabel<'a>,
}

/// True for a port label key that carries a VIP: it starts with `VIP` or `vip` (`VIP_0`, `vip_x`,
/// plain `vip`). Case matters: `Vip_0` is not a VIP label (dcos-net matches the two binary
/// prefixes `<<"VIP", _>>` and `<<"vip", _>>`).
pub fn is_vip_key(key: &str) -> bool {
    key.starts_with("VIP") || key.starts_with("vip")
}

/// Parses a VIP label value `HOST:PORT`, split on the last `:` (so `fd01::1:80` is host
/// `fd01::1`, port 80).
///
/// - no `:` or an empty host → [`RejectReason::BadFormat`];
/// - a port that is not a decimal number in 1..=65535 → [`RejectReason::BadPort`];
/// - a host that parses strictly as an IP address (`inet:parse_strict_address`: dotted quad or
///   IPv6 text, no brackets, no short forms) is an IP VIP;
/// - any other host that still contains a `:` → `BadFormat` (stricter than dcos-net, which would
///   make `invalid-port:` or `[::1]` a named VIP);
/// - anything else is a named VIP.
pub fn parse_vip(value: &str) -> Result<VipLabel<'_>, RejectReason> {
    let (host, port) = value.rsplit_once(':').ok_or(RejectReason::BadFormat)?;
    if host.is_empty() {
        return Err(RejectReason::BadFormat);
    }
    let port = parse_port(port).ok_or(RejectReason::BadPort)?;
    // Only hex digits, `.` and `:` can make an address; skip the parser for names like `/app`.
    let may_be_ip = host
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':');
    let host = match may_be_ip.then(|| host.parse::<IpAddr>()) {
        Some(Ok(ip)) => VipHost::Ip(ip),
        // A `:` left in a host that is not an IPv6 address (`invalid-port::1234`, `[::1]:80`,
        // a bare `fd01::1`) is a malformed label, not a name: DNS names hold no `:` and the
        // sanitised name would silently lose it. (dcos-net would make it a named VIP.)
        _ if host.contains(':') => return Err(RejectReason::BadFormat),
        _ => VipHost::Name(host),
    };
    Ok(VipLabel { host, port })
}

/// Parses a legacy task label (`Task::labels`). Returns `None` when the key is not of the form
/// `vip_port…` (compared case-insensitively, as dcos-net lowercases the key), else the parse result:
///
/// - the rest of the key must be a decimal index (`vip_PORT0` → 0), else `BadFormat`;
/// - the value must start with `tcp://` or `udp://` (lowercase, as dcos-net matches it), else
///   `BadFormat`; the rest is parsed by [`parse_vip`].
pub fn parse_legacy_vip<'a>(
    key: &str,
    value: &'a str,
) -> Option<Result<LegacyVip<'a>, RejectReason>> {
    const PREFIX: &str = "vip_port";
    let head = key.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let index = key.get(PREFIX.len()..).unwrap_or_default();
    Some(parse_legacy_value(index, value))
}

fn parse_legacy_value<'a>(index: &str, value: &'a str) -> Result<LegacyVip<'a>, RejectReason> {
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RejectReason::BadFormat);
    }
    let index: usize = index.parse().map_err(|_| RejectReason::BadFormat)?;
    let (protocol, rest) = if let Some(rest) = value.strip_prefix("tcp://") {
        (Protocol::Tcp, rest)
    } else if let Some(rest) = value.strip_prefix("udp://") {
        (Protocol::Udp, rest)
    } else {
        return Err(RejectReason::BadFormat);
    };
    Ok(LegacyVip {
        index,
        protocol,
        label: parse_vip(rest)?,
    })
}

/// Marathon-LB's service-port override for port index `index`: the app label
/// `HAPROXY_{index}_PORT`. `None` when absent; `Err(BadPort)` when it is not a port in 1..=65535.
/// Returns the label's key and value with the result (for a rejection).
pub fn haproxy_port(
    labels: &BTreeMap<String, String>,
    index: usize,
) -> Option<(&str, &str, Result<u16, RejectReason>)> {
    // Scans the (few) labels of the app instead of formatting the key: no allocation.
    let (k, v) = labels.iter().find(|(k, _)| is_haproxy_port_key(k, index))?;
    Some((k, v, parse_port(v.trim()).ok_or(RejectReason::BadPort)))
}

/// True for `HAPROXY_{index}_PORT` (the index in canonical decimal form).
fn is_haproxy_port_key(key: &str, index: usize) -> bool {
    let Some(n) = key
        .strip_prefix("HAPROXY_")
        .and_then(|k| k.strip_suffix("_PORT"))
    else {
        return false;
    };
    !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && (n == "0" || !n.starts_with('0'))
        && n.parse::<usize>().ok() == Some(index)
}

/// `KEY=VALUE`, as a rejection shows a label.
pub fn label_text(key: &str, value: &str) -> String {
    let mut s = String::with_capacity(key.len() + value.len() + 1);
    s.push_str(key);
    s.push('=');
    s.push_str(value);
    s
}

/// A decimal port in 1..=65535 (digits only: no sign, no spaces).
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => u16::try_from(p).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn name(n: &str, port: u16) -> Result<VipLabel<'_>, RejectReason> {
        Ok(VipLabel {
            host: VipHost::Name(n),
            port,
        })
    }

    fn ip(i: &str, port: u16) -> Result<VipLabel<'static>, RejectReason> {
        Ok(VipLabel {
            host: VipHost::Ip(i.parse().expect("test IP")),
            port,
        })
    }

    #[test]
    fn vip_keys_are_the_two_case_sensitive_prefixes() {
        assert!(is_vip_key("VIP_0"));
        assert!(is_vip_key("vip_x"));
        assert!(is_vip_key("vip"));
        assert!(is_vip_key("VIP_3d1b6c9e-uuid"));
        assert!(!is_vip_key("Vip_0"));
        assert!(!is_vip_key("vIP_0"));
        assert!(!is_vip_key("network-scope"));
        assert!(!is_vip_key(""));
    }

    #[test]
    fn ip_vips_parse_with_either_family() {
        assert_eq!(parse_vip("1.2.3.4:5000"), ip("1.2.3.4", 5000));
        // Split on the last colon: an IPv6 VIP needs no brackets.
        assert_eq!(parse_vip("fd01::1:80"), ip("fd01::1", 80));
        assert_eq!(
            parse_vip("fd01::1:80").map(|l| l.host),
            Ok(VipHost::Ip(IpAddr::V6(Ipv6Addr::new(
                0xfd01, 0, 0, 0, 0, 0, 0, 1
            ))))
        );
        assert_eq!(
            parse_vip("11.0.0.1:65535").map(|l| l.host),
            Ok(VipHost::Ip(IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1))))
        );
    }

    #[test]
    fn everything_that_is_not_an_ip_is_a_named_vip() {
        assert_eq!(parse_vip("/name:80"), name("/name", 80));
        assert_eq!(parse_vip("merp:5000"), name("merp", 5000));
        assert_eq!(parse_vip("/grp/app:1"), name("/grp/app", 1));
        // Short IPv4 forms are not strict addresses.
        assert_eq!(parse_vip("1.2.3:80"), name("1.2.3", 80));
        assert_eq!(parse_vip("cafe:80"), name("cafe", 80));
    }

    #[test]
    fn bad_formats_and_ports_are_rejected() {
        assert_eq!(parse_vip("foo"), Err(RejectReason::BadFormat));
        // minuteman testdata/missing-port.json
        assert_eq!(parse_vip("missing-port"), Err(RejectReason::BadFormat));
        assert_eq!(parse_vip(":80"), Err(RejectReason::BadFormat));
        assert_eq!(parse_vip(""), Err(RejectReason::BadFormat));
        assert_eq!(parse_vip("1.2.3.4:70000"), Err(RejectReason::BadPort));
        assert_eq!(parse_vip("/name:abc"), Err(RejectReason::BadPort));
        assert_eq!(parse_vip("/name:0"), Err(RejectReason::BadPort));
        assert_eq!(parse_vip("/name:"), Err(RejectReason::BadPort));
        assert_eq!(parse_vip("/name:+80"), Err(RejectReason::BadPort));
        assert_eq!(parse_vip("/name: 80"), Err(RejectReason::BadPort));
        assert_eq!(parse_vip("/name:99999999999"), Err(RejectReason::BadPort));
        // inet:parse_strict_address takes no brackets, so `[::1]` is no address; with its `:`
        // it is no name either.
        assert_eq!(parse_vip("[::1]:80"), Err(RejectReason::BadFormat));
        // minuteman testdata/invalid-port.json: host `invalid-port:`.
        assert_eq!(
            parse_vip("invalid-port::1234"),
            Err(RejectReason::BadFormat)
        );
        // A bare IPv6 address splits into host `fd01:` and port 1.
        assert_eq!(parse_vip("fd01::1"), Err(RejectReason::BadFormat));
    }

    #[test]
    fn legacy_task_labels() {
        assert_eq!(
            parse_legacy_vip("vip_PORT0", "tcp://1.2.3.4:5000"),
            Some(Ok(LegacyVip {
                index: 0,
                protocol: Protocol::Tcp,
                label: ip("1.2.3.4", 5000).expect("ok"),
            }))
        );
        assert_eq!(
            parse_legacy_vip("VIP_PORT12", "udp://merp:53"),
            Some(Ok(LegacyVip {
                index: 12,
                protocol: Protocol::Udp,
                label: name("merp", 53).expect("ok"),
            }))
        );
        assert_eq!(parse_legacy_vip("vip_0", "tcp://1.2.3.4:5"), None);
        assert_eq!(parse_legacy_vip("HAPROXY_GROUP", "external"), None);
        assert_eq!(parse_legacy_vip("vip", "tcp://1.2.3.4:5"), None);
        assert_eq!(
            parse_legacy_vip("vip_port", "tcp://1.2.3.4:5"),
            Some(Err(RejectReason::BadFormat))
        );
        assert_eq!(
            parse_legacy_vip("vip_portx", "tcp://1.2.3.4:5"),
            Some(Err(RejectReason::BadFormat))
        );
        assert_eq!(
            parse_legacy_vip("vip_port-1", "tcp://1.2.3.4:5"),
            Some(Err(RejectReason::BadFormat))
        );
        assert_eq!(
            parse_legacy_vip("vip_port0", "1.2.3.4:5"),
            Some(Err(RejectReason::BadFormat))
        );
        assert_eq!(
            parse_legacy_vip("vip_port0", "TCP://1.2.3.4:5"),
            Some(Err(RejectReason::BadFormat))
        );
        assert_eq!(
            parse_legacy_vip("vip_port0", "tcp://1.2.3.4:0"),
            Some(Err(RejectReason::BadPort))
        );
        // A multi-byte character where the prefix would end must not panic.
        assert_eq!(parse_legacy_vip("vip_poré0", "tcp://1.2.3.4:5"), None);
        assert_eq!(
            parse_legacy_vip("vip_porté", "tcp://1.2.3.4:5"),
            Some(Err(RejectReason::BadFormat))
        );
    }

    #[test]
    fn haproxy_port_override() {
        let mut labels = BTreeMap::new();
        labels.insert("HAPROXY_0_PORT".to_string(), "10000".to_string());
        labels.insert("HAPROXY_1_PORT".to_string(), "abc".to_string());
        labels.insert("HAPROXY_2_PORT".to_string(), "0".to_string());
        labels.insert("HAPROXY_03_PORT".to_string(), "9".to_string());
        labels.insert("HAPROXY_GROUP".to_string(), "external".to_string());
        labels.insert("HAPROXY__PORT".to_string(), "9".to_string());
        let port = |i| haproxy_port(&labels, i).map(|(_, _, r)| r);
        assert_eq!(port(0), Some(Ok(10000)));
        assert_eq!(port(1), Some(Err(RejectReason::BadPort)));
        assert_eq!(port(2), Some(Err(RejectReason::BadPort)));
        assert_eq!(port(3), None);
        assert_eq!(
            haproxy_port(&labels, 1),
            Some(("HAPROXY_1_PORT", "abc", Err(RejectReason::BadPort)))
        );
    }

    #[test]
    fn label_text_joins_key_and_value() {
        assert_eq!(label_text("VIP_0", "/a:80"), "VIP_0=/a:80");
    }
}
