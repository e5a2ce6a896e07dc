//! API keys against both stores: SQLite (a scratch file) and a real
//! PostgreSQL (`SLUICE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). One suite, run on each.

use sluice_auth::{ApiKeys, Denied, KeyError, KeyStore, ManageError, NewKey};
use std::time::Duration;

fn pg_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{n}", std::process::id())
}

const PEPPER: &[u8] = b"0123456789abcdef0123456789abcdef";

async fn sqlite() -> KeyStore {
    let path = std::env::temp_dir().join(format!("{}.db", unique("sluice-keys")));
    KeyStore::open(&path).unwrap()
}

async fn postgres() -> KeyStore {
    let s = KeyStore::open_postgres(&pg_url()).await.unwrap();
    assert_eq!(s.kind(), "postgres");
    s
}

/// The whole life of a key, on one store.
async fn suite(store: KeyStore) {
    let keys = ApiKeys::new(store.clone(), PEPPER);
    let name = unique("ci");
    let made = keys
        .create(NewKey {
            name: name.clone(),
            tenant: Some("acme".into()),
            scopes: vec!["mcp".into(), "admin".into()],
            expires_in: None,
        })
        .await
        .unwrap();
    let text = made.key.expose();
    assert!(
        !made.record.hash.contains(&text[4..20]),
        "the stored hash is not the key"
    );

    // Verified: the principal is the key id, its tenant and scopes.
    let p = keys.verify(&text).await.unwrap();
    assert_eq!(&*p.id, made.record.id);
    assert_eq!(p.tenant.as_ref().map(|t| &*t.0), Some("acme"));
    assert_eq!(p.scopes, ["mcp", "admin"]);

    // Listed without any secret.
    let listed = keys.list().await.unwrap();
    let row = listed.iter().find(|r| r.name == name).expect("listed");
    assert_eq!(row, &made.record);
    assert!(
        !format!("{row:?}").contains(&row.hash),
        "Debug hides the hash"
    );

    // Another pepper does not verify the same key.
    let other = ApiKeys::new(store.clone(), b"another pepper of at least 32 bytes");
    assert!(matches!(other.verify(&text).await, Err(KeyError::Invalid)));

    // A key of the right shape but unknown id.
    let stranger = sluice_auth::ApiKey::generate().unwrap().expose();
    assert!(matches!(
        keys.verify(&stranger).await,
        Err(KeyError::Invalid)
    ));

    // Rotation: both secrets work during the overlap, then only the new one.
    let rotated = keys
        .rotate(&made.record.id, Duration::from_millis(400))
        .await
        .unwrap();
    let new_text = rotated.key.expose();
    assert_ne!(new_text, text);
    assert_eq!(rotated.record.id, made.record.id);
    assert!(rotated.record.rotated_ms.is_some());
    keys.verify(&text)
        .await
        .expect("the old secret works during the overlap");
    keys.verify(&new_text).await.expect("the new secret works");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(matches!(keys.verify(&text).await, Err(KeyError::Invalid)));
    keys.verify(&new_text)
        .await
        .expect("the new secret still works");

    // Revocation holds at once, for both secrets, through any handle on the store.
    let revoked = keys.revoke(&made.record.id).await.unwrap();
    let first = revoked.revoked_ms.expect("revoked");
    assert!(matches!(
        other_handle(&store).verify(&new_text).await,
        Err(KeyError::Revoked { .. })
    ));
    assert_eq!(
        keys.revoke(&made.record.id).await.unwrap().revoked_ms,
        Some(first)
    );
    assert!(matches!(
        keys.rotate(&made.record.id, Duration::ZERO).await,
        Err(ManageError::Revoked(_))
    ));
    assert!(matches!(
        keys.revoke("nosuchkeyid00000").await,
        Err(ManageError::Unknown(_))
    ));

    // Expiry.
    let short = keys
        .create(NewKey {
            name: unique("short"),
            expires_in: Some(Duration::from_millis(300)),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let short_text = short.key.expose();
    keys.verify(&short_text).await.expect("valid before expiry");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        keys.verify(&short_text).await,
        Err(KeyError::Expired { .. })
    ));
}

