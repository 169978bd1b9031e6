//! The relay's and operators' PostgreSQL statements use their indexes on a large table: no
//! sequential scan of the outbox in either custom or generic plans, on a plain connection with
//! the server's default settings, after ANALYZE of 22,000 rows over 2,000 keys.

mod common;

use std::sync::Arc;

use common::{pg_connection, Db};
use courier_core::SystemClock;
use sqlx::Executor;

/// Parameter types and sample arguments of each statement, by name.
fn signature(name: &str) -> (&'static str, &'static str) {
    match name {
        "claim" => (
            "bigint, bigint, text, bigint, bigint",
            "99999999999999, 500, 'r', 99999999999999, 1000",
        ),
        "renew" => ("bigint[], text, bigint", "'{1,2,3}', 'r', 1"),
        "publish_keep" => ("bigint[], text, bigint", "'{1,2,3}', 'r', 1"),
        "publish_delete" => ("bigint[], text", "'{1,2,3}', 'r'"),
        "retry" => (
            "bigint[], text, bigint, text[], int[], bigint[], text[]",
            "'{1,2}', 'r', 1, '{pending,failed}', '{1,1}', '{5,5}', '{e,e}'",
        ),
        "delete_published" => ("bigint, bigint", "1, 10000"),
        "list_failed" => ("bigint, bigint", "0, 100"),
        "retry_failed" => ("uuid[], bigint", "'{00000000-0000-0000-0000-000000000001}', 1"),
        other => panic!("no signature for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_statements_use_indexes_on_a_large_table() {
    let db = Db::postgres(Arc::new(SystemClock)).await;
    db.execute(
        "INSERT INTO {s}.outbox (destination, key, payload) \
         SELECT 'd', 'k' || (g % 2000), 'x' FROM generate_series(1, 20000) g; \
         INSERT INTO {s}.outbox (destination, payload) SELECT 'd', 'x' FROM generate_series(1, 2000); \
         UPDATE {s}.outbox SET status = 'published', published_at = seq WHERE seq % 10 = 0; \
         UPDATE {s}.outbox SET status = 'failed' WHERE seq % 97 = 0; \
         ANALYZE {s}.outbox;",
    )
    .await;
    let Db::Pg { schema, .. } = &db else {
        unreachable!("PostgreSQL only")
    };
    let statements = courier_outbox::plans::postgres(&schema.name).expect("schema");
    let mut conn = pg_connection().await;
    let mut offences = Vec::new();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        conn.execute(format!("SET plan_cache_mode = {mode}").as_str())
            .await
            .expect("mode");
        for (name, sql) in &statements {
            let (types, args) = signature(name);
            conn.execute(format!("PREPARE p_{name} ({types}) AS {sql}").as_str())
                .await
                .unwrap_or_else(|e| panic!("prepare {name}: {e}"));
            let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE p_{name} ({args})"))
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("explain {name}: {e}"));
            conn.execute(format!("DEALLOCATE p_{name}").as_str())
                .await
                .expect("deallocate");
            let plan = plan.join("\n");
            if plan.contains("Seq Scan") {
                offences.push(format!("{name} ({mode}):\n{plan}"));
            }
        }
    }
    assert!(offences.is_empty(), "sequential scans:\n{}", offences.join("\n\n"));
}
