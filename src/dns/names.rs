//! Mesos-DNS naming: label sanitising (`records/labels/labels.go`), the task hash and the agent
//! ID tail used in canonical names (`records/generator.go`), and the label rule dcos-dns uses for
//! its `*.dcos.thisdcos.directory` names (`mesos_state:label/1`).
//!
//! Pure string functions; no allocation beyond the `String` they return (the `push_*` forms
//! append to a caller's buffer). Nothing here panics on any input.

use sha1::{Digest, Sha1};

/// Which label rule Mesos-DNS applies (`labels.Func`): RFC 1123 by default, RFC 952 when
/// `dns.enforce_rfc952` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSpec {
    /// At most 63 characters; `-` trimmed at both ends (`labels.RFC1123`).
    Rfc1123,
    /// At most 24 characters; leading `-` and digits and trailing `-` trimmed (`labels.RFC952`).
    Rfc952,
}

impl LabelSpec {
    /// The spec `dns.enforce_rfc952` selects.
    pub fn from_enforce_rfc952(enforce: bool) -> LabelSpec {
        if enforce {
            LabelSpec::Rfc952
        } else {
            LabelSpec::Rfc1123
        }
    }

    fn max_len(self) -> usize {
        match self {
            LabelSpec::Rfc1123 => 63,
            LabelSpec::Rfc952 => 24,
        }
    }

    /// Whether `c` is in the left cut set (`"-"`, or `"-0123456789"` for RFC 952).
    fn cut_left(self, c: u8) -> bool {
        c == b'-' || (self == LabelSpec::Rfc952 && c.is_ascii_digit())
    }
}

/// `labels.go` `mapping`, on bytes: `A`–`Z` lowercased, `a`–`z` and `0`–`9` kept, `-`, `.` and
/// `_` become `-`, everything else dropped. Go maps runes, but every non-ASCII rune (and every
/// byte of an invalid sequence) is dropped, and no byte of a multi-byte UTF-8 sequence is ASCII,
/// so mapping bytes gives the same result.
fn map_byte(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c.to_ascii_lowercase()),
        b'a'..=b'z' | b'0'..=b'9' => Some(c),
        b'-' | b'.' | b'_' => Some(b'-'),
        _ => None,
    }
}

/// One DNS label from free text, as Mesos-DNS's `labels.RFC1123` / `labels.RFC952` make it.
/// `My_App` → `my-app`; `a.b.c` → `a-b-c`; RFC 952: `4abc123` → `abc123`.
pub fn label(name: &str, spec: LabelSpec) -> String {
    let mut out = String::with_capacity(name.len().min(spec.max_len()));
    push_label(&mut out, name, spec);
    out
}

/// Appends [`label`]`(name, spec)` to `out`.
///
/// `labels.go` `trimCut`: after mapping, trim the left cut set; cut at the maximum length; trim
/// trailing `-` from that head; if that removed any, refill with as many characters from the rest
/// (its leading `-` trimmed) as were removed. The refill may itself end in `-`, as in Mesos-DNS.
pub fn push_label(out: &mut String, name: &str, spec: LabelSpec) {
    let max = spec.max_len();
    let mut mapped = name.bytes().filter_map(map_byte);
    let start = out.len();
    let mut size = 0usize;
    for c in mapped.by_ref() {
        if size == 0 && spec.cut_left(c) {
            continue;
        }
        out.push(char::from(c));
        size += 1;
        if size == max {
            break;
        }
    }
    let head = out.as_bytes()[start..]
        .iter()
        .rposition(|&c| c != b'-')
        .map_or(0, |i| i + 1);
    out.truncate(start + head);
    let mut room = size - head;
    if room == 0 {
        return;
    }
    let mut leading = true;
    for c in mapped {
        if leading && c == b'-' {
            continue;
        }
        leading = false;
        out.push(char::from(c));
        room -= 1;
        if room == 0 {
            break;
        }
    }
}

/// Mesos-DNS `labels.DomainFrag(name, ".", spec)`: split on `.`, each piece made a [`label`],
/// empty labels dropped, joined with `.`. Framework names keep their dots this way:
/// `marathon-0.6.0-dev` → `marathon-0.6.0-dev`; `(@ host . com` → `host.com`.
pub fn domain_frag(name: &str, spec: LabelSpec) -> String {
    let mut out = String::with_capacity(name.len());
    push_domain_frag(&mut out, name, spec);
    out
}

