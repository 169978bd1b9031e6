//! `courier bench` end to end on a small load, on the embedded engine and on PostgreSQL: every
//! stage reports a throughput and the schemas it made on PostgreSQL are gone afterwards.

mod common;

use common::courier;
use serde_json::Value;

fn bench(extra: &[&str]) -> Value {
    let out = courier()
        .args([
            "bench",
            "--messages",
            "400",
            "--http-messages",
            "100",
            "--latency-secs",
            "1",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run courier bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench JSON")
}

fn assert_complete(report: &Value) {
    assert!(
        report["baseline_rows_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{report}"
    );
    for stage in ["in_process_batch_1", "in_process_batch_100", "http_single"] {
        assert!(
            report[stage]["msgs_per_sec"].as_f64().is_some_and(|r| r > 0.0),
            "{stage}: {report}"
        );
    }
    assert!(report["paced_latency"]["p99_ms"].as_f64().is_some(), "{report}");
}

#[test]
fn bench_on_sqlite_reports_every_stage() {
    let report = bench(&[]);
    assert_complete(&report);
    assert_eq!(report["paced_across"], "one node");
}

/// How many bench schemas the test database holds now.
fn bench_schemas(url: &str) -> i64 {
    courier_testkit::block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'courier_bench_%'")
            .fetch_one(&mut conn)
            .await
            .expect("count schemas")
    })
}

#[test]
fn bench_on_postgres_reports_every_stage_and_cleans_up() {
    let url = courier_testkit::postgres::url();
    // Compared with before rather than with zero: an earlier run that was killed may have left
    // its schemas; this one must not add any.
    let before = bench_schemas(&url);
    let report = bench(&["--database", &url]);
    assert_complete(&report);
    assert_eq!(report["paced_across"], "two nodes");
    assert_eq!(bench_schemas(&url), before, "bench schemas left behind");
}
