//! Named VIPs: their DNS names (`name.framework.l4lb.thisdcos.directory`) and the deterministic
//! allocation of their addresses in `l4.vip_range` / `l4.vip_range6`.
//!
//! Pure functions of their arguments: every node computes the same names and addresses from the
//! same cluster state and previous allocation, with no coordination. Imports only model types.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use sha1::{Digest, Sha1};

use super::snapshot::{NamedVip, NamedVipKey};

/// The DNS zone of named VIPs.
pub const L4LB_ZONE: &str = "l4lb.thisdcos.directory";

// === Naming ===

/// One DNS label from free text, as Mesos-DNS / dcos-net's `mesos_state:label/1` makes it:
/// ASCII letters lowercased; leading characters dropped until the first `[a-z0-9]`; then `-`, `_`
/// and `.` become `-`; every other character is dropped; at most 63 characters; trailing `-`
/// removed. `/grp/app` → `grpapp`, `My_App` → `my-app`.
pub fn domain_label(fragment: &str) -> String {
    let mut buf = [0u8; 63];
    let n = label_into(fragment, &mut buf);
    label_str(&buf, n).to_string()
}

/// [`domain_label`] into a stack buffer (a label is at most 63 bytes); returns its length.
fn label_into(fragment: &str, buf: &mut [u8; 63]) -> usize {
    #[derive(PartialEq)]
    enum St {
        Start,
        Middle,
        Terminate,
    }
    let allowed = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut n = 0usize;
    let push = |buf: &mut [u8; 63], n: &mut usize, c: u8| {
        if let Some(slot) = buf.get_mut(*n) {
            *slot = c;
            *n += 1;
        }
    };
    let mut st = St::Start;
    for c in fragment.bytes() {
        let c = c.to_ascii_lowercase();
        if st == St::Start {
            if !allowed(c) {
                continue;
            }
            st = St::Middle;
        }
        if st == St::Middle && n > 62 {
            n = trim_dashes(buf, n);
            st = St::Terminate;
        }
        if st == St::Terminate && n >= 63 {
            break;
        }
        if st == St::Middle && matches!(c, b'-' | b'_' | b'.') {
            push(buf, &mut n, b'-');
        } else if allowed(c) {
            push(buf, &mut n, c);
        }
    }
    trim_dashes(buf, n)
}

/// The length of `buf[..n]` without its trailing dashes.
fn trim_dashes(buf: &[u8; 63], mut n: usize) -> usize {
    while n > 0 && buf.get(n - 1) == Some(&b'-') {
        n -= 1;
    }
    n
}

/// The label in `buf[..n]` (only ASCII bytes are ever written there).
fn label_str(buf: &[u8; 63], n: usize) -> &str {
    std::str::from_utf8(buf.get(..n).unwrap_or_default()).unwrap_or_default()
}

/// A domain fragment from free text (`mesos_state:domain_frag/1`): split on `.`, each non-empty
/// piece made a label by [`domain_label`], joined with `.`. Pieces that come out empty are
/// skipped (dcos-net would keep an empty DNS label). `/api.hello-world` → `api.hello-world`.
pub fn domain_frag(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_domain_frag(&mut out, s);
    out
}

/// Appends [`domain_frag`]`(s)` to `out`, with a `.` first when both are non-empty.
fn push_domain_frag(out: &mut String, s: &str) {
    let mut buf = [0u8; 63];
    for piece in s.split('.').filter(|p| !p.is_empty()) {
        let n = label_into(piece, &mut buf);
        if n == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(label_str(&buf, n));
    }
}

/// `name.framework` with both parts made DNS-safe ([`domain_frag`]): the input of the allocation
/// hash and the front of the FQDN (dcos-net's `to_name([Label, FwName])`). `None` when either
/// part has nothing left (`/`, `%%`): such a label is rejected as `BadFormat`.
pub fn vip_base_name(name: &str, framework: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len() + framework.len() + 1);
    push_domain_frag(&mut out, name);
    if out.is_empty() {
        return None;
    }
    let len = out.len();
    push_domain_frag(&mut out, framework);
    (out.len() > len).then_some(out)
}

/// The FQDN of a named VIP from its [`vip_base_name`]: `name.framework.l4lb.thisdcos.directory`.
pub fn vip_fqdn(base: &str) -> String {
    format!("{base}.{L4LB_ZONE}")
}

