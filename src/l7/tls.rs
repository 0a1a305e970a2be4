//! Certificates for the TLS listener (`l7.https`): the SNI table and the rustls configuration.
//!
//! Certificates come from three places, as Marathon-LB's `HAPROXY_HTTPS_FRONTEND_HEAD`
//! (`bind *:443 ssl crt /etc/ssl/cert.pem` followed by one `crt` per app `HAPROXY_{n}_SSL_CERT`):
//! `[l7.tls].cert` (the default certificate), every `*.pem` file in `[l7.tls].dir` (HAProxy's
//! `crt <dir>`), and the apps' `HAPROXY_{n}_SSL_CERT` paths ("label certs"). Each file is a PEM
//! file as HAProxy's `crt` takes it: the certificate chain (leaf first) and the private key
//! (PKCS#8, PKCS#1 RSA or SEC1 EC) in one file; other sections (DH parameters) are ignored.
//!
//! A certificate serves the DNS names of its subjectAltName extension, or its subject CN when
//! it has no DNS name. For a handshake the SNI name is looked up exactly, then as a one-label
//! wildcard (`a.example.com` → `*.example.com`), then the default certificate is served:
//! `[l7.tls].cert`, else the first label cert, else the first file of the dir. No certificate at
//! all fails the handshake. When two files claim the same name the first wins, in the order
//! `[l7.tls].cert`, the dir (by file name), the label certs (by path): the operator's files
//! before the apps'.
//!
//! The rustls [`ServerConfig`] is built once; its resolver reads the current SNI table
//! through an [`ArcSwap`], so a reload or a route change swaps one pointer and in-flight and
//! later handshakes never wait for a lock. Files are reloaded when they change ([`Certs::watch`]
//! polls their metadata every second, which also sees atomic renames and symlink swaps as
//! Kubernetes and configuration managers do them); a file that becomes bad or disappears keeps
//! its last good certificate, with a warning.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::config::L7TlsConfig;

/// How often [`Certs::watch`] looks at the certificate files.
const POLL: Duration = Duration::from_secs(1);

/// The largest certificate file read (a chain and key take a few KiB; CA bundles some 100s).
const MAX_FILE: u64 = 1 << 20;

/// ALPN protocols offered to clients, in the server's order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TlsError {
    /// The config key (`l7.tls.cert`, `l7.tls.dir`).
    pub key: &'static str,
    pub reason: String,
}

/// The certificate store (cheap to clone).
#[derive(Clone)]
pub struct Certs {
    inner: Arc<Inner>,
}

struct Inner {
    config: L7TlsConfig,
    /// Files, the label-cert list and the dir listing; writers only (check, set_label_certs,
    /// reload). Handshakes read `resolver.table` and never take it.
    state: Mutex<State>,
    resolver: Arc<Resolver>,
    server_config: Arc<ServerConfig>,
}

#[derive(Default)]
struct State {
    /// Every file loaded, by path (the `[l7.tls]` files and the label certs checked since the
    /// last `set_label_certs`).
    files: HashMap<PathBuf, Entry>,
    /// The label certs in use, sorted, without duplicates.
    labels: Vec<PathBuf>,
    /// The `*.pem` files of `[l7.tls].dir` as last listed, sorted.
    dir_files: Vec<PathBuf>,
    /// Something the SNI table is built from changed since it was last built.
    dirty: bool,
}

/// One certificate file: its last good certificate and what the file looked like when last read.
struct Entry {
    good: Option<Arc<Loaded>>,
    /// What the file looked like when last read: a poll that sees the same does not read it.
    seen: Seen,
    /// Why the file's current content is not served (None when `good` is its current content).
    error: Option<String>,
}

/// A certificate with its key, and the names it serves.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Lowercase DNS names, wildcards as `*.example.com`.
    names: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seen {
    /// Read again at the next look: never read, or read while its modification time was so
    /// recent that a rewrite in the same timestamp tick could still follow unseen (git's
    /// "racy" files, for filesystems with coarse timestamps).
    Unsure,
    File(Stamp),
    /// `stat` failed with this error (missing, permission).
    Failed(std::io::ErrorKind),
}