fn other_handle(store: &KeyStore) -> ApiKeys {
    ApiKeys::new(store.clone(), PEPPER)
}

#[tokio::test]
async fn sqlite_keys_live_and_die() {
    let s = sqlite().await;
    assert_eq!(s.kind(), "sqlite");
    suite(s).await;
}

#[tokio::test]
async fn postgres_keys_live_and_die() {
    suite(postgres().await).await;
}

/// Two gateways on one PostgreSQL: a key revoked through one is refused by
/// the other on its next request.
#[tokio::test]
async fn postgres_revocation_is_seen_by_every_replica_at_once() {
    let a = ApiKeys::new(postgres().await, PEPPER);
    let b = ApiKeys::new(postgres().await, PEPPER);
    let made = a
        .create(NewKey {
            name: unique("shared"),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let text = made.key.expose();
    b.verify(&text).await.expect("the other replica accepts it");
    a.revoke(&made.record.id).await.unwrap();
    assert!(matches!(
        b.verify(&text).await,
        Err(KeyError::Revoked { .. })
    ));
}

#[tokio::test]
async fn postgres_unreachable_is_unavailable_without_the_password() {
    let s = KeyStore::open_postgres("postgres://sluice:hunter2@127.0.0.1:1/keys")
        .await
        .unwrap();
    let keys = ApiKeys::new(s, PEPPER);
    let text = sluice_auth::ApiKey::generate().unwrap().expose();
    let e = keys.verify(&text).await.unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with("the key store (postgres) is unavailable"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(Denied::Key(e).status(), 503);
}

#[tokio::test]
async fn required_scopes_are_checked_after_the_key() {
    let keys = ApiKeys::new(sqlite().await, PEPPER);
    let auth = sluice_auth::Authenticator::new(
        Some(keys.clone()),
        vec!["mcp".into()],
        "http://127.0.0.1:8080/mcp",
    );
    let without = keys
        .create(NewKey {
            name: "a".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let with = keys
        .create(NewKey {
            name: "b".into(),
            scopes: vec!["mcp".into()],
            ..NewKey::default()
        })
        .await
        .unwrap();
    let header = |k: &str| format!("Bearer {k}");
    let h = header(&without.key.expose());
    match auth.authenticate([h.as_bytes()].into_iter()).await {
        Err(Denied::Scope { missing }) => assert_eq!(missing, ["mcp"]),
        other => panic!("{other:?}"),
    }
    let h = header(&with.key.expose());
    assert!(auth.authenticate([h.as_bytes()].into_iter()).await.is_ok());
    assert!(matches!(
        auth.authenticate(std::iter::empty()).await,
        Err(Denied::Missing)
    ));
    let basic = b"Basic dXNlcjpwYXNz";
    assert!(matches!(
        auth.authenticate([&basic[..]].into_iter()).await,
        Err(Denied::BadHeader(_))
    ));
    let two = h.as_bytes();
    assert!(matches!(
        auth.authenticate([two, two].into_iter()).await,
        Err(Denied::BadHeader(_))
    ));
}

/// PostgreSQL ending the store's connections (a restart, an administrator)
/// costs no verification: the next lookup makes its connection again.
#[tokio::test]
async fn postgres_lost_connections_are_made_again() {
    let app = unique("sluice-keys-test");
    let base = pg_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = KeyStore::open_postgres(&format!("{base}{sep}application_name={app}"))
        .await
        .unwrap();
    let keys = ApiKeys::new(store, PEPPER);
    let made = keys
        .create(NewKey {
            name: unique("reconnect"),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let text = made.key.expose();
    let (admin, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for round in 0..6 {
        let ended = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        assert!(!ended.is_empty(), "the store holds connections");
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Every connection of the store is used in turn: verify more times than there are.
        for _ in 0..8 {
            keys.verify(&text)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
}
