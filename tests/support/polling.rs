//! Shared by the gateway's and the identity crate's test support: ephemeral ports, polling
//! instead of sleeping, and reading one Prometheus series.

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Generous: CI runs these on a loaded 2-core machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// Value of the series named exactly `series` (labels included) in a Prometheus text body; 0 if
/// absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Established TCP connections to `port` on this machine (IPv4, from `/proc/net/tcp`): how a
/// test sees that the gateway has passed a request on to an upstream that is still answering.
pub fn connections_to(port: u16) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local_address, rem_address, st (01 = ESTABLISHED)
            fields.len() > 3 && fields[2].ends_with(&port) && fields[3] == "01"
        })
        .count()
}