impl Seen {
    fn of(stat: &std::io::Result<Stamp>) -> Seen {
        match stat {
            Ok(stamp) if stamp.racy() => Seen::Unsure,
            Ok(stamp) => Seen::File(*stamp),
            Err(e) => Seen::Failed(e.kind()),
        }
    }

    fn unchanged(self, stat: &std::io::Result<Stamp>) -> bool {
        match (self, stat) {
            (Seen::File(seen), Ok(now)) => seen == *now,
            (Seen::Failed(seen), Err(now)) => seen == now.kind(),
            _ => false,
        }
    }
}

/// What tells a rewritten file from an unchanged one: device and inode (a rename or symlink
/// swap), size, and modification and change times in nanoseconds (an in-place rewrite).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        // Follows symlinks: a swapped link target is a change.
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Modified within the last 2 s (either way: a clock step must not make a file racy
    /// forever).
    fn racy(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        (now - self.mtime.0).abs() < 2
    }
}

/// The certificates a handshake chooses from. Built whole and swapped; never mutated.
#[derive(Default)]
struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniTable {
    /// The certificate for an SNI name (lowercase, as rustls passes it), or for no SNI.
    fn lookup(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let Some(name) = sni.map(|n| n.strip_suffix('.').unwrap_or(n)) else {
            return self.default.as_ref();
        };
        self.exact
            .get(name)
            .or_else(|| {
                name.split_once('.')
                    .and_then(|(_, parent)| self.wildcard.get(parent))
            })
            .or(self.default.as_ref())
    }
}

/// The rustls certificate resolver: one `ArcSwap` load per handshake.
struct Resolver {
    table: ArcSwap<SniTable>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.load();
        f.debug_struct("Resolver")
            .field("exact", &table.exact.len())
            .field("wildcard", &table.wildcard.len())
            .field("default", &table.default.is_some())
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table
            .load()
            .lookup(client_hello.server_name())
            .cloned()
    }
}

// === impl Certs ===

impl Certs {
    /// Loads `[l7.tls]`: fails when `cert` cannot be served or `dir` cannot be listed (a bad
    /// file in the dir is skipped with a warning, as a bad label cert skips its app).
    pub fn new(config: &L7TlsConfig) -> Result<Certs, TlsError> {
        let mut state = State::default();
        if let Some(path) = &config.cert {
            let entry = state.refresh(path);
            if entry.good.is_none() {
                let reason = entry.error.clone().unwrap_or_default();
                return Err(TlsError {
                    key: "l7.tls.cert",
                    reason: format!("{}: {reason}", path.display()),
                });
            }
        }
        if let Some(dir) = &config.dir {
            state.dir_files = list_dir(dir).map_err(|e| TlsError {
                key: "l7.tls.dir",
                reason: format!("{}: {e}", dir.display()),
            })?;
            for path in state.dir_files.clone() {
                if let Some(error) = &state.refresh(&path).error {
                    tracing::warn!(path = %path.display(), %error, "l7.tls.dir: certificate file not served");
                }
            }
        }
        let resolver = Arc::new(Resolver {
            table: ArcSwap::from_pointee(state.build(config)),
        });
        state.dirty = false;
        Ok(Certs {
            inner: Arc::new(Inner {
                server_config: server_config(resolver.clone()),
                config: config.clone(),
                state: Mutex::new(state),
                resolver,
            }),
        })
    }

