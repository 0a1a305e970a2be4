//! Configuration: `ferryman.toml` → [`FileConfig`] (serde, every struct `deny_unknown_fields`) →
//! [`Config`] (runtime types: `SocketAddr`, `Duration`, `IpNet`, URLs checked).
//!
//! Every error starts with the dotted key it is about (`dns.listne: unknown key`), so a typo or a bad
//! value fails at start-up and names what to fix. `ferryman check-config` prints the effective
//! [`Config`]; secrets (passwords, tokens) are serialised as `"<redacted>"`.
//!
//! Imports nothing else from the crate.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize, Serializer};

/// A configuration error; the message starts with the dotted key (or the file path).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {msg}")]
    Invalid { key: String, msg: String },
}

impl ConfigError {
    fn invalid(key: &str, msg: impl fmt::Display) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            msg: msg.to_string(),
        }
    }
}

// === File layer ===

/// The TOML file as written. Missing keys take their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub discovery: FileDiscovery,
    pub dns: FileDns,
    pub l4: FileL4,
    pub l7: FileL7,
    pub admin: FileAdmin,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileDiscovery {
    pub source: String,
    pub file: String,
    pub marathon: Vec<String>,
    pub mesos: Vec<String>,
    pub poll_interval: String,
    pub resync_after: String,
    pub state_file: String,
    pub username: String,
    pub password: String,
    pub token: String,
    pub connect_timeout: String,
    pub request_timeout: String,
}

