//! Marathon-LB's `HAPROXY_*` app labels → typed settings per service port.
//!
//! Apps written for Marathon-LB configure their HAProxy frontends and backends with labels; the
//! L7 edge must give every label the meaning Marathon-LB gives it, or a migrated app changes
//! behaviour silently. The rules below follow upstream `mesosphere/marathon-lb` (commit
//! `9e669ec`, the fixture source): `marathon_lb.get_apps` (which labels apply to which service
//! port, in which order), `MarathonService.__init__` (defaults), the `set_*` label functions and
//! `string_to_bool` in `config.py`, `get_health_check`, `has_group`, and `config()` (the mode
//! fallback and the backend name).
//!
//! Deliberate differences from upstream, each because upstream would hand a bad value to HAProxy
//! (which then refuses the whole configuration, i.e. every app) or silently misread it:
//! - a value that does not parse (`HAPROXY_0_PORT=abc`, a bad CIDR, an unknown mode or balance,
//!   a boolean outside `true/t/yes/y/false/f/no/n`, an `AUTH` without three fields) is a
//!   [`LabelError`] naming the app, the label and the value; the caller skips that app with a
//!   warning and serves the others;
//! - group, vhost, certificate and ACL lists are trimmed around each item (the L4 listeners
//!   trim groups too, so both data paths agree on which apps a group serves).
//!
//! Pure: no I/O (certificate paths are not opened here), no clock.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::model::App;
use crate::model::labels::haproxy_port;

/// Labels Marathon-LB reads per service port (`HAPROXY_{n}_<NAME>`) and Ferryman applies
/// (config.py `labels`, those with a `set_*` function other than `set_label`).
const PORT_LABELS: &[&str] = &[
    "AUTH",
    "VHOST",
    "GROUP",
    "PATH",
    "STICKY",
    "ENABLED",
    "REDIRECT_TO_HTTPS",
    "USE_HSTS",
    "SSL_CERT",
    "BIND_ADDR",
    "PORT",
    "MODE",
    "BALANCE",
    "HTTP_BACKEND_PROXYPASS_PATH",
    "HTTP_BACKEND_REVPROXY_PATH",
    "HTTP_BACKEND_REDIR",
    "BACKEND_WEIGHT",
    "BACKEND_NETWORK_ALLOWED_ACL",
    "BACKEND_HEALTHCHECK_PORT_INDEX",
];

/// App-wide labels (`HAPROXY_<NAME>`) Marathon-LB or its `zdd.py` reads, all understood here.
const APP_LABELS: &[&str] = &[
    "GROUP",
    "APP_ID",
    "DEPLOYMENT_GROUP",
    "DEPLOYMENT_ALT_PORT",
    "DEPLOYMENT_COLOUR",
    "DEPLOYMENT_STARTED_AT",
    "DEPLOYMENT_TARGET_INSTANCES",
    "DEPLOYMENT_NEW_INSTANCES",
];

/// Health check protocols that make a port http (marathon-lb `get_apps`, the
/// `BACKEND_HEALTHCHECK_PORT_INDEX` branch; config.py `MODE` description).
const HTTP_HEALTH_PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"];

/// A label value Ferryman cannot apply. The caller skips the whole app (a half-configured app
/// could route traffic where its owner did not intend) and warns with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("app {app_id}: label {label}={value:?}: {reason}")]
pub struct LabelError {
    pub app_id: String,
    pub label: String,
    pub value: String,
    pub reason: &'static str,
}

/// Connection mode of a service port (`HAPROXY_{n}_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
}

/// Backend balancing algorithm (`HAPROXY_{n}_BALANCE`; HAProxy's names). Marathon-LB passes the
/// value to HAProxy verbatim; only these three are supported by the L7 edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Marathon-LB's default (`MarathonService.balance = 'roundrobin'`).
    #[default]
    RoundRobin,
    LeastConn,
    /// Hash of the client address.
    Source,
}

/// `HAPROXY_{n}_PATH`: HAProxy `path_beg` arguments, a space-separated list of prefixes with an
/// optional `-i` flag (case-insensitive), as config.py's `PATH` description documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatch {
    pub prefixes: Vec<String>,
    pub case_insensitive: bool,
}

/// `HAPROXY_{n}_AUTH=realm:username:encryptedpassword` (config.py `set_auth`). The hash is a
/// crypt(3) string kept verbatim; it is verified by the proxy, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub realm: String,
    pub user: String,
    pub password_hash: String,
}

/// Blue/green deployment labels (app-wide), as `marathon_lb.get_apps` and `zdd.py` read them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deployment {
    /// `HAPROXY_DEPLOYMENT_GROUP`: apps sharing it are merged into one app whose id is
    /// `/` + group (`get_apps` rewrites `app['id']`), so both colours share one backend.
    pub group: Option<String>,
    /// `HAPROXY_DEPLOYMENT_ALT_PORT`: the service port the new colour uses during a switch.
    pub alt_port: Option<u16>,
    /// `HAPROXY_DEPLOYMENT_COLOUR` (`blue` / `green`), verbatim.
    pub colour: Option<String>,
    /// `HAPROXY_DEPLOYMENT_STARTED_AT`, verbatim (ISO 8601; the newer app is the new colour).
    pub started_at: Option<String>,
    /// `HAPROXY_DEPLOYMENT_TARGET_INSTANCES` (upstream `int()`s it).
    pub target_instances: Option<u32>,
}

