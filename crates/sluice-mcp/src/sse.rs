//! Server-Sent Events framing and an incremental parser.
//!
//! The parser is hand-written because it must run over our own byte chunks
//! (reqwest body frames) and yield only `id`/`event`/`data`; the format is a
//! few lines of the WHATWG spec and the crates that exist wrap it in their own
//! stream types.

/// Frames one SSE event. `data` must not contain newlines (serialized JSON never does).
pub fn event(id: Option<&str>, data: &str) -> String {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(data);
    s.push_str("\n\n");
    s
}

/// One parsed SSE event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser: feed bytes, take complete events.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    cur: Event,
    has_data: bool,
}

impl Parser {
    /// Feeds a chunk and returns every event it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data || self.cur.event.is_some() {
                    out.push(std::mem::take(&mut self.cur));
                } else {
                    self.cur = Event::default();
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (&line[..], ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                "event" => self.cur.event = Some(value.to_string()),
                "id" => self.cur.id = Some(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_chunks_and_multiline_data() {
        let mut p = Parser::default();
        assert!(p.feed(b"id: 1\nda").is_empty());
        let ev = p.feed(b"ta: {\"a\":1}\n\nevent: endpoint\r\ndata: /m?x=1\r\n\r\n: c\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].id.as_deref(), Some("1"));
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].event.as_deref(), Some("endpoint"));
        assert_eq!(ev[1].data, "/m?x=1");
        let ev = p.feed(b"data: a\ndata: b\n\n");
        assert_eq!(ev[0].data, "a\nb");
    }

    #[test]
    fn frames_events() {
        assert_eq!(event(Some("s-1"), "{}"), "id: s-1\ndata: {}\n\n");
        assert_eq!(event(None, ""), "data: \n\n");
    }
}