    /// Whether a `HAPROXY_{n}_SSL_CERT` file can be served (loads and caches it). A file that was
    /// served and has turned bad can still be: its last good certificate is.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let mut state = self.lock();
        let entry = state.refresh(path);
        let result = match (&entry.good, &entry.error) {
            (None, Some(error)) => Err(error.clone()),
            _ => Ok(()),
        };
        self.publish(&mut state);
        result
    }

    /// The label certificates now in use (besides `[l7.tls]`'s). Files not checked yet are
    /// loaded now; files no longer used are forgotten.
    pub fn set_label_certs(&self, paths: Vec<PathBuf>) {
        let mut state = self.lock();
        let labels: Vec<PathBuf> = paths
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for path in &labels {
            if !state.files.contains_key(path)
                && let Some(error) = &state.refresh(path).error
            {
                tracing::warn!(path = %path.display(), %error, "HAPROXY_n_SSL_CERT not served");
            }
        }
        if labels != state.labels {
            state.labels = labels;
            state.dirty = true;
        }
        state.forget_unused(&self.inner.config);
        self.publish(&mut state);
    }

    /// The rustls configuration of the TLS listener (built once: reloads swap the SNI table
    /// under it). TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, session tickets.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.server_config.clone()
    }

    /// Reloads certificate files when they change, until `shutdown`: polls their metadata every
    /// second and lists `[l7.tls].dir` again (new files are loaded, removed ones dropped). A file
    /// that turns bad or disappears keeps its last good certificate and is warned about once.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: `new` has just loaded everything
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // File reads and stats block: keep them off the runtime's worker threads.
            let certs = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || certs.reload()).await {
                tracing::error!(error = %e, "l7 tls: certificate reload failed");
            }
        }
    }

    /// One pass of [`Certs::watch`]: reads the files that changed since they were last read and
    /// swaps the SNI table when anything served changed.
    fn reload(&self) {
        let config = &self.inner.config;
        let mut state = self.lock();
        if let Some(dir) = &config.dir {
            match list_dir(dir) {
                Ok(files) if files != state.dir_files => {
                    state.dir_files = files;
                    state.dirty = true;
                    state.forget_unused(config);
                }
                Ok(_) => {}
                // Keep serving what was listed; the next pass tries again.
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "l7.tls.dir: cannot list")
                }
            }
        }
        for path in state.paths(config) {
            // Reported when what is served or why the file is not changes.
            let served = |e: &Entry| (e.good.as_ref().map(Arc::as_ptr), e.error.clone());
            let before = state.files.get(&path).map(served);
            let entry = state.refresh(&path);
            if before == Some(served(entry)) {
                continue;
            }
            match (&entry.error, &entry.good) {
                (None, _) => tracing::info!(path = %path.display(), "l7 tls: certificate loaded"),
                (Some(error), Some(_)) => tracing::warn!(
                    path = %path.display(), %error,
                    "l7 tls: certificate file is bad: serving its last good certificate"
                ),
                (Some(error), None) => {
                    tracing::warn!(path = %path.display(), %error, "l7 tls: certificate file not served")
                }
            }
        }
        self.publish(&mut state);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map (entries are replaced whole).
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Swaps in a new SNI table when what it is built from changed.
    fn publish(&self, state: &mut State) {
        if std::mem::take(&mut state.dirty) {
            self.inner
                .resolver
                .table
                .store(Arc::new(state.build(&self.inner.config)));
        }
    }
}

// === impl State ===

impl State {
    /// The files the SNI table is built from, in precedence order.
    fn paths(&self, config: &L7TlsConfig) -> Vec<PathBuf> {
        let mut seen = BTreeSet::new();
        config
            .cert
            .iter()
            .chain(&self.dir_files)
            .chain(&self.labels)
            .filter(|p| seen.insert(*p))
            .cloned()
            .collect()
    }

    /// Reads `path` again if its metadata changed since it was last read (or it was never read)
    /// and returns its entry. A bad read keeps the last good certificate.
    fn refresh(&mut self, path: &Path) -> &Entry {
        let stat = Stamp::of(path);
        if !self
            .files
            .get(path)
            .is_some_and(|e| e.seen.unchanged(&stat))
        {
            let result = match &stat {
                Ok(_) => load(path),
                Err(e) => Err(io_reason(e)),
            };
            let entry = self
                .files
                .entry(path.to_path_buf())
                .or_insert_with(|| Entry {
                    good: None,
                    seen: Seen::Unsure,
                    error: None,
                });
            entry.seen = Seen::of(&stat);
            match result {
                // The same certificate read again (a touch, a racy file): nothing to swap.
                Ok(loaded)
                    if entry
                        .good
                        .as_ref()
                        .is_some_and(|g| g.key.cert == loaded.key.cert) =>
                {
                    entry.error = None;
                }
                Ok(loaded) => {
                    entry.good = Some(Arc::new(loaded));
                    entry.error = None;
                    self.dirty = true;
                }
                Err(error) => entry.error = Some(error),
            }
        }
        &self.files[path]
    }

    /// Drops the entries of files no longer used (label certs of apps gone, files removed
    /// from the dir).
    fn forget_unused(&mut self, config: &L7TlsConfig) {
        let used: BTreeSet<PathBuf> = self.paths(config).into_iter().collect();
        let before = self.files.len();
        self.files.retain(|path, _| used.contains(path));
        if self.files.len() != before {
            self.dirty = true;
        }
    }