/// Everything Marathon-LB's labels say about one service port of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLabels {
    pub app_id: String,
    /// Port index `n` (position in the app's service ports).
    pub index: usize,
    /// `HAPROXY_{n}_PORT`, else the app's service port (`set_port` replaces `servicePort`).
    pub service_port: u16,
    /// Marathon-LB's backend name, see [`backend_name`].
    pub backend: String,
    /// `HAPROXY_{n}_GROUP`, else `HAPROXY_GROUP` (comma-separated; empty: no group).
    pub groups: Vec<String>,
    /// `HAPROXY_{n}_ENABLED`; `None` when absent (see [`PortLabels::enabled`]).
    pub enabled_label: Option<bool>,
    /// `HAPROXY_{n}_BIND_ADDR`; `None` for Marathon-LB's default `*` (all addresses).
    pub bind_addr: Option<IpAddr>,
    pub mode: Mode,
    /// `HAPROXY_{n}_VHOST`, lowercased (`set_hostname`), comma-separated.
    pub vhosts: Vec<String>,
    pub path: Option<PathMatch>,
    /// `HAPROXY_{n}_HTTP_BACKEND_PROXYPASS_PATH`: prefix stripped from the request path.
    pub proxypass_path: Option<String>,
    /// `HAPROXY_{n}_HTTP_BACKEND_REVPROXY_PATH`: prefix put back on `Location` and friends.
    pub revproxy_path: Option<String>,
    /// `HAPROXY_{n}_HTTP_BACKEND_REDIR`: where a request for `/` is redirected.
    pub redirect_root: Option<String>,
    pub redirect_to_https: bool,
    pub use_hsts: bool,
    pub sticky: bool,
    /// `HAPROXY_{n}_SSL_CERT`, comma-separated paths (not opened here).
    pub ssl_certs: Vec<PathBuf>,
    pub balance: Balance,
    pub auth: Option<BasicAuth>,
    /// `HAPROXY_{n}_BACKEND_WEIGHT`: routing order, larger first. 0 by default, 1 when a
    /// `PATH` label is set and no weight is given (`set_path`).
    pub backend_weight: i64,
    /// `HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL`: client networks allowed; empty allows all.
    pub network_allowed: Vec<IpNet>,
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`: the port whose health check stands for
    /// this one when this port has none.
    pub healthcheck_port_index: Option<usize>,
    pub deployment: Deployment,
    /// `HAPROXY_*` labels for this port or the whole app that cannot apply to Ferryman: raw
    /// HAProxy templates (`HAPROXY_0_FRONTEND_HEAD`, `HAPROXY_0_BACKEND_HEAD`, `HAPROXY_HEAD`,
    /// `HAPROXY_0_BIND_OPTIONS`, …) and unknown names. Sorted; the caller counts and warns.
    pub unsupported: Vec<String>,
}

impl PortLabels {
    /// Whether the port is served. Marathon-LB serves every port unless `--strict-mode`, where
    /// only ports with `HAPROXY_{n}_ENABLED=true` are (`MarathonService.enabled = not
    /// strictMode`, then `set_enabled`).
    pub fn enabled(&self, strict_mode: bool) -> bool {
        self.enabled_label.unwrap_or(!strict_mode)
    }

    /// Whether a load balancer configured for `lb_groups` serves this port (`has_group`): a
    /// `*` among the balancer's groups takes every port; otherwise a port group must be among
    /// them. A port without a group is never served (upstream raises when neither side has one).
    pub fn in_group<S: AsRef<str>>(&self, lb_groups: &[S]) -> bool {
        lb_groups.iter().any(|g| g.as_ref() == "*")
            || self
                .groups
                .iter()
                .any(|p| lb_groups.iter().any(|g| g.as_ref() == p))
    }
}

/// Marathon-LB's backend name (`config()`: `appId[1:].replace('/', '_') + '_' +
/// str(servicePort)`), so operators find the same names in metrics and the admin API.
pub fn backend_name(app_id: &str, service_port: u16) -> String {
    let id = app_id.strip_prefix('/').unwrap_or(app_id);
    format!("{}_{service_port}", id.replace('/', "_"))
}

/// The labels of every service port of `app`, in port order; each port fails or succeeds on
/// its own (a caller that skips the app on any error can `collect::<Result<Vec<_>, _>>()`).
pub fn app_ports(app: &App) -> Vec<Result<PortLabels, LabelError>> {
    (0..app.service_ports.len())
        .map(|index| port_labels(app, index))
        .collect()
}