/// Appends [`domain_frag`]`(name, spec)` to `out`.
pub fn push_domain_frag(out: &mut String, name: &str, spec: LabelSpec) {
    let start = out.len();
    for piece in name.split('.') {
        let before = out.len();
        if before > start {
            out.push('.');
        }
        let at = out.len();
        push_label(out, piece, spec);
        if out.len() == at {
            out.truncate(before);
        }
    }
}

/// dcos-dns's label rule (`mesos_state:label/1`), used for `task.framework.autoip.dcos.…` names:
/// like RFC 1123, but a name cut at 63 characters is refilled with letters and digits only.
pub use crate::model::vip::domain_label as dcos_label;

/// The z-base-32 alphabet (Zooko's human-oriented base-32).
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// z-base-32 encoding of whole bytes, as `github.com/tv42/zbase32` `EncodeToString` makes it:
/// 5 bits per character, most significant first, the last character zero-padded, no padding
/// characters.
pub fn zbase32(data: &[u8]) -> String {
    let mut out = String::with_capacity((data.len() * 8).div_ceil(5));
    let mut acc: u16 = 0;
    let mut bits = 0u32;
    for &b in data {
        acc = (acc << 8) | u16::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ZBASE32[usize::from((acc >> bits) & 31)]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ZBASE32[usize::from((acc << (5 - bits)) & 31)]));
    }
    out
}

/// The 5-character task hash of canonical names: the first 5 characters of the z-base-32
/// encoding of SHA-1(task ID) (Mesos-DNS `hashString`). `"test"` → `iffe9`.
pub fn task_hash(task_id: &str) -> [u8; 5] {
    let d = Sha1::digest(task_id.as_bytes());
    let v = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    std::array::from_fn(|i| ZBASE32[((v >> (27 - 5 * i)) & 31) as usize])
}

/// The agent part of canonical names: the last `-`-separated field of the agent ID, lowercased
/// (Mesos-DNS `slaveIDTail`). `20160107-001256-134875658-5050-27524-S3` → `s3`.
pub fn agent_tail(agent_id: &str) -> &str {
    agent_id.rsplit('-').next().unwrap_or(agent_id)
}