    fn build(&self, config: &L7TlsConfig) -> SniTable {
        let mut table = SniTable::default();
        let good = |p: &PathBuf| self.files.get(p).and_then(|e| e.good.clone());
        for loaded in self.paths(config).iter().filter_map(good) {
            for name in &loaded.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut table.wildcard, parent),
                    None => (&mut table.exact, name.as_str()),
                };
                map.entry(key.to_owned())
                    .or_insert_with(|| loaded.key.clone());
            }
        }
        table.default = config
            .cert
            .iter()
            .chain(&self.labels)
            .chain(&self.dir_files)
            .find_map(good)
            .map(|l| l.key.clone());
        table
    }
}

/// The `*.pem` files of a directory, sorted (HAProxy loads a `crt` dir in alphabetic order).
fn list_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pem") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "missing".to_owned(),
        _ => format!("unreadable: {e}"),
    }
}

/// Reads a certificate file: a regular file of at most [`MAX_FILE`] bytes. The path comes from
/// app labels: `/dev/zero` or a FIFO must not hang or exhaust the table builder.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK) // opening a FIFO does not wait for a writer
        .open(path)
        .map_err(|e| io_reason(&e))?;
    if !file.metadata().map_err(|e| io_reason(&e))?.is_file() {
        return Err("not a regular file".to_owned());
    }
    let mut pem = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(|e| io_reason(&e))?;
    if pem.len() as u64 > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    Ok(pem)
}

/// Loads a PEM certificate file: chain, private key, the key matching the leaf, the names.
fn load(path: &Path) -> Result<Loaded, String> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    let leaf = chain.first().ok_or("no certificate")?;
    let names = names(leaf)?;
    let key = match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => return Err("no private key".into()),
        Err(e) => return Err(format!("bad PEM: {e}")),
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        // `Unknown`: the signer cannot tell its public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err("private key does not match the certificate".into());
        }
        Err(e) => return Err(format!("bad certificate: {e}")),
    }
    Ok(Loaded {
        key: Arc::new(key),
        names,
    })
}

/// The names a certificate serves: its subjectAltName DNS names, else its subject CNs;
/// lowercase, without a trailing dot.
fn names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("bad certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    let mut names: Vec<&str> = san
        .iter()
        .flat_map(|san| &san.value.general_names)
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some(*name),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .collect();
    }
    Ok(names
        .into_iter()
        .map(|n| n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase())
        .collect())
}

