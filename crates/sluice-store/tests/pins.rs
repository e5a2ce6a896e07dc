//! The pins, against both backends: SQLite (a scratch file) and a real
//! PostgreSQL (`SLUICE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; `scripts/test.sh` starts it).
//! Every run uses server keys and names of its own, so runs (and the tests of
//! one run) share the database without meeting, and removes its rows after.

use sluice_store::{PinStatus, PinStore};

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

fn pg_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Opens the pins in PostgreSQL; fails the test if it does not answer.
async fn postgres(url: &str) -> PinStore {
    let p = PinStore::open_postgres(url).await.unwrap();
    p.ping().await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {} (start it, or point SLUICE_TEST_POSTGRES_URL at one): {e}",
            p.location()
        )
    });
    p
}

/// A direct connection to the test database, for what the store has no call
/// for: removing a test's rows, ending a store's connection.
async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {}: {e}", pg_url()));
    tokio::spawn(conn);
    client
}

async fn forget(server: &str) {
    let c = admin().await;
    for table in ["pins", "pending"] {
        c.execute(
            &format!("DELETE FROM {table} WHERE server = $1"),
            &[&server],
        )
        .await
        .unwrap();
    }
}

/// The shared body: trust on first use, then a change waits for approval.
async fn trust_on_first_use_then_changes_wait_for_approval(p: &PinStore) -> String {
    let (k, srv) = (unique("key"), unique("srv"));
    let mine = |rows: Vec<sluice_store::PinRow>| -> Vec<sluice_store::PinRow> {
        rows.into_iter().filter(|r| r.server == srv).collect()
    };
    assert_eq!(
        p.check(&k, &srv, "add", "f1", "{\"d\":1}").await.unwrap(),
        PinStatus::New
    );
    assert_eq!(
        p.check(&k, &srv, "add", "f1", "{\"d\":1}").await.unwrap(),
        PinStatus::Same
    );
    assert_eq!(
        p.check(&k, &srv, "sub", "g1", "{\"s\":1}").await.unwrap(),
        PinStatus::New
    );
    assert_eq!(
        p.check(&k, &srv, "add", "f2", "{\"d\":2}").await.unwrap(),
        PinStatus::Changed {
            pinned: "{\"d\":1}".into()
        }
    );
    // Seen again, changed again: one pending change, the latest.
    assert_eq!(
        p.check(&k, &srv, "add", "f3", "{\"d\":3}").await.unwrap(),
        PinStatus::Changed {
            pinned: "{\"d\":1}".into()
        }
    );
    assert_eq!(
        p.check(&k, &srv, "add", "f2", "{\"d\":2}").await.unwrap(),
        PinStatus::Changed {
            pinned: "{\"d\":1}".into()
        }
    );
    let rows = mine(p.list().await.unwrap());
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].item.as_str(), rows[0].fingerprint.as_str()),
        ("add", "f1")
    );
    assert_eq!(rows[0].pending.as_deref(), Some("f2"));
    assert_eq!(
        (rows[1].item.as_str(), rows[1].pending.as_deref()),
        ("sub", None)
    );
    assert!(rows[0].since_ms > 0);
    assert_eq!(
        p.pending(&srv, "add").await.unwrap(),
        Some(("{\"d\":1}".into(), "{\"d\":2}".into()))
    );
    assert_eq!(p.pending(&srv, "sub").await.unwrap(), None);
    assert_eq!(p.approve(&srv, Some("sub")).await.unwrap(), 0);
    assert_eq!(p.approve(&unique("other"), None).await.unwrap(), 0);
    assert_eq!(p.approve(&srv, Some("add")).await.unwrap(), 1);
    assert_eq!(
        p.check(&k, &srv, "add", "f2", "{\"d\":2}").await.unwrap(),
        PinStatus::Same
    );
    let rows = mine(p.list().await.unwrap());
    assert_eq!(
        (rows[0].fingerprint.as_str(), rows[0].pending.as_deref()),
        ("f2", None)
    );
    assert_eq!(p.pending(&srv, "add").await.unwrap(), None);

    // A change that goes back to the pin is no longer pending.
    assert!(matches!(
        p.check(&k, &srv, "sub", "g2", "{\"s\":2}").await.unwrap(),
        PinStatus::Changed { .. }
    ));
    assert_eq!(
        p.check(&k, &srv, "sub", "g1", "{\"s\":1}").await.unwrap(),
        PinStatus::Same
    );
    assert_eq!(p.pending(&srv, "sub").await.unwrap(), None);

    // Approving every change of a server at once; another server key under
    // the same name (its command changed) is pinned on its own.
    let k2 = unique("key2");
    assert_eq!(
        p.check(&k2, &srv, "add", "h1", "{\"h\":1}").await.unwrap(),
        PinStatus::New
    );
    for (key, f) in [(&k, "f9"), (&k2, "h9")] {
        assert!(matches!(
            p.check(key, &srv, "add", f, "{}").await.unwrap(),
            PinStatus::Changed { .. }
        ));
    }
    assert_eq!(p.approve(&srv, None).await.unwrap(), 2);
    assert_eq!(
        p.check(&k2, &srv, "add", "h9", "{}").await.unwrap(),
        PinStatus::Same
    );
    assert_eq!(mine(p.list().await.unwrap()).len(), 3);
    srv
}

