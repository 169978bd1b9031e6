//! Client failures print one readable line on stderr and exit 1; usage errors exit 2.

mod common;

use common::{courier, one_error_line, Server};

#[test]
fn a_bad_queue_name_is_refused_before_any_request() {
    // No server is running at this address: the name check must come first.
    let out = courier()
        .args(["--server", "http://127.0.0.1:9", "send", "../x", "hi"])
        .output()
        .expect("run");
    let line = one_error_line(&out, 1);
    assert!(line.starts_with("error: queue name \"../x\" is invalid"), "{line}");
    let out = courier().args(["stats", "Shop/Orders"]).output().expect("run");
    assert!(one_error_line(&out, 1).contains("invalid"));
}

#[test]
fn an_unreachable_server_is_named() {
    let free_port = courier_testkit::process::free_port();
    let url = format!("http://127.0.0.1:{free_port}");
    let out = courier().args(["--server", &url, "stats", "q"]).output().expect("run");
    let line = one_error_line(&out, 1);
    assert_eq!(line, format!("error: cannot reach server at {url}: connection refused"));
}

#[test]
fn server_errors_show_status_and_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"));
    let unknown = "01890000-0000-7000-8000-000000000000";
    let line = one_error_line(&server.run(&["ack", "q", unknown, unknown]), 1);
    assert!(
        line.starts_with("error: server returned 404 message_not_found: "),
        "{line}"
    );
    server.ok(&["send", "q", "x"]);
    let got = server.json(&["receive", "q"]);
    let id = got["messages"][0]["id"].as_str().expect("id");
    let line = one_error_line(&server.run(&["ack", "q", id, unknown]), 1);
    assert!(
        line.starts_with("error: server returned 409 lease_conflict: "),
        "{line}"
    );
    let line = one_error_line(&server.run(&["stats", "nothing-here"]), 1);
    assert!(
        line.starts_with("error: server returned 404 queue_not_found: "),
        "{line}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = courier().args(["send"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = courier()
        .args(["nack", "q", "id", "lease", "--defer", "--error", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// The last stderr line of a command that must fail with exit code 1.
fn failure_line(args: &[&str]) -> String {
    let out = courier().args(args).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr.lines().last().unwrap_or_default().to_owned()
}

#[test]
fn unreachable_or_misnamed_databases_fail_with_one_line_and_no_password() {
    let port = courier_testkit::process::free_port();
    let url = format!("postgres://user:pw@127.0.0.1:{port}/db");
    let line = failure_line(&["serve", "--listen", "127.0.0.1:0", "--database", &url]);
    assert!(
        line.starts_with(&format!(
            "error: cannot open PostgreSQL database user@127.0.0.1:{port}/db (schema courier)"
        )),
        "{line}"
    );
    assert!(!line.contains("pw"), "the URL's password is never printed: {line}");

    let line = failure_line(&["migrate", "--database", &url, "--schema", "No-Such"]);
    assert!(line.contains("schema \"No-Such\" is invalid"), "{line}");
    let line = failure_line(&["migrate", "--schema", "jobs"]);
    assert!(
        line.contains("--schema (COURIER_SCHEMA) applies only to postgres://"),
        "{line}"
    );
}
