//! Redis for the multi-instance tests: the shared server named by `REDIS_URL` (each
//! test on its own channel prefix, so tests never hear each other), Redis servers a
//! test owns (to kill and restart), and servers wired to Redis pub/sub.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use synckit::server::{Backends, ServerConfig};
use synckit::testing::pubsub::{PubSub, PubSubState, RedisPubSub, RedisSettings, RedisTarget};

use super::{start_with, TestServer};

/// `REDIS_URL`, checked to answer: a Redis test never passes by skipping.
pub fn redis_url() -> String {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_URL is not set: start Redis (redis-server) and export \
             REDIS_URL=redis://127.0.0.1:6379 to run the multi-instance tests"
        )
    });
    let client = ::redis::Client::open(url.as_str()).expect("REDIS_URL parses");
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("Redis at REDIS_URL={url} does not answer ({e}): start it"));
    let pong: String = ::redis::cmd("PING").query(&mut conn).expect("PING");
    assert_eq!(pong, "PONG");
    url
}

/// A channel prefix of this test's own.
pub fn test_prefix() -> String {
    format!("synckit-test-{}:", uuid::Uuid::new_v4())
}

/// Settings that notice failures and reconnect quickly (tests restart Redis).
pub fn fast_settings(url: &str) -> RedisSettings {
    let mut s = RedisSettings::new(RedisTarget::parse(url).expect("redis url"));
    s.ping_interval = Duration::from_millis(200);
    s.timeout = Duration::from_secs(1);
    s.backoff_min = Duration::from_millis(50);
    s.backoff_max = Duration::from_millis(300);
    s
}

pub fn pubsub(url: &str) -> Arc<RedisPubSub> {
    Arc::new(RedisPubSub::start(fast_settings(url)).expect("start Redis pub/sub"))
}

/// Run `probe` every 20 ms until it answers `Ok`; after `within`, panic with
/// `what` and the probe's last `Err` (what it saw).
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll until `cond` holds, or panic with `what` after `within`.
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    poll(within, what, || {
        let ok = cond();
        async move {
            if ok {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await
}

pub async fn wait_connected(p: &RedisPubSub) {
    eventually(Duration::from_secs(10), "Redis pub/sub to connect", || {
        p.state() == PubSubState::Connected
    })
    .await;
}

/// A plain connection to the Redis at `url`, for tests that look at keys and
/// channels directly.
pub async fn connection(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url)
        .expect("REDIS_URL parses")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers")
}

/// Subscribers Redis counts on `channel` (`PUBSUB NUMSUB`).
pub async fn numsub(url: &str, channel: &str) -> i64 {
    let mut conn = connection(url).await;
    let reply: Vec<::redis::Value> = ::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .expect("PUBSUB NUMSUB");
    match reply.get(1) {
        Some(::redis::Value::Int(n)) => *n,
        other => panic!("unexpected NUMSUB reply {other:?}"),
    }
}

/// Wait until exactly `n` connections subscribe `channel`.
pub async fn wait_numsub(url: &str, channel: &str, n: i64) {
    let what = format!("{n} subscribers of {channel}");
    poll(Duration::from_secs(5), &what, || async {
        match numsub(url, channel).await {
            got if got == n => Ok(()),
            got => Err(format!("{got} subscribers")),
        }
    })
    .await
}

/// Publish one raw message (a peer the test plays).
pub async fn publish_raw(url: &str, channel: &str, payload: &str) {
    let mut conn = connection(url).await;
    let _: i64 = ::redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .expect("PUBLISH");
}

/// One instance of a fleet: the server, its Redis handle, its admin address.
pub struct Instance {
    pub server: TestServer,
    pub pubsub: Arc<RedisPubSub>,
    pub admin: std::net::SocketAddr,
}

impl Instance {
    /// Shut down (drain) and return whether every write was persisted.
    pub async fn stop(self) -> bool {
        self.server.shutdown.cancel();
        self.server.done.await.expect("server task")
    }
}

/// Start a server on `storage` + memory awareness + Redis pub/sub at `url`, wait
/// for it to connect.
pub async fn start_instance(
    config: ServerConfig,
    url: &str,
    storage: Arc<dyn synckit::testing::storage::StorageAdapter>,
) -> Instance {
    let pubsub = pubsub(url);
    let backends = Backends {
        storage,
        awareness: Arc::new(synckit::testing::awareness::MemoryAwarenessStore::new(
            config.sync.awareness_timeout,
        )),
        pubsub: pubsub.clone(),
        postgres: None,
    };
    let (server, admin) = start_with(config, backends, true).await;
    wait_connected(&pubsub).await;
    Instance {
        server,
        pubsub,
        admin: admin.expect("admin listener"),
    }
}

/// A configuration for one instance of a test fleet.
pub fn fleet_config(prefix: &str) -> ServerConfig {
    let mut c = super::open_config();
    c.channel_prefix = prefix.to_owned();
    c.presence_interval = Duration::from_millis(200);
    c
}

/// The same configuration for another instance (its own instance id).
pub fn another(config: &ServerConfig) -> ServerConfig {
    let mut c = config.clone();
    c.sync.instance_id = uuid::Uuid::new_v4().to_string();
    c
}

/// A `redis-server` this test owns, on a free port, without persistence.
pub struct OwnedRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnedRedis {
    pub async fn start() -> OwnedRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut r = OwnedRedis { port, child: None };
        r.spawn().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install Redis to run these tests")
            });
        self.child = Some(child);
        let url = self.url();
        poll(Duration::from_secs(5), "redis-server to answer", || async {
            ::redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c))
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// SIGKILL: connections drop at once, nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for OwnedRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
