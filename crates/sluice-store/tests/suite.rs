//! One suite, run against every store: memory, SQLite and Redis (a real
//! server on 127.0.0.1:6379, each run under its own key prefix).

use serde_json::json;
use sluice_store::{Event, LogBounds, SessionRecord, Store, StreamMeta};
use std::time::Duration;

fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn open(kind: &str, bounds: LogBounds) -> Store {
    let cfg = match kind {
        "memory" => sluice_config::Store::Memory,
        "sqlite" => sluice_config::Store::Sqlite {
            path: std::env::temp_dir().join(format!("{}.db", unique("sluice-store"))),
        },
        "redis" => sluice_config::Store::Redis {
            url: sluice_config::Secret("redis://127.0.0.1:6379".into()),
            key_prefix: format!("{}:", unique("sluice-test")),
        },
        _ => unreachable!(),
    };
    let store = Store::open(&cfg, Duration::from_secs(60), bounds)
        .await
        .unwrap();
    store.ping().await.unwrap_or_else(|e| {
        panic!("{kind} store not reachable (is Redis running on 127.0.0.1:6379?): {e}")
    });
    store
}

fn bounds() -> LogBounds {
    LogBounds {
        max_events: 5,
        max_age: Duration::from_secs(60),
    }
}

fn record(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        protocol_version: "2025-11-25".into(),
        client_capabilities: json!({"sampling": {}, "elicitation": {"form": {}}, "roots": {"listChanged": true}}),
        client_info: json!({"name": "claude-code", "version": "2.1.0"}),
        principal: None,
        log_level: None,
        subscriptions: vec![],
        standalone_owner: None,
        created_ms: 1_700_000_000_000,
    }
}

fn ev(seq: u64) -> Event {
    Event {
        seq,
        data: format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progress":{seq}}}}}"#
        ),
    }
}

async fn sessions_round_trip(kind: &str) {
    let s = open(kind, bounds()).await;
    let id = unique("sess");
    assert_eq!(s.get(&id).await.unwrap(), None);
    assert!(!s.touch(&id).await.unwrap());
    let before = s.count().await.unwrap();
    let mut rec = record(&id);
    s.create(&rec).await.unwrap();
    assert_eq!(s.get(&id).await.unwrap(), Some(rec.clone()));
    assert_eq!(s.count().await.unwrap(), before + 1);
    assert!(s.touch(&id).await.unwrap());
    rec.log_level = Some("debug".into());
    rec.subscriptions.push("test://x".into());
    s.update(&rec).await.unwrap();
    assert_eq!(s.get(&id).await.unwrap(), Some(rec));
    assert!(s.delete(&id).await.unwrap());
    assert!(!s.delete(&id).await.unwrap());
    assert_eq!(s.get(&id).await.unwrap(), None);
}

