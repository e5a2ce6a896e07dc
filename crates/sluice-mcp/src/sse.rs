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
    /// The `id:` field: the position a client resumes from with `Last-Event-ID`.
    pub id: Option<String>,
    /// The `event:` field (legacy HTTP+SSE sends `endpoint` and `message`).
    pub event: Option<String>,
    /// The `data:` lines joined by newlines: for MCP, one JSON-RPC message.
    pub data: String,
}

/// The largest event a [`Parser`] holds by default: 16 MiB of fields plus
/// the line in progress. MCP messages are one JSON text per event; a larger
/// one is far more likely a broken or hostile server than a real answer, and
/// buffering it unbounded would let one upstream exhaust the gateway's memory.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;

/// An event (or a single line) grew past the parser's limit. Its bytes were
/// dropped; the parser skips the rest of that event and resumes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge {
    /// The limit in bytes.
    pub limit: usize,
}

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an SSE event larger than {} bytes", self.limit)
    }
}

impl std::error::Error for EventTooLarge {}

/// Line buffers grown past this are released after use rather than kept.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Incremental SSE parser: feed bytes, take complete events.
///
/// Each byte is looked at once (a chunk is scanned from where the previous
/// one stopped, never from the start of the buffer), and what it holds for
/// the event in progress never exceeds its limit (see [`Parser::buffered`]).
/// Lines end with LF, CRLF or a lone CR, as the WHATWG format says, also when
/// the CR and the LF arrive in different chunks.
#[derive(Debug)]
pub struct Parser {
    max: usize,
    /// The line in progress (not kept while `discarding`).
    line: Vec<u8>,
    /// Bytes of the line in progress were seen (even if dropped).
    mid_line: bool,
    /// The previous chunk ended with CR: an LF that starts the next one
    /// belongs to that line ending.
    after_cr: bool,
    cur: Event,
    has_data: bool,
    /// An event overflowed: drop everything until it ends (a blank line).
    discarding: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::with_max_event_size(DEFAULT_MAX_EVENT_SIZE)
    }
}

impl Parser {
    /// A parser with the [`DEFAULT_MAX_EVENT_SIZE`] limit.
    pub fn new() -> Self {
        Parser::default()
    }

    /// A parser that refuses events (fields plus the line in progress) over `max` bytes.
    pub fn with_max_event_size(max: usize) -> Self {
        Parser {
            max,
            line: Vec::new(),
            mid_line: false,
            after_cr: false,
            cur: Event::default(),
            has_data: false,
            discarding: false,
        }
    }

    /// The limit this parser enforces, in bytes.
    pub fn max_event_size(&self) -> usize {
        self.max
    }

    /// Bytes held for the event in progress: its fields and its partial line.
    /// Never more than [`Parser::max_event_size`] once `feed` has returned.
    pub fn buffered(&self) -> usize {
        self.event_len() + self.line.len()
    }

    fn event_len(&self) -> usize {
        self.cur.data.len()
            + self.cur.id.as_ref().map_or(0, String::len)
            + self.cur.event.as_ref().map_or(0, String::len)
    }

    /// Feeds a chunk and returns, in order, every event it completed and an
    /// [`EventTooLarge`] where an event outgrew the limit. A caller that
    /// cannot skip a lost event should stop reading at the first error.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Result<Event, EventTooLarge>> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', rest) {
            let mut tail = &rest[i + 1..];
            if rest[i] == b'\r' {
                match tail.first() {
                    Some(b'\n') => tail = &tail[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.end_line(&rest[..i], &mut out);
            rest = tail;
        }
        if !rest.is_empty() {
            self.continue_line(rest, &mut out);
        }
        out
    }

    /// Bytes of a line whose end has not arrived yet.
    fn continue_line(&mut self, part: &[u8], out: &mut Vec<Result<Event, EventTooLarge>>) {
        self.mid_line = true;
        if self.discarding {
            return;
        }
        if self.buffered() + part.len() > self.max {
            self.overflow(out);
            return;
        }
        self.line.extend_from_slice(part);
    }

    /// The end of a line whose last bytes are `part`.
    fn end_line(&mut self, part: &[u8], out: &mut Vec<Result<Event, EventTooLarge>>) {
        let blank = !self.mid_line && part.is_empty();
        self.mid_line = false;
        if self.discarding {
            // The overflowed event ends at the next blank line.
            self.discarding = !blank;
            return;
        }
        if self.buffered() + part.len() > self.max {
            self.overflow(out);
            return;
        }
        if self.line.is_empty() {
            self.process(part, out);
        } else {
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(part);
            self.process(&line, out);
            line.clear();
            if line.capacity() <= KEEP_CAPACITY {
                self.line = line;
            }
        }
        // Invalid UTF-8 is replaced by U+FFFD (three bytes for one), so the
        // fields can outgrow the bytes that were counted.
        if self.event_len() > self.max {
            self.overflow(out);
        }
    }

    /// Drops the event in progress and reports it.
    fn overflow(&mut self, out: &mut Vec<Result<Event, EventTooLarge>>) {
        self.line = Vec::new();
        self.cur = Event::default();
        self.has_data = false;
        self.discarding = true;
        out.push(Err(EventTooLarge { limit: self.max }));
    }

    /// One complete line, without its line ending.
    fn process(&mut self, line: &[u8], out: &mut Vec<Result<Event, EventTooLarge>>) {
        if line.is_empty() {
            if self.has_data || self.cur.event.is_some() {
                out.push(Ok(std::mem::take(&mut self.cur)));
            } else {
                self.cur = Event::default();
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let line = String::from_utf8_lossy(line);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(p: &mut Parser, chunk: &[u8]) -> Vec<Event> {
        p.feed(chunk)
            .into_iter()
            .map(|r| r.expect("no event is too large"))
            .collect()
    }

    #[test]
    fn parses_split_chunks_and_multiline_data() {
        let mut p = Parser::default();
        assert!(p.feed(b"id: 1\nda").is_empty());
        let ev = events(
            &mut p,
            b"ta: {\"a\":1}\n\nevent: endpoint\r\ndata: /m?x=1\r\n\r\n: c\n",
        );
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].id.as_deref(), Some("1"));
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].event.as_deref(), Some("endpoint"));
        assert_eq!(ev[1].data, "/m?x=1");
        let ev = events(&mut p, b"data: a\ndata: b\n\n");
        assert_eq!(ev[0].data, "a\nb");
    }

