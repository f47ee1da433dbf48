//! Upstream pools: target selection, active health checks and passive ejection.
//!
//! A pool is compiled once and shared by every snapshot whose spec for it is unchanged, so its
//! health state and keep-alive connections survive reloads. Its active health check runs as a
//! task that holds only a `Weak` reference: when the last snapshot naming the pool is dropped, the
//! task ends by itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::HeaderName;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{discovery, Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;

pub mod settings;

use settings::{HealthCheckKind, HealthCheckSpec, TimeoutSpec};

/// What the consistent hash is computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    /// The header's value; requests without it fall back to the client IP.
    Header(HeaderName),
    /// A claim of the verified token; anonymous requests fall back to the client IP.
    Claim(String),
}

enum Selector {
    /// Pingora's balancer runs the health checks; the choice is made here, from `Pool::ring`.
    RoundRobin(LoadBalancer<RoundRobin>),
    ConsistentHash(LoadBalancer<Consistent>, HashKey),
}

/// One target and what selection needs to know about it, read without hashing anything:
/// Pingora's `select_with` hashes each candidate twice (its readiness map and its seen-set).
struct Target {
    addr: SocketAddr,
    backend: Backend,
    /// Copied from Pingora's health state after each health-check round, the only writer.
    healthy: AtomicBool,
    /// Milliseconds since `Pool::epoch` until which the target is skipped after a refused
    /// connection.
    ejected_until: AtomicU64,
}

/// Upstream TLS: always verified against `sni`, with an optional private CA bundle.
pub struct UpstreamTls {
    pub sni: String,
    pub ca: Option<Arc<CaType>>,
}

pub struct PoolParts {
    pub name: String,
    pub targets: Vec<(SocketAddr, usize)>,
    pub hash_key: Option<HashKey>,
    pub health_check: Option<HealthCheckSpec>,
    pub eject_for: Duration,
    pub timeouts: TimeoutSpec,
    pub tls: Option<UpstreamTls>,
    /// Identifies everything the pool was built from (spec and file contents), so a reload reuses
    /// the pool exactly when nothing about it changed.
    pub fingerprint: String,
}

pub struct Pool {
    pub name: Arc<str>,
    pub fingerprint: String,
    selector: Selector,
    targets: Box<[Target]>,
    /// Weighted round robin: each target's index `weight` times, walked by `next`.
    ring: Box<[u16]>,
    next: AtomicUsize,
    eject_for: Duration,
    epoch: Instant,
    timeouts: TimeoutSpec,
    tls: Option<UpstreamTls>,
    health_interval: Option<Duration>,
    health_started: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

impl Pool {
    pub fn build(parts: PoolParts) -> Result<Pool, String> {
        let targets: Box<[Target]> = parts
            .targets
            .iter()
            .map(|(addr, weight)| Target {
                addr: *addr,
                backend: Backend {
                    addr: PingoraAddr::Inet(*addr),
                    weight: *weight,
                    ext: Default::default(),
                },
                healthy: AtomicBool::new(false),
                ejected_until: AtomicU64::new(0),
            })
            .collect();
        let ring = ring(&parts.targets)?;
        let backends = targets.iter().map(|t| t.backend.clone()).collect();
        let mut backends = Backends::new(discovery::Static::new(backends));
        if let Some(spec) = &parts.health_check {
            backends.set_health_check(health_check(spec, parts.tls.as_ref()));
        }
        let selector = match parts.hash_key {
            None => Selector::RoundRobin(load_balancer(backends)?),
            Some(key) => Selector::ConsistentHash(load_balancer(backends)?, key),
        };
        let pool = Pool {
            name: parts.name.into(),
            fingerprint: parts.fingerprint,
            selector,
            targets,
            ring,
            next: AtomicUsize::new(0),
            eject_for: parts.eject_for,
            epoch: Instant::now(),
            timeouts: parts.timeouts,
            tls: parts.tls,
            health_interval: parts.health_check.map(|h| h.interval),
            health_started: AtomicBool::new(false),
        };
        pool.copy_health();
        Ok(pool)
    }

