//! How a request is answered over HTTP, for both eras: plain JSON when the
//! answer comes first (and soon), else one SSE body that sends a
//! `: keep-alive` comment whenever it has been quiet for a while, so a call
//! that takes minutes survives proxies and load balancers with an idle
//! timeout.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::stream::{self, Stream, StreamExt};
use std::time::Duration;

/// The comment an SSE stream carries while it has nothing else to send.
pub(crate) const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// What a call's events start with, which decides how it is answered.
pub(crate) enum First<S: Stream> {
    /// The answer came first, alone, within the delay: plain JSON.
    Answer(S::Item),
    /// Something else came first, or the delay passed with nothing: an SSE
    /// stream with these events first, then the rest of `S`.
    Stream(Vec<S::Item>, S),
    /// The events ended with nothing to send (the call was cancelled).
    Nothing,
}

/// Waits up to `after` for a call's first event. `is_answer` tells the event
/// that ends the call. Waiting is cancel-safe for any `Unpin` stream that
/// keeps its pending work inside itself (as `stream::unfold` does), so the
/// stream continues where it was whichever way this goes.
pub(crate) async fn first<S>(
    mut events: S,
    after: Duration,
    is_answer: impl Fn(&S::Item) -> bool,
) -> First<S>
where
    S: Stream + Unpin,
{
    match tokio::time::timeout(after, events.next()).await {
        Err(_) => First::Stream(Vec::new(), events),
        Ok(None) => First::Nothing,
        Ok(Some(e)) if is_answer(&e) => First::Answer(e),
        Ok(Some(e)) => First::Stream(vec![e], events),
    }
}

/// An SSE response: `head` (a priming event, replayed events; may be
/// empty), then each of `events` (already framed) as it comes, and a
/// keep-alive comment whenever nothing was sent for `keepalive`. The body
/// ends when `events` does; `guard` lives exactly as long as the body (what
/// it holds is released when the client goes away).
pub(crate) fn sse<S, G>(head: String, events: S, keepalive: Duration, guard: G) -> Response
where
    S: Stream<Item = String> + Send + 'static,
    G: Send + 'static,
{
    struct St<G> {
        head: Option<String>,
        events: stream::BoxStream<'static, String>,
        tick: tokio::time::Interval,
        _guard: G,
    }
    let mut tick = tokio::time::interval(keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    let st = St {
        head: (!head.is_empty()).then_some(head),
        events: events.boxed(),
        tick,
        _guard: guard,
    };
    let body = stream::unfold(st, |mut st| async move {
        if let Some(h) = st.head.take() {
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(h)), st));
        }
        tokio::select! {
            ev = st.events.next() => {
                let ev = ev?;
                st.tick.reset();
                Some((Ok(Bytes::from(ev)), st))
            }
            _ = st.tick.tick() => Some((Ok(Bytes::from_static(KEEP_ALIVE)), st)),
        }
    });
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    // Asks nginx-style proxies not to buffer the stream, so every event and
    // keep-alive reaches the client when it is sent.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_answer_first_is_json_anything_else_a_stream() {
        let quick = stream::iter(["answer"]);
        assert!(matches!(
            first(quick, Duration::from_secs(5), |e| *e == "answer").await,
            First::Answer("answer")
        ));
        let note_first = stream::iter(["note", "answer"]);
        match first(note_first, Duration::from_secs(5), |e| *e == "answer").await {
            First::Stream(queued, mut rest) => {
                assert_eq!(queued, ["note"]);
                assert_eq!(rest.next().await, Some("answer"));
            }
            _ => panic!("a note first makes a stream"),
        }
        // Nothing within the delay: a stream that still yields the answer.
        let late = stream::once(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "answer"
        })
        .boxed();
        match first(late, Duration::from_millis(20), |e| *e == "answer").await {
            First::Stream(queued, mut rest) => {
                assert!(queued.is_empty());
                assert_eq!(rest.next().await, Some("answer"));
            }
            _ => panic!("a late answer makes a stream"),
        }
        assert!(matches!(
            first(stream::empty::<&str>(), Duration::from_secs(5), |_| true).await,
            First::Nothing
        ));
    }

    #[tokio::test]
    async fn a_quiet_stream_carries_keep_alives() {
        let events = stream::once(async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            "data: x\n\n".to_string()
        });
        let r = sse(
            "retry: 1000\n\n".into(),
            events,
            Duration::from_millis(100),
            (),
        );
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = std::str::from_utf8(&body).unwrap();
        let middle = body
            .strip_prefix("retry: 1000\n\n")
            .and_then(|b| b.strip_suffix("data: x\n\n"))
            .unwrap_or_else(|| panic!("head, then comments, then the event: {body:?}"));
        let comments = middle.len() / KEEP_ALIVE.len();
        assert_eq!(middle, ": keep-alive\n\n".repeat(comments), "{body:?}");
        assert!(comments >= 2, "keep-alives while quiet: {body:?}");
    }
}
