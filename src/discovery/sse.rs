//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` rules), fed with the
//! chunks of a Marathon `/v2/events` body as they arrive.
//!
//! Handles `event:` / `data:` fields, multi-line data, comments (`:` lines, used as heartbeats),
//! LF, CRLF and lone CR line ends (also split across chunks), a leading BOM, and events with no
//! `event:` line (old Marathon sends data-only events with `eventType` inside the JSON). Pure: no
//! I/O. Events larger than the limit are an error, so a hostile stream cannot grow memory without
//! bound.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty when the event had none (the spec's default type `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("event larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Parser state between chunks.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    skip_lf: bool,
    /// Nothing seen yet (a BOM may come first).
    at_start: bool,
    event: String,
    data: String,
    has_data: bool,
    limit: usize,
    comments: u64,
}

impl SseParser {
    /// A parser that refuses events (or lines) over `limit` bytes.
    pub fn new(limit: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            skip_lf: false,
            at_start: true,
            event: String::new(),
            data: String::new(),
            has_data: false,
            limit,
            comments: 0,
        }
    }

    /// Comment lines seen so far (Marathon and proxies use them as keepalives).
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Feeds one chunk; complete events are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = chunk;
        if self.at_start && !rest.is_empty() {
            self.at_start = false;
            rest = rest.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(rest);
        }
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = rest.split_at(pos);
            self.line.extend_from_slice(head);
            let Some((&term, tail)) = tail.split_first() else {
                break; // unreachable: `pos` indexes a byte of `rest`
            };
            rest = tail;
            if term == b'\r' {
                if rest.is_empty() {
                    self.skip_lf = true;
                } else {
                    rest = rest.strip_prefix(b"\n").unwrap_or(rest);
                }
            }
            self.end_line(out)?;
        }
        self.line.extend_from_slice(rest);
        self.check_size()
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.line.len() + self.data.len() > self.limit {
            Err(SseError::TooLarge { limit: self.limit })
        } else {
            Ok(())
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.check_size()?;
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.first() == Some(&b':') {
            self.comments += 1;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            // `id` and `retry` matter to browsers reconnecting; we re-fetch instead.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        if data.ends_with('\n') {
            data.pop();
        }
        out.push(SseEvent { event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn named_events_multiline_data_and_comments() {
        let got = parse_all(&[
            b": keepalive\n\nevent: a\ndata: one\ndata:two\n\ndata: x\n\n: c\nevent: b\ndata\n\n",
        ]);
        assert_eq!(got, vec![ev("a", "one\ntwo"), ev("", "x"), ev("b", "")]);
    }

    #[test]
    fn crlf_and_lone_cr_also_split_across_chunks() {
        let got = parse_all(&[
            b"event: a\r",
            b"\ndata: 1\r\n\r",
            b"\nevent: b\rdata: 2\r\r",
        ]);
        assert_eq!(got, vec![ev("a", "1"), ev("b", "2")]);
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let text: &[u8] = b"\xEF\xBB\xBFevent: e\r\ndata: {\"k\": 1}\r\n\r\ndata: only\n\n";
        let whole = parse_all(&[text]);
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
        assert_eq!(whole, vec![ev("e", "{\"k\": 1}"), ev("", "only")]);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_an_unfinished_one_waits() {
        let got = parse_all(&[b"event: lonely\n\nevent: x\ndata: y"]);
        assert!(got.is_empty());
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert_eq!(
            p.push(b"data: 0123456789\ndata: 0123456789\n", &mut out),
            Err(SseError::TooLarge { limit: 16 })
        );
        let mut p = SseParser::new(16);
        assert!(p.push(&[b'a'; 40], &mut out).is_err());
    }
}