    #[test]
    fn a_lone_cr_ends_a_line_even_across_chunks() {
        let mut p = Parser::default();
        assert!(events(&mut p, b"data: a\r").is_empty());
        // The LF completes the CRLF begun in the previous chunk: not a blank line.
        assert!(events(&mut p, b"\ndata: b\r").is_empty());
        let ev = events(&mut p, b"\r");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "a\nb");
        let ev = events(&mut p, b"\ndata: c\r\rdata: d\n\n");
        assert_eq!(
            ev.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["c", "d"]
        );
    }

    #[test]
    fn a_long_line_in_tiny_chunks_is_parsed_once() {
        // Rescanning the buffer on every chunk would make this quadratic
        // (about 10^11 byte comparisons); scanning each byte once is instant.
        let mut p = Parser::default();
        let body = vec![b'x'; 512 * 1024];
        assert!(p.feed(b"data: ").is_empty());
        for b in body.chunks(1) {
            assert!(p.feed(b).is_empty());
        }
        assert_eq!(p.buffered(), 6 + body.len());
        let ev = events(&mut p, b"\n\n");
        assert_eq!(ev[0].data.len(), body.len());
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn an_oversized_line_is_refused_and_dropped() {
        let mut p = Parser::with_max_event_size(100);
        assert!(p.feed(&[b'a'; 60]).is_empty());
        let r = p.feed(&[b'a'; 60]);
        assert_eq!(r, vec![Err(EventTooLarge { limit: 100 })]);
        assert_eq!(p.buffered(), 0, "the oversized line was dropped");
        // The rest of that event is skipped, without more errors; the next one parses.
        assert!(p.feed(&[b'a'; 500]).is_empty());
        assert!(p.feed(b"\ndata: late\n").is_empty());
        assert_eq!(p.buffered(), 0);
        let ev = events(&mut p, b"\ndata: next\n\n");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "next");
    }

    #[test]
    fn an_event_of_many_lines_is_capped_too() {
        let mut p = Parser::with_max_event_size(64);
        let line = b"data: 0123456789\n";
        let mut results = Vec::new();
        for _ in 0..10 {
            results.extend(p.feed(line));
            assert!(p.buffered() <= 64);
        }
        assert_eq!(results, vec![Err(EventTooLarge { limit: 64 })]);
        let ev = events(&mut p, b"\ndata: ok\n\n");
        assert_eq!(ev[0].data, "ok");
        assert_eq!(
            EventTooLarge { limit: 64 }.to_string(),
            "an SSE event larger than 64 bytes"
        );
    }

    #[test]
    fn events_before_an_oversized_one_are_kept_in_order() {
        let mut p = Parser::with_max_event_size(32);
        let mut chunk = b"data: first\n\ndata: ".to_vec();
        chunk.extend_from_slice(&[b'z'; 40]);
        let r = p.feed(&chunk);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].as_ref().unwrap().data, "first");
        assert_eq!(r[1], Err(EventTooLarge { limit: 32 }));
    }

    #[test]
    fn invalid_utf8_cannot_grow_an_event_past_the_limit() {
        let mut p = Parser::with_max_event_size(64);
        let mut line = b"data:".to_vec();
        line.extend_from_slice(&[0xff; 40]);
        line.push(b'\n');
        let r = p.feed(&line);
        assert_eq!(r, vec![Err(EventTooLarge { limit: 64 })]);
        assert!(p.buffered() <= 64);
    }

    #[test]
    fn frames_events() {
        assert_eq!(event(Some("s-1"), "{}"), "id: s-1\ndata: {}\n\n");
        assert_eq!(event(None, ""), "data: \n\n");
    }
}