/// The labels of service port `index` of `app` (marathon-lb `get_apps`, one `MarathonService`).
pub fn port_labels(app: &App, index: usize) -> Result<PortLabels, LabelError> {
    let labels = &app.labels;
    let err = |label: &str, value: &str, reason: &'static str| LabelError {
        app_id: app.id.clone(),
        label: label.to_string(),
        value: value.to_string(),
        reason,
    };
    let key = |name: &str| format!("HAPROXY_{index}_{name}");
    let get = |name: &str| {
        let k = key(name);
        labels.get(&k).map(|v| (k, v.as_str()))
    };
    let boolean = |name: &str| -> Result<Option<bool>, LabelError> {
        match get(name) {
            None => Ok(None),
            Some((k, v)) => parse_bool(v)
                .map(Some)
                .ok_or_else(|| err(&k, v, "not a boolean (true/t/yes/y or false/f/no/n)")),
        }
    };
    let text = |name: &str| get(name).map(|(_, v)| v.to_string());

    let mut service_port = app.service_ports.get(index).copied().unwrap_or(0);
    if let Some((k, v, port)) = haproxy_port(labels, index) {
        service_port = port.map_err(|_| err(k, v, "not a port number in 1..=65535"))?;
    }

    // `set_group` on the port overrides the app's `HAPROXY_GROUP` ("the more specific definition
    // takes precedence").
    let groups = get("GROUP")
        .map(|(_, v)| v)
        .or_else(|| labels.get("HAPROXY_GROUP").map(String::as_str))
        .map(|v| split_list(v, |c| c == ','))
        .unwrap_or_default();

    let bind_addr = match get("BIND_ADDR") {
        None => None,
        Some((_, v)) if v.trim() == "*" => None,
        Some((k, v)) => Some(
            v.trim()
                .parse::<IpAddr>()
                .map_err(|_| err(&k, v, "not an IP address or *"))?,
        ),
    };

    let vhosts = get("VHOST")
        .map(|(_, v)| split_list(&v.to_lowercase(), |c| c == ','))
        .unwrap_or_default();

    let path = match get("PATH") {
        None => None,
        Some((k, v)) => parse_path(v).map_err(|reason| err(&k, v, reason))?,
    };

    // `set_path` raises a default weight of 0 to 1; `BACKEND_WEIGHT` is applied after `PATH`
    // (label order in config.py), so an explicit weight wins.
    let mut backend_weight = if get("PATH").is_some() { 1 } else { 0 };
    if let Some((k, v)) = get("BACKEND_WEIGHT") {
        backend_weight = v
            .trim()
            .parse::<i64>()
            .map_err(|_| err(&k, v, "not an integer"))?;
    }

    let balance = match get("BALANCE") {
        None => Balance::default(),
        Some((k, v)) => match v.trim().to_ascii_lowercase().as_str() {
            "roundrobin" => Balance::RoundRobin,
            "leastconn" => Balance::LeastConn,
            "source" => Balance::Source,
            _ => {
                return Err(err(
                    &k,
                    v,
                    "balance must be roundrobin, leastconn or source",
                ));
            }
        },
    };

    let auth = match get("AUTH") {
        None => None,
        Some((k, v)) => Some(
            parse_auth(v).ok_or_else(|| err(&k, v, "expected realm:username:encryptedpassword"))?,
        ),
    };

    let network_allowed = match get("BACKEND_NETWORK_ALLOWED_ACL") {
        None => Vec::new(),
        Some((k, v)) => split_list(v, |c| c.is_whitespace() || c == ',')
            .iter()
            .map(|net| parse_net(net))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| err(&k, v, "not a list of IP addresses or CIDR networks"))?,
    };

    let healthcheck_port_index = match get("BACKEND_HEALTHCHECK_PORT_INDEX") {
        None => None,
        Some((k, v)) => Some(
            v.trim()
                .parse::<usize>()
                .map_err(|_| err(&k, v, "not a port index"))?,
        ),
    };

    let mode = port_mode(
        app,
        index,
        get("MODE"),
        !vhosts.is_empty(),
        healthcheck_port_index,
    )
    .map_err(|(k, v)| err(&k, &v, "mode must be http or tcp"))?;

    let deployment = deployment(app)?;
    let backend_id = deployment
        .group
        .as_deref()
        .map(|g| {
            if g.starts_with('/') {
                g.to_string()
            } else {
                format!("/{g}")
            }
        })
        .unwrap_or_else(|| app.id.clone());

    Ok(PortLabels {
        app_id: app.id.clone(),
        index,
        service_port,
        backend: backend_name(&backend_id, service_port),
        groups,
        enabled_label: boolean("ENABLED")?,
        bind_addr,
        mode,
        vhosts,
        path,
        proxypass_path: text("HTTP_BACKEND_PROXYPASS_PATH"),
        revproxy_path: text("HTTP_BACKEND_REVPROXY_PATH"),
        redirect_root: text("HTTP_BACKEND_REDIR"),
        redirect_to_https: boolean("REDIRECT_TO_HTTPS")?.unwrap_or(false),
        use_hsts: boolean("USE_HSTS")?.unwrap_or(false),
        sticky: boolean("STICKY")?.unwrap_or(false),
        ssl_certs: get("SSL_CERT")
            .map(|(_, v)| {
                split_list(v, |c| c == ',')
                    .into_iter()
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default(),
        balance,
        auth,
        backend_weight,
        network_allowed,
        healthcheck_port_index,
        deployment,
        unsupported: unsupported(labels, index),
    })
}

/// The port's mode, in Marathon-LB's order of evaluation:
/// 1. `MarathonService.__init__`: `http` when the port's health check (`get_health_check`) has
///    protocol exactly `HTTP`;
/// 2. `set_mode`: `HAPROXY_{n}_MODE`, lowercased, overrides that;
/// 3. `get_apps`: when the port has no health check of its own and
///    `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX` names a port whose check is HTTP, HTTPS,
///    MESOS_HTTP or MESOS_HTTPS, `http` (overriding the label);
/// 4. `config()`: still unset → `http` when a VHOST is set, else `tcp`.
///
/// `Err((label, value))` for a mode other than http/tcp.
fn port_mode(
    app: &App,
    index: usize,
    mode_label: Option<(String, &str)>,
    has_vhost: bool,
    healthcheck_port_index: Option<usize>,
) -> Result<Mode, (String, String)> {
    let own_check = health_check(app, index);
    let mut mode = own_check
        .filter(|hc| hc.protocol == "HTTP")
        .map(|_| Mode::Http);
    if let Some((k, v)) = mode_label {
        mode = Some(match v.trim().to_ascii_lowercase().as_str() {
            "http" => Mode::Http,
            "tcp" => Mode::Tcp,
            _ => return Err((k, v.to_string())),
        });
    }
    if own_check.is_none()
        && let Some(other) = healthcheck_port_index.and_then(|i| health_check(app, i))
        && HTTP_HEALTH_PROTOCOLS.contains(&other.protocol.as_str())
    {
        mode = Some(Mode::Http);
    }
    Ok(mode.unwrap_or(if has_vhost { Mode::Http } else { Mode::Tcp }))
}

/// marathon-lb `get_health_check(app, portIndex)`: the first check that names an explicit
/// `port` (whatever the index asked), else the first whose `portIndex` is `index`. A check with
/// neither is on port index 0, Marathon's default (Marathon fills `portIndex: 0` in).
fn health_check(app: &App, index: usize) -> Option<&crate::model::HealthCheck> {
    app.health_checks.iter().find(|hc| {
        hc.port.is_some_and(|p| p != 0)
            || (hc.port.is_none_or(|p| p == 0) && hc.port_index.unwrap_or(0) as usize == index)
    })
}

/// The app-wide blue/green labels.
fn deployment(app: &App) -> Result<Deployment, LabelError> {
    let labels = &app.labels;
    let get = |k: &'static str| labels.get(k).map(|v| (k, v.as_str()));
    let err = |label: &str, value: &str, reason: &'static str| LabelError {
        app_id: app.id.clone(),
        label: label.to_string(),
        value: value.to_string(),
        reason,
    };
    let alt_port = match get("HAPROXY_DEPLOYMENT_ALT_PORT") {
        None => None,
        Some((k, v)) => Some(
            v.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err(k, v, "not a port number in 1..=65535"))?,
        ),
    };
    let target_instances = match get("HAPROXY_DEPLOYMENT_TARGET_INSTANCES") {
        None => None,
        Some((k, v)) => Some(
            v.trim()
                .parse::<u32>()
                .map_err(|_| err(k, v, "not an instance count"))?,
        ),
    };
    let text = |k: &'static str| {
        get(k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Ok(Deployment {
        group: text("HAPROXY_DEPLOYMENT_GROUP"),
        alt_port,
        colour: text("HAPROXY_DEPLOYMENT_COLOUR"),
        started_at: text("HAPROXY_DEPLOYMENT_STARTED_AT"),
        target_instances,
    })
}