/// The allocation hash: the first 8 bytes of SHA-1(`base`) as a big-endian `u64`.
pub fn name_hash(base: &str) -> u64 {
    let digest = Sha1::digest(base.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

// === Allocation ===

/// One live named VIP asking for addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub key: &'a NamedVipKey,
    /// [`vip_base_name`] of the key.
    pub base: &'a str,
    /// Age (milliseconds since the epoch): older requests are served first. `None` = unknown,
    /// served after every known age.
    pub age_ms: Option<i64>,
    /// The VIP has IPv6 backends, so it needs an IPv6 address too.
    pub ipv6: bool,
}

/// What one [`Request`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    /// Every address it asked for.
    Ok(NamedVip),
    /// An IPv4 address, but the IPv6 range is full (`ipv6` is `None`).
    NoIpv6(NamedVip),
    /// The IPv4 range is full: the name gets nothing.
    Exhausted,
}

impl Allocation {
    /// The allocation, if the name got its IPv4 address.
    pub fn named(&self) -> Option<&NamedVip> {
        match self {
            Allocation::Ok(n) | Allocation::NoIpv6(n) => Some(n),
            Allocation::Exhausted => None,
        }
    }
}

/// The usable addresses of a range, as offsets `first .. first + count` from `base`.
#[derive(Debug, Clone, Copy)]
struct Pool {
    base: u128,
    first: u128,
    count: u128,
}

impl Pool {
    /// IPv4: every host address but the network and broadcast addresses.
    fn v4(net: Ipv4Net) -> Pool {
        let net = net.trunc();
        let host_bits = 32 - u32::from(net.prefix_len());
        let size = 1u128 << host_bits;
        Pool {
            base: u128::from(u32::from(net.network())),
            first: 1,
            count: size.saturating_sub(2),
        }
    }

    /// IPv6: every address but the all-zeros one (the Subnet-Router anycast address, RFC 4291).
    fn v6(net: Ipv6Net) -> Pool {
        let net = net.trunc();
        let host_bits = 128 - u32::from(net.prefix_len());
        let count = if host_bits == 0 {
            0
        } else {
            u128::MAX >> (128 - host_bits)
        };
        Pool {
            base: u128::from(net.network()),
            first: 1,
            count,
        }
    }

    /// The slot (0-based, within `count`) of an address, if it is usable in this pool.
    fn slot_of(&self, addr: u128) -> Option<u128> {
        let off = addr.checked_sub(self.base)?.checked_sub(self.first)?;
        (off < self.count).then_some(off)
    }

    fn addr(&self, slot: u128) -> u128 {
        self.base + self.first + slot
    }

    /// The hashed slot, or the next free one past it (wrapping). `None` when every slot is taken.
    fn probe(&self, hash: u64, taken: &mut HashSet<u128>) -> Option<u128> {
        if self.count == 0 || taken.len() as u128 >= self.count {
            return None;
        }
        let mut slot = u128::from(hash) % self.count;
        // At most `taken.len()` slots are occupied, so a free one is found within that many steps.
        for _ in 0..=taken.len() {
            if taken.insert(slot) {
                return Some(slot);
            }
            slot = if slot + 1 == self.count { 0 } else { slot + 1 };
        }
        None
    }
}