/// Property tests: arbitrary bytes in arbitrary chunks.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// Enough cases to explore, few enough that each property takes about a
    /// second in a debug build.
    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            ..ProptestConfig::default()
        }
    }

    /// `bytes` cut at `cuts` (positions chosen anywhere, in any order).
    fn chunked<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.dedup();
        at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }

    /// Feeds the chunks, checking the memory bound after each; returns everything produced.
    fn feed_all(p: &mut Parser, chunks: &[&[u8]]) -> Vec<Result<Event, EventTooLarge>> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c));
            assert!(
                p.buffered() <= p.max_event_size(),
                "{} bytes held over a limit of {}",
                p.buffered(),
                p.max_event_size()
            );
        }
        out
    }

    /// Bytes that are mostly SSE syntax (line endings, colons, field names),
    /// with arbitrary bytes (invalid UTF-8 included) mixed in.
    fn sse_ish() -> impl Strategy<Value = Vec<u8>> {
        let syntax = prop::sample::select(b"\n\r: dataevntidx".to_vec());
        prop::collection::vec(prop_oneof![3 => syntax, 1 => any::<u8>()], 0..400)
    }

    /// One event of a well-formed stream.
    #[derive(Debug, Clone)]
    struct Ev {
        id: Option<String>,
        event: Option<String>,
        data: Vec<String>,
        comment: bool,
    }

    fn text() -> impl Strategy<Value = String> {
        // No line ending characters; anything else, non-ASCII included.
        "[^\r\n]{0,24}"
    }

    fn ev() -> impl Strategy<Value = Ev> {
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::collection::vec(text(), 0..4),
            any::<bool>(),
        )
            .prop_map(|(id, event, data, comment)| Ev {
                id,
                event,
                data,
                comment,
            })
    }

    /// Serializes events with one line-ending style per stream (a lone CR
    /// followed by an LF-terminated blank line would be a CRLF, by the
    /// format's own rules, so styles are not mixed with CR); `mixed` picks
    /// LF or CRLF per line.
    fn serialize(events: &[Ev], style: u8, mixed: &[bool]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = 0usize;
        let mut line = |out: &mut Vec<u8>, text: &str| {
            out.extend_from_slice(text.as_bytes());
            let eol: &[u8] = match style % 4 {
                0 => b"\n",
                1 => b"\r\n",
                2 => b"\r",
                _ if mixed.get(n % mixed.len().max(1)).copied().unwrap_or(false) => b"\r\n",
                _ => b"\n",
            };
            n += 1;
            out.extend_from_slice(eol);
        };
        for e in events {
            if e.comment {
                line(&mut out, ": keep-alive");
            }
            if let Some(id) = &e.id {
                line(&mut out, &format!("id: {id}"));
            }
            if let Some(ev) = &e.event {
                line(&mut out, &format!("event: {ev}"));
            }
            for d in &e.data {
                line(&mut out, &format!("data: {d}"));
            }
            line(&mut out, "");
        }
        out
    }

    /// What a well-formed stream of `events` must parse to.
    fn expected(events: &[Ev]) -> Vec<Result<Event, EventTooLarge>> {
        events
            .iter()
            .filter(|e| !e.data.is_empty() || e.event.is_some())
            .map(|e| {
                Ok(Event {
                    id: e.id.clone(),
                    event: e.event.clone(),
                    data: e.data.join("\n"),
                })
            })
            .collect()
    }

    proptest! {
        #![proptest_config(config(384))]

        /// Never panics, never holds more than its limit, and cutting the
        /// bytes anywhere changes nothing: the same events and the same
        /// errors, in the same order.
        #[test]
        fn any_chunking_of_any_bytes_parses_the_same(
            bytes in sse_ish(),
            cuts in prop::collection::vec(any::<Index>(), 0..24),
            max in 8usize..96,
        ) {
            let whole = feed_all(&mut Parser::with_max_event_size(max), &[&bytes]);
            let pieces = feed_all(&mut Parser::with_max_event_size(max), &chunked(&bytes, &cuts));
            prop_assert_eq!(whole, pieces);
        }
    }

    proptest! {
        #![proptest_config(config(1024))]

        /// Fully arbitrary bytes, fed one by one and whole.
        #[test]
        fn arbitrary_bytes_byte_by_byte(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            max in 1usize..64,
        ) {
            let whole = feed_all(&mut Parser::with_max_event_size(max), &[&bytes]);
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            let bytewise = feed_all(&mut Parser::with_max_event_size(max), &singles);
            prop_assert_eq!(whole, bytewise);
        }

        /// A well-formed stream yields exactly its events, however it is cut.
        #[test]
        fn a_valid_stream_yields_its_events_in_any_chunks(
            events in prop::collection::vec(ev(), 0..6),
            style in any::<u8>(),
            mixed in prop::collection::vec(any::<bool>(), 1..8),
            cuts in prop::collection::vec(any::<Index>(), 0..24),
        ) {
            let bytes = serialize(&events, style, &mixed);
            let want = expected(&events);
            let whole = feed_all(&mut Parser::default(), &[&bytes]);
            prop_assert_eq!(&whole, &want);
            let pieces = feed_all(&mut Parser::default(), &chunked(&bytes, &cuts));
            prop_assert_eq!(&pieces, &want);
        }
    }
}