/// Appends `task-<hash>-<tail>` (the first label of a canonical name) to `out`, where `task` is
/// already sanitised.
pub fn push_canonical_label(out: &mut String, task: &str, task_id: &str, agent_id: &str) {
    out.push_str(task);
    out.push('-');
    for c in task_hash(task_id) {
        out.push(char::from(c));
    }
    out.push('-');
    for c in agent_tail(agent_id).chars() {
        out.push(c.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `labels_test.go` `testFunc` base cases, which hold for both specs.
    const BOTH: &[(&str, &str)] = &[
        ("", ""),
        ("a", "a"),
        ("-", ""),
        ("a---", "a"),
        ("---a---", "a"),
        ("---a---b", "a---b"),
        ("a.b.c.d.e", "a-b-c-d-e"),
        ("a.c.d_de.", "a-c-d-de"),
        ("abc123", "abc123"),
        ("-abc123", "abc123"),
        ("abc123-", "abc123"),
        ("abc-123", "abc-123"),
        ("abc--123", "abc--123"),
        ("r29f.dev.angrypigs", "r29f-dev-angrypigs"),
        (
            "hello----------------------------------------------------------f",
            "hellof",
        ),
    ];

    #[test]
    fn rfc1123_labels_match_labels_test_go() {
        let special: &[(&str, &str)] = &[
            ("4abc123", "4abc123"),
            ("-4abc123", "4abc123"),
            (
                "89fdgsf---gs7-fgs--d7fddg-123",
                "89fdgsf---gs7-fgs--d7fddg-123",
            ),
            (
                "89fdgsf---gs7-fgs--d7fddg---123",
                "89fdgsf---gs7-fgs--d7fddg---123",
            ),
            ("89fdgsf---gs7-fgs--d7fddg-", "89fdgsf---gs7-fgs--d7fddg"),
            (
                "fd%gsf---gs7-f$gs--d7fddg-123",
                "fdgsf---gs7-fgs--d7fddg-123",
            ),
            (
                "fd%gsf---gs7-f$gs--d7fddg123456789012345678901234567890123456789-123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "$$fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "%%fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789---123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "##fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-",
                "fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789",
            ),
            (
                "hello--------------------------------------------------------f",
                "hello--------------------------------------------------------f",
            ),
        ];
        // The base `hello…f` has 64 characters (cut at 63, trimmed to `hello`, refilled with
        // `f`); the special one has 62 and is kept whole.
        for (input, want) in BOTH.iter().chain(special) {
            assert_eq!(
                label(input, LabelSpec::Rfc1123),
                *want,
                "RFC1123({input:?})"
            );
        }
    }

    #[test]
    fn rfc952_labels_match_labels_test_go() {
        let special: &[(&str, &str)] = &[
            ("4abc123", "abc123"),
            ("-4abc123", "abc123"),
            ("fd%gsf---gs7-f$gs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg1"),
            ("89fdgsf---gs7-fgs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg1"),
            (
                "89fdgsf---gs7-fgs--d7fddg---123",
                "fdgsf---gs7-fgs--d7fddg1",
            ),
            ("89fdgsf---gs7-fgs--d7fddg-", "fdgsf---gs7-fgs--d7fddg"),
            (
                "chronos with a space AND MIXED CASE-2.0.1",
                "chronoswithaspaceandmixe",
            ),
            (
                "chronos with a space AND----------MIXED--",
                "chronoswithaspaceandmixe",
            ),
            (
                "hello--------------------------------------------------------f",
                "hellof",
            ),
        ];
        for (input, want) in BOTH.iter().chain(special) {
            assert_eq!(label(input, LabelSpec::Rfc952), *want, "RFC952({input:?})");
        }
    }

    #[test]
    fn labels_keep_the_properties_labels_test_go_checks() {
        // The quick-check properties of labels_test.go, on a fixed set of awkward inputs.
        let inputs = [
            "",
            "-",
            "0",
            "9-a",
            "--0-0--",
            "ÄÖÜ straße",
            "a\u{0}b",
            "\u{FFFD}",
            "-_.-_.",
            "0123456789012345678901234567890123456789",
        ];
        let long = "x-".repeat(100);
        for s in inputs.iter().copied().chain([long.as_str()]) {
            for spec in [LabelSpec::Rfc1123, LabelSpec::Rfc952] {
                let l = label(s, spec);
                assert!(l.len() <= spec.max_len(), "{s:?}");
                assert!(!l.starts_with('-'), "{s:?}");
                assert!(
                    l.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
                    "{s:?} → {l:?}"
                );
            }
            let l = label(s, LabelSpec::Rfc952);
            assert!(!l.starts_with(|c: char| c.is_ascii_digit()), "{s:?}");
        }
    }

    #[test]
    fn domain_frags_match_labels_test_go() {
        let both: &[(&str, &str)] = &[
            ("", ""),
            (".", ""),
            ("..", ""),
            ("...", ""),
            ("a", "a"),
            ("abc", "abc"),
            ("abc.", "abc"),
            (".abc", "abc"),
            ("a.c", "a.c"),
            (".a.c", "a.c"),
            ("a.c.", "a.c"),
            ("a..c", "a.c"),
            ("ab.c", "ab.c"),
            ("ab.cd", "ab.cd"),
            ("ab.cd.efg", "ab.cd.efg"),
            ("a.c.e", "a.c.e"),
            ("a..c.e", "a.c.e"),
            ("a.c..e", "a.c.e"),
            ("host.com", "host.com"),
            ("space space.com", "spacespace.com"),
            ("blah-dash.com", "blah-dash.com"),
            ("not$1234.com", "not1234.com"),
            ("(@ host . com", "host.com"),
            ("MiXeDcase.CoM", "mixedcase.com"),
        ];
        for (input, want) in both {
            for spec in [LabelSpec::Rfc1123, LabelSpec::Rfc952] {
                assert_eq!(domain_frag(input, spec), *want, "{spec:?} {input:?}");
            }
        }
        assert_eq!(
            domain_frag("pod_123$abc.marathon-0.6.0-dev.mesos", LabelSpec::Rfc1123),
            "pod-123abc.marathon-0.6.0-dev.mesos"
        );
        assert_eq!(
            domain_frag("pod_123$abc.marathon-0.6.0-dev.mesos", LabelSpec::Rfc952),
            "pod-123abc.marathon-0.dev.mesos"
        );
        // Appending keeps what is already in the buffer.
        let mut s = String::from("x.");
        push_domain_frag(&mut s, "..a..b..", LabelSpec::Rfc1123);
        assert_eq!(s, "x.a.b");
    }

    #[test]
    fn naming_md_example_task_and_framework_names() {
        // docs/docs/naming.md: task `apiserver.myservice` of framework `marathon.prod` is
        // `apiserver-myservice.marathon.prod.mesos`.
        assert_eq!(
            label("apiserver.myservice", LabelSpec::Rfc952),
            "apiserver-myservice"
        );
        assert_eq!(
            domain_frag("marathon.prod", LabelSpec::Rfc952),
            "marathon.prod"
        );
        // naming.md: `marathon-0.7.5` gives names like `search.marathon-0.7.5.mesos`.
        assert_eq!(
            domain_frag("marathon-0.7.5", LabelSpec::Rfc1123),
            "marathon-0.7.5"
        );
    }

    #[test]
    fn zbase32_matches_the_tv42_test_vectors() {
        // zbase32_test.go byteTests (spec vectors and edge cases).
        let cases: &[(&[u8], &str)] = &[
            (&[], ""),
            (&[240, 191, 199], "6n9hq"),
            (&[212, 122, 4], "4t7ye"),
            (&[0xff], "9h"),
            (&[0xb5], "sw"),
            (&[0x34, 0x5a], "gtpy"),
            (&[0xff, 0xff, 0xff, 0xff, 0xff], "99999999"),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "999999999h"),
            (
                &[
                    0xc0, 0x73, 0x62, 0x4a, 0xaf, 0x39, 0x78, 0x51, 0x4e, 0xf8, 0x44, 0x3b, 0xb2,
                    0xa8, 0x59, 0xc7, 0x5f, 0xc3, 0xcc, 0x6a, 0xf2, 0x6d, 0x5a, 0xaa,
                ],
                "ab3sr1ix8fhfnuzaeo75fkn3a7xh8udk6jsiiko",
            ),
            // The 24-bit "used in the docs" vector.
            (&[0x10, 0x11, 0x10], "nyety"),
        ];
        for (data, want) in cases {
            assert_eq!(zbase32(data), *want, "{data:x?}");
        }
    }

    #[test]
    fn task_hash_is_the_zbase32_prefix_of_sha1() {
        // generator_test.go TestHashString.
        assert_eq!(&task_hash("test"), b"iffe9");
        for id in ["", "a", "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001"] {
            let full = zbase32(&Sha1::digest(id.as_bytes()));
            assert_eq!(task_hash(id), full.as_bytes()[..5], "{id:?}");
        }
    }

    #[test]
    fn canonical_labels_match_the_docs() {
        // docs/docs/http.md /v1/enumerate example: task nginx.48dccce7-… on agent …-S1 is
        // `nginx-jhy6r-s1.marathon.mesos.`.
        let mut s = String::new();
        push_canonical_label(
            &mut s,
            "nginx",
            "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001",
            "20161012-091009-1208001546-5050-1-S1",
        );
        assert_eq!(s, "nginx-jhy6r-s1");
        assert_eq!(agent_tail("20140803-125133-3041283216-5050-2410-0"), "0");
        assert_eq!(agent_tail("no-dashes-at-ALL"), "ALL");
        assert_eq!(agent_tail("plain"), "plain");
        assert_eq!(agent_tail(""), "");
    }

    #[test]
    fn dcos_labels_follow_mesos_state_label() {
        // mesos_state.erl remap_test.
        assert_eq!(
            dcos_label("fd%gsf---gs7-f$gs--d7fddg-123"),
            "fdgsf---gs7-fgs--d7fddg-123"
        );
        assert_eq!(dcos_label("-4abc123"), "4abc123");
        assert_eq!(
            dcos_label("fd%gsf---gs7-f$gs--d7fddg123456789012345678901234567890123456789-123"),
            "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891"
        );
        // Framework names are one label there: dots become dashes.
        assert_eq!(dcos_label("hello.world"), "hello-world");
    }
}
