//! Request framing of an HTTP/1 client stream, followed byte by byte beside hyper's parser, to
//! find request heads that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper accepts such a request (RFC 9112 §6.3 lets a server do so): it drops the
//! `Content-Length`, reads the chunked body and closes the connection after the response. It
//! removes the header before the service sees the request, so the service cannot tell. A proxy
//! should not forward a request that two parsers may frame differently (request smuggling), so
//! the edge answers 400 and closes instead, without contacting a backend, as HAProxy does.
//!
//! [`Framing`] sees the bytes hyper reads, in order and before hyper parses them, and counts
//! request heads; the service counts the requests hyper hands it. Both count the same heads:
//! hyper calls the service once per head it accepts and closes the connection at the first head
//! it rejects. The tracker only needs the framing (`Content-Length` bytes, chunked chunks and
//! trailers) to find where the next head starts; bodies are skipped without being looked at.
//! After a head it cannot frame (bad length, a transfer coding other than chunked, `CONNECT`)
//! or a conflict, it stops: hyper rejects the first kind and closes after the others.

/// Bytes of a line kept for analysis: enough for any `Content-Length` value and common
/// `Transfer-Encoding` lists; a longer line is judged on its first bytes (see [`Framing`]).
const LINE_CAP: usize = 128;

/// The framing state of one HTTP/1 client stream.
#[derive(Debug)]
pub(super) struct Framing {
    phase: Phase,
    line: [u8; LINE_CAP],
    /// Length of the current line so far (may exceed `LINE_CAP`; only the start is kept).
    line_len: usize,
    head: Head,
    /// Complete request heads seen.
    heads: u64,
    /// The 1-based index of the first head with both `Content-Length` and
    /// `Transfer-Encoding`.
    conflict: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head, line by line.
    Head,
    /// Skipping a `Content-Length` body: bytes left.
    Body(u64),
    /// A chunk-size line.
    ChunkSize,
    /// Skipping chunk data: bytes left.
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// No more framing to follow (see the module doc).
    Stopped,
}

/// What the current head said so far.
#[derive(Debug, Default, Clone, Copy)]
struct Head {
    /// The request line was seen (empty lines before it are skipped, as hyper does).
    started: bool,
    connect: bool,
    content_length: Option<u64>,
    /// A `Content-Length` that cannot frame a body (hyper answers 400).
    bad_length: bool,
    transfer_encoding: bool,
    /// The last transfer coding is `chunked`.
    chunked: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            phase: Phase::Head,
            line: [0; LINE_CAP],
            line_len: 0,
            head: Head::default(),
            heads: 0,
            conflict: None,
        }
    }
}

impl Framing {
    /// The 1-based index of the first request head with both `Content-Length` and
    /// `Transfer-Encoding`, once seen.
    pub(super) fn conflict(&self) -> Option<u64> {
        self.conflict
    }

    /// Whether the tracker has nothing more to follow.
    pub(super) fn stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// Whether the bytes so far end exactly after a whole request (head and body): nothing of
    /// a next request has been read.
    pub(super) fn between_requests(&self) -> bool {
        self.phase == Phase::Head && self.line_len == 0 && !self.head.started
    }