/// config.py `string_to_bool` accepts `true/t/yes/y` (any case) as true and reads everything
/// else as false; here only `false/f/no/n` are false and anything else is an error, so a typo
/// such as `HAPROXY_0_ENABLED=1` is reported instead of silently disabling the port.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" => Some(true),
        "false" | "f" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// `path_beg` arguments: prefixes separated by spaces, `-i` for case-insensitive matching.
/// Other HAProxy flags (`-m`, `-f`, …) cannot apply and are an error. Blank → no path.
fn parse_path(v: &str) -> Result<Option<PathMatch>, &'static str> {
    let mut out = PathMatch {
        prefixes: Vec::new(),
        case_insensitive: false,
    };
    for token in v.split_whitespace() {
        if token == "-i" {
            out.case_insensitive = true;
        } else if token.starts_with('-') {
            return Err("only the -i path_beg flag is supported");
        } else {
            out.prefixes.push(token.to_string());
        }
    }
    Ok((!out.prefixes.is_empty()).then_some(out))
}

/// `set_auth`: `v.split(':')` unpacked into exactly three fields. A crypt(3) hash contains no
/// `:`, so a fourth field is a malformed label; user and hash must not be empty.
fn parse_auth(v: &str) -> Option<BasicAuth> {
    let mut parts = v.trim().split(':');
    let (realm, user, hash) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || user.is_empty() || hash.is_empty() {
        return None;
    }
    Some(BasicAuth {
        realm: realm.to_string(),
        user: user.to_string(),
        password_hash: hash.to_string(),
    })
}