impl Default for FileDiscovery {
    fn default() -> Self {
        FileDiscovery {
            source: "file".into(),
            file: "config/apps.json".into(),
            marathon: vec!["http://127.0.0.1:8080".into()],
            mesos: vec!["http://127.0.0.1:5050".into()],
            poll_interval: "5s".into(),
            resync_after: "5m".into(),
            state_file: String::new(),
            username: String::new(),
            password: String::new(),
            token: String::new(),
            connect_timeout: "2s".into(),
            request_timeout: "30s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileDns {
    pub listen: String,
    pub domain: String,
    pub ttl: u32,
    pub resolvers: Vec<String>,
    pub ip_sources: Vec<String>,
    pub enforce_rfc952: bool,
    pub soa_mname: String,
    pub soa_rname: String,
    pub soa_refresh: u32,
    pub soa_retry: u32,
    pub soa_expire: u32,
    pub soa_minttl: u32,
    pub forward_timeout: String,
    pub forward_max_inflight: usize,
    pub forward_cache_entries: usize,
    pub threads: usize,
    pub tcp_max_connections: usize,
    pub tcp_idle_timeout: String,
}

impl Default for FileDns {
    fn default() -> Self {
        FileDns {
            listen: "127.0.0.1:8053".into(),
            domain: "mesos".into(),
            ttl: 60,
            resolvers: Vec::new(),
            ip_sources: vec!["netinfo".into(), "mesos".into(), "host".into()],
            enforce_rfc952: false,
            // Mesos-DNS's defaults (records/config.go).
            soa_mname: "ns1.mesos".into(),
            soa_rname: "root.ns1.mesos".into(),
            soa_refresh: 60,
            soa_retry: 600,
            soa_expire: 86400,
            soa_minttl: 60,
            forward_timeout: "5s".into(),
            forward_max_inflight: 1024,
            forward_cache_entries: 10_000,
            threads: 0,
            tcp_max_connections: 256,
            tcp_idle_timeout: "10s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileL4 {
    pub mode: String,
    pub vip_range: String,
    pub vip_range6: String,
    pub link: String,
    pub cgroup: String,
    pub bpf_pin_dir: String,
    pub max_services: usize,
    pub max_backends: usize,
    pub bind: String,
    pub balance: String,
    pub connect_timeout: String,
    pub connect_retries: u32,
    pub idle_timeout: String,
    pub max_connections: usize,
    pub drain_timeout: String,
    pub udp_idle_timeout: String,
    pub udp_max_flows: usize,
    pub outlier_failures: u32,
    pub outlier_base_ejection: String,
    pub outlier_max_ejection: String,
    pub active_checks: bool,
    pub check_interval: String,
    pub check_timeout: String,
    pub check_rise: u32,
    pub check_fall: u32,
}

impl Default for FileL4 {
    fn default() -> Self {
        FileL4 {
            mode: "auto".into(),
            vip_range: "11.0.0.0/8".into(),
            vip_range6: "fd01:c::/64".into(),
            link: "ferryman0".into(),
            cgroup: String::new(),
            bpf_pin_dir: "/sys/fs/bpf/ferryman".into(),
            max_services: 65_536,
            max_backends: 262_144,
            bind: "127.0.0.1".into(),
            balance: "wlc".into(),
            connect_timeout: "5s".into(),
            connect_retries: 2,
            idle_timeout: "15m".into(),
            max_connections: 8192,
            drain_timeout: "30s".into(),
            udp_idle_timeout: "30s".into(),
            udp_max_flows: 65536,
            outlier_failures: 5,
            outlier_base_ejection: "10s".into(),
            outlier_max_ejection: "5m".into(),
            active_checks: false,
            check_interval: "5s".into(),
            check_timeout: "2s".into(),
            check_rise: 2,
            check_fall: 3,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileL7 {
    pub group: String,
    pub http: String,
    pub https: String,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: String,
    pub idle_timeout: String,
    pub request_timeout: String,
    pub connect_timeout: String,
    pub retries: u32,
    pub backend_protocol: String,
    pub passive_5xx: bool,
    pub passive_timeouts: bool,
    pub tls: FileL7Tls,
}

impl Default for FileL7 {
    fn default() -> Self {
        // Timeouts and retries are Marathon-LB's HAPROXY_HEAD defaults (timeout http-request
        // 15s, client/server 50s, connect 5s, retries 3); header limits are HAProxy's
        // (tune.bufsize 16384, tune.http.maxhdr 101).
        FileL7 {
            group: "external".into(),
            http: "127.0.0.1:10080".into(),
            https: String::new(),
            max_connections: 10_000,
            max_header_bytes: 16_384,
            max_headers: 100,
            header_read_timeout: "15s".into(),
            idle_timeout: "50s".into(),
            request_timeout: "50s".into(),
            connect_timeout: "5s".into(),
            retries: 3,
            backend_protocol: "http1".into(),
            passive_5xx: true,
            passive_timeouts: true,
            tls: FileL7Tls::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileL7Tls {
    pub cert: String,
    pub dir: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: String,
}

impl Default for FileAdmin {
    fn default() -> Self {
        FileAdmin {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

// === Runtime layer ===

/// The validated configuration every subsystem reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub discovery: DiscoveryConfig,
    pub dns: DnsConfig,
    pub l4: L4Config,
    pub l7: L7Config,
    pub admin: AdminConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    File,
    Marathon,
    Mesos,
}

/// A secret from the config: shown as `"<redacted>"` when printed or serialised.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveryConfig {
    pub source: SourceKind,
    pub file: PathBuf,
    pub marathon: Vec<String>,
    pub mesos: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub resync_after: Duration,
    /// `None` = off.
    pub state_file: Option<PathBuf>,
    pub username: String,
    pub password: Secret,
    /// DC/OS service token, sent as `Authorization: token=<token>`.
    pub token: Secret,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    Netinfo,
    Mesos,
    Docker,
    Host,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    pub domain: String,
    pub ttl: u32,
    pub resolvers: Vec<SocketAddr>,
    pub ip_sources: Vec<IpSource>,
    pub enforce_rfc952: bool,
    /// SOA primary name server, absolute without the trailing dot (`ns1.mesos`).
    pub soa_mname: String,
    /// SOA mailbox as a domain name (`root.ns1.mesos`; an `@` is read as `.`, as Mesos-DNS does).
    pub soa_rname: String,
    pub soa_refresh: u32,
    pub soa_retry: u32,
    pub soa_expire: u32,
    pub soa_minttl: u32,
    /// Per-upstream timeout of a forwarded query.
    #[serde(with = "humantime_serde")]
    pub forward_timeout: Duration,
    /// Forwarded queries in flight at once; more are answered SERVFAIL.
    pub forward_max_inflight: usize,
    /// Cached forwarded answers (0 = no cache). Never kept past the upstream TTL.
    pub forward_cache_entries: usize,
    /// UDP sockets/threads serving queries (SO_REUSEPORT); 0 = one per core.
    pub threads: usize,
    pub tcp_max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Mode {
    Auto,
    Ebpf,
    Userspace,
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L4Config {
    pub mode: L4Mode,
    pub vip_range: Ipv4Net,
    pub vip_range6: Ipv6Net,
    /// `None` = no VIP addresses on the host (so no VIP listeners).
    pub link: Option<String>,
    pub cgroup: Option<PathBuf>,
    pub bpf_pin_dir: PathBuf,
    /// eBPF fast path: VIPs (address, port, protocol) the kernel maps hold; more are refused
    /// (logged, counted) and left to the user-space path.
    pub max_services: usize,
    /// eBPF fast path: backend slots over all VIPs.
    pub max_backends: usize,
    pub bind: IpAddr,
    /// Default balancer of a VIP or service port (an app label `FERRYMAN_L4_BALANCE` overrides it).
    pub balance: Balance,
    /// Backend connect timeout; a connect that fails or times out tries the next backend.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Further backends tried after a failed connect (before any byte is sent).
    pub connect_retries: u32,
    /// A proxied TCP connection with no bytes either way for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Proxied TCP connections at once (each holds two sockets); more are refused.
    pub max_connections: usize,
    /// How long connections to a removed or unhealthy backend may run on.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// A UDP flow with no datagram either way for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub udp_idle_timeout: Duration,
    /// UDP flows at once; the least recently used is dropped for a new one.
    pub udp_max_flows: usize,
    /// Consecutive connect failures or resets that eject a backend (0 = passive detection off).
    pub outlier_failures: u32,
    /// First ejection; doubled for each ejection in a row, up to `outlier_max_ejection`.
    #[serde(with = "humantime_serde")]
    pub outlier_base_ejection: Duration,
    #[serde(with = "humantime_serde")]
    pub outlier_max_ejection: Duration,
    /// Active TCP connect checks for every backend (opt-in; an app label
    /// `FERRYMAN_L4_ACTIVE_CHECKS=true` turns them on for one app).
    pub active_checks: bool,
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub check_timeout: Duration,
    /// Successes in a row that mark a down backend up.
    pub check_rise: u32,
    /// Failures in a row that mark an up backend down.
    pub check_fall: u32,
}

/// L4 balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Round robin over backends that take new connections.
    Rr,
    /// Weighted round robin (smooth, as nginx's), weights from the snapshot.
    Wrr,
    /// Weighted least connections (IPVS `wlc`, Minuteman's default).
    Wlc,
    /// Power of two random choices on active connections.
    P2c,
    /// Maglev consistent hashing on the client address (table size 65537).
    Maglev,
}

impl Balance {
    /// Parses `rr`, `wrr`, `wlc`, `p2c`, `maglev` (also Marathon-LB's `roundrobin`, `leastconn`,
    /// `source`).
    pub fn parse(s: &str) -> Option<Balance> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "rr" | "roundrobin" => Balance::Rr,
            "wrr" => Balance::Wrr,
            "wlc" | "leastconn" => Balance::Wlc,
            "p2c" => Balance::P2c,
            "maglev" | "source" => Balance::Maglev,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L7Config {
    /// Marathon-LB group served (`HAPROXY_GROUP` / `HAPROXY_{n}_GROUP`); `*` = every group.
    pub group: String,
    /// The plain HTTP vhost router (Marathon-LB's port 80 frontend).
    pub http: Option<SocketAddr>,
    /// The TLS vhost router (Marathon-LB's port 443 frontend).
    pub https: Option<SocketAddr>,
    /// Client connections open at once over every L7 listener; more wait in the accept queue.
    pub max_connections: usize,
    /// Request line plus headers, in bytes; larger → 431.
    pub max_header_bytes: usize,
    /// Header fields per request; more → 431.
    pub max_headers: usize,
    /// Time to receive a whole request head (slowloris guard); then the connection is closed.
    /// It also bounds keep-alive idle time between requests (hyper starts it when a response
    /// ends), so idle connections close after the smaller of this and `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Keep-alive idle time between requests on a client connection.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time for a backend to answer with a response head; then 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Further backends tried when a connect fails (idempotent requests only).
    pub retries: u32,
    /// Protocol to backends by default ("http1" or "h2" prior knowledge); the app label
    /// `FERRYMAN_L7_BACKEND_PROTOCOL` overrides it per app.
    pub backend_protocol: BackendProtocol,
    /// Passive outlier detection also counts 5xx answers as failures.
    pub passive_5xx: bool,
    /// Passive outlier detection also counts backend timeouts as failures.
    pub passive_timeouts: bool,
    pub tls: L7TlsConfig,
}

/// HTTP version spoken to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    Http1,
    H2,
}

impl BackendProtocol {
    pub fn parse(s: &str) -> Option<BackendProtocol> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http1" | "http/1.1" | "http1.1" => Some(BackendProtocol::Http1),
            "h2" | "http2" => Some(BackendProtocol::H2),
            _ => None,
        }
    }
}

/// `[l7.tls]`: certificates besides the apps' `HAPROXY_{n}_SSL_CERT` paths. PEM files holding
/// the certificate chain and the private key, as HAProxy's `crt` takes them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L7TlsConfig {
    /// Served when no certificate matches the SNI name (or there is none); Marathon-LB's
    /// `/etc/ssl/cert.pem`.
    pub cert: Option<PathBuf>,
    /// Every `*.pem` file in it is loaded (HAProxy's `crt <dir>`), matched by its names.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// `humantime` formatting for `Duration` fields of the printed config.
mod humantime_serde {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error("(file)", &e))?;
        let file: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            toml_error(&path, &inner)
        })?;
        Config::try_from(file)
    }

    /// The effective config as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// Turns a serde/TOML error at `path` (which for an unknown field already ends in that field)
/// into a key-named error: `unknown field `x`` becomes `path: unknown key`.
fn toml_error(path: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim().to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let key = if path.is_empty() || path == "." {
            field.to_string()
        } else {
            path.to_string()
        };
        let expected = expected.trim_start_matches(',').trim();
        return ConfigError::invalid(&key, format!("unknown key ({expected})"));
    }
    let key = if path.is_empty() || path == "." {
        "(file)"
    } else {
        path
    };
    let at = e
        .span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default();
    ConfigError::invalid(key, format!("{msg}{at}"))
}

fn duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(v.trim())
        .map_err(|e| ConfigError::invalid(key, format!("bad duration {v:?}: {e}")))?;
    if d.is_zero() {
        return Err(ConfigError::invalid(
            key,
            "duration must be greater than zero",
        ));
    }
    Ok(d)
}

fn socket_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim()
        .parse()
        .map_err(|e| ConfigError::invalid(key, format!("bad address {v:?} (want IP:PORT): {e}")))
}

fn opt_socket_addr(key: &str, v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if v.trim().is_empty() {
        Ok(None)
    } else {
        socket_addr(key, v).map(Some)
    }
}

fn urls(key: &str, list: &[String]) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, u)| {
            let u = u.trim().trim_end_matches('/');
            let uri: http::Uri = u.parse().map_err(|e| {
                ConfigError::invalid(&format!("{key}[{i}]"), format!("bad URL {u:?}: {e}"))
            })?;
            match (uri.scheme_str(), uri.host()) {
                (Some("http"), Some(_)) => Ok(u.to_string()),
                _ => Err(ConfigError::invalid(
                    &format!("{key}[{i}]"),
                    format!("bad URL {u:?}: want http://HOST[:PORT]"),
                )),
            }
        })
        .collect()
}

/// A count in `1..=max` (BPF map sizes are u32 and preallocated).
fn bounded(key: &str, v: usize, max: usize) -> Result<usize, ConfigError> {
    if v == 0 || v > max {
        return Err(ConfigError::invalid(
            key,
            format!("must be in 1..={max}, got {v}"),
        ));
    }
    Ok(v)
}

fn positive(key: &str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 {
        Err(ConfigError::invalid(key, "must be greater than zero"))
    } else {
        Ok(v)
    }
}

/// A DNS label sequence such as `mesos` or `cluster.example`.
fn domain(key: &str, v: &str) -> Result<String, ConfigError> {
    let d = v.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(d)
    } else {
        Err(ConfigError::invalid(key, format!("bad domain {v:?}")))
    }
}

