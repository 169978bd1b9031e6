//! Network helpers for tests of clients of real services: a port nothing listens on, a TCP
//! proxy a test can cut to play a server going away, and the check that a publish failed fast.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use courier_core::PublishError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Asserts that every result is `Unavailable` and came back within `limit` of `started`.
pub fn assert_all_unavailable_within(results: &[Result<(), PublishError>], started: Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(took < limit, "took {took:?}, more than {limit:?}");
    assert!(
        results.iter().all(|r| matches!(r, Err(PublishError::Unavailable(_)))),
        "{results:?}"
    );
}

/// A port nothing listens on.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Forwards connections on `addr` to `upstream` until stopped; stopping closes every
/// forwarded connection, as a server going away would. [`Proxy::blackhole`] plays the other
/// way a server goes away: its connections stay open and silent.
pub struct Proxy {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    /// Bumped by [`Proxy::blackhole`]; a connection made before the bump goes silent.
    generation: watch::Sender<u64>,
}

impl Proxy {
    /// Listens on `addr` (port 0 for any) and forwards to `upstream` (`host:port`).
    pub async fn start(addr: SocketAddr, upstream: String) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (generation, watching) = watch::channel(0_u64);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let mut watching = watching.clone();
                let born = *watching.borrow_and_update();
                connections.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = async {
                            // A proxy dropped without `stop` keeps forwarding.
                            if watching.wait_for(|now| *now > born).await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        } => {
                            // Nothing is forwarded any more, and nothing is closed: both ends
                            // wait for answers that never come, until the proxy stops.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        Self { addr, task, generation }
    }

    /// Makes every connection forwarded so far go silent (open, but nothing passes either
    /// way), as with a database host that hangs or a network path that drops its packets;
    /// connections made afterwards are forwarded as before (a failover to a healthy server).
    pub fn blackhole(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Stops listening and drops every forwarded connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