/// The listener's rustls configuration around `resolver`.
fn server_config(resolver: Arc<Resolver>) -> Arc<ServerConfig> {
    // The process default provider, installed from the crate features (ring only: no
    // cmake/nasm toolchain, unlike aws-lc-rs). rustls 0.23.48 deprecates naming
    // `ring::default_provider()` directly (it has no post-quantum key exchange).
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // Stateless resumption (as HAProxy's default): a returning client skips the full handshake.
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        Err(e) => tracing::warn!(error = %e, "l7 tls: no session tickets"),
    }
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A test CA that signs leaf certificates.
    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        cert: rcgen::Certificate,
    }

    impl Ca {
        fn new() -> Ca {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).unwrap();
            Ca {
                cert,
                issuer: Issuer::new(params, key),
            }
        }

        /// Writes a PEM file as HAProxy's `crt` takes it (leaf, CA, PKCS#8 key) for `names`;
        /// returns the leaf.
        fn write(&self, path: &Path, names: &[&str]) -> CertificateDer<'static> {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &self.issuer)
                .unwrap();
            let pem = format!("{}{}{}", cert.pem(), self.cert.pem(), key.serialize_pem());
            std::fs::write(path, pem).unwrap();
            cert.der().clone()
        }
    }

    fn served(certs: &Certs, sni: Option<&str>) -> Option<CertificateDer<'static>> {
        certs
            .inner
            .resolver
            .table
            .load()
            .lookup(sni)
            .map(|k| k.cert[0].clone())
    }

    fn config(cert: Option<PathBuf>, dir: Option<PathBuf>) -> L7TlsConfig {
        L7TlsConfig { cert, dir }
    }

    #[test]
    fn sni_exact_then_wildcard_then_default() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let dir = tmp.path().join("certs");
        std::fs::create_dir(&dir).unwrap();
        let default = ca.write(&tmp.path().join("default.pem"), &["default.test"]);
        let wild = ca.write(&dir.join("wild.pem"), &["*.example.com"]);
        let exact = ca.write(&tmp.path().join("app.pem"), &["a.example.com"]);
        std::fs::write(dir.join("ignored.txt"), "not a pem").unwrap();
        let certs = Certs::new(&config(
            Some(tmp.path().join("default.pem")),
            Some(dir.clone()),
        ))
        .unwrap();
        certs.check(&tmp.path().join("app.pem")).unwrap();
        certs.set_label_certs(vec![tmp.path().join("app.pem")]);

        assert_eq!(served(&certs, Some("a.example.com")), Some(exact.clone()));
        assert_eq!(served(&certs, Some("b.example.com")), Some(wild.clone()));
        // A wildcard covers one label only.
        assert_eq!(
            served(&certs, Some("x.b.example.com")),
            Some(default.clone())
        );
        assert_eq!(served(&certs, Some("example.com")), Some(default.clone()));
        assert_eq!(served(&certs, Some("default.test")), Some(default.clone()));
        assert_eq!(served(&certs, None), Some(default.clone()));

        // The label cert leaves: its name falls back to the wildcard.
        certs.set_label_certs(vec![]);
        assert_eq!(served(&certs, Some("a.example.com")), Some(wild));
    }

    #[test]
    fn default_is_first_label_cert_without_config_cert() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let certs = Certs::new(&config(None, None)).unwrap();
        assert_eq!(
            served(&certs, Some("a.test")),
            None,
            "no certificate at all"
        );
        let a = ca.write(&tmp.path().join("a.pem"), &["a.test"]);
        let b = ca.write(&tmp.path().join("b.pem"), &["b.test"]);
        certs.set_label_certs(vec![tmp.path().join("b.pem"), tmp.path().join("a.pem")]);
        assert_eq!(served(&certs, Some("b.test")), Some(b));
        assert_eq!(served(&certs, Some("other.test")), Some(a.clone()));
        assert_eq!(served(&certs, None), Some(a));
    }

    #[test]
    fn cn_when_no_san_dns_name() {
        let tmp = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Legacy.Example.ORG");
        let cert = params.self_signed(&key).unwrap();
        let path = tmp.path().join("cn.pem");
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let other = Ca::new().write(&tmp.path().join("a-first.pem"), &["first.test"]);
        let certs = Certs::new(&config(None, None)).unwrap();
        certs.set_label_certs(vec![tmp.path().join("a-first.pem"), path]);
        assert_eq!(
            served(&certs, Some("legacy.example.org")),
            Some(cert.der().clone())
        );
        assert_eq!(served(&certs, Some("nope.test")), Some(other));
    }

    /// Files as Marathon-LB users make them with openssl: PKCS#1 RSA and SEC1 EC keys after the
    /// certificate, and a DH parameters section HAProxy reads from the same file (ignored).
    #[test]
    fn openssl_pkcs1_and_sec1_keys() {
        use std::process::Command;
        let openssl = |args: &[&str]| Command::new("openssl").args(args).output();
        if openssl(&["version"]).is_err() {
            assert_ne!(
                std::env::var("FERRYMAN_REQUIRE_ALL").as_deref(),
                Ok("1"),
                "openssl missing and FERRYMAN_REQUIRE_ALL=1"
            );
            eprintln!("skipped: openssl missing");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let at = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();
        let keygen: [(&str, &[&str], &str); 2] = [
            (
                "rsa",
                &["genrsa", "-traditional", "-out", &at("rsa.key"), "2048"],
                "-----BEGIN RSA PRIVATE KEY-----",
            ),
            (
                "ec",
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &at("ec.key"),
                ],
                "-----BEGIN EC PRIVATE KEY-----",
            ),
        ];
        let certs = Certs::new(&config(None, None)).unwrap();
        let mut paths = Vec::new();
        for (kind, args, header) in keygen {
            let out = openssl(args).unwrap();
            assert!(out.status.success(), "{kind}: {out:?}");
            let key = std::fs::read_to_string(at(&format!("{kind}.key"))).unwrap();
            assert!(key.starts_with(header), "{kind}: {key}");
            let name = format!("{kind}.test");
            let out = openssl(&[
                "req",
                "-x509",
                "-key",
                &at(&format!("{kind}.key")),
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                &format!("subjectAltName=DNS:{name}"),
                "-days",
                "2",
                "-out",
                &at(&format!("{kind}.crt")),
            ])
            .unwrap();
            assert!(out.status.success(), "{kind}: {out:?}");
            let cert = std::fs::read_to_string(at(&format!("{kind}.crt"))).unwrap();
            let dh = "-----BEGIN DH PARAMETERS-----\nMAA=\n-----END DH PARAMETERS-----\n";
            let path = tmp.path().join(format!("{kind}.pem"));
            std::fs::write(&path, format!("{cert}{key}{dh}")).unwrap();
            assert_eq!(certs.check(&path), Ok(()), "{kind}");
            let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
            paths.push((path, name, der));
        }
        certs.set_label_certs(paths.iter().map(|(p, _, _)| p.clone()).collect());
        for (_, name, der) in paths {
            assert_eq!(served(&certs, Some(&name)), Some(der), "{name}");
        }
    }

    #[test]
    fn check_refuses_bad_files() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let certs = Certs::new(&config(None, None)).unwrap();

        let missing = tmp.path().join("missing.pem");
        assert_eq!(certs.check(&missing), Err("missing".to_owned()));

        let good = tmp.path().join("good.pem");
        ca.write(&good, &["good.test"]);
        assert_eq!(certs.check(&good), Ok(()));

        let text = std::fs::read_to_string(&good).unwrap();
        let key_at = text.find("-----BEGIN PRIVATE KEY-----").unwrap();
        let no_key = tmp.path().join("nokey.pem");
        std::fs::write(&no_key, &text[..key_at]).unwrap();
        assert_eq!(certs.check(&no_key), Err("no private key".to_owned()));

        let no_cert = tmp.path().join("nocert.pem");
        std::fs::write(&no_cert, &text[key_at..]).unwrap();
        assert_eq!(certs.check(&no_cert), Err("no certificate".to_owned()));

        let other_key = KeyPair::generate().unwrap().serialize_pem();
        let mismatch = tmp.path().join("mismatch.pem");
        std::fs::write(&mismatch, format!("{}{other_key}", &text[..key_at])).unwrap();
        let err = certs.check(&mismatch).unwrap_err();
        assert!(err.contains("does not match"), "{err}");

        let dir = tmp.path().join("dir.pem");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(certs.check(&dir), Err("not a regular file".to_owned()));
        // Neither hangs nor reads forever.
        assert_eq!(
            certs.check(Path::new("/dev/zero")),
            Err("not a regular file".to_owned())
        );
        let fifo = tmp.path().join("fifo.pem");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        assert_eq!(certs.check(&fifo), Err("not a regular file".to_owned()));
        let big = tmp.path().join("big.pem");
        std::fs::write(&big, vec![b'#'; MAX_FILE as usize + 1]).unwrap();
        assert!(certs.check(&big).unwrap_err().starts_with("larger than"));
    }

    #[test]
    fn new_names_the_config_key() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Certs::new(&config(Some(tmp.path().join("none.pem")), None))
            .err()
            .unwrap();
        assert_eq!(err.key, "l7.tls.cert");
        assert!(err.reason.contains("missing"), "{err}");
        let err = Certs::new(&config(None, Some(tmp.path().join("nodir"))))
            .err()
            .unwrap();
        assert_eq!(err.key, "l7.tls.dir");
        // A bad file in the dir is skipped, not fatal.
        std::fs::write(tmp.path().join("bad.pem"), "garbage").unwrap();
        let certs = Certs::new(&config(None, Some(tmp.path().to_owned()))).unwrap();
        assert_eq!(served(&certs, None), None);
    }

    #[test]
    fn reload_serves_rewritten_file_and_keeps_last_good() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let label = tmp.path().join("label.pem");
        let first = ca.write(&label, &["app.test"]);
        let certs = Certs::new(&config(None, Some(dir.clone()))).unwrap();
        certs.set_label_certs(vec![label.clone()]);
        assert_eq!(served(&certs, Some("app.test")), Some(first.clone()));

        // Read again (the file is racy: just written) but the same: the table is not swapped.
        let table = certs.inner.resolver.table.load_full();
        certs.reload();
        certs.reload();
        assert!(Arc::ptr_eq(&table, &certs.inner.resolver.table.load_full()));

        // Rewritten in place with a new certificate.
        let second = ca.write(&label, &["app.test"]);
        certs.reload();
        assert_eq!(served(&certs, Some("app.test")), Some(second.clone()));

        // Turns bad: the last good one is served, and check still accepts it.
        std::fs::write(&label, "truncated").unwrap();
        certs.reload();
        assert_eq!(served(&certs, Some("app.test")), Some(second.clone()));
        assert_eq!(certs.check(&label), Ok(()));
        // Removed: still the last good one.
        std::fs::remove_file(&label).unwrap();
        certs.reload();
        assert_eq!(served(&certs, Some("app.test")), Some(second));

        // Replaced by rename (a new inode), as configuration managers do.
        let tmp_file = tmp.path().join("label.pem.tmp");
        let third = ca.write(&tmp_file, &["app.test"]);
        std::fs::rename(&tmp_file, &label).unwrap();
        certs.reload();
        assert_eq!(served(&certs, Some("app.test")), Some(third));

        // A new file in the dir is picked up; a removed one is dropped.
        let added = ca.write(&dir.join("new.pem"), &["new.test"]);
        certs.reload();
        assert_eq!(served(&certs, Some("new.test")), Some(added));
        std::fs::remove_file(dir.join("new.pem")).unwrap();
        certs.reload();
        assert_ne!(
            served(&certs, Some("new.test")),
            None,
            "falls back to the default"
        );
        assert!(!certs.lock().files.contains_key(&dir.join("new.pem")));
    }

    #[tokio::test]
    async fn watch_picks_up_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let path = tmp.path().join("default.pem");
        ca.write(&path, &["w.test"]);
        let certs = Certs::new(&config(Some(path.clone()), None)).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(certs.clone().watch(shutdown.clone()));
        let new = ca.write(&path, &["w.test"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while served(&certs, Some("w.test")).as_ref() != Some(&new) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not reloaded within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("watch stops on shutdown")
            .unwrap();
    }

    /// Connects to `addr` with a client trusting `ca`, offering `versions` and ALPN h2 then
    /// http/1.1, for `sni`: the negotiated ALPN, version and the server's leaf certificate.
    async fn handshake(
        addr: std::net::SocketAddr,
        ca: &Ca,
        sni: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (
        Option<Vec<u8>>,
        rustls::ProtocolVersion,
        CertificateDer<'static>,
    ) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let mut client = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .expect("handshake in time")
            .expect("handshake succeeds (the client verifies the name against the CA)");
        let (_, conn) = tls.get_ref();
        (
            conn.alpn_protocol().map(<[u8]>::to_vec),
            conn.protocol_version().unwrap(),
            conn.peer_certificates().unwrap()[0].clone(),
        )
    }

    #[tokio::test]
    async fn handshake_negotiates_h2_with_the_sni_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let default = ca.write(&tmp.path().join("default.pem"), &["default.test"]);
        let app = ca.write(&tmp.path().join("app.pem"), &["*.app.test"]);
        let certs = Certs::new(&config(Some(tmp.path().join("default.pem")), None)).unwrap();
        certs.set_label_certs(vec![tmp.path().join("app.pem")]);
        let server_config = certs.server_config();
        assert_eq!(
            server_config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        let server = tokio::spawn(async move {
            for _ in 0..3 {
                let (tcp, _) = listener.accept().await.unwrap();
                let tls = acceptor.accept(tcp).await.unwrap();
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            }
        });

        use rustls::version::{TLS12, TLS13};
        let (alpn, version, leaf) = handshake(addr, &ca, "www.app.test", &[&TLS13]).await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
        assert_eq!(leaf, app);
        // TLS 1.2 is still served (a TLS 1.1 client cannot be built with rustls; the server
        // config is built with TLS 1.2 and 1.3 only).
        let (alpn, version, leaf) = handshake(addr, &ca, "default.test", &[&TLS12]).await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
        assert_eq!(leaf, default);
        let (_, _, leaf) = handshake(addr, &ca, "default.test", &[&TLS13, &TLS12]).await;
        assert_eq!(leaf, default);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
