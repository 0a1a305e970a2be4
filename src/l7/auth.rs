//! `HAPROXY_{n}_AUTH` basic auth: Marathon-LB's `realm:username:encryptedpassword` label
//! ([`BasicAuth`]) becomes HAProxy's `userlist … user {user} password {hash}`, which checks
//! the password with the system's crypt(3). We accept the crypt(3) schemes that matter on
//! today's systems, through maintained crates:
//!
//! - `$6$…` SHA-512-crypt and `$5$…` SHA-256-crypt (`sha-crypt`, RustCrypto; optional
//!   `rounds=N`), what `openssl passwd -6` / `mkpasswd -m sha-512` produce;
//! - `$2a$`, `$2b$`, `$2y$` bcrypt (`bcrypt`), what `htpasswd -B` produces.
//!
//! Anything else (DES, MD5-crypt `$1$`, yescrypt `$y$`, …) is refused (every request gets
//! 401), with one warning per scheme naming the scheme, never the hash.
//!
//! A verification costs milliseconds by design (5000 SHA rounds, or the bcrypt cost), far too
//! much to pay on every request of a keep-alive client. Successful verifications are cached,
//! keyed by (user, hash, `Authorization` value), in a bounded map cleared when full; failures
//! are never cached (a client guessing passwords pays the full cost every time, as with
//! HAProxy). The cached header is compared in constant time.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError, RwLock};

use base64::Engine as _;
use http::HeaderValue;

use super::labels::BasicAuth;

/// Most successful verifications cached; the map is cleared when it is full (a simple bound:
/// a cleared entry costs one more hash verification, nothing else).
pub const CACHE_CAPACITY: usize = 1024;
/// Longest `Authorization` value considered (a user name and password of a few hundred bytes
/// each, base64-encoded); longer is refused without decoding.
const MAX_HEADER_LEN: usize = 2048;
/// Distinct unknown schemes warned about (bounds the set when labels are hostile).
const MAX_WARNED_SCHEMES: usize = 64;

/// Checks `Authorization: Basic` headers against crypt(3) hashes.
#[derive(Default)]
pub struct Verifier {
    /// Successful verifications: the key is the (random-keyed) hash of (user, password hash,
    /// header value); the entry holds them whole, compared on a hit.
    cache: RwLock<HashMap<u64, Verified>>,
    hasher: std::collections::hash_map::RandomState,
    /// Unknown hash schemes already warned about.
    warned: Mutex<HashSet<String>>,
}

/// One cached successful verification.
struct Verified {
    user: Box<str>,
    password_hash: Box<str>,
    header: Box<[u8]>,
}

/// The crypt(3) scheme of a hash string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Sha512,
    Sha256,
    Bcrypt,
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Whether `authorization` carries `auth`'s user and a password matching its hash.
    pub fn check(&self, auth: &BasicAuth, authorization: Option<&HeaderValue>) -> bool {
        let Some(header) = authorization.map(HeaderValue::as_bytes) else {
            return false;
        };
        if header.len() > MAX_HEADER_LEN {
            return false;
        }
        let key = self
            .hasher
            .hash_one((auth.user.as_str(), auth.password_hash.as_str(), header));
        if self.cached(key, auth, header) {
            return true;
        }
        let Some(scheme) = self.scheme(&auth.password_hash) else {
            return false;
        };
        let Some((user, password)) = decode_basic(header) else {
            return false;
        };
        if !ct_eq(user.as_bytes(), auth.user.as_bytes()) {
            return false;
        }
        if !verify(scheme, &password, &auth.password_hash) {
            return false;
        }
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(
            key,
            Verified {
                user: auth.user.as_str().into(),
                password_hash: auth.password_hash.as_str().into(),
                header: header.into(),
            },
        );
        true
    }

    /// Whether (auth, header) verified before. The hash and user are configuration (compared
    /// plainly); the header carries the password (compared in constant time).
    fn cached(&self, key: u64, auth: &BasicAuth, header: &[u8]) -> bool {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        cache.get(&key).is_some_and(|v| {
            *v.user == *auth.user
                && *v.password_hash == *auth.password_hash
                && ct_eq(&v.header, header)
        })
    }

    /// The scheme of `hash`, or `None` (warned once per scheme) when it is not supported.
    fn scheme(&self, hash: &str) -> Option<Scheme> {
        if hash.starts_with("$6$") {
            return Some(Scheme::Sha512);
        }
        if hash.starts_with("$5$") {
            return Some(Scheme::Sha256);
        }
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            return Some(Scheme::Bcrypt);
        }
        let scheme = scheme_name(hash);
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() < MAX_WARNED_SCHEMES && warned.insert(scheme.clone()) {
            tracing::warn!(
                scheme = %scheme,
                "HAPROXY_n_AUTH: unsupported password hash scheme (supported: $6$ SHA-512-crypt, \
                 $5$ SHA-256-crypt, $2a$/$2b$/$2y$ bcrypt); requests to the backend get 401"
            );
        }
        None
    }
}

