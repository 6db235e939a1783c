//! An incremental server-sent-events parser (the WHATWG event-stream
//! grammar: LF, CRLF or CR line ends, `:` comments, multi-line `data`),
//! robust to any split of the byte stream. Every event keeps its raw
//! bytes, so an event the proxy does not change is passed on exactly as
//! the upstream sent it: the raw bytes of all events plus
//! [`Parser::finish`]'s remainder are the input, byte for byte.

/// Largest event accepted (bytes, raw); a longer one is an error, not an
/// unbounded buffer.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field (empty when absent).
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// Whether the event had any `data:` line (a comment-only block has none).
    pub has_data: bool,
    /// The event's bytes as received, blank line included.
    pub raw: Vec<u8>,
}

/// Why the stream cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event exceeds [`MAX_EVENT_BYTES`].
    #[error("server-sent event larger than {max} bytes")]
    EventTooLarge {
        /// The limit.
        max: usize,
    },
}

/// The incremental parser.
#[derive(Debug, Default)]
pub struct Parser {
    /// Raw bytes of the event being read (complete lines and a partial one).
    raw: Vec<u8>,
    /// Where the partial line starts in `raw`.
    line_start: usize,
    /// The previous chunk ended in CR: a leading LF belongs to that line end.
    skip_lf: bool,
    /// An event whose blank line ended in that CR: handed out with the
    /// next bytes (its raw bytes must include the LF, if one comes, so an
    /// event a rewriter replaces takes its whole terminator with it).
    pending: Option<Event>,
    current: Event,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete, in order.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut out = Vec::new();
        if bytes.is_empty() {
            return Ok(out);
        }
        if self.skip_lf {
            self.skip_lf = false;
            let lf = bytes[0] == b'\n';
            if lf {
                bytes = &bytes[1..];
            }
            match self.pending.take() {
                Some(mut ev) => {
                    if lf {
                        ev.raw.push(b'\n');
                    }
                    out.push(ev);
                }
                None if lf => {
                    self.raw.push(b'\n');
                    self.line_start = self.raw.len();
                }
                None => {}
            }
        }
        while !bytes.is_empty() {
            let Some(pos) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                self.raw.extend_from_slice(bytes);
                break;
            };
            let end = bytes[pos];
            let mut take = pos + 1;
            if end == b'\r' {
                match bytes.get(pos + 1) {
                    Some(b'\n') => take += 1,
                    Some(_) => {}
                    // The LF may come in the next chunk.
                    None => self.skip_lf = true,
                }
            }
            self.raw.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // The line is what precedes its terminator (1 or 2 bytes).
            let line_end = self.raw.len() - (take - pos);
            let line = String::from_utf8_lossy(&self.raw[self.line_start..line_end]).into_owned();
            self.line_start = self.raw.len();
            if line.is_empty() {
                let mut ev = std::mem::take(&mut self.current);
                ev.raw = std::mem::take(&mut self.raw);
                self.line_start = 0;
                if ev.data.ends_with('\n') {
                    ev.data.pop();
                }
                if self.skip_lf && bytes.is_empty() {
                    self.pending = Some(ev);
                } else {
                    out.push(ev);
                }
            } else {
                self.field(&line);
            }
            if self.skip_lf && bytes.is_empty() {
                break;
            }
        }
        if self.raw.len() > MAX_EVENT_BYTES {
            return Err(SseError::EventTooLarge {
                max: MAX_EVENT_BYTES,
            });
        }
        Ok(out)
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                self.current.data.push_str(value);
                self.current.data.push('\n');
                self.current.has_data = true;
            }
            _ => {}
        }
    }

    /// The stream ended: the last event, if its blank line ended in a CR
    /// that was the stream's last byte (held for a LF that never came).
    pub fn end(&mut self) -> Vec<Event> {
        self.skip_lf = false;
        self.pending.take().into_iter().collect()
    }

    /// Ends the stream: the bytes of an unfinished event (no blank line
    /// yet), to be passed on as they are.
    pub fn finish(&mut self) -> Vec<u8> {
        self.current = Event::default();
        self.line_start = 0;
        std::mem::take(&mut self.raw)
    }
}

/// Renders an event (`event:` line when named, one `data:` line per line).
pub fn render(event: &str, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + event.len() + 16);
    if !event.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\n\
event: ping\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\r\r\
data:no-space\nid: 7\nretry: 10\n\nevent: tail\ndata: unfinished";

    fn all_at_once() -> (Vec<Event>, Vec<u8>) {
        let mut p = Parser::new();
        let mut ev = p.push(STREAM).unwrap();
        ev.extend(p.end());
        (ev, p.finish())
    }

    #[test]
    fn parses_every_line_ending_and_field() {
        let (ev, rest) = all_at_once();
        let shown: Vec<(&str, &str, bool)> = ev
            .iter()
            .map(|e| (e.event.as_str(), e.data.as_str(), e.has_data))
            .collect();
        assert_eq!(
            shown,
            [
                ("", "", false),
                ("message_start", "{\"a\":1}", true),
                ("ping", "x\ny", true),
                ("", "[DONE]", true),
                ("", "no-space", true),
            ]
        );
        assert_eq!(rest, b"event: tail\ndata: unfinished");
    }

    #[test]
    fn every_split_point_gives_the_same_events_and_bytes() {
        let (want, want_rest) = all_at_once();
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let mut p = Parser::new();
                let mut got = p.push(&STREAM[..i]).unwrap();
                got.extend(p.push(&STREAM[i..j]).unwrap());
                got.extend(p.push(&STREAM[j..]).unwrap());
                got.extend(p.end());
                let rest = p.finish();
                let fields = |v: &[Event]| {
                    v.iter()
                        .map(|e| (e.event.clone(), e.data.clone()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(fields(&got), fields(&want), "split at {i},{j}");
                let mut bytes: Vec<u8> = got.iter().flat_map(|e| e.raw.clone()).collect();
                bytes.extend(&rest);
                assert_eq!(bytes, STREAM, "split at {i},{j}");
                let _ = &want_rest;
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let (want, _) = all_at_once();
        let mut p = Parser::new();
        let mut got = Vec::new();
        for b in STREAM {
            got.extend(p.push(std::slice::from_ref(b)).unwrap());
        }
        got.extend(p.end());
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.event, &g.data, &g.raw), (&w.event, &w.data, &w.raw));
        }
    }

    #[test]
    fn an_event_ended_by_the_streams_last_cr_is_handed_out_at_the_end() {
        let mut p = Parser::new();
        let ev = p.push(b"data: a\r\r").unwrap();
        assert!(ev.is_empty());
        let ev = p.end();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].raw, b"data: a\r\r");
    }

    #[test]
    fn render_round_trips() {
        let mut p = Parser::new();
        let ev = p
            .push(&render("content_block_delta", "{\"x\":\n1}"))
            .unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event, "content_block_delta");
        assert_eq!(ev[0].data, "{\"x\":\n1}");
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut p = Parser::new();
        let chunk = vec![b'a'; 1 << 20];
        let mut err = None;
        for _ in 0..20 {
            if let Err(e) = p.push(&chunk) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(SseError::EventTooLarge { .. })));
    }
}
