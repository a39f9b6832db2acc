//! The server's typed configuration, built once by the CLI and passed by value.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::JwtSettings;
use crate::pubsub::RedisTarget;
use crate::storage::PersistenceSettings;
use crate::sync::SyncSettings;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Admin listener (stats, metrics, rooms); `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    pub production: bool,
    pub sync: SyncSettings,
    pub jwt: JwtSettings,
    pub batch_delay: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Longest a single socket write may wait (a client that stopped reading); past
    /// it the connection is closed, so no session waits on its writes for longer.
    pub write_timeout: Duration,
    /// Longest a client may take to send an HTTP request head (slowloris bound).
    pub header_read_timeout: Duration,
    pub auth_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// IPv6 clients are counted per network of this prefix length for the per-IP
    /// limit (see [`super::registry::client_key`]).
    pub ipv6_prefix_len: u8,
    /// WebSocket frame/message limit; larger frames close the connection with 1009.
    pub max_frame_bytes: usize,
    pub shutdown_timeout: Duration,
    pub awareness_sweep_interval: Duration,
    pub cors_origins: Vec<String>,
    /// Trust `X-Forwarded-For` / `X-Real-IP` for the client IP (behind a proxy), and
    /// only from these networks (see [`super::proxy`]).
    pub trust_proxy_headers: bool,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve the admin listener's reads without a credential (loopback-only hosts).
    pub admin_reads_open: bool,
    /// `Host` names the admin listener answers besides loopback and its own address.
    pub admin_allowed_hosts: Vec<String>,
    pub demo_login: bool,
    pub test_mode: bool,
    pub health_list_documents: bool,
    /// Also serve `/stats`, `/metrics` and `/rooms` on the public listener.
    pub public_stats: bool,
    pub channel_prefix: String,
    /// Redis pub/sub between instances (`REDIS_URL`); `None` = single instance. The
    /// password is redacted in `Debug`.
    pub redis: Option<RedisTarget>,
    /// Period of `server_heartbeat` on the presence channel (several instances only).
    pub presence_interval: Duration,
    pub persistence: PersistenceSettings,
    /// Loaded documents kept in memory (LRU; documents in use are never unloaded).
    pub max_cached_documents: usize,
    /// Scheduled maintenance jobs (none in tests unless a test adds them).
    pub maintenance: Vec<crate::maintenance::JobConfig>,
}

/// What a frame may exceed the message limit by, by default: room for the binary
/// header and a message slightly over its limit, which is answered with an error
/// reply rather than a close.
pub const FRAME_SLACK_BYTES: usize = 64 * 1024;

/// The default frame limit for a message limit (`SYNCKIT_MAX_FRAME_BYTES` unset).
pub fn default_frame_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_add(FRAME_SLACK_BYTES)
}

impl ServerConfig {
    /// A configuration for tests and embedding: loopback, auth as given, defaults
    /// elsewhere.
    pub fn for_tests(auth_required: bool) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: None,
            production: false,
            sync: SyncSettings {
                auth_required,
                max_message_bytes: 2_000_000,
                max_text_message_bytes: crate::text::DEFAULT_MAX_TEXT_MESSAGE_BYTES,
                max_messages_per_minute: 1200,
                playground_access_filter: false,
                relay_crdt_ops: false,
                instance_id: uuid::Uuid::new_v4().to_string(),
                awareness_timeout: Duration::from_secs(30),
                limits: crate::sync::admission::Limits::default(),
            },
            jwt: JwtSettings {
                secret: "test-secret-for-synckit-tests-0123456789".into(),
                issuer: None,
                audience: None,
                access_ttl: Duration::from_secs(24 * 3600),
                refresh_ttl: Duration::from_secs(7 * 24 * 3600),
                api_keys: Vec::new(),
            },
            batch_delay: Duration::from_millis(50),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_ip: 50,
            ipv6_prefix_len: 64,
            max_frame_bytes: default_frame_limit(crate::text::DEFAULT_MAX_TEXT_MESSAGE_BYTES),
            shutdown_timeout: Duration::from_secs(10),
            awareness_sweep_interval: Duration::from_secs(5),
            cors_origins: vec!["*".into()],
            // Tests stand in for clients behind a proxy on loopback.
            trust_proxy_headers: true,
            trusted_proxies: super::proxy::loopback_networks(),
            // Most tests read /stats without a credential; the admin-listener tests
            // close this again (the serve default is closed).
            admin_reads_open: true,
            admin_allowed_hosts: Vec::new(),
            demo_login: false,
            test_mode: false,
            health_list_documents: false,
            public_stats: false,
            channel_prefix: "synckit:".into(),
            redis: None,
            presence_interval: Duration::from_secs(10),
            persistence: PersistenceSettings::default(),
            max_cached_documents: 10_000,
            maintenance: Vec::new(),
        }
    }
}