async fn event_logs_are_bounded_and_replay_after_a_cursor(kind: &str) {
    let s = open(kind, bounds()).await;
    let id = unique("sess");
    s.create(&record(&id)).await.unwrap();
    s.append(&id, "a1", &[ev(1), ev(2), ev(3)]).await.unwrap();
    s.append(&id, "a1", &[ev(4)]).await.unwrap();
    s.append(&id, "b2", &[ev(1)]).await.unwrap();
    let after: Vec<u64> = s
        .events_after(&id, "a1", 2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        after,
        [3, 4],
        "only the broken stream, only what was missed"
    );
    assert_eq!(s.events_after(&id, "a1", 2).await.unwrap()[0], ev(3));
    s.append(&id, "a1", &[ev(5), ev(6), ev(7)]).await.unwrap();
    let all: Vec<u64> = s
        .events_after(&id, "a1", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(all, [3, 4, 5, 6, 7], "bounded by count");
    assert_eq!(s.events_after(&id, "nope", 0).await.unwrap(), vec![]);

    let meta = StreamMeta {
        owner: "replica-1".into(),
        request_id: Some("7".into()),
        done: false,
    };
    s.set_stream(&id, "a1", &meta).await.unwrap();
    assert_eq!(s.get_stream(&id, "a1").await.unwrap(), Some(meta));
    s.delete(&id).await.unwrap();
    assert_eq!(
        s.events_after(&id, "a1", 0).await.unwrap(),
        vec![],
        "deleted with the session"
    );
    assert_eq!(s.get_stream(&id, "a1").await.unwrap(), None);
}

/// The first event is older than `max_age` by the sleep alone; the second is
/// read back long before it ages too (it has all of `max_age`, 2 s, for that).
async fn old_events_age_out(kind: &str) {
    let max_age = Duration::from_secs(2);
    let s = open(
        kind,
        LogBounds {
            max_events: 100,
            max_age,
        },
    )
    .await;
    let id = unique("sess");
    s.append(&id, "a", &[ev(1)]).await.unwrap();
    tokio::time::sleep(max_age + max_age / 4).await;
    s.append(&id, "a", &[ev(2)]).await.unwrap();
    let seqs: Vec<u64> = s
        .events_after(&id, "a", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [2]);
}

/// The old session is idle past the limit by the sleep alone; the fresh one
/// has all of the 2 s limit to reach the eviction before it would count as idle.
async fn idle_sessions_are_evicted(kind: &str) {
    let idle = Duration::from_secs(2);
    let s = open(kind, bounds()).await;
    let (old, fresh) = (unique("old"), unique("fresh"));
    s.create(&record(&old)).await.unwrap();
    tokio::time::sleep(idle + idle / 4).await;
    s.create(&record(&fresh)).await.unwrap();
    let gone = s.evict_idle(idle).await.unwrap();
    assert!(gone.contains(&old) && !gone.contains(&fresh), "{gone:?}");
    assert_eq!(s.get(&old).await.unwrap(), None);
    assert!(s.get(&fresh).await.unwrap().is_some());
    s.delete(&fresh).await.unwrap();
}

macro_rules! suite {
    ($($kind:ident),*) => {$(
        mod $kind {
            #[tokio::test]
            async fn sessions_round_trip() {
                super::sessions_round_trip(stringify!($kind)).await
            }
            #[tokio::test]
            async fn event_logs_are_bounded_and_replay_after_a_cursor() {
                super::event_logs_are_bounded_and_replay_after_a_cursor(stringify!($kind)).await
            }
            #[tokio::test]
            async fn old_events_age_out() {
                super::old_events_age_out(stringify!($kind)).await
            }
            #[tokio::test]
            async fn idle_sessions_are_evicted() {
                super::idle_sessions_are_evicted(stringify!($kind)).await
            }
        }
    )*};
}

suite!(memory, sqlite, redis);

#[test]
fn a_session_record_is_small() {
    let json = serde_json::to_string(&record("0123456789abcdef0123456789abcdef")).unwrap();
    // Measured: a typical client's record (capabilities and info of a real SDK).
    assert!(json.len() < 300, "{} bytes: {json}", json.len());
}

#[tokio::test]
async fn the_redis_bus_carries_messages_and_stream_events() {
    let s = open("redis", bounds()).await;
    let bus = s.bus().expect("redis has a bus");
    let mut inbox = bus.listen("replica-a");
    let msg = sluice_store::BusMessage::Cancel {
        session: "s1".into(),
        request_id: json!(5),
    };
    // The subscription is made asynchronously: retry the send until it lands.
    let mut got = None;
    for _ in 0..300 {
        bus.send(Some("replica-a"), &msg).await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), inbox.recv()).await {
            got = Some(m);
            break;
        }
    }
    assert_eq!(got, Some(msg));
    // A send says how many listeners got it: 1 here, 0 for a replica nobody hears.
    let answer = sluice_store::BusMessage::MrtrAnswer {
        corr: "c1".into(),
        line: r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into(),
        status: 200,
    };
    assert_eq!(bus.send(Some("replica-a"), &answer).await.unwrap(), 1);
    assert_eq!(inbox.recv().await, Some(answer.clone()));
    assert_eq!(bus.send(Some("replica-gone"), &answer).await.unwrap(), 0);

    let mut follow = bus.follow("s1", "x9").await.unwrap();
    bus.stream_event("s1", "x9", 3, Some("{\"a\":1}"))
        .await
        .unwrap();
    bus.stream_event("s1", "x9", 4, None).await.unwrap();
    assert_eq!(follow.recv().await, Some((3, Some("{\"a\":1}".into()))));
    assert_eq!(follow.recv().await, Some((4, None)));
}