    pub fn hash_key(&self) -> Option<&HashKey> {
        match &self.selector {
            Selector::RoundRobin(_) => None,
            Selector::ConsistentHash(_, key) => Some(key),
        }
    }

    /// A healthy, non-ejected target, or `None` when every target is down.
    pub fn select(&self, key: &[u8]) -> Option<SocketAddr> {
        match &self.selector {
            Selector::RoundRobin(_) => {
                // Every slot once, from the next in turn: a target down passes its turn on.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..self.ring.len())
                    .map(|k| start.wrapping_add(k) % self.ring.len())
                    .map(|slot| &self.targets[usize::from(self.ring[slot])])
                    .find(|t| self.usable(t))
                    .map(|t| t.addr)
            }
            Selector::ConsistentHash(lb, _) => {
                let accept = |b: &Backend, healthy: bool| {
                    healthy && !self.target(b).is_some_and(|t| self.is_ejected(t))
                };
                lb.select_with(key, 256, accept)?.addr.as_inet().copied()
            }
        }
    }

    /// The peer to connect to, carrying this pool's timeouts and TLS settings.
    pub fn peer(&self, target: SocketAddr) -> HttpPeer {
        let (tls, sni) = match &self.tls {
            Some(t) => (true, t.sni.clone()),
            None => (false, String::new()),
        };
        let mut peer = HttpPeer::new(target, tls, sni);
        let options = &mut peer.options;
        options.connection_timeout = Some(self.timeouts.connect);
        options.read_timeout = Some(self.timeouts.read);
        options.write_timeout = Some(self.timeouts.write);
        options.idle_timeout = Some(self.timeouts.idle);
        if let Some(t) = &self.tls {
            options.ca = t.ca.clone();
        }
        peer
    }

    /// Skip `target` for the configured ejection time (a connection to it was refused).
    pub fn eject(&self, target: SocketAddr) {
        if self.eject_for.is_zero() {
            return;
        }
        let ms = self.now_ms() + self.eject_for.as_millis() as u64;
        for t in self.targets.iter().filter(|t| t.addr == target) {
            t.ejected_until.store(ms, Ordering::Relaxed);
        }
    }

    pub fn target_count(&self) -> usize {
        self.targets.len()
    }

    pub fn healthy_count(&self) -> usize {
        self.targets.iter().filter(|t| self.usable(t)).count()
    }

    /// Copies Pingora's health state (healthy and enabled) into the targets.
    fn copy_health(&self) {
        let backends = self.backends();
        for t in self.targets.iter() {
            t.healthy
                .store(backends.ready(&t.backend), Ordering::Relaxed);
        }
    }

    fn target(&self, backend: &Backend) -> Option<&Target> {
        self.targets.iter().find(|t| t.backend == *backend)
    }

    /// Start the active health check, once per pool, on the current runtime.
    pub fn start_health_checks(self: &Arc<Self>) {
        let Some(interval) = self.health_interval else {
            return;
        };
        if self.health_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(pool) = pool.upgrade() else {
                    break;
                };
                pool.backends().run_health_check(true).await;
                pool.copy_health();
            }
        });
    }

    fn backends(&self) -> &Backends {
        match &self.selector {
            Selector::RoundRobin(lb) => lb.backends(),
            Selector::ConsistentHash(lb, _) => lb.backends(),
        }
    }

    fn usable(&self, t: &Target) -> bool {
        t.healthy.load(Ordering::Relaxed) && !self.is_ejected(t)
    }

    /// The clock is read only for a target that has been ejected at some time.
    fn is_ejected(&self, t: &Target) -> bool {
        let until = t.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > self.now_ms()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    #[cfg(test)]
    pub fn for_tests() -> Arc<Pool> {
        Arc::new(
            Pool::build(PoolParts {
                name: "test".into(),
                targets: vec![("127.0.0.1:1".parse().unwrap(), 1)],
                hash_key: None,
                health_check: None,
                eject_for: Duration::from_secs(1),
                timeouts: TimeoutSpec::default(),
                tls: None,
                fingerprint: String::new(),
            })
            .unwrap(),
        )
    }
}