/// A printable name of `hash`'s scheme that never shows the hash: the `$id$` prefix (at most
/// 16 characters of it), or `des` for a hash without one (traditional DES crypt).
fn scheme_name(hash: &str) -> String {
    match hash.strip_prefix('$') {
        Some(rest) => {
            let id: String = rest
                .split('$')
                .next()
                .unwrap_or("")
                .chars()
                .take(16)
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            format!("${id}$")
        }
        None => "des".to_string(),
    }
}

/// `Basic base64(user:password)` → (user, password). The scheme name is case-insensitive
/// (RFC 7617); the user is everything before the first `:`.
fn decode_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `password` against `hash` of `scheme`; a malformed hash is a mismatch.
fn verify(scheme: Scheme, password: &str, hash: &str) -> bool {
    match scheme {
        Scheme::Sha512 => sha_crypt::sha512_check(password, hash).is_ok(),
        Scheme::Sha256 => sha_crypt::sha256_check(password, hash).is_ok(),
        Scheme::Bcrypt => bcrypt::verify(password.as_bytes(), hash).unwrap_or(false),
    }
}

/// Constant-time equality of two byte strings (time depends on the lengths only).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl passwd -6 -salt saltsalt secret` (OpenSSL 3, at test-writing time).
    const OPENSSL_SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
    /// `openssl passwd -5 -salt saltsalt secret`.
    const OPENSSL_SHA256: &str = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
    /// crypt_blowfish's test vector (Openwall `wrapper.c`): password `U*U`.
    const BLOWFISH_VECTOR: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

    fn auth(user: &str, hash: &str) -> BasicAuth {
        BasicAuth {
            realm: "realm".into(),
            user: user.into(),
            password_hash: hash.into(),
        }
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    fn check(v: &Verifier, a: &BasicAuth, user: &str, password: &str) -> bool {
        v.check(a, Some(&basic(user, password)))
    }

    fn cached(v: &Verifier) -> usize {
        v.cache.read().unwrap().len()
    }

    #[test]
    fn openssl_sha_crypt_vectors_verify() {
        let v = Verifier::new();
        for hash in [OPENSSL_SHA512, OPENSSL_SHA256] {
            let a = auth("alice", hash);
            assert!(check(&v, &a, "alice", "secret"), "{hash}");
            assert!(!check(&v, &a, "alice", "Secret"), "{hash}");
            assert!(!check(&v, &a, "alice", "secret "), "{hash}");
            assert!(!check(&v, &a, "bob", "secret"), "user must match: {hash}");
        }
    }

    #[test]
    fn crate_made_hashes_verify() {
        let v = Verifier::new();
        let sha512 = sha_crypt::sha512_simple(
            "p:ss wörd",
            &sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_MIN).unwrap(),
        )
        .unwrap();
        assert!(sha512.starts_with("$6$rounds=1000$"), "{sha512}");
        let sha256 = sha_crypt::sha256_simple(
            "p:ss wörd",
            &sha_crypt::Sha256Params::new(sha_crypt::ROUNDS_MIN).unwrap(),
        )
        .unwrap();
        let parts = bcrypt::hash_with_result("p:ss wörd", 4).unwrap();
        let bcrypts = [
            parts.format_for_version(bcrypt::Version::TwoA),
            parts.format_for_version(bcrypt::Version::TwoB),
            parts.format_for_version(bcrypt::Version::TwoY),
        ];
        for hash in [sha512, sha256].iter().chain(&bcrypts) {
            let a = auth("alice", hash);
            // The password may hold ':' (only the first one ends the user) and non-ASCII.
            assert!(check(&v, &a, "alice", "p:ss wörd"), "{hash}");
            assert!(!check(&v, &a, "alice", "p:ss word"), "{hash}");
        }
    }

    #[test]
    fn known_bcrypt_vector_verifies() {
        let v = Verifier::new();
        let a = auth("u", BLOWFISH_VECTOR);
        assert!(check(&v, &a, "u", "U*U"));
        assert!(!check(&v, &a, "u", "U*V"));
    }

    #[test]
    fn unsupported_schemes_and_malformed_hashes_refuse() {
        let v = Verifier::new();
        // `openssl passwd -1 -salt saltsalt secret` (MD5-crypt) and a DES crypt.
        for hash in [
            "$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
            "sa3tHJ3/KuYvI",
            "$y$j9T$abc$def",
            "$6$",
            "$6$saltsalt$short",
            "$2b$04$tooshort",
        ] {
            assert!(
                !check(&v, &auth("alice", hash), "alice", "secret"),
                "{hash}"
            );
        }
        assert_eq!(scheme_name("$1$saltsalt$0bNv"), "$1$");
        assert_eq!(scheme_name("sa3tHJ3/KuYvI"), "des");
        assert_eq!(scheme_name("$argon2id$v=19$m=65536"), "$argon2id$");
        assert!(v.warned.lock().unwrap().contains("$1$"));
        assert_eq!(cached(&v), 0);
    }

    #[test]
    fn header_forms() {
        let v = Verifier::new();
        let a = auth("alice", OPENSSL_SHA256);
        let token = base64::engine::general_purpose::STANDARD.encode("alice:secret");
        let with = |s: &str| v.check(&a, Some(&HeaderValue::from_str(s).unwrap()));
        assert!(!v.check(&a, None), "no header");
        assert!(
            with(&format!("basic {token}")),
            "scheme is case-insensitive"
        );
        assert!(with(&format!("Basic  {token} ")), "extra spaces");
        assert!(!with(&format!("Bearer {token}")));
        assert!(!with(&format!("Basic{token}")));
        assert!(!with("Basic !!!notbase64"));
        let no_colon = base64::engine::general_purpose::STANDARD.encode("alicesecret");
        assert!(!with(&format!("Basic {no_colon}")));
        assert!(!with(&format!("Basic {}", "A".repeat(MAX_HEADER_LEN))));
    }

    #[test]
    fn successes_are_cached_failures_are_not() {
        let v = Verifier::new();
        let a = auth("alice", OPENSSL_SHA512);
        assert!(!check(&v, &a, "alice", "wrong"));
        assert_eq!(cached(&v), 0, "a failure is not cached");
        assert!(check(&v, &a, "alice", "secret"));
        assert_eq!(cached(&v), 1);
        assert!(check(&v, &a, "alice", "secret"), "served from the cache");
        assert_eq!(cached(&v), 1);
        // The same header does not pass for another user or hash through the cache.
        assert!(!check(&v, &auth("alice", OPENSSL_SHA256), "alice", "wrong"));
        assert!(!check(&v, &auth("bob", OPENSSL_SHA512), "alice", "secret"));
        // A cache entry under a header's key that holds another header does not let it in.
        let wrong = basic("alice", "wrong");
        let key = v
            .hasher
            .hash_one(("alice", OPENSSL_SHA512, wrong.as_bytes()));
        v.cache.write().unwrap().insert(
            key,
            Verified {
                user: "alice".into(),
                password_hash: OPENSSL_SHA512.into(),
                header: basic("alice", "secret").as_bytes().into(),
            },
        );
        assert!(!v.check(&a, Some(&wrong)));
    }

    #[test]
    fn the_cache_is_bounded() {
        let v = Verifier::new();
        {
            let mut cache = v.cache.write().unwrap();
            for i in 0..CACHE_CAPACITY as u64 {
                cache.insert(
                    i,
                    Verified {
                        user: "x".into(),
                        password_hash: "y".into(),
                        header: Box::new([]),
                    },
                );
            }
        }
        assert!(check(&v, &auth("alice", OPENSSL_SHA256), "alice", "secret"));
        assert_eq!(cached(&v), 1, "cleared when full, then the new entry");
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
