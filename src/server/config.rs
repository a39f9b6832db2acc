//! The server's typed configuration, built once by the CLI and passed by value.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::JwtSettings;
use crate::pubsub::RedisTarget;
use crate::storage::PersistenceSettings;
use crate::sync::SyncSettings;

/// Default socket read buffer per WebSocket connection. SDK frames are small, so one
/// read of this size takes several; a larger frame makes the buffer grow for it. It
/// is allocated for every connection, idle or not (tungstenite's own default, 128
/// KiB, would be most of an idle connection's memory): BENCHMARKS.md has the
/// accounting of an idle connection.
pub(crate) const DEFAULT_WS_READ_BUFFER_BYTES: u32 = 1024;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) listen: SocketAddr,
    /// Admin listener (stats, metrics, rooms); `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    pub(crate) production: bool,
    pub sync: SyncSettings,
    pub jwt: JwtSettings,
    pub batch_delay: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Longest a single socket write may wait (a client that stopped reading); past
    /// it the connection is closed, so no session waits on its writes for longer.
    pub write_timeout: Duration,
    /// Broadcasts of others' writes a connection may have unsent before it is closed
    /// as too slow (1013).
    pub max_queued_broadcasts: usize,
    /// Longest a client may take to send an HTTP request head (slowloris bound).
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// IPv6 clients are counted per network of this prefix length for the per-IP
    /// limit (see [`super::registry::client_key`]).
    pub(crate) ipv6_prefix_len: u8,
    /// WebSocket frame/message limit; larger frames close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Socket read buffer per WebSocket connection (`SYNCKIT_WS_READ_BUFFER_BYTES`).
    pub ws_read_buffer_bytes: usize,
    pub(crate) shutdown_timeout: Duration,
    pub awareness_sweep_interval: Duration,
    pub(crate) cors_origins: Vec<String>,
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
    pub(crate) redis: Option<RedisTarget>,
    /// Period of `server_heartbeat` on the presence channel (several instances only).
    pub presence_interval: Duration,
    pub persistence: PersistenceSettings,
    /// Loaded documents kept in memory (LRU; documents in use are never unloaded).
    pub(crate) max_cached_documents: usize,
    /// Scheduled maintenance jobs (none in tests unless a test adds them).
    pub maintenance: Vec<crate::maintenance::JobConfig>,
}

/// What a frame may exceed the message limit by, by default: room for the binary
/// header and a message slightly over its limit, which is answered with an error
/// reply rather than a close.
const FRAME_SLACK_BYTES: usize = 64 * 1024;

/// The default frame limit for a message limit (`SYNCKIT_MAX_FRAME_BYTES` unset).
pub(crate) fn default_frame_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_add(FRAME_SLACK_BYTES)
}

// `ServerConfig::for_tests` is built from `serve`'s flag definitions, in
// src/cli/serve.rs, so that every default is defined once.
