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
    /// No line finished yet (the first may start with a BOM, possibly split across chunks).
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
        let mut line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.at_start) && line.starts_with(b"\xEF\xBB\xBF") {
            line.drain(..3);
        }
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

    const DOCS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/marathon/marathon-docs/"
    );

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DOCS}{name}")).unwrap()
    }

    #[test]
    fn marathon_docs_named_stream() {
        let events = parse_all(&[&fixture("v2-events.txt")]);
        let types: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            types,
            [
                "event_stream_attached",
                "status_update_event",
                "status_update_event"
            ]
        );
        let su = crate::discovery::events::parse(&events[2]).unwrap();
        let crate::discovery::events::MarathonEvent::StatusUpdate(su) = su else {
            panic!("not a status update: {su:?}");
        };
        assert_eq!(su.task_id, "test-app.5dd78972-6771-11e5-94e1-be5b2935a987");
        assert_eq!(su.task_status, "TASK_RUNNING");
        assert_eq!(su.ports, vec![31182]);
    }

    #[test]
    fn marathon_docs_data_only_stream() {
        let events = parse_all(&[&fixture("v2-events-data-only.txt")]);
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.event.is_empty()));
        let kinds: Vec<_> = events
            .iter()
            .map(|e| crate::discovery::events::parse(e).unwrap())
            .collect();
        assert_eq!(
            kinds,
            vec![
                crate::discovery::events::MarathonEvent::Other("event_stream_attached".into()),
                crate::discovery::events::MarathonEvent::Other("group_change_success".into()),
            ]
        );
    }

    #[test]
    fn marathon_event_bus_every_type_parses_in_odd_chunks() {
        let text = fixture("event-bus.sse");
        // 7-byte chunks split lines, fields and line ends everywhere.
        let chunks: Vec<&[u8]> = text.chunks(7).collect();
        let events = parse_all(&chunks);
        assert_eq!(events, parse_all(&[&text]));
        assert_eq!(events.len(), 27);
        for e in &events {
            let parsed = crate::discovery::events::parse(e)
                .unwrap_or_else(|err| panic!("{}: {err}", e.event));
            let want_label = match e.event.as_str() {
                "status_update_event"
                | "health_status_changed_event"
                | "api_post_event"
                | "event_stream_attached"
                | "event_stream_detached" => e.event.as_str(),
                _ => "other",
            };
            assert_eq!(parsed.metric_label(), want_label);
        }
    }

    #[test]
    fn marathon_event_json_files_parse_as_data_only_events() {
        let dir = format!("{DOCS}events");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read_to_string(&path).unwrap();
            // Pretty-printed JSON over several `data:` lines, as a server may send it.
            let mut text = String::new();
            for line in data.lines() {
                text.push_str("data: ");
                text.push_str(line);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            let events = parse_all(&[text.as_bytes()]);
            assert_eq!(events.len(), 1, "{}", path.display());
            let parsed = crate::discovery::events::parse(&events[0])
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            match stem.as_str() {
                "status_update_event" => assert!(matches!(
                    parsed,
                    crate::discovery::events::MarathonEvent::StatusUpdate(ref s)
                        if s.task_id == "my-app_0-1396592784349" && s.ports == [31372]
                )),
                "health_status_changed_event" => assert!(matches!(
                    parsed,
                    crate::discovery::events::MarathonEvent::HealthChanged(ref h)
                        if h.alive && h.instance_id.as_deref()
                            == Some("my-app.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c")
                )),
                "api_post_event" => {
                    assert_eq!(parsed, crate::discovery::events::MarathonEvent::ApiPost)
                }
                _ => assert!(matches!(
                    parsed,
                    crate::discovery::events::MarathonEvent::Other(_)
                )),
            }
            n += 1;
        }
        assert_eq!(n, 27);
    }
}