    /// Follows `bytes`, the next bytes read from the client.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Stopped => return,
                Phase::Body(left) | Phase::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    // `n` ≤ `bytes.len()`, so it fits in usize.
                    bytes = &bytes[n as usize..];
                    let left = left - n;
                    self.phase = match (self.phase, left) {
                        (Phase::Body(_), 0) => Phase::Head,
                        (Phase::Body(_), _) => Phase::Body(left),
                        (_, 0) => Phase::ChunkEnd,
                        _ => Phase::ChunkData(left),
                    };
                }
                _ => match bytes.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.push(&bytes[..i]);
                        bytes = &bytes[i + 1..];
                        self.end_line();
                    }
                    None => {
                        self.push(bytes);
                        return;
                    }
                },
            }
        }
    }

    fn push(&mut self, part: &[u8]) {
        if self.line_len < LINE_CAP {
            let n = part.len().min(LINE_CAP - self.line_len);
            self.line[self.line_len..self.line_len + n].copy_from_slice(&part[..n]);
        }
        self.line_len = self.line_len.saturating_add(part.len());
    }

    fn end_line(&mut self) {
        let kept = self.line_len.min(LINE_CAP);
        let truncated = self.line_len > LINE_CAP;
        let mut line = [0u8; LINE_CAP];
        line[..kept].copy_from_slice(&self.line[..kept]);
        self.line_len = 0;
        let mut line = &line[..kept];
        if !truncated && let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        match self.phase {
            Phase::Head => self.head_line(line, truncated),
            Phase::ChunkSize => self.chunk_size(line, truncated),
            Phase::ChunkEnd => self.phase = Phase::ChunkSize,
            Phase::Trailers => {
                if line.is_empty() && !truncated {
                    self.phase = Phase::Head;
                }
            }
            Phase::Body(_) | Phase::ChunkData(_) | Phase::Stopped => {}
        }
    }

    fn head_line(&mut self, line: &[u8], truncated: bool) {
        if line.is_empty() && !truncated {
            if self.head.started {
                self.end_head();
            }
            return;
        }
        if !self.head.started {
            self.head.started = true;
            self.head.connect = line.starts_with(b"CONNECT ");
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let len = (!truncated)
                .then(|| parse_decimal(value))
                .flatten()
                .filter(|&n| self.head.content_length.is_none_or(|prev| prev == n));
            match len {
                Some(n) => self.head.content_length = Some(n),
                None => self.head.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.transfer_encoding = true;
            // Several lines make one list: the last coding of the last line counts.
            let last = value.rsplit(|&b| b == b',').next().map(trim);
            self.head.chunked =
                !truncated && last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        }
    }

    fn end_head(&mut self) {
        let head = std::mem::take(&mut self.head);
        self.heads += 1;
        let has_length = head.content_length.is_some() || head.bad_length;
        self.phase = if head.transfer_encoding && has_length {
            self.conflict.get_or_insert(self.heads);
            Phase::Stopped
        } else if head.connect || head.bad_length {
            Phase::Stopped
        } else if head.transfer_encoding {
            if head.chunked {
                Phase::ChunkSize
            } else {
                Phase::Stopped
            }
        } else {
            match head.content_length {
                Some(n) if n > 0 => Phase::Body(n),
                _ => Phase::Head,
            }
        };
    }

    fn chunk_size(&mut self, line: &[u8], truncated: bool) {
        let digits = line
            .iter()
            .position(|&b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let size = (digits > 0 && digits <= 16 && !(truncated && digits == line.len()))
            .then(|| std::str::from_utf8(&line[..digits]).ok())
            .flatten()
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        self.phase = match size {
            Some(0) => Phase::Trailers,
            Some(n) => Phase::ChunkData(n),
            None => Phase::Stopped,
        };
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes.
    fn run(stream: &[u8], step: usize) -> Framing {
        let mut f = Framing::default();
        for part in stream.chunks(step) {
            f.feed(part);
        }
        f
    }

    fn every_split(stream: &[u8]) -> Vec<Framing> {
        (1..=stream.len()).map(|s| run(stream, s)).collect()
    }

    #[test]
    fn finds_the_conflicting_head_after_framed_bodies_in_any_split() {
        let stream = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nContent-Length: 23\r\n\r\n\r\ncontent-length: 5\r\n\r\n\
            POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
            5;ext=1\r\nab\r\nc\r\n10\r\ncontent-length:1\r\n0\r\nX-Trailer: 1\r\n\r\n\
            POST /bad HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc";
        for f in every_split(stream) {
            assert_eq!(f.conflict(), Some(4), "{f:?}");
            assert!(f.stopped());
        }
    }

    #[test]
    fn length_after_encoding_also_conflicts_and_bodies_never_do() {
        let f = run(
            b"PUT / HTTP/1.1\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n",
            7,
        );
        assert_eq!(f.conflict(), Some(1));
        let f = run(
            b"PUT / HTTP/1.1\r\nContent-Length: 53\r\n\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 4\r\n\r\n....GET / HTTP/1.1\r\n\r\n",
            3,
        );
        assert_eq!(f.conflict(), None);
        assert_eq!(f.heads, 2);
        assert!(!f.stopped());
    }

    #[test]
    fn unframeable_heads_stop_the_tracker_without_a_conflict() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
        ] {
            let f = run(head, 5);
            assert_eq!(f.conflict(), None, "{}", String::from_utf8_lossy(head));
            assert!(f.stopped(), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn long_lines_are_judged_on_their_start() {
        let mut stream = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        stream.extend(std::iter::repeat_n(b'a', 10_000));
        stream.extend(b"\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(run(&stream, 1000).conflict(), Some(1));
    }
}
