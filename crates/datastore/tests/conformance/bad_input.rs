//! Bad input is refused with an error that names it, and changes nothing: invalid keys,
//! oversize values, a database that cannot be reached, a schema from a newer Capstan.

use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_datastore::{
    DatastoreError, Engine, KeyRange, MAX_KEY_BYTES, MAX_VALUE_BYTES, Store, WriteOp, WriteOutcome,
};

use crate::database::TestDatabase;
use crate::support::applied;

conformance!(
    invalid_keys_are_refused_and_change_nothing,
    values_up_to_the_limit_are_stored_and_larger_ones_refused,
    an_unreachable_database_fails_to_open_naming_the_endpoint,
    a_schema_newer_than_the_binary_is_refused_with_upgrade_advice,
);

async fn invalid_keys_are_refused_and_change_nothing(db: &TestDatabase) {
    let store = db.open().await;
    let existing = applied(store.create("/valid/key", "v").await.unwrap());
    let too_long = format!("/{}", "k".repeat(MAX_KEY_BYTES));
    let invalid = [
        "",
        " ",
        "/has space",
        "/has\ttab",
        "/has\nnewline",
        "/has\u{0}nul",
        "/has\u{7f}del",
        "/non-ascii-\u{e9}",
        too_long.as_str(),
    ];

    for key in invalid {
        let ttl = Some(Duration::from_secs(60));
        let writes = [
            WriteOp::Create {
                key: key.into(),
                value: Bytes::from("x"),
                ttl,
            },
            WriteOp::Update {
                key: key.into(),
                value: Bytes::from("x"),
                expected_revision: existing,
                ttl: None,
            },
            WriteOp::Delete {
                key: key.into(),
                expected_revision: None,
            },
        ];
        for op in writes {
            let result = store.write(op.clone()).await.map(|c| c.outcome);
            assert!(
                matches!(result, Err(DatastoreError::InvalidKey { .. })),
                "{op:?}: {result:?}"
            );
        }
        let read = store.get(key).await;
        assert!(
            matches!(read, Err(DatastoreError::InvalidKey { .. })),
            "get {key:?}"
        );
        let read = store.get_at(key, existing).await;
        assert!(
            matches!(read, Err(DatastoreError::InvalidKey { .. })),
            "get_at {key:?}"
        );
    }
    match store.create("/has space", "x").await {
        Err(err @ DatastoreError::InvalidKey { .. }) => {
            let message = err.to_string();
            assert!(message.contains("/has space"), "names the key: {message}");
            assert!(message.contains("space"), "says what is wrong: {message}");
        }
        other => panic!("expected InvalidKey, got {other:?}"),
    }

    assert_eq!(store.current_revision().await.unwrap(), existing);
    assert_eq!(store.count(&KeyRange::prefix("")).await.unwrap().1, 1);

    // The limits are inclusive: the longest and the plainest valid keys are stored.
    let longest = format!("/{}", "k".repeat(MAX_KEY_BYTES - 1));
    for key in [longest.as_str(), "!", "~~"] {
        applied(store.create(key, "ok").await.unwrap());
        assert_eq!(store.get(key).await.unwrap().unwrap().key, key);
    }
}

async fn values_up_to_the_limit_are_stored_and_larger_ones_refused(db: &TestDatabase) {
    let store = db.open().await;
    let key = "/registry/configmaps/default/big";
    let largest = Bytes::from(vec![b'x'; MAX_VALUE_BYTES]);
    let created = applied(store.create(key, largest.clone()).await.unwrap());
    assert_eq!(store.get(key).await.unwrap().unwrap().value, largest);

    let oversize = Bytes::from(vec![b'y'; MAX_VALUE_BYTES + 1]);
    for result in [
        store
            .create("/registry/configmaps/default/huge", oversize.clone())
            .await,
        store.update(key, oversize.clone(), created).await,
    ] {
        match result {
            Err(DatastoreError::ValueTooLarge { size, limit, .. }) => {
                assert_eq!((size, limit), (MAX_VALUE_BYTES + 1, MAX_VALUE_BYTES));
            }
            other => panic!("expected ValueTooLarge, got {other:?}"),
        }
    }

    assert_eq!(store.current_revision().await.unwrap(), created);
    let stored = store.get(key).await.unwrap().unwrap();
    assert_eq!((stored.mod_revision, stored.value), (created, largest));
    assert_eq!(
        store
            .get("/registry/configmaps/default/huge")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.delete(key, Some(created)).await.unwrap(),
        WriteOutcome::Applied {
            revision: created + 1
        },
        "a refused write leaves the key as it was"
    );
}

async fn an_unreachable_database_fails_to_open_naming_the_endpoint(db: &TestDatabase) {
    let endpoint = db.unreachable_endpoint();
    let config = capstan_datastore::DatastoreConfig {
        acquire_timeout_ms: 2_000,
        ..capstan_datastore::DatastoreConfig::for_endpoint(endpoint.clone())
    };

    // The folder around a SQLite path is /tmp here: opening must not make it private.
    let shared = std::fs::metadata(std::env::temp_dir()).map(|m| m.permissions());
    let started = Instant::now();
    let opened = Store::open(&config, db.metrics()).await;
    let took = started.elapsed();
    assert_eq!(
        std::fs::metadata(std::env::temp_dir())
            .map(|m| m.permissions())
            .ok(),
        shared.ok(),
        "opening {endpoint} changed the mode of the shared temporary folder"
    );

    match opened {
        Err(err @ DatastoreError::Connect { .. }) => {
            let message = err.to_string();
            assert!(message.contains(&endpoint), "names {endpoint}: {message}");
        }
        Err(other) => panic!("expected a Connect error, got {other:?}"),
        Ok(store) => {
            store.close().await;
            panic!("opened a store on {endpoint}");
        }
    }
    assert!(took < Duration::from_secs(5), "failing took {took:?}");
}

async fn a_schema_newer_than_the_binary_is_refused_with_upgrade_advice(db: &TestDatabase) {
    let store = db.open().await;
    applied(store.create("/kept", "v").await.unwrap());
    store.close().await;
    // What a newer Capstan leaves behind: a migration this binary does not have. The
    // checksum is a SHA-384, as sqlx records (SQLite has no SHA function: random bytes).
    let checksum = match db.engine() {
        Engine::Postgres => "sha384('CREATE TABLE from_the_future ()'::bytea)",
        Engine::MySql => "UNHEX(SHA2('CREATE TABLE from_the_future ()', 384))",
        Engine::Sqlite => "randomblob(48)",
    };
    db.execute(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999999, 'from the future', TRUE, {checksum}, 1000)"
    ))
    .await;

    match Store::open(&db.config(), db.metrics()).await {
        Err(err @ DatastoreError::SchemaTooNew { .. }) => {
            let DatastoreError::SchemaTooNew { found, known, .. } = &err else {
                unreachable!()
            };
            assert_eq!(*found, 99_999_999);
            assert!(*known < *found);
            let message = err.to_string();
            assert!(message.contains("99999999"), "{message}");
            assert!(message.contains("upgrade"), "says to upgrade: {message}");
            assert!(
                message.contains(db.endpoint()),
                "names the endpoint: {message}"
            );
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(store) => {
            store.close().await;
            panic!("opened a database whose schema is newer than this binary");
        }
    }
}