/// An ACL entry: a CIDR network, or a bare address (HAProxy's `src` ACL accepts both).
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Splits on `sep`, trims each item and drops empty ones.
fn split_list(v: &str, sep: impl Fn(char) -> bool) -> Vec<String> {
    v.split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `HAPROXY_*` labels that concern port `index` or the whole app and that Ferryman cannot
/// apply: per-port names outside [`PORT_LABELS`] (templates such as `FRONTEND_HEAD`,
/// `BACKEND_HEAD`, and `BIND_OPTIONS`) and app-wide names outside [`APP_LABELS`] (global
/// templates such as `HAPROXY_HEAD`). Labels of other port indices are not this port's concern.
fn unsupported(labels: &BTreeMap<String, String>, index: usize) -> Vec<String> {
    let own = format!("{index}_");
    labels
        .keys()
        .filter(|k| {
            let Some(rest) = k.strip_prefix("HAPROXY_") else {
                return false;
            };
            match rest.split_once('_') {
                Some((n, name)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    rest.starts_with(&own) && !PORT_LABELS.contains(&name)
                }
                _ => !APP_LABELS.contains(&rest),
            }
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::decode::marathon_apps;
    use crate::discovery::decode::test_support::fixture;
    use crate::model::HealthCheck;

    /// An app `/{id}` with service ports and labels.
    fn app(id: &str, service_ports: &[u16], labels: &[(&str, &str)]) -> App {
        App {
            id: id.to_string(),
            service_ports: service_ports.to_vec(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..App::default()
        }
    }

    fn check(protocol: &str, port_index: Option<u32>, port: Option<u16>) -> HealthCheck {
        HealthCheck {
            protocol: protocol.to_string(),
            port_index,
            port,
            ..HealthCheck::default()
        }
    }

    fn ok(app: &App, index: usize) -> PortLabels {
        match port_labels(app, index) {
            Ok(p) => p,
            Err(e) => panic!("port {index} of {}: {e}", app.id),
        }
    }

    /// The apps of a Marathon fixture: a `/v2/apps` response, or one app definition as
    /// posted to Marathon (wrapped as `{"app": …}` for the decoder).
    fn fixture_apps(name: &str) -> Vec<App> {
        let mut body = fixture(&format!("marathon/{name}"));
        if !String::from_utf8_lossy(&body).contains("\"apps\"") {
            body = [&b"{\"app\": "[..], &body, b"}"].concat();
        }
        let state = marathon_apps(&body).unwrap_or_else(|e| panic!("decoding {name}: {e}"));
        state.apps.values().map(|a| (**a).clone()).collect()
    }

    /// The CI apps (`ci-*.json`): `HAPROXY_0_PORT`, `_VHOST`, `_ENABLED`, `HAPROXY_GROUP`.
    /// Upstream: `set_port` replaces the service port (and so the backend name), a VHOST makes
    /// the port http (`config()`), `set_hostname` lowercases.
    #[test]
    fn ci_fixture_vhost_port_and_group() {
        let apps = fixture_apps("ci-docker_bridge.json");
        let [app] = apps.as_slice() else {
            panic!("one app expected, got {}", apps.len())
        };
        let p = ok(app, 0);
        assert_eq!(p.service_port, 10100);
        assert_eq!(p.backend, "nginx-docker-bridge_10100");
        assert_eq!(p.vhosts, ["nginx-docker-bridge.test"]);
        assert_eq!(p.mode, Mode::Http);
        assert_eq!(p.groups, ["external"]);
        assert!(p.in_group(&["external"]) && !p.in_group(&["internal"]));
        assert!(p.enabled(true), "ENABLED=true serves even in strict mode");
        assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
    }

    /// zdd_apps.json: two colours of one deployment group. Upstream `get_apps` renames both to
    /// `/nginx` (the deployment group) so both colours feed one backend, named from the
    /// `HAPROXY_0_PORT` port 10000; the blue/green labels are what `zdd.py` reads.
    #[test]
    fn zdd_fixture_deployment_labels_and_shared_backend() {
        let apps = fixture_apps("zdd_apps.json");
        assert_eq!(apps.len(), 2);
        let mut colours = Vec::new();
        for app in &apps {
            let p = ok(app, 0);
            assert_eq!(p.backend, "nginx_10000", "{}", app.id);
            assert_eq!(p.service_port, 10000);
            assert_eq!(p.deployment.group.as_deref(), Some("nginx"));
            assert_eq!(p.deployment.alt_port, Some(10001));
            assert!(p.deployment.started_at.is_some());
            assert!(p.deployment.target_instances.is_some());
            // An HTTP health check on port index 0 makes the port http
            // (`MarathonService.__init__`).
            assert_eq!(p.mode, Mode::Http);
            assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
            colours.extend(p.deployment.colour);
        }
        colours.sort();
        assert_eq!(colours, ["blue", "green"]);

        let blue = fixture_apps("zdd_app_blue.json");
        let [green] = blue.as_slice() else {
            panic!("one app expected")
        };
        let p = ok(green, 0);
        assert_eq!(p.deployment.colour.as_deref(), Some("green"));
        assert_eq!(p.deployment.target_instances, Some(20));
    }

    /// 1-nginx.json (the `zdd.py` input): deployment group and alternate port, group external,
    /// no VHOST, MODE or HTTP check → tcp (`config()` fallback).
    #[test]
    fn nginx_fixture_deployment_app() {
        let apps = fixture_apps("1-nginx.json");
        let [app] = apps.as_slice() else {
            panic!("one app expected")
        };
        let p = ok(app, 0);
        assert_eq!(p.deployment.group.as_deref(), Some("nginx"));
        assert_eq!(p.deployment.alt_port, Some(10001));
        assert_eq!(p.groups, ["external"]);
        assert!(p.backend.starts_with("nginx_"), "{}", p.backend);
    }

    /// Every label with a value, read as upstream's `set_*` functions do.
    #[test]
    fn every_label_typed() {
        let a = app(
            "/prod/web",
            &[10000, 10001],
            &[
                ("HAPROXY_GROUP", "internal"),
                ("HAPROXY_0_GROUP", "external, edge"),
                ("HAPROXY_0_ENABLED", "YES"),
                ("HAPROXY_0_PORT", "8080"),
                ("HAPROXY_0_BIND_ADDR", "10.0.0.42"),
                ("HAPROXY_0_MODE", "HTTP"),
                ("HAPROXY_0_VHOST", "Web.Example.com, www.example.com"),
                ("HAPROXY_0_PATH", "-i /api /v2"),
                ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/api"),
                ("HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH", "/content"),
                ("HAPROXY_0_HTTP_BACKEND_REDIR", "/home"),
                ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
                ("HAPROXY_0_USE_HSTS", "t"),
                ("HAPROXY_0_STICKY", "y"),
                ("HAPROXY_0_SSL_CERT", "/etc/ssl/a.pem, /etc/ssl/b.pem"),
                ("HAPROXY_0_BALANCE", "leastconn"),
                ("HAPROXY_0_AUTH", "realm:alice:$6$salt$hash"),
                ("HAPROXY_0_BACKEND_WEIGHT", "-3"),
                (
                    "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL",
                    "10.1.40.0/24 10.1.55.43 2001:db8::/32",
                ),
                ("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", "1"),
            ],
        );
        let p = ok(&a, 0);
        assert_eq!(p.service_port, 8080);
        assert_eq!(p.backend, "prod_web_8080");
        assert_eq!(p.groups, ["external", "edge"]);
        assert_eq!(p.enabled_label, Some(true));
        assert_eq!(p.bind_addr, Some("10.0.0.42".parse().unwrap()));
        assert_eq!(p.mode, Mode::Http);
        assert_eq!(p.vhosts, ["web.example.com", "www.example.com"]);
        assert_eq!(
            p.path,
            Some(PathMatch {
                prefixes: vec!["/api".into(), "/v2".into()],
                case_insensitive: true
            })
        );
        assert_eq!(p.proxypass_path.as_deref(), Some("/api"));
        assert_eq!(p.revproxy_path.as_deref(), Some("/content"));
        assert_eq!(p.redirect_root.as_deref(), Some("/home"));
        assert!(p.redirect_to_https && p.use_hsts && p.sticky);
        assert_eq!(
            p.ssl_certs,
            [
                PathBuf::from("/etc/ssl/a.pem"),
                PathBuf::from("/etc/ssl/b.pem")
            ]
        );
        assert_eq!(p.balance, Balance::LeastConn);
        assert_eq!(
            p.auth,
            Some(BasicAuth {
                realm: "realm".into(),
                user: "alice".into(),
                password_hash: "$6$salt$hash".into()
            })
        );
        assert_eq!(
            p.backend_weight, -3,
            "an explicit weight wins over PATH's 1"
        );
        let nets: Vec<String> = p.network_allowed.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.1.40.0/24", "10.1.55.43/32", "2001:db8::/32"]);
        assert_eq!(p.healthcheck_port_index, Some(1));

        // Port 1 has none of port 0's labels: Marathon-LB's defaults.
        let q = ok(&a, 1);
        assert_eq!(q.service_port, 10001);
        assert_eq!(q.backend, "prod_web_10001");
        assert_eq!(q.groups, ["internal"]);
        assert_eq!(q.enabled_label, None);
        assert_eq!(q.bind_addr, None);
        assert_eq!(q.mode, Mode::Tcp);
        assert!(q.vhosts.is_empty() && q.path.is_none() && q.auth.is_none());
        assert!(!q.redirect_to_https && !q.use_hsts && !q.sticky);
        assert_eq!(q.balance, Balance::RoundRobin);
        assert_eq!(q.backend_weight, 0);
        assert!(q.network_allowed.is_empty() && q.ssl_certs.is_empty());
    }

    /// `set_group` on the port wins over `HAPROXY_GROUP`; without either the port is in no
    /// group and is never served, except by a `*` balancer (`has_group`).
    #[test]
    fn group_precedence_and_matching() {
        let a = app(
            "/svc",
            &[1, 2, 3],
            &[
                ("HAPROXY_GROUP", "internal"),
                ("HAPROXY_0_GROUP", "external"),
            ],
        );
        assert!(ok(&a, 0).in_group(&["external"]));
        assert!(!ok(&a, 0).in_group(&["internal"]));
        assert!(ok(&a, 1).in_group(&["internal"]));
        let none = app("/svc", &[1], &[]);
        assert!(!ok(&none, 0).in_group(&["external"]));
        assert!(ok(&none, 0).in_group(&["*"]));
        assert!(!ok(&none, 0).in_group::<&str>(&[]));
    }

    /// `MarathonService.enabled = not strictMode`: every port is served unless strict mode,
    /// where only `ENABLED=true` ports are; `ENABLED=false` always disables.
    #[test]
    fn enabled_default_depends_on_strict_mode() {
        let a = app(
            "/svc",
            &[1, 2, 3],
            &[
                ("HAPROXY_1_ENABLED", "false"),
                ("HAPROXY_2_ENABLED", "True"),
            ],
        );
        let (p0, p1, p2) = (ok(&a, 0), ok(&a, 1), ok(&a, 2));
        assert!(p0.enabled(false) && !p0.enabled(true));
        assert!(!p1.enabled(false) && !p1.enabled(true));
        assert!(p2.enabled(false) && p2.enabled(true));
    }

    /// Mode rules (`MarathonService.__init__`, `set_mode`, `get_apps`, `config()`).
    #[test]
    fn http_mode_detection() {
        // No label, no vhost, no check: tcp.
        assert_eq!(ok(&app("/a", &[1], &[]), 0).mode, Mode::Tcp);
        // VHOST alone: http.
        let v = app("/a", &[1], &[("HAPROXY_0_VHOST", "a.example")]);
        assert_eq!(ok(&v, 0).mode, Mode::Http);
        // MODE=tcp wins over VHOST.
        let vt = app(
            "/a",
            &[1],
            &[("HAPROXY_0_VHOST", "a.example"), ("HAPROXY_0_MODE", "tcp")],
        );
        assert_eq!(ok(&vt, 0).mode, Mode::Tcp);
        // An HTTP check on the port: http; on another port index: not this port's.
        let mut hc = app("/a", &[1, 2], &[]);
        hc.health_checks = vec![check("HTTP", Some(1), None)];
        assert_eq!(ok(&hc, 0).mode, Mode::Tcp);
        assert_eq!(ok(&hc, 1).mode, Mode::Http);
        // A check without portIndex is on index 0 (Marathon's default).
        hc.health_checks = vec![check("HTTP", None, None)];
        assert_eq!(ok(&hc, 0).mode, Mode::Http);
        // A check with an explicit port is returned for every index (`get_health_check`).
        hc.health_checks = vec![check("HTTP", None, Some(8080))];
        assert_eq!(ok(&hc, 1).mode, Mode::Http);
        // Only protocol exactly HTTP sets http in the constructor; a TCP or MESOS_HTTP check
        // on the port leaves the VHOST/tcp fallback.
        hc.health_checks = vec![check("MESOS_HTTP", Some(0), None)];
        assert_eq!(ok(&hc, 0).mode, Mode::Tcp);
        // The label is applied after the constructor: MODE=tcp beats the port's HTTP check.
        let mut ht = app("/a", &[1], &[("HAPROXY_0_MODE", "tcp")]);
        ht.health_checks = vec![check("HTTP", Some(0), None)];
        assert_eq!(ok(&ht, 0).mode, Mode::Tcp);
        // BACKEND_HEALTHCHECK_PORT_INDEX borrowing an HTTPS-family check overrides the label.
        let mut borrowed = app(
            "/a",
            &[1, 2],
            &[
                ("HAPROXY_0_MODE", "tcp"),
                ("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", "1"),
            ],
        );
        borrowed.health_checks = vec![check("MESOS_HTTPS", Some(1), None)];
        assert_eq!(ok(&borrowed, 0).mode, Mode::Http);
        // ... but not when the port has a check of its own.
        borrowed
            .health_checks
            .insert(0, check("TCP", Some(0), None));
        assert_eq!(ok(&borrowed, 0).mode, Mode::Tcp);
    }

    /// `config()`: `appId[1:].replace('/', '_') + '_' + str(servicePort)`, after `set_port`
    /// and the deployment-group rename of `get_apps`.
    #[test]
    fn backend_naming() {
        assert_eq!(backend_name("/a/b/c", 10000), "a_b_c_10000");
        assert_eq!(backend_name("/nginx", 80), "nginx_80");
        let a = app("/team/api", &[10005], &[("HAPROXY_0_PORT", "80")]);
        assert_eq!(ok(&a, 0).backend, "team_api_80");
        let g = app(
            "/team/api-green",
            &[10005],
            &[("HAPROXY_DEPLOYMENT_GROUP", "team/api")],
        );
        assert_eq!(ok(&g, 0).backend, "team_api_10005");
    }

    /// `set_path` makes the default weight 1 (path backends sort before catch-alls).
    #[test]
    fn path_raises_default_weight() {
        let a = app("/a", &[1], &[("HAPROXY_0_PATH", "/api")]);
        let p = ok(&a, 0);
        assert_eq!(p.backend_weight, 1);
        assert_eq!(
            p.path,
            Some(PathMatch {
                prefixes: vec!["/api".into()],
                case_insensitive: false
            })
        );
    }

    /// Raw HAProxy templates are reported for their own port and the app-wide ones for every
    /// port; known labels (including `HAPROXY_APP_ID` and the deployment labels) are not.
    #[test]
    fn template_labels_reported() {
        let a = app(
            "/a",
            &[1, 2],
            &[
                ("HAPROXY_HEAD", "global"),
                ("HAPROXY_APP_ID", "a"),
                ("HAPROXY_GROUP", "external"),
                ("HAPROXY_0_FRONTEND_HEAD", "x"),
                ("HAPROXY_0_BACKEND_HEAD", "y"),
                ("HAPROXY_0_BIND_OPTIONS", "ssl"),
                ("HAPROXY_1_BACKEND_HTTP_OPTIONS", "z"),
                ("HAPROXY_0_VHOST", "a.example"),
                ("OTHER_LABEL", "ignored"),
            ],
        );
        assert_eq!(
            ok(&a, 0).unsupported,
            [
                "HAPROXY_0_BACKEND_HEAD",
                "HAPROXY_0_BIND_OPTIONS",
                "HAPROXY_0_FRONTEND_HEAD",
                "HAPROXY_HEAD"
            ]
        );
        assert_eq!(
            ok(&a, 1).unsupported,
            ["HAPROXY_1_BACKEND_HTTP_OPTIONS", "HAPROXY_HEAD"]
        );
    }

    /// Each bad value is an error naming the app, the label and the value; other ports of the
    /// same app, and other apps, are unaffected.
    #[test]
    fn bad_values_are_errors_naming_app_label_value() {
        let cases = [
            ("HAPROXY_0_PORT", "abc"),
            ("HAPROXY_0_PORT", "0"),
            ("HAPROXY_0_PORT", "70000"),
            ("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/33"),
            (
                "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL",
                "10.0.0.0/8 not-a-net",
            ),
            ("HAPROXY_0_MODE", "udp"),
            ("HAPROXY_0_BALANCE", "uri"),
            ("HAPROXY_0_ENABLED", "1"),
            ("HAPROXY_0_STICKY", "maybe"),
            ("HAPROXY_0_REDIRECT_TO_HTTPS", "on"),
            ("HAPROXY_0_USE_HSTS", ""),
            ("HAPROXY_0_AUTH", "realm:user"),
            ("HAPROXY_0_AUTH", "realm:user:hash:extra"),
            ("HAPROXY_0_AUTH", "realm::hash"),
            ("HAPROXY_0_BACKEND_WEIGHT", "1.5"),
            ("HAPROXY_0_BIND_ADDR", "lb.example"),
            ("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", "-1"),
            ("HAPROXY_0_PATH", "-m beg /api"),
            ("HAPROXY_DEPLOYMENT_ALT_PORT", "x"),
            ("HAPROXY_DEPLOYMENT_TARGET_INSTANCES", "many"),
        ];
        for (label, value) in cases {
            let bad = app("/team/bad", &[10000, 10001], &[(label, value)]);
            let e = port_labels(&bad, 0).expect_err(&format!("{label}={value} accepted"));
            assert_eq!(
                (e.app_id.as_str(), e.label.as_str(), e.value.as_str()),
                ("/team/bad", label, value)
            );
            let text = e.to_string();
            assert!(text.contains("/team/bad") && text.contains(label), "{text}");
            // Port 1 is unaffected by a port-0 label; app-wide labels fail every port.
            let app_wide = label.starts_with("HAPROXY_DEPLOYMENT_");
            assert_eq!(port_labels(&bad, 1).is_err(), app_wide, "{label}");
            let all = app_ports(&bad);
            assert_eq!(all.len(), 2);
            assert!(all[0].is_err());
        }
        // Another app is unaffected.
        let good = app("/team/good", &[10000], &[("HAPROXY_0_PORT", "10002")]);
        assert_eq!(ok(&good, 0).service_port, 10002);
    }
}