/// Each target's index, `weight` times over, as Pingora's weighted selection lays them out.
fn ring(targets: &[(SocketAddr, usize)]) -> Result<Box<[u16]>, String> {
    let mut ring = Vec::new();
    for (index, (_, weight)) in targets.iter().enumerate() {
        let index = u16::try_from(index).map_err(|_| "more than 65536 targets".to_string())?;
        ring.extend(std::iter::repeat_n(index, *weight));
    }
    if ring.is_empty() {
        return Err("the targets' weights add up to zero".into());
    }
    Ok(ring.into_boxed_slice())
}

fn load_balancer<S>(backends: Backends) -> Result<LoadBalancer<S>, String>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    use futures_util::FutureExt;
    let lb = LoadBalancer::from_backends(backends);
    // Static discovery never waits, so the first update completes on the spot.
    match lb.update().now_or_never() {
        Some(Ok(())) => Ok(lb),
        Some(Err(e)) => Err(format!("building the target list failed: {e}")),
        None => Err("building the target list did not complete".into()),
    }
}

fn health_check(
    spec: &HealthCheckSpec,
    tls: Option<&UpstreamTls>,
) -> Box<dyn HealthCheck + Send + Sync> {
    match spec.kind {
        HealthCheckKind::Tcp => {
            let mut check = match tls {
                Some(t) => TcpHealthCheck::new_tls(&t.sni),
                None => TcpHealthCheck::new(),
            };
            check.consecutive_success = spec.healthy_threshold;
            check.consecutive_failure = spec.unhealthy_threshold;
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            if let Some(t) = tls {
                check.peer_template.options.ca = t.ca.clone();
            }
            check
        }
        HealthCheckKind::Http => {
            let host = spec
                .host
                .clone()
                .or_else(|| tls.map(|t| t.sni.clone()))
                .unwrap_or_else(|| "localhost".into());
            let mut check = HttpHealthCheck::new(&host, tls.is_some());
            check.consecutive_success = spec.healthy_threshold;
            check.consecutive_failure = spec.unhealthy_threshold;
            let options = &mut check.peer_template.options;
            options.connection_timeout = Some(spec.timeout);
            options.read_timeout = Some(spec.timeout);
            if let Some(t) = tls {
                options.ca = t.ca.clone();
            }
            // The path was validated at compile time.
            if let Some(uri) = spec.path.as_ref().and_then(|p| p.parse::<http::Uri>().ok()) {
                check.req.set_uri(uri);
            }
            Box::new(check)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(targets: &[(&str, usize)]) -> Pool {
        Pool::build(PoolParts {
            name: "test".into(),
            targets: targets
                .iter()
                .map(|(addr, weight)| (addr.parse().unwrap(), *weight))
                .collect(),
            hash_key: None,
            health_check: None,
            eject_for: Duration::from_secs(60),
            timeouts: TimeoutSpec::default(),
            tls: None,
            fingerprint: String::new(),
        })
        .unwrap()
    }

    fn picks(pool: &Pool, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| pool.select(b"").map_or(0, |a| a.port()))
            .collect()
    }

    #[test]
    fn round_robin_follows_the_weights_and_skips_targets_that_are_down() {
        let pool = pool(&[("127.0.0.1:1", 3), ("127.0.0.1:2", 1)]);
        let first = picks(&pool, 8);
        assert_eq!(first.iter().filter(|p| **p == 1).count(), 6, "{first:?}");
        assert_eq!(first.iter().filter(|p| **p == 2).count(), 2, "{first:?}");

        pool.eject("127.0.0.1:1".parse().unwrap());
        assert_eq!(picks(&pool, 5), [2; 5]);
        assert_eq!(pool.healthy_count(), 1);

        pool.targets[1].healthy.store(false, Ordering::Relaxed);
        assert_eq!(pool.select(b""), None);
        assert_eq!(pool.healthy_count(), 0);
    }

    #[test]
    fn weights_must_add_up_to_something() {
        assert!(ring(&[("127.0.0.1:1".parse().unwrap(), 0)]).is_err());
    }
}