#[tokio::test]
async fn sqlite_trust_on_first_use_then_changes_wait_for_approval() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("sluice-pins")));
    let p = PinStore::open(&path).unwrap();
    assert_eq!(p.kind(), "sqlite");
    p.ping().await.unwrap();
    trust_on_first_use_then_changes_wait_for_approval(&p).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn postgres_trust_on_first_use_then_changes_wait_for_approval() {
    let p = postgres(&pg_url()).await;
    assert_eq!(p.kind(), "postgres");
    let srv = trust_on_first_use_then_changes_wait_for_approval(&p).await;
    forget(&srv).await;
}

#[tokio::test]
async fn from_config_picks_the_backend() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("sluice-pins-cfg")));
    let mut cfg = sluice_config::Config::parse("", &|_| None).unwrap().defence;
    cfg.pins_path = path.clone();
    assert_eq!(PinStore::from_config(&cfg).await.unwrap().kind(), "sqlite");
    cfg.pins_url = Some(sluice_config::Secret(pg_url()));
    let p = PinStore::from_config(&cfg).await.unwrap();
    assert_eq!(p.kind(), "postgres");
    p.ping().await.unwrap();
    let _ = std::fs::remove_file(path);
}

/// Two replicas (two stores, two connections) see the same new tool at the
/// same moment: exactly one pins it, the other finds that pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_pinning_the_same_item_at_once_agree() {
    let url = pg_url();
    // Opened together: creating the tables at once must not fail either.
    let (a, b) = tokio::join!(postgres(&url), postgres(&url));
    let (k, srv) = (unique("key"), unique("srv"));
    for n in 0..25 {
        let item = format!("tool{n}");
        let (x, y) = tokio::join!(
            a.check(&k, &srv, &item, "f", "{}"),
            b.check(&k, &srv, &item, "f", "{}")
        );
        let mut got = [x.unwrap(), y.unwrap()];
        got.sort_by_key(|s| matches!(s, PinStatus::Same));
        assert_eq!(got, [PinStatus::New, PinStatus::Same], "{item}");
    }
    // Different definitions at once: one is pinned, the other waits.
    let (x, y) = tokio::join!(
        a.check(&k, &srv, "racy", "fa", "{\"a\":1}"),
        b.check(&k, &srv, "racy", "fb", "{\"b\":1}")
    );
    let got = [x.unwrap(), y.unwrap()];
    assert_eq!(
        got.iter().filter(|s| **s == PinStatus::New).count(),
        1,
        "{got:?}"
    );
    assert!(
        got.iter().any(|s| matches!(s, PinStatus::Changed { .. })),
        "{got:?}"
    );
    assert_eq!(a.approve(&srv, Some("racy")).await.unwrap(), 1);
    forget(&srv).await;
}

/// A lost connection (PostgreSQL restarted, or the session ended) is made
/// again by the next call, which succeeds.
#[tokio::test]
async fn postgres_connection_lost_is_made_again() {
    let app = unique("sluice-test");
    let base = pg_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let p = postgres(&format!("{base}{sep}application_name={app}")).await;
    let (k, srv) = (unique("key"), unique("srv"));
    assert_eq!(
        p.check(&k, &srv, "a", "f", "{}").await.unwrap(),
        PinStatus::New
    );

    let db = admin().await;
    // The next call may come before or after the store sees its connection
    // closed: both must work, whatever the timing of each round.
    for round in 0..10 {
        let ended = db
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        assert!(!ended.is_empty(), "the store holds a connection");
        if round % 2 == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            p.check(&k, &srv, "a", "f", "{}")
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}")),
            PinStatus::Same
        );
    }
    forget(&srv).await;
}

/// Nothing listening: open succeeds, every call says why, promptly. "Promptly"
/// is read from the reason, not a clock: a refused connection says "cannot
/// connect", one that waited out the 5 s connect timeout says "timed out".
#[tokio::test]
async fn postgres_unreachable_is_unavailable_with_the_reason() {
    let p = PinStore::open_postgres("postgres://sluice:hunter2@127.0.0.1:1/pins")
        .await
        .unwrap();
    let e = p.check("k", "s", "i", "f", "{}").await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("the pin store (postgres) is unavailable"),
        "{text}"
    );
    assert!(
        text.contains("cannot connect to postgres://sluice:***@127.0.0.1:1/pins"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("timed out"), "{text}");
    let listed = p.list().await.unwrap_err().to_string();
    assert!(
        listed.contains("cannot connect") && !listed.contains("timed out"),
        "{listed}"
    );
    let e = PinStore::open_postgres("postgres://u:hunter2@db:notaport/pins")
        .await
        .err()
        .expect("a malformed URL is an error");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