impl TryFrom<FileConfig> for Config {
    type Error = ConfigError;

    fn try_from(f: FileConfig) -> Result<Config, ConfigError> {
        let d = f.discovery;
        let source = match d.source.as_str() {
            "file" => SourceKind::File,
            "marathon" => SourceKind::Marathon,
            "mesos" => SourceKind::Mesos,
            other => {
                return Err(ConfigError::invalid(
                    "discovery.source",
                    format!("unknown source {other:?} (want \"file\", \"marathon\" or \"mesos\")"),
                ));
            }
        };
        let marathon = urls("discovery.marathon", &d.marathon)?;
        let mesos = urls("discovery.mesos", &d.mesos)?;
        if source == SourceKind::File && d.file.trim().is_empty() {
            return Err(ConfigError::invalid(
                "discovery.file",
                "empty path with source = \"file\"",
            ));
        }
        if source == SourceKind::Marathon && marathon.is_empty() {
            return Err(ConfigError::invalid(
                "discovery.marathon",
                "no URL with source = \"marathon\"",
            ));
        }
        if source == SourceKind::Mesos && mesos.is_empty() {
            return Err(ConfigError::invalid(
                "discovery.mesos",
                "no URL with source = \"mesos\"",
            ));
        }
        if !d.token.is_empty() && !d.username.is_empty() {
            return Err(ConfigError::invalid(
                "discovery.token",
                "set either discovery.token or discovery.username/password, not both",
            ));
        }
        let discovery = DiscoveryConfig {
            source,
            file: PathBuf::from(d.file.trim()),
            marathon,
            mesos,
            poll_interval: duration("discovery.poll_interval", &d.poll_interval)?,
            resync_after: duration("discovery.resync_after", &d.resync_after)?,
            state_file: (!d.state_file.trim().is_empty())
                .then(|| PathBuf::from(d.state_file.trim())),
            username: d.username,
            password: Secret(d.password),
            token: Secret(d.token),
            connect_timeout: duration("discovery.connect_timeout", &d.connect_timeout)?,
            request_timeout: duration("discovery.request_timeout", &d.request_timeout)?,
        };

        let n = f.dns;
        let resolvers = n
            .resolvers
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let key = format!("dns.resolvers[{i}]");
                // A bare IP means port 53, as in resolv.conf and Mesos-DNS's config.
                match r.trim().parse::<IpAddr>() {
                    Ok(ip) => Ok(SocketAddr::new(ip, 53)),
                    Err(_) => socket_addr(&key, r),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ip_sources = n
            .ip_sources
            .iter()
            .enumerate()
            .map(|(i, s)| match s.as_str() {
                "netinfo" => Ok(IpSource::Netinfo),
                "mesos" => Ok(IpSource::Mesos),
                "docker" => Ok(IpSource::Docker),
                "host" => Ok(IpSource::Host),
                other => Err(ConfigError::invalid(
                    &format!("dns.ip_sources[{i}]"),
                    format!("unknown IP source {other:?} (want netinfo, mesos, docker or host)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ip_sources.is_empty() {
            return Err(ConfigError::invalid(
                "dns.ip_sources",
                "must name at least one source",
            ));
        }
        if n.ttl == 0 {
            return Err(ConfigError::invalid("dns.ttl", "must be greater than zero"));
        }
        let dns = DnsConfig {
            listen: socket_addr("dns.listen", &n.listen)?,
            domain: domain("dns.domain", &n.domain)?,
            ttl: n.ttl,
            resolvers,
            ip_sources,
            enforce_rfc952: n.enforce_rfc952,
            soa_mname: domain("dns.soa_mname", &n.soa_mname)?,
            soa_rname: domain("dns.soa_rname", &n.soa_rname.replace('@', "."))?,
            soa_refresh: n.soa_refresh,
            soa_retry: n.soa_retry,
            soa_expire: n.soa_expire,
            soa_minttl: n.soa_minttl,
            forward_timeout: duration("dns.forward_timeout", &n.forward_timeout)?,
            forward_max_inflight: positive("dns.forward_max_inflight", n.forward_max_inflight)?,
            forward_cache_entries: n.forward_cache_entries,
            threads: n.threads,
            tcp_max_connections: positive("dns.tcp_max_connections", n.tcp_max_connections)?,
            tcp_idle_timeout: duration("dns.tcp_idle_timeout", &n.tcp_idle_timeout)?,
        };

        let l = f.l4;
        let mode = match l.mode.as_str() {
            "auto" => L4Mode::Auto,
            "ebpf" => L4Mode::Ebpf,
            "userspace" => L4Mode::Userspace,
            "off" => L4Mode::Off,
            other => {
                return Err(ConfigError::invalid(
                    "l4.mode",
                    format!("unknown mode {other:?} (want auto, ebpf, userspace or off)"),
                ));
            }
        };
        let vip_range = match l.vip_range.trim().parse::<IpNet>() {
            Ok(IpNet::V4(n)) if n.prefix_len() <= 30 => n.trunc(),
            _ => {
                return Err(ConfigError::invalid(
                    "l4.vip_range",
                    format!(
                        "bad IPv4 network {:?} (want e.g. 11.0.0.0/8, at most /30)",
                        l.vip_range
                    ),
                ));
            }
        };
        let vip_range6 = match l.vip_range6.trim().parse::<IpNet>() {
            Ok(IpNet::V6(n)) if n.prefix_len() <= 126 => n.trunc(),
            _ => {
                return Err(ConfigError::invalid(
                    "l4.vip_range6",
                    format!(
                        "bad IPv6 network {:?} (want e.g. fd01:c::/64)",
                        l.vip_range6
                    ),
                ));
            }
        };
        let link = l.link.trim();
        if link.len() > 15 || link.contains(['/', ' ']) {
            return Err(ConfigError::invalid(
                "l4.link",
                format!("bad link name {link:?}"),
            ));
        }
        if l.bpf_pin_dir.trim().is_empty() {
            return Err(ConfigError::invalid("l4.bpf_pin_dir", "must not be empty"));
        }
        let l4 = L4Config {
            mode,
            vip_range,
            vip_range6,
            link: (!link.is_empty()).then(|| link.to_string()),
            cgroup: (!l.cgroup.trim().is_empty()).then(|| PathBuf::from(l.cgroup.trim())),
            bpf_pin_dir: PathBuf::from(l.bpf_pin_dir.trim()),
            max_services: bounded("l4.max_services", l.max_services, 1 << 22)?,
            max_backends: bounded("l4.max_backends", l.max_backends, 1 << 24)?,
            bind: l.bind.trim().parse().map_err(|e| {
                ConfigError::invalid("l4.bind", format!("bad IP {:?}: {e}", l.bind))
            })?,
            balance: Balance::parse(&l.balance).ok_or_else(|| {
                ConfigError::invalid(
                    "l4.balance",
                    format!(
                        "unknown balancer {:?} (want rr, wrr, wlc, p2c or maglev)",
                        l.balance
                    ),
                )
            })?,
            connect_timeout: duration("l4.connect_timeout", &l.connect_timeout)?,
            connect_retries: l.connect_retries,
            idle_timeout: duration("l4.idle_timeout", &l.idle_timeout)?,
            max_connections: positive("l4.max_connections", l.max_connections)?,
            drain_timeout: duration("l4.drain_timeout", &l.drain_timeout)?,
            udp_idle_timeout: duration("l4.udp_idle_timeout", &l.udp_idle_timeout)?,
            udp_max_flows: positive("l4.udp_max_flows", l.udp_max_flows)?,
            outlier_failures: l.outlier_failures,
            outlier_base_ejection: duration("l4.outlier_base_ejection", &l.outlier_base_ejection)?,
            outlier_max_ejection: duration("l4.outlier_max_ejection", &l.outlier_max_ejection)?,
            active_checks: l.active_checks,
            check_interval: duration("l4.check_interval", &l.check_interval)?,
            check_timeout: duration("l4.check_timeout", &l.check_timeout)?,
            check_rise: l.check_rise.max(1),
            check_fall: l.check_fall.max(1),
        };

        let l = f.l7;
        let opt_path = |v: &str| (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
        let l7 = L7Config {
            group: l.group,
            http: opt_socket_addr("l7.http", &l.http)?,
            https: opt_socket_addr("l7.https", &l.https)?,
            max_connections: positive("l7.max_connections", l.max_connections)?,
            max_header_bytes: positive("l7.max_header_bytes", l.max_header_bytes)?,
            max_headers: positive("l7.max_headers", l.max_headers)?,
            header_read_timeout: duration("l7.header_read_timeout", &l.header_read_timeout)?,
            idle_timeout: duration("l7.idle_timeout", &l.idle_timeout)?,
            request_timeout: duration("l7.request_timeout", &l.request_timeout)?,
            connect_timeout: duration("l7.connect_timeout", &l.connect_timeout)?,
            retries: l.retries,
            backend_protocol: BackendProtocol::parse(&l.backend_protocol).ok_or_else(|| {
                ConfigError::invalid(
                    "l7.backend_protocol",
                    format!(
                        "unknown protocol {:?} (want \"http1\" or \"h2\")",
                        l.backend_protocol
                    ),
                )
            })?,
            passive_5xx: l.passive_5xx,
            passive_timeouts: l.passive_timeouts,
            tls: L7TlsConfig {
                cert: opt_path(&l.tls.cert),
                dir: opt_path(&l.tls.dir),
            },
        };
        let admin = AdminConfig {
            listen: socket_addr("admin.listen", &f.admin.listen)?,
        };
        Ok(Config {
            discovery,
            dns,
            l4,
            l7,
            admin,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::try_from(FileConfig::default()).expect("built-in defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.discovery.source, SourceKind::File);
        assert_eq!(c.discovery.file, PathBuf::from("config/apps.json"));
        assert_eq!(c.discovery.poll_interval, Duration::from_secs(5));
        assert_eq!(c.discovery.resync_after, Duration::from_secs(300));
        assert_eq!(c.discovery.state_file, None);
        assert_eq!(c.dns.listen, "127.0.0.1:8053".parse().unwrap());
        assert_eq!(c.dns.domain, "mesos");
        assert_eq!(c.dns.ttl, 60);
        // Mesos-DNS's SOA defaults (records/config.go).
        assert_eq!(
            (c.dns.soa_mname.as_str(), c.dns.soa_rname.as_str()),
            ("ns1.mesos", "root.ns1.mesos")
        );
        assert_eq!(
            (
                c.dns.soa_refresh,
                c.dns.soa_retry,
                c.dns.soa_expire,
                c.dns.soa_minttl
            ),
            (60, 600, 86400, 60)
        );
        assert_eq!(c.dns.forward_timeout, Duration::from_secs(5));
        // An `@` in the SOA mailbox is read as `.`, as Mesos-DNS's initSOA does.
        let mailbox = Config::parse("[dns]\nsoa_rname = \"Admin@Example.com.\"\n").unwrap();
        assert_eq!(mailbox.dns.soa_rname, "admin.example.com");
        assert_eq!(
            c.dns.ip_sources,
            vec![IpSource::Netinfo, IpSource::Mesos, IpSource::Host]
        );
        assert_eq!(c.l4.mode, L4Mode::Auto);
        assert_eq!(c.l4.vip_range, "11.0.0.0/8".parse().unwrap());
        assert_eq!(c.l4.vip_range6, "fd01:c::/64".parse().unwrap());
        assert_eq!(c.l4.link.as_deref(), Some("ferryman0"));
        // Minuteman balanced with IPVS wlc.
        assert_eq!(c.l4.balance, Balance::Wlc);
        assert_eq!(Balance::parse("roundrobin"), Some(Balance::Rr));
        assert_eq!(Balance::parse("source"), Some(Balance::Maglev));
        assert_eq!(c.l7.http, Some("127.0.0.1:10080".parse().unwrap()));
        assert_eq!(c.l7.https, None);
        assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn unknown_keys_are_named_with_their_section() {
        let e = err("[dns]\nlistne = \"127.0.0.1:53\"\n");
        assert!(e.starts_with("dns.listne: unknown key"), "{e}");
        let e = err("[dsn]\nlisten = \"127.0.0.1:53\"\n");
        assert!(e.starts_with("dsn: unknown key"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[dns]\nlisten = \"localhost\"", "dns.listen:"),
            ("[admin]\nlisten = \"1.2.3.4\"", "admin.listen:"),
            (
                "[discovery]\npoll_interval = \"5 parsecs\"",
                "discovery.poll_interval:",
            ),
            (
                "[discovery]\npoll_interval = \"0s\"",
                "discovery.poll_interval:",
            ),
            ("[discovery]\nsource = \"zk\"", "discovery.source:"),
            (
                "[discovery]\nmarathon = [\"ftp://x\"]",
                "discovery.marathon[0]:",
            ),
            ("[l4]\nvip_range = \"fd00::/8\"", "l4.vip_range:"),
            ("[l4]\nmode = \"fast\"", "l4.mode:"),
            (
                "[dns]\nip_sources = [\"netinfo\", \"dhcp\"]",
                "dns.ip_sources[1]:",
            ),
            ("[dns]\nttl = \"sixty\"", "dns.ttl:"),
            ("[dns]\nsoa_mname = \"ns 1\"", "dns.soa_mname:"),
            ("[dns]\nforward_timeout = \"soon\"", "dns.forward_timeout:"),
            (
                "[dns]\nforward_max_inflight = 0",
                "dns.forward_max_inflight:",
            ),
            ("[dns]\ntcp_max_connections = 0", "dns.tcp_max_connections:"),
            ("[dns]\ndomain = \"bad domain\"", "dns.domain:"),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert!(
                e.starts_with(key),
                "{text:?} gave {e:?}, want it to start with {key}"
            );
        }
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let c = Config::parse("[discovery]\nusername = \"u\"\npassword = \"hunter2\"\n").unwrap();
        let printed = c.to_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.discovery.password.expose(), "hunter2");
    }

    #[test]
    fn printed_config_parses_back_to_the_same_config() {
        let c = Config::parse(
            "[l4]\nmode = \"userspace\"\nlink = \"\"\n[l7]\nhttps = \"127.0.0.1:10443\"\n",
        )
        .unwrap();
        let again = Config::parse(&printed_as_file(&c)).unwrap();
        assert_eq!(c, again);
    }

    /// The printed config uses `Option` fields that TOML omits when `None`; the file layer reads an
    /// absent key as its default, so map the `None`s the file layer spells as "".
    fn printed_as_file(c: &Config) -> String {
        let mut t = c.to_toml();
        if c.l4.link.is_none() {
            t = t.replace("[l4]\n", "[l4]\nlink = \"\"\n");
        }
        t
    }
}
