//! The SQL contract (docs/specs/outbox-sql-contract.md), checked from the outside: rows INSERTed with plain SQL,
//! as an application in another language would, are published; rows that break the contract
//! are refused by the database; migrations are idempotent, refuse a newer schema, and go on
//! when another process creates the schema meanwhile.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_options, wait_until, Backend, Db, Running, TestPublisher};
use courier_core::SystemClock;
use courier_outbox::{MigrateError, StatusCounts};

on_both_databases!(
    plain_sql_insert_from_another_language_is_published,
    rows_breaking_the_contract_are_refused,
    migrations_are_idempotent_and_refuse_a_newer_schema,
);

async fn plain_sql_insert_from_another_language_is_published(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let publisher = TestPublisher::new();
    let relay = Running::start(db.relay(publisher.clone(), fast_options("contract")));
    // The least a row needs: a destination and a payload.
    db.execute(match backend {
        Backend::Postgres => "INSERT INTO {s}.outbox (destination, payload) VALUES ('orders', 'hello')",
        Backend::Sqlite => "INSERT INTO outbox (destination, payload) VALUES ('orders', X'68656c6c6f')",
    })
    .await;
    // Everything else an application may set, in one transaction with two rows of one key.
    let full = match backend {
        Backend::Postgres => {
            "BEGIN; \
             INSERT INTO {s}.outbox (destination, key, payload, headers, content_type) \
             VALUES ('invoices', 'customer-7', convert_to('{\"n\":1}', 'UTF8'), '{\"tenant\":\"acme\"}', 'application/json'); \
             INSERT INTO {s}.outbox (destination, key, payload) VALUES ('invoices', 'customer-7', '\\x02'); \
             COMMIT;"
        }
        Backend::Sqlite => {
            "BEGIN; \
             INSERT INTO outbox (destination, key, payload, headers, content_type) \
             VALUES ('invoices', 'customer-7', CAST('{\"n\":1}' AS BLOB), '{\"tenant\":\"acme\"}', 'application/json'); \
             INSERT INTO outbox (destination, key, payload) VALUES ('invoices', 'customer-7', X'02'); \
             COMMIT;"
        }
    };
    db.execute(full).await;
    wait_until("the plain rows", Duration::from_secs(10), || async {
        publisher.published().len() == 3
    })
    .await;
    relay.stop().await;

    let published = publisher.published();
    let plain = published
        .iter()
        .find(|m| m.destination == "orders")
        .expect("minimal row");
    assert_eq!(&plain.payload[..], b"hello");
    assert!(plain.key.is_none() && plain.headers.is_empty() && plain.content_type.is_none());
    assert!(!plain.id.is_nil());
    assert!(
        plain.created_at.as_millis() > 1_600_000_000_000,
        "created_at defaults to now in epoch ms"
    );
    let keyed: Vec<_> = published.iter().filter(|m| m.destination == "invoices").collect();
    assert_eq!(&keyed[0].payload[..], br#"{"n":1}"#, "one key's rows in insert order");
    assert_eq!(&keyed[1].payload[..], b"\x02");
    assert_eq!(keyed[0].headers.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(keyed[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(db.counts().await, StatusCounts::default());
}

async fn rows_breaking_the_contract_are_refused(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let refused = [
        "INSERT INTO {s}.outbox (destination, payload) VALUES ('', X'00')",
        "INSERT INTO {s}.outbox (destination, key, payload) VALUES ('d', '', X'00')",
        "INSERT INTO {s}.outbox (destination, payload, headers) VALUES ('d', X'00', '[1]')",
        "INSERT INTO {s}.outbox (destination, payload, status) VALUES ('d', X'00', 'sent')",
        "INSERT INTO {s}.outbox (payload) VALUES (X'00')",
    ];
    for sql in refused {
        let sql = match backend {
            Backend::Postgres => sql.replace("X'00'", "'\\x00'::bytea"),
            Backend::Sqlite => sql.to_owned(),
        };
        assert!(db.try_execute(&sql).await.is_err(), "should be refused: {sql}");
    }
    assert_eq!(db.counts().await, StatusCounts::default());
}

async fn migrations_are_idempotent_and_refuse_a_newer_schema(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let again = match &db {
        Db::Pg { pool, schema, .. } => courier_outbox::postgres::migrate(pool, &schema.name).await,
        Db::Lite { pool, .. } => courier_outbox::sqlite::migrate(pool).await,
    };
    assert_eq!(again.expect("second migrate"), 2);
    let newer = match &db {
        Db::Pg { pool, schema, .. } => {
            sqlx::raw_sql(&format!(
                "INSERT INTO {}.outbox_migrations (version) VALUES (99)",
                schema.name
            ))
            .execute(pool)
            .await
            .expect("fake newer version");
            courier_outbox::postgres::migrate(pool, &schema.name).await
        }
        Db::Lite { pool, .. } => {
            sqlx::raw_sql("INSERT INTO outbox_migrations (version, applied_at) VALUES (99, 0)")
                .execute(pool)
                .await
                .expect("fake newer version");
            courier_outbox::sqlite::migrate(pool).await
        }
    };
    assert!(
        matches!(newer, Err(MigrateError::TooNew { found: 99, known: 2 })),
        "{newer:?}"
    );
}

/// A relay started under a role that may only use the outbox tables (migrated beforehand by
/// the owner, with `courier migrate`) runs its start-up migration without DDL, and relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_role_may_not_create_starts_on_a_schema_migrated_beforehand() {
    let Db::Pg { schema, .. } = Db::open(Backend::Postgres, Arc::new(SystemClock)).await else {
        unreachable!("a PostgreSQL outbox");
    };
    let role = schema.app_role().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&role.url)
        .await
        .expect("connect as the application role");
    let version = courier_outbox::postgres::migrate(&pool, &schema.name).await;
    assert_eq!(version.expect("migrate as the application role"), 2);
    let outbox = courier_outbox::postgres::PgOutbox::new(pool.clone(), &schema.name).expect("schema name");
    let publisher = TestPublisher::new();
    let relay =
        courier_outbox::Relay::postgres(&outbox, publisher.clone(), fast_options("app-role")).expect("relay options");
    let relay = Running::start(relay);
    sqlx::raw_sql(&format!(
        "INSERT INTO {}.outbox (destination, payload) VALUES ('orders', 'hello')",
        schema.name
    ))
    .execute(&pool)
    .await
    .expect("an application insert");
    wait_until("the row is published", Duration::from_secs(10), || async {
        publisher.published().len() == 1
    })
    .await;
    relay.stop().await;
    pool.close().await;
}

/// The queue engine (same default schema name, a migration lock of its own) creates the
/// schema while the outbox migrates: the outbox's `CREATE SCHEMA` waits for it, and when it
/// commits the migration goes on in the schema as it is instead of failing on the duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_while_another_process_creates_the_schema_succeeds() {
    use sqlx::{Connection, Executor};
    let schema = courier_testkit::postgres::TestSchema::new();
    let url = courier_testkit::postgres::url();
    let mut other = sqlx::PgConnection::connect(&url).await.expect("connect");
    other.execute("BEGIN").await.expect("begin");
    other
        .execute(format!("CREATE SCHEMA {}", schema.name).as_str())
        .await
        .expect("create the schema, uncommitted");
    let app = format!("outbox_test_{}", schema.name);
    let separator = if url.contains('?') { '&' } else { '?' };
    let pool = sqlx::PgPool::connect(&format!("{url}{separator}application_name={app}"))
        .await
        .expect("pool");
    let migrating = tokio::spawn({
        let (pool, name) = (pool.clone(), schema.name.clone());
        async move { courier_outbox::postgres::migrate(&pool, &name).await }
    });
    courier_testkit::postgres::until_waiting_for_a_lock(&app, "the migration").await;
    other.execute("COMMIT").await.expect("commit the schema");
    let version = migrating.await.expect("migrate task");
    assert_eq!(version.expect("migrate in the schema the other made"), 2);
}
