//! `#[repr(C)]` mirrors of the map layouts in `ebpf/sock_lb.h`. The test at the bottom compares
//! sizes and offsets with what the C compiler produced for the header (build.rs probe), so the
//! two cannot drift apart silently. Change a layout here and in the header together, and bump
//! [`LAYOUT_VERSION`] (`FM_LAYOUT_VERSION`).
#![allow(unsafe_code)] // only the `aya::Pod` impls below

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `FM_LAYOUT_VERSION`: stored in `fm_meta[0]` by the build that created the pinned maps.
pub const LAYOUT_VERSION: u32 = 1;
/// `FM_MAGLEV_M`: entries of one Maglev ring in `fm_maglev`.
pub const MAGLEV_M: u32 = 4099;
/// `FM_NO_RING`.
pub const NO_RING: u32 = u32::MAX;
/// `FM_BANK_B`.
pub const BANK_B: u32 = 0x8000_0000;
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Map names in the object (and pin file names under `l4.bpf_pin_dir`).
pub const MAP_SERVICES: &str = "fm_services";
pub const MAP_BACKENDS: &str = "fm_backends";
pub const MAP_MAGLEV: &str = "fm_maglev";
pub const MAP_REV: &str = "fm_rev";
pub const MAP_STATS: &str = "fm_stats";
pub const MAP_META: &str = "fm_meta";
pub const MAPS: [&str; 6] = [
    MAP_SERVICES,
    MAP_BACKENDS,
    MAP_MAGLEV,
    MAP_REV,
    MAP_STATS,
    MAP_META,
];

/// Program names (function names in `sock_lb.c`) and their pinned link file names.
pub const PROGRAMS: [&str; 8] = [
    "fm_connect4",
    "fm_connect6",
    "fm_sendmsg4",
    "fm_sendmsg6",
    "fm_recvmsg4",
    "fm_recvmsg6",
    "fm_getpeername4",
    "fm_getpeername6",
];

/// An address as the maps hold it: IPv4 in `addr[0]`, network byte order throughout.
pub fn addr_words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// The inverse of [`addr_words`].
pub fn words_addr(addr: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(addr[0].to_ne_bytes()))
    } else {
        let mut o = [0u8; 16];
        for (i, w) in addr.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    }
}

/// `struct fm_service_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceKey {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

impl ServiceKey {
    pub fn new(ip: IpAddr, port: u16, proto: u8) -> ServiceKey {
        let (addr, family) = addr_words(ip);
        ServiceKey {
            addr,
            port: port.to_be(),
            proto,
            family,
        }
    }

    pub fn ip(&self) -> IpAddr {
        words_addr(self.addr, self.family)
    }

    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// `struct fm_service`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Service {
    pub id: u32,
    /// Live slots; 0 = refuse (ECONNREFUSED).
    pub count: u32,
    /// Maglev ring index, or [`NO_RING`].
    pub ring: u32,
    /// 0 or [`BANK_B`].
    pub bank: u32,
}

/// `struct fm_backend_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BackendKey {
    pub id: u32,
    pub slot: u32,
}

/// `struct fm_backend`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Backend {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    pub pad: u8,
}

impl Backend {
    pub fn new(ip: IpAddr, port: u16) -> Backend {
        let (addr, family) = addr_words(ip);
        Backend {
            addr,
            port: port.to_be(),
            family,
            pad: 0,
        }
    }

    pub fn ip(&self) -> IpAddr {
        words_addr(self.addr, self.family)
    }

    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// `struct fm_rev_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevKey {
    pub cookie: u64,
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    pub pad: [u8; 5],
}

/// `struct fm_rev`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rev {
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    pub pad: u8,
}

/// `struct fm_stats` (one per CPU per service id).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub connect: u64,
    pub sendmsg: u64,
    pub refused: u64,
    pub errors: u64,
}

/// `struct fm_meta`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    pub version: u32,
    pub pad: u32,
}

// SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and integer arrays with no
// implicit padding (checked against the C layout below), so every bit pattern is a valid value.
unsafe impl aya::Pod for ServiceKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Service {}
// SAFETY: as above.
unsafe impl aya::Pod for BackendKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Backend {}
// SAFETY: as above.
unsafe impl aya::Pod for RevKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Rev {}
// SAFETY: as above.
unsafe impl aya::Pod for Stats {}
// SAFETY: as above.
unsafe impl aya::Pod for Meta {}

#[cfg(test)]
#[allow(clippy::type_complexity)] // the generated C_LAYOUT table
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    include!(concat!(env!("OUT_DIR"), "/layout_c.rs"));

    macro_rules! rust_layout {
        ($name:literal, $t:ty, [$($f:ident),*]) => {
            ($name, size_of::<$t>(), vec![$((stringify!($f), offset_of!($t, $f))),*])
        };
    }

    #[test]
    fn rust_mirrors_match_the_c_header() {
        let Some(c) = C_LAYOUT else {
            assert!(
                std::env::var("FERRYMAN_REQUIRE_ALL").as_deref() != Ok("1"),
                "no C layout probe was built"
            );
            eprintln!("skipped: no C compiler at build time");
            return;
        };
        let rust = [
            rust_layout!("fm_service_key", ServiceKey, [addr, port, proto, family]),
            rust_layout!("fm_service", Service, [id, count, ring, bank]),
            rust_layout!("fm_backend_key", BackendKey, [id, slot]),
            rust_layout!("fm_backend", Backend, [addr, port, family, pad]),
            rust_layout!("fm_rev_key", RevKey, [cookie, addr, port, family, pad]),
            rust_layout!("fm_rev", Rev, [addr, port, family, pad]),
            rust_layout!("fm_stats", Stats, [connect, sendmsg, refused, errors]),
            rust_layout!("fm_meta", Meta, [version, pad]),
        ];
        assert_eq!(c.len(), rust.len());
        for ((cn, cs, cf), (rn, rs, rf)) in c.iter().zip(rust.iter()) {
            assert_eq!(cn, rn);
            assert_eq!(cs, rs, "size of {cn}");
            assert_eq!(cf.to_vec(), *rf, "field offsets of {cn}");
        }
    }

    #[test]
    fn constants_match_the_header() {
        let h = include_str!("../../ebpf/sock_lb.h");
        let define = |name: &str| -> String {
            let line = h
                .lines()
                .find(|l| l.starts_with(&format!("#define {name} ")))
                .unwrap_or_else(|| panic!("{name} not in sock_lb.h"));
            line.split_whitespace()
                .nth(2)
                .unwrap()
                .trim_end_matches('u')
                .to_string()
        };
        assert_eq!(define("FM_LAYOUT_VERSION"), LAYOUT_VERSION.to_string());
        assert_eq!(define("FM_MAGLEV_M"), MAGLEV_M.to_string());
        assert_eq!(define("FM_NO_RING"), format!("{NO_RING:#x}"));
        assert_eq!(define("FM_BANK_B"), format!("{BANK_B:#x}"));
    }

    #[test]
    fn addresses_round_trip_in_network_order() {
        let k = ServiceKey::new("11.0.0.1".parse().unwrap(), 80, IPPROTO_TCP);
        assert_eq!(k.addr[0].to_ne_bytes(), [11, 0, 0, 1]);
        assert_eq!(k.port.to_ne_bytes(), [0, 80]);
        assert_eq!(k.ip(), "11.0.0.1".parse::<IpAddr>().unwrap());
        let b = Backend::new("fd01:c::2".parse().unwrap(), 8080);
        assert_eq!(b.ip(), "fd01:c::2".parse::<IpAddr>().unwrap());
        assert_eq!(b.port(), 8080);
        assert_eq!(b.family, FAMILY_V6);
    }
}
