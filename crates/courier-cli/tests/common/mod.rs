//! Runs the built `courier` binary: a `courier serve` child on a free port with a temp data
//! dir, and one-shot client commands with a clean environment.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_courier");

/// A `courier` command with no COURIER_* variables inherited from the developer's shell.
pub(crate) fn courier() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "COURIER_URL",
        "COURIER_AUTH_TOKEN",
        "COURIER_AUTH_TOKEN_FILE",
        "COURIER_DATA_DIR",
        "COURIER_DATABASE",
        "COURIER_SCHEMA",
        "COURIER_CONNECTIONS_MAX",
        "COURIER_ACQUIRE_TIMEOUT_MS",
        "COURIER_OPERATION_TIMEOUT_MS",
        "COURIER_LISTEN",
        "COURIER_PAYLOAD_MAX_BYTES",
        "COURIER_OUTBOX_DATABASE",
        "COURIER_OUTBOX_SCHEMA",
        "COURIER_RELAY_TO",
        "COURIER_RELAY_ID",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A running `courier serve`.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    pub(crate) log: PathBuf,
}

impl Server {
    /// Starts `courier serve --listen 127.0.0.1:0 --data-dir <data_dir>` and waits for its
    /// "listening" line.
    pub(crate) fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Like [`Server::start`], with more `serve` flags.
    pub(crate) fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        let log = data_dir.with_extension("log");
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir"];
        let dir = data_dir.to_string_lossy().into_owned();
        args.push(&dir);
        args.extend_from_slice(extra);
        let (child, line) = spawn_until_banner(&args, &log);
        let Some(url) = line.strip_prefix("courier listening on ") else {
            panic!(
                "serve did not start: {line:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Self {
            url: url.to_owned(),
            child,
            log,
        }
    }

    /// Starts `courier serve` on the test PostgreSQL in `schema`; `scratch` holds its log.
    pub(crate) fn start_postgres(scratch: &Path, schema: &str) -> Self {
        let url = courier_testkit::postgres::url();
        Self::start_with(scratch, &["--database", &url, "--schema", schema])
    }

    /// Sends SIGKILL and reaps the process: a crash, with no chance to clean up.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL courier serve");
        self.child.wait().expect("reap courier serve");
    }

    /// The server's log so far (its stderr).
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a client command against this server.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        courier()
            .arg("--server")
            .arg(&self.url)
            .args(args)
            .output()
            .expect("run courier")
    }

    /// Runs a client command that must succeed, returning its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "courier {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a client command with `--json` and parses its output.
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub(crate) fn terminate(mut self) -> Option<i32> {
        terminate(&mut self.child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `courier <args>` with stderr to `log` and waits for its first stdout line (the
/// banner a long-running command prints when ready); kills it and panics if there is none.
pub(crate) fn spawn_until_banner(args: &[&str], log: &Path) -> (Child, String) {
    let stderr = std::fs::File::create(log).expect("log file");
    let mut child = courier()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn courier");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read stdout");
    if line.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "courier {args:?} exited before it was ready; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    (child, line.trim().to_owned())
}

/// Sends SIGTERM to `child` and waits (at most 20 s) for it to exit; returns the exit code.
pub(crate) fn terminate(child: &mut Child) -> Option<i32> {
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "courier did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts a failed run printed exactly one line on stderr, and returns it.
pub(crate) fn one_error_line(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr:?}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr.trim_end().to_owned()
}

/// Polls `done` every 50 ms; fails the test naming `what` if it is not true within `timeout`.
pub(crate) async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
