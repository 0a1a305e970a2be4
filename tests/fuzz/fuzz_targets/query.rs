//! Any bytes as a DNS query, over UDP and TCP, with and without a zone: never a panic, every
//! answer a well-formed response within the size limit, and the question read as hickory-proto's
//! full decoder reads it (`ferryman::dns::zone::fuzz::check`).

#![no_main]

use std::sync::OnceLock;

use ferryman::dns::zone::{Zone, fuzz};
use libfuzzer_sys::fuzz_target;

static ZONE: OnceLock<Zone> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let zone = ZONE.get_or_init(fuzz::sample_zone);
    let mut out = Vec::new();
    fuzz::check(zone, data, &mut out);
});
