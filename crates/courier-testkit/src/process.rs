//! Processes for fault tests: a free loopback port, and a throwaway PostgreSQL cluster
//! (initdb + pg_ctl) that a test may stop and restart without touching a shared server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A PostgreSQL cluster of its own in a temp dir, on a free port, with trust auth.
///
/// PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres`
/// user and its commands run through `runuser`. Dropping it stops the server and deletes
/// the directory.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl ThrowawayPostgres {
    /// Creates and starts a fresh cluster. Panics with the tool's output if it cannot.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("courier-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("create the cluster dir");
        let this = Self {
            port: free_port(),
            as_postgres_user: running_as_root(),
            dir,
        };
        if this.as_postgres_user {
            run(Command::new("chown").arg("postgres:postgres").arg(&this.dir));
        }
        run(this
            .tool("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(this.data()));
        this.start_again();
        this
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str) -> Command {
        if self.as_postgres_user {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--", name]);
            cmd
        } else {
            Command::new(name)
        }
    }

    /// The connection URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the (stopped) server again on the same port and data, and waits until it
    /// accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        run(self
            .tool("pg_ctl")
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(self.data())
            .arg("start"));
        wait_for_port(self.port, Duration::from_secs(30));
    }

    /// Stops the server at once (`-m immediate`): clients see their connections drop.
    pub fn stop(&self) {
        run(self
            .tool("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop"));
    }

    /// Freezes the server (SIGSTOP to the postmaster and every backend): connections stay
    /// open but nothing answers, as when a database host hangs or a network path silently drops
    /// packets. [`thaw`](Self::thaw) resumes it.
    pub fn freeze(&self) {
        self.signal_all("-STOP").expect("freeze the throwaway server");
    }

    /// Resumes a server [`freeze`](Self::freeze) stopped.
    pub fn thaw(&self) {
        self.signal_all("-CONT").expect("thaw the throwaway server");
    }

    /// Sends `signal` to the postmaster (the first line of `postmaster.pid`) and its children.
    fn signal_all(&self, signal: &str) -> Result<(), String> {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid")).map_err(|e| e.to_string())?;
        let postmaster = pid_file.lines().next().ok_or("postmaster.pid is empty")?.trim();
        // The postmaster first: stopped, it forks no new backend that a signal to the children
        // sent before would have missed. pkill exits 1 when there is no child, which is no
        // failure here (2 and up are).
        let killed = Command::new("kill").args([signal, postmaster]).status();
        if !killed.as_ref().is_ok_and(|status| status.success()) {
            return Err(format!("kill {signal} {postmaster}: {killed:?}"));
        }
        let children = Command::new("pkill").args([signal, "-P", postmaster]).status();
        match children.as_ref().map(|status| status.code()) {
            Ok(Some(0 | 1)) => Ok(()),
            _ => Err(format!("pkill {signal} -P {postmaster}: {children:?}")),
        }
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        // A frozen server would not act on the stop signal.
        let _ = self.signal_all("-CONT");
        let _ = self
            .tool("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for_port(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {limit:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throwaway_cluster_stops_and_starts_again_on_the_same_port() {
        let pg = ThrowawayPostgres::start();
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_ok());
        pg.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err());
        pg.start_again();
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_ok());
        let dir = pg.dir().to_path_buf();
        drop(pg);
        assert!(!dir.exists());
    }
}
