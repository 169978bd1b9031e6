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
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
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
fn usage_errors_exit_2_and_postgres_is_not_built_yet() {
    let out = courier().args(["send"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = courier()
        .args(["nack", "q", "id", "lease", "--defer", "--error", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = courier()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            "postgres://user:pw@localhost/db",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(last, "error: postgres engine not built yet (use sqlite://path)");
    assert!(!stderr.contains("pw@"), "the URL's password is never printed");
}
