//! SIGTERM makes `courier serve` stop accepting, finish, shut the engine down and exit 0;
//! a server restarted on the same data dir still has every acknowledged message.

mod common;

use common::Server;

#[test]
fn given_sent_messages_when_serve_gets_sigterm_should_exit_0_and_keep_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::start(&data);
    server.ok(&["send", "durable/q", "first"]);
    server.ok(&["send", "durable/q", "second"]);
    let log = server.log.clone();
    assert_eq!(
        server.terminate(),
        Some(0),
        "log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(data.join("courier.db").exists());

    let restarted = Server::start(&data);
    let got = restarted.json(&["receive", "durable/q", "-n", "10", "--ack"]);
    let payloads: Vec<_> = got["messages"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["payload"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(payloads, ["first", "second"]);
    assert_eq!(restarted.terminate(), Some(0));
}

#[test]
fn serve_honours_the_auth_token_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken\n").expect("write token");
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--auth-token-file", token_file.to_str().expect("utf8 path")],
    );
    let url = server.url.clone();

    let denied = common::courier()
        .args(["--server", &url, "queues"])
        .output()
        .expect("run");
    let line_out = common::one_error_line(&denied, 1);
    assert!(line_out.contains("401 unauthorized"), "{line_out}");
    let allowed = common::courier()
        .args(["--server", &url, "queues"])
        .env("COURIER_AUTH_TOKEN", "t0ken")
        .output()
        .expect("run");
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    assert_eq!(server.terminate(), Some(0));
}
