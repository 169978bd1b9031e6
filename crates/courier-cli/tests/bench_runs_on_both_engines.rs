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

const STAGES: [&str; 3] = ["in_process_batch_1", "in_process_batch_100", "http_single"];

/// Every round measured every stage.
fn assert_complete(report: &Value, rounds: usize) {
    let measured = report["rounds"].as_array().expect("rounds");
    assert_eq!(measured.len(), rounds, "{report}");
    for round in measured {
        assert!(
            round["baseline_rows_per_sec"].as_f64().is_some_and(|r| r > 0.0),
            "{report}"
        );
        for stage in STAGES {
            assert!(
                round[stage]["msgs_per_sec"].as_f64().is_some_and(|r| r > 0.0),
                "{stage}: {report}"
            );
        }
        assert!(round["paced_latency"]["p99_ms"].as_f64().is_some(), "{report}");
    }
}

fn figure(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
fn bench_on_sqlite_reports_every_stage() {
    let report = bench(&[]);
    assert_complete(&report, 1);
    assert_eq!(report["paced_across"], "one node");
}

/// With several rounds each ratio pairs a stage with its own round's baseline, and the
/// summary's median lies within the rounds' range.
#[test]
fn bench_rounds_report_each_round_and_their_spread() {
    let report = bench(&["--rounds", "2"]);
    assert_complete(&report, 2);
    let rounds = report["rounds"].as_array().expect("rounds");
    for stage in STAGES {
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|r| figure(&r[stage]["msgs_per_sec"]) / figure(&r["baseline_rows_per_sec"]))
            .collect();
        let ratio = &report["summary"][stage]["ratio"];
        let (least, greatest) = (ratios[0].min(ratios[1]), ratios[0].max(ratios[1]));
        assert!(
            (figure(&ratio["min"]) - least).abs() < 1e-9,
            "{stage}: {ratio} vs {ratios:?}"
        );
        assert!(
            (figure(&ratio["max"]) - greatest).abs() < 1e-9,
            "{stage}: {ratio} vs {ratios:?}"
        );
        assert!(
            (figure(&ratio["median"]) - (least + greatest) / 2.0).abs() < 1e-9,
            "{stage}: {ratio}"
        );
    }
}

/// `--stages` runs the baseline and the stages named, and reports no others.
#[test]
fn bench_runs_only_the_stages_asked_for() {
    let report = bench(&["--stages", "batch100,http"]);
    let round = &report["rounds"][0];
    assert!(figure(&round["baseline_rows_per_sec"]) > 0.0, "{report}");
    for stage in ["in_process_batch_100", "http_single"] {
        assert!(figure(&round[stage]["msgs_per_sec"]) > 0.0, "{stage}: {report}");
        assert!(
            figure(&report["summary"][stage]["ratio"]["median"]) > 0.0,
            "{stage}: {report}"
        );
    }
    for left_out in ["in_process_batch_1", "paced_latency"] {
        assert!(round.get(left_out).is_none(), "{left_out} ran: {report}");
    }
    for left_out in ["in_process_batch_1", "paced_p50_ms", "paced_p99_ms"] {
        assert!(
            report["summary"].get(left_out).is_none(),
            "{left_out} summarized: {report}"
        );
    }
}

#[test]
fn bench_refuses_an_unknown_stage() {
    let out = courier()
        .args(["bench", "--stages", "batch100,warp"])
        .output()
        .expect("run courier bench");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warp") && stderr.contains("--stages"), "{stderr}");
}

#[test]
fn bench_refuses_zero_rounds() {
    let out = courier()
        .args(["bench", "--rounds", "0"])
        .output()
        .expect("run courier bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--rounds"), "{stderr}");
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
fn bench_on_postgres_reports_every_stage_of_every_round_and_cleans_up() {
    let url = courier_testkit::postgres::url();
    // Compared with before rather than with zero: an earlier run that was killed may have left
    // its schemas; this one must not add any.
    let before = bench_schemas(&url);
    let report = bench(&["--database", &url, "--rounds", "2"]);
    assert_complete(&report, 2);
    assert_eq!(report["paced_across"], "two nodes");
    assert_eq!(bench_schemas(&url), before, "bench schemas left behind");
}