/// Allocates the addresses of every live named VIP. This is part of Ferryman's contract: every
/// node must compute the same addresses from the same input.
///
/// - **Hash.** A name's preferred address is slot `h mod n` of the range, where `h` is the first
///   8 bytes of SHA-1 of its [`vip_base_name`] (`grpapp.marathon`) read as a big-endian `u64`, and
///   `n` is the number of usable addresses: for IPv4 (`l4.vip_range`, default `11.0.0.0/8`) every
///   address but the network and broadcast addresses, slot 0 being network + 1; for IPv6
///   (`l4.vip_range6`, default `fd01:c::/64`) every address but the all-zeros one.
/// - **Collisions.** When the slot is taken, the next free slot is used, wrapping at the end of
///   the range.
/// - **Stability.** A live name never moves: a name present in `prev` keeps its address (per
///   family) as long as that address is still usable in the configured range. These are placed
///   first, then the new names.
/// - **Order.** Requests are served oldest first (`age_ms` ascending, unknown ages last), then by
///   key (name, framework), so on a collision between new names the older app keeps the slot.
/// - **IPv6.** Only requests with `ipv6 = true` get an IPv6 address; a name that loses its IPv6
///   backends gives its IPv6 address up.
/// - **Exhaustion.** A name that finds no free IPv4 address is left out of the result and
///   reported with `RejectReason::RangeExhausted`; one that finds no free IPv6 address keeps its
///   IPv4 address, gets `ipv6: None`, and is reported too.
///
/// Addresses are not dcos-net's: dcos-net hashes with `erlang:phash2` (IPv4) and the whole
/// SHA-1 (IPv6) and allocates in the order events arrive, so its `dcos_l4lb_lashup_vip_listener_SUITE`
/// expects `foo.bar` at 11.0.0.37, where this function gives 11.23.170.84. Clients use the DNS
/// name, which is the same.
///
/// Returns one [`Allocation`] per request, in request order.
pub fn allocate<'p>(
    requests: &[Request<'_>],
    prev: impl IntoIterator<Item = (&'p NamedVipKey, &'p NamedVip)>,
    range4: Ipv4Net,
    range6: Ipv6Net,
) -> Vec<Allocation> {
    let n = requests.len();
    let (p4, p6) = (Pool::v4(range4), Pool::v6(range6));
    let mut taken4: HashSet<u128> = HashSet::with_capacity(n);
    let mut taken6: HashSet<u128> = HashSet::new();
    let mut got4: Vec<Option<u128>> = vec![None; n];
    let mut got6: Vec<Option<u128>> = vec![None; n];

    // Serving order: oldest first, then by key.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&requests[a], &requests[b]);
        (a.age_ms.is_none(), a.age_ms, a.key).cmp(&(b.age_ms.is_none(), b.age_ms, b.key))
    });

    // Live names keep their previous addresses. `prev` is walked in key order alongside the
    // requests sorted by key (a merge, no lookups); reservations are made in serving order so
    // that two previous names on one address (not produced by this function) resolve the same
    // way on every node.
    let mut by_key: Vec<usize> = (0..n).collect();
    by_key.sort_by(|&a, &b| requests[a].key.cmp(requests[b].key));
    let mut previous: Vec<Option<&NamedVip>> = vec![None; n];
    let mut old = prev.into_iter().peekable();
    for &i in &by_key {
        let key = requests[i].key;
        while old.next_if(|(k, _)| *k < key).is_some() {}
        if let Some((k, v)) = old.peek()
            && *k == key
        {
            previous[i] = Some(*v);
        }
    }
    for &i in &order {
        let Some(old) = previous[i] else {
            continue;
        };
        if let Some(slot) = p4.slot_of(u128::from(u32::from(old.ipv4)))
            && taken4.insert(slot)
        {
            got4[i] = Some(slot);
        }
        if requests[i].ipv6
            && let Some(slot) = old.ipv6.and_then(|ip| p6.slot_of(u128::from(ip)))
            && taken6.insert(slot)
        {
            got6[i] = Some(slot);
        }
    }

    let mut out = vec![Allocation::Exhausted; n];
    for &i in &order {
        let r = &requests[i];
        let hash = name_hash(r.base);
        let Some(slot4) = got4[i].or_else(|| p4.probe(hash, &mut taken4)) else {
            continue;
        };
        // `slot4 < count ≤ 2^32 - 2`, so the address fits in 32 bits.
        let ipv4 = Ipv4Addr::from(u32::try_from(p4.addr(slot4)).unwrap_or_default());
        let ipv6 = if r.ipv6 {
            got6[i]
                .or_else(|| p6.probe(hash, &mut taken6))
                .map(|slot| Ipv6Addr::from(p6.addr(slot)))
        } else {
            None
        };
        let named = NamedVip {
            fqdn: vip_fqdn(r.base),
            ipv4,
            ipv6,
            age_ms: r.age_ms,
        };
        out[i] = if r.ipv6 && ipv6.is_none() {
            Allocation::NoIpv6(named)
        } else {
            Allocation::Ok(named)
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::snapshot::RejectReason;
    use std::collections::BTreeMap;

    fn key(name: &str, fw: &str) -> NamedVipKey {
        NamedVipKey {
            name: name.into(),
            framework: fw.into(),
        }
    }

    /// An owned request for the tests.
    #[derive(Debug, Clone)]
    struct Req {
        key: NamedVipKey,
        base: String,
        age_ms: Option<i64>,
        ipv6: bool,
    }

    fn req(name: &str, fw: &str, age_ms: Option<i64>, ipv6: bool) -> Req {
        Req {
            key: key(name, fw),
            base: vip_base_name(name, fw).expect("test names are valid"),
            age_ms,
            ipv6,
        }
    }

    /// Runs [`allocate`] and returns what got an address, and the names that hit a full range.
    fn allocate(
        reqs: Vec<Req>,
        prev: &BTreeMap<NamedVipKey, NamedVip>,
        r4: Ipv4Net,
        r6: Ipv6Net,
    ) -> (
        BTreeMap<NamedVipKey, NamedVip>,
        Vec<(NamedVipKey, RejectReason)>,
    ) {
        let requests: Vec<Request<'_>> = reqs
            .iter()
            .map(|r| Request {
                key: &r.key,
                base: &r.base,
                age_ms: r.age_ms,
                ipv6: r.ipv6,
            })
            .collect();
        let out = super::allocate(&requests, prev, r4, r6);
        assert_eq!(out.len(), reqs.len());
        let mut named = BTreeMap::new();
        let mut failed = Vec::new();
        for (r, a) in reqs.iter().zip(out) {
            match a {
                Allocation::Ok(n) => {
                    named.insert(r.key.clone(), n);
                }
                Allocation::NoIpv6(n) => {
                    named.insert(r.key.clone(), n);
                    failed.push((r.key.clone(), RejectReason::RangeExhausted));
                }
                Allocation::Exhausted => failed.push((r.key.clone(), RejectReason::RangeExhausted)),
            }
        }
        failed.sort();
        (named, failed)
    }

    fn v4(s: &str) -> Ipv4Net {
        s.parse().expect("test net")
    }

    fn v6(s: &str) -> Ipv6Net {
        s.parse().expect("test net")
    }

    fn default_ranges() -> (Ipv4Net, Ipv6Net) {
        (v4("11.0.0.0/8"), v6("fd01:c::/64"))
    }

    #[test]
    fn labels_follow_mesos_state_label() {
        assert_eq!(domain_label("/grp/app"), "grpapp");
        assert_eq!(domain_label("My_App"), "my-app");
        assert_eq!(domain_label("-4abc123"), "4abc123");
        assert_eq!(domain_label("0-0"), "0-0");
        assert_eq!(domain_label("%%"), "");
        assert_eq!(domain_label("héllo"), "hllo");
        // mesos_state.erl remap_test/0 expectations.
        assert_eq!(
            domain_label("fd%gsf---gs7-f$gs--d7fddg-123"),
            "fdgsf---gs7-fgs--d7fddg-123"
        );
        assert_eq!(
            domain_label("89fdgsf---gs7-fgs--d7fddg-"),
            "89fdgsf---gs7-fgs--d7fddg"
        );
        assert_eq!(
            domain_label("##fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-"),
            "fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789"
        );
        assert_eq!(
            domain_label("fd%gsf---gs7-f$gs--d7fddg123456789012345678901234567890123456789-123"),
            "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891"
        );
        assert_eq!(
            domain_label("%%fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789---123"),
            "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891"
        );
    }

    #[test]
    fn names_and_fqdns() {
        assert_eq!(domain_frag("/api.hello-world"), "api.hello-world");
        assert_eq!(domain_frag("a..%%.b"), "a.b");
        assert_eq!(
            vip_base_name("/grp/app", "marathon").as_deref(),
            Some("grpapp.marathon")
        );
        assert_eq!(
            vip_base_name("My_App", "Marathon_User").as_deref(),
            Some("my-app.marathon-user")
        );
        assert_eq!(vip_base_name("/", "marathon"), None);
        assert_eq!(vip_base_name("foo", "%"), None);
        assert_eq!(
            vip_fqdn("foo.bar"),
            "foo.bar.l4lb.thisdcos.directory".to_string()
        );
    }

    #[test]
    fn hash_is_the_first_eight_bytes_of_sha1() {
        // sha1("grpapp.marathon") = 30a90b7e96b16c6c…, sha1("foo.bar") = 336d1b3d72e061b9…
        // (Python hashlib).
        assert_eq!(name_hash("grpapp.marathon"), 0x30a9_0b7e_96b1_6c6c);
        assert_eq!(name_hash("foo.bar"), 0x336d_1b3d_72e0_61b9);
    }

    #[test]
    fn allocation_is_the_hashed_slot_in_the_range() {
        let (r4, r6) = default_ranges();
        let (named, failed) = allocate(
            vec![req("/grp/app", "marathon", Some(1), true)],
            &BTreeMap::new(),
            r4,
            r6,
        );
        assert!(failed.is_empty());
        let n = &named[&key("/grp/app", "marathon")];
        // 0x30a90b7e96b16c6c mod (2^24 - 2) = 13184060 = 0xc92c3c → 11.0.0.0 + 1 + 0xc92c3c.
        assert_eq!(n.ipv4, Ipv4Addr::new(11, 201, 44, 61));
        // 0x30a90b7e96b16c6c mod (2^64 - 1) = itself → fd01:c:: + 1 + h.
        assert_eq!(
            n.ipv6,
            Some("fd01:c::30a9:b7e:96b1:6c6d".parse().expect("ip"))
        );
        assert_eq!(n.fqdn, "grpapp.marathon.l4lb.thisdcos.directory");
        assert_eq!(n.age_ms, Some(1));
        // dcos-net's lashup_vip_listener_SUITE label `/foo` of framework `bar` (it expects
        // 11.0.0.37 from phash2): 0x336d1b3d72e061b9 mod (2^24 - 2) = 0x17aa53 → 11.23.170.84.
        let (named, _) = allocate(
            vec![req("/foo", "bar", None, false)],
            &BTreeMap::new(),
            r4,
            r6,
        );
        assert_eq!(
            named[&key("/foo", "bar")].ipv4,
            Ipv4Addr::new(11, 23, 170, 84)
        );
    }

    #[test]
    fn allocation_is_deterministic_and_order_independent() {
        let (r4, r6) = default_ranges();
        let reqs: Vec<Req> = (0..200)
            .map(|i| req(&format!("/app-{i}"), "marathon", Some(i % 7), i % 3 == 0))
            .collect();
        let mut reversed = reqs.clone();
        reversed.reverse();
        let a = allocate(reqs, &BTreeMap::new(), r4, r6);
        let b = allocate(reversed, &BTreeMap::new(), r4, r6);
        assert_eq!(a, b);
        assert_eq!(a.0.len(), 200);
        let distinct: HashSet<Ipv4Addr> = a.0.values().map(|n| n.ipv4).collect();
        assert_eq!(distinct.len(), 200);
    }

    /// A /29 has 6 usable addresses (.1 to .6); `slot = h mod 6`.
    fn tiny() -> (Ipv4Net, Ipv6Net) {
        (v4("10.9.9.0/29"), v6("fd01:c::/125"))
    }

    /// Two names whose hashes fall on the same slot of the tiny range.
    fn colliding_pair() -> (String, String) {
        let slot = |n: &str| name_hash(&vip_base_name(n, "marathon").expect("valid")) % 6;
        let first = "a0".to_string();
        let other = (1..100)
            .map(|i| format!("a{i}"))
            .find(|n| slot(n) == slot(&first))
            .expect("a collision among 100 names in 6 slots");
        (first, other)
    }

    #[test]
    fn on_a_collision_the_older_app_keeps_the_slot() {
        let (r4, r6) = tiny();
        let (x, y) = colliding_pair();
        let slot = name_hash(&vip_base_name(&x, "marathon").expect("valid")) % 6;
        let preferred = Ipv4Addr::new(10, 9, 9, 1 + slot as u8);
        let next = Ipv4Addr::new(10, 9, 9, 1 + ((slot + 1) % 6) as u8);
        for (age_x, age_y) in [(Some(10), Some(20)), (Some(20), Some(10)), (Some(5), None)] {
            let (named, _) = allocate(
                vec![
                    req(&y, "marathon", age_y, false),
                    req(&x, "marathon", age_x, false),
                ],
                &BTreeMap::new(),
                r4,
                r6,
            );
            let (older, younger) = if age_x.is_some() && (age_y.is_none() || age_x < age_y) {
                (&x, &y)
            } else {
                (&y, &x)
            };
            assert_eq!(named[&key(older, "marathon")].ipv4, preferred, "{age_x:?}");
            assert_eq!(named[&key(younger, "marathon")].ipv4, next, "{age_x:?}");
        }
    }

    #[test]
    fn a_live_name_never_moves_even_when_an_older_app_appears() {
        let (r4, r6) = tiny();
        let (x, y) = colliding_pair();
        // y alone: it gets the shared slot.
        let (first, _) = allocate(
            vec![req(&y, "marathon", Some(100), false)],
            &BTreeMap::new(),
            r4,
            r6,
        );
        let y_ip = first[&key(&y, "marathon")].ipv4;
        // x, older, appears later: y keeps its address, x takes the next one.
        let (second, failed) = allocate(
            vec![
                req(&x, "marathon", Some(1), false),
                req(&y, "marathon", Some(100), false),
            ],
            &first,
            r4,
            r6,
        );
        assert!(failed.is_empty());
        assert_eq!(second[&key(&y, "marathon")].ipv4, y_ip);
        let [a, b, c, d] = y_ip.octets();
        let next = Ipv4Addr::new(a, b, c, if d == 6 { 1 } else { d + 1 });
        assert_eq!(second[&key(&x, "marathon")].ipv4, next);
    }

    #[test]
    fn previous_addresses_outside_the_range_are_reallocated() {
        let (r4, r6) = default_ranges();
        let mut prev = BTreeMap::new();
        prev.insert(
            key("/a", "marathon"),
            NamedVip {
                fqdn: "a.marathon.l4lb.thisdcos.directory".into(),
                ipv4: Ipv4Addr::new(12, 0, 0, 1),
                ipv6: Some("fd02::1".parse().expect("ip")),
                age_ms: None,
            },
        );
        let fresh = allocate(
            vec![req("/a", "marathon", None, true)],
            &BTreeMap::new(),
            r4,
            r6,
        );
        let again = allocate(vec![req("/a", "marathon", None, true)], &prev, r4, r6);
        assert_eq!(fresh, again);
        // The broadcast address is not usable either.
        prev.get_mut(&key("/a", "marathon")).expect("present").ipv4 =
            Ipv4Addr::new(11, 255, 255, 255);
        let again = allocate(vec![req("/a", "marathon", None, true)], &prev, r4, r6);
        assert_eq!(fresh, again);
    }

    #[test]
    fn probing_wraps_around_the_end_of_the_range() {
        let (r4, r6) = tiny();
        // Find a name that hashes to the last slot (10.9.9.6), and occupy it with a previous
        // allocation of another name.
        let last = (0..200)
            .map(|i| format!("w{i}"))
            .find(|n| name_hash(&vip_base_name(n, "marathon").expect("valid")) % 6 == 5)
            .expect("a name on slot 5 among 200");
        let mut prev = BTreeMap::new();
        prev.insert(
            key("holder", "marathon"),
            NamedVip {
                fqdn: String::new(),
                ipv4: Ipv4Addr::new(10, 9, 9, 6),
                ipv6: None,
                age_ms: None,
            },
        );
        let (named, _) = allocate(
            vec![
                req("holder", "marathon", Some(1), false),
                req(&last, "marathon", Some(0), false),
            ],
            &prev,
            r4,
            r6,
        );
        assert_eq!(
            named[&key("holder", "marathon")].ipv4,
            Ipv4Addr::new(10, 9, 9, 6)
        );
        assert_eq!(
            named[&key(&last, "marathon")].ipv4,
            Ipv4Addr::new(10, 9, 9, 1)
        );
    }

    #[test]
    fn a_full_range_rejects_the_youngest_names() {
        // A /30 has two usable addresses.
        let r4 = v4("10.9.9.0/30");
        let r6 = v6("fd01:c::/126");
        let (named, failed) = allocate(
            vec![
                req("a", "marathon", Some(1), true),
                req("b", "marathon", Some(2), true),
                req("c", "marathon", Some(3), true),
                req("d", "marathon", None, false),
            ],
            &BTreeMap::new(),
            r4,
            r6,
        );
        let mut ips: Vec<Ipv4Addr> = named.values().map(|n| n.ipv4).collect();
        ips.sort();
        assert_eq!(
            ips,
            vec![Ipv4Addr::new(10, 9, 9, 1), Ipv4Addr::new(10, 9, 9, 2)]
        );
        assert!(named.contains_key(&key("a", "marathon")));
        assert!(named.contains_key(&key("b", "marathon")));
        assert_eq!(
            failed,
            vec![
                (key("c", "marathon"), RejectReason::RangeExhausted),
                (key("d", "marathon"), RejectReason::RangeExhausted),
            ]
        );
        // The /126 has three usable IPv6 addresses: a and b both got one.
        assert!(named.values().all(|n| n.ipv6.is_some()));
    }

    #[test]
    fn ipv6_exhaustion_keeps_the_ipv4_address() {
        let r4 = v4("10.9.9.0/29");
        let r6 = v6("fd01:c::/127");
        let (named, failed) = allocate(
            vec![
                req("a", "marathon", Some(1), true),
                req("b", "marathon", Some(2), true),
            ],
            &BTreeMap::new(),
            r4,
            r6,
        );
        assert_eq!(
            named[&key("a", "marathon")].ipv6,
            Some("fd01:c::1".parse().expect("ip"))
        );
        assert_eq!(named[&key("b", "marathon")].ipv6, None);
        assert_eq!(
            failed,
            vec![(key("b", "marathon"), RejectReason::RangeExhausted)]
        );
    }
}
