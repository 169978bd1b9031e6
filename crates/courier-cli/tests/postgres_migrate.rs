//! `courier migrate` on PostgreSQL, the database chosen by flag or by `COURIER_DATABASE` and
//! `COURIER_SCHEMA` (the same arguments `courier serve` takes): it creates the schema at this
//! build's version, and running it again changes nothing.

mod common;

use std::process::Command;

use common::courier;
use courier_testkit::postgres::{url, TestSchema};

/// Runs `cmd`, which must succeed, and returns its one line of output.
fn one_line(cmd: &mut Command) -> String {
    let output = cmd.output().expect("run courier migrate");
    assert!(
        output.status.success(),
        "courier migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The version recorded in `schema` and whether the queue's table is there.
async fn recorded(schema: &TestSchema) -> (i64, bool) {
    let mut conn = schema.connect().await;
    sqlx::query_as("SELECT (SELECT max(version) FROM courier_migrations), to_regclass('messages') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .expect("read the migrated schema")
}

#[tokio::test]
async fn migrate_creates_the_schema_chosen_by_flag_or_environment() {
    let (by_flag, by_env) = (TestSchema::new(), TestSchema::new());
    let flagged = || {
        let mut cmd = courier();
        cmd.args(["migrate", "--database", &url(), "--schema", &by_flag.name]);
        cmd
    };
    let from_env = || {
        let mut cmd = courier();
        cmd.arg("migrate")
            .env("COURIER_DATABASE", url())
            .env("COURIER_SCHEMA", &by_env.name);
        cmd
    };
    for (schema, line) in [
        (&by_flag, one_line(&mut flagged())),
        (&by_env, one_line(&mut from_env())),
    ] {
        let (version, has_messages) = recorded(schema).await;
        assert!(has_messages, "{} has no messages table", schema.name);
        assert!(
            line.contains(&format!("(schema {})", schema.name)) && line.ends_with(&format!("schema version {version}")),
            "{line}"
        );
    }
    // Again: nothing to do, same version.
    let again = one_line(&mut from_env());
    assert!(
        again.ends_with(&format!("schema version {}", recorded(&by_env).await.0)),
        "{again}"
    );
}
