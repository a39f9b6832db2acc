//! `synckit serve`: every setting of docs/operations.md §4.4 that applies, as a flag with
//! its env var (TS names first; aliases noted in the help and resolved here).

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::database::DatabaseArgs;
use super::duration::{parse_bool, parse_duration};
use crate::auth::jwt::{DEVELOPMENT_SECRET, MIN_SECRET_LEN};
use crate::auth::JwtSettings;
use crate::awareness::{
    AwarenessStore, BoundedAwarenessStore, MemoryAwarenessStore, PostgresAwarenessStore,
    RedisAwarenessStore,
};
use crate::exit::Failure;
use crate::pubsub::{PubSub, RedisPubSub, RedisSettings, RedisTarget};
use crate::server::{Backends, Server, ServerConfig};
use crate::storage::{PersistenceSettings, PostgresSettings, PostgresStorage, SyncStore};
use crate::sync::admission::{Limits, MAX_JSON_DEPTH_SETTING};
use crate::sync::SyncSettings;

/// Where awareness (presence) lives (`SYNCKIT_AWARENESS_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AwarenessStoreKind {
    // Plain comments: variant docs would turn every help into the long layout.
    // This instance alone, swept by its own sweeper.
    Memory,
    // Shared through PostgreSQL (needs DATABASE_URL).
    Postgres,
    // Shared through Redis (needs REDIS_URL).
    Redis,
}

impl AwarenessStoreKind {
    /// Whether the store is shared by the fleet (pruned by the scheduler) rather
    /// than this instance's own.
    pub(crate) fn is_shared(self) -> bool {
        self != AwarenessStoreKind::Memory
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to bind the public listener to.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub(crate) host: String,
    /// Port of the public listener (WebSocket on /ws and /, health, auth). 0 picks a free port.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub(crate) port: u16,
    /// C#-style bind override, e.g. ws://0.0.0.0:8080/ws (wins over HOST/PORT).
    #[arg(long, env = "SYNCKIT_SERVER_URL")]
    server_url: Option<String>,
    /// Admin listener for /stats, /metrics, /rooms (document ids and counters). Keep it
    /// on loopback; "off" disables it.
    #[arg(long, env = "SYNCKIT_ADMIN_LISTEN", default_value = "127.0.0.1:9091")]
    pub(crate) admin_listen: String,
    /// Environment: "production" requires an explicit strong JWT_SECRET. Aliases:
    /// NODE_ENV, ASPNETCORE_ENVIRONMENT.
    #[arg(long = "env", env = "SYNCKIT_ENV")]
    pub(crate) environment: Option<String>,
    /// Require authentication (JWT or API key). "false" auto-authenticates every
    /// connection as anonymous with access to all documents — what the SyncKit SDK
    /// needs, since it never sends an auth message.
    #[arg(long, env = "SYNCKIT_AUTH_REQUIRED", default_value = "true", value_parser = parse_bool)]
    pub(crate) auth_required: bool,
    /// With SYNCKIT_ENV=production, start with SYNCKIT_AUTH_REQUIRED=false anyway: the
    /// explicit acknowledgement that every connection is anonymous with access to
    /// every document (e.g. a gateway in front authenticates). Without it such a
    /// start is refused (exit 2). SDK clients can authenticate instead with
    /// `?token=<jwt>` on their server URL.
    #[arg(long, env = "SYNCKIT_ALLOW_NO_AUTH_IN_PRODUCTION", default_value = "false", value_parser = parse_bool)]
    allow_no_auth_in_production: bool,
    /// Shared HMAC secret for JWTs (HS256/384/512), at least 32 characters. Defaults to
    /// a development secret outside production.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// Lifetime of access tokens issued by /auth routes.
    #[arg(long, env = "JWT_EXPIRES_IN", default_value = "24h", value_parser = parse_duration)]
    jwt_expires_in: Duration,
    /// Lifetime of refresh tokens.
    #[arg(long, env = "JWT_REFRESH_EXPIRES_IN", default_value = "7d", value_parser = parse_duration)]
    jwt_refresh_expires_in: Duration,
    /// Required `iss` claim (checked only when set).
    #[arg(long, env = "JWT_ISSUER")]
    pub(crate) jwt_issuer: Option<String>,
    /// Required `aud` claim (checked only when set).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub(crate) jwt_audience: Option<String>,
    /// Comma-separated API keys; each grants admin (user "api-key-user").
    #[arg(
        long,
        env = "SYNCKIT_AUTH_APIKEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub(crate) api_keys: Vec<String>,
    /// Close connections that have not authenticated within this time (auth required only).
    #[arg(long, env = "AUTH_TIMEOUT_MS", default_value = "30s", value_parser = parse_duration)]
    pub(crate) auth_timeout: Duration,
    /// Serve the upstream demo POST /auth/login that mints a token for ANY email and
    /// password. Development only: refused (exit 2) with SYNCKIT_ENV=production.
    #[arg(long, env = "SYNCKIT_DEMO_LOGIN", default_value = "false", value_parser = parse_bool)]
    pub(crate) demo_login: bool,
    /// Protocol ping period.
    #[arg(long, env = "WS_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub(crate) heartbeat_interval: Duration,
    /// Close a connection after this long without receiving anything.
    #[arg(long, env = "WS_HEARTBEAT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub(crate) heartbeat_timeout: Duration,
    /// Close a connection whose socket takes no data for this long (a client that
    /// stopped reading). The session's own timers (auth timeout, token expiry,
    /// heartbeat) are never held up by its writes for longer than this.
    #[arg(long, env = "SYNCKIT_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub(crate) write_timeout: Duration,
    /// Broadcasts of other clients' writes a connection may have waiting unsent before
    /// it is closed as too slow (1013 Client too slow). One batch window is one
    /// broadcast (256 are ~13 s of slack at the default 50 ms); with SYNC_BATCH_DELAY=0
    /// every delta is one, so raise this when batching is off.
    #[arg(long, env = "SYNCKIT_MAX_QUEUED_BROADCASTS", default_value_t = crate::sync::peer::DEFAULT_BROADCAST_BUDGET)]
    pub(crate) max_queued_broadcasts: usize,
    /// Close an HTTP connection (before any WebSocket upgrade) whose request line and
    /// headers have not all arrived within this time (slowloris).
    #[arg(long, env = "SYNCKIT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) header_read_timeout: Duration,
    /// Maximum open WebSocket connections.
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Accept backlog of the public listener: connections the kernel completes before
    /// synckit accepts them, e.g. every client of a restarted instance reconnecting at
    /// once. The kernel caps it at net.core.somaxconn.
    #[arg(long, env = "SYNCKIT_LISTEN_BACKLOG", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    listen_backlog: u32,
    /// Maximum connections per client IP. Alias: MAX_CONNECTIONS_PER_IP.
    #[arg(long, env = "SYNCKIT_MAX_CONNECTIONS_PER_IP")]
    pub(crate) max_connections_per_ip: Option<usize>,
    /// IPv6 clients count against the per-IP limit by network: the first this many
    /// bits of the address (64: a host's usual allocation; 128: every address alone).
    #[arg(long, env = "SYNCKIT_IPV6_PREFIX_LEN", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub(crate) ipv6_prefix_len: u8,
    /// Messages per minute per connection (pings not counted); 0 disables the limit.
    #[arg(long, env = "SYNCKIT_MAX_MESSAGES_PER_MINUTE", default_value_t = 1200)]
    pub(crate) max_messages_per_minute: u32,
    /// Largest logical message (JSON payload) in bytes; larger ones get an error reply.
    #[arg(long, env = "SYNCKIT_MAX_MESSAGE_BYTES", default_value_t = 2_000_000)]
    pub(crate) max_message_bytes: usize,
    /// Deepest JSON nesting of a message (the message object is level 1); deeper
    /// messages get an error reply and nothing is applied. At most 100, so stored and
    /// relayed copies stay readable.
    #[arg(long, env = "SYNCKIT_MAX_JSON_DEPTH", default_value_t = crate::sync::admission::DEFAULT_MAX_JSON_DEPTH)]
    pub(crate) max_json_depth: usize,
    /// Vector-clock entries (distinct writers) one write may carry over all its
    /// clocks; more get an error reply and nothing is applied.
    #[arg(long, env = "SYNCKIT_MAX_CLOCK_ENTRIES_PER_MESSAGE", default_value_t = crate::sync::admission::DEFAULT_MAX_CLOCK_ENTRIES_PER_MESSAGE)]
    pub(crate) max_clock_entries_per_message: usize,
    /// Vector-clock entries (distinct writers) a document may hold. Past it, new
    /// writers share one `overflow` entry and unknown entries of their clocks are not
    /// merged; writes are never refused for it.
    #[arg(long, env = "SYNCKIT_MAX_CLOCK_ENTRIES_PER_DOCUMENT", default_value_t = crate::sync::admission::DEFAULT_MAX_CLOCK_ENTRIES_PER_DOCUMENT)]
    pub(crate) max_clock_entries_per_document: usize,
    /// Awareness (presence) client ids one document may hold; an update for a new
    /// client id past it gets an error reply.
    #[arg(long, env = "SYNCKIT_MAX_AWARENESS_CLIENTS_PER_DOCUMENT", default_value_t = crate::sync::admission::DEFAULT_MAX_AWARENESS_CLIENTS_PER_DOCUMENT)]
    pub(crate) max_awareness_clients_per_document: usize,
    /// Awareness client ids one connection may hold over all its documents.
    #[arg(long, env = "SYNCKIT_MAX_AWARENESS_CLIENTS_PER_CONNECTION", default_value_t = crate::sync::admission::DEFAULT_MAX_AWARENESS_CLIENTS_PER_CONNECTION)]
    pub(crate) max_awareness_clients_per_connection: usize,
    /// Largest awareness state (its JSON, in bytes); larger updates get an error reply.
    #[arg(long, env = "SYNCKIT_MAX_AWARENESS_STATE_BYTES", default_value_t = crate::sync::admission::DEFAULT_MAX_AWARENESS_STATE_BYTES)]
    pub(crate) max_awareness_state_bytes: usize,
    /// Documents one connection may subscribe to (each stays loaded while
    /// subscribed); past it, subscribe and sync_request get an error reply and writes
    /// no longer subscribe the writer.
    #[arg(long, env = "SYNCKIT_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = crate::sync::admission::DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION)]
    pub(crate) max_subscriptions_per_connection: usize,
    /// Text-state ops one delta_batch may carry (each is merged into its document);
    /// more refuse the batch.
    #[arg(long, env = "SYNCKIT_MAX_TEXT_OPS_PER_BATCH", default_value_t = crate::sync::admission::DEFAULT_MAX_TEXT_OPS_PER_BATCH)]
    pub(crate) max_text_ops_per_batch: usize,
    /// Each kind of refused input is logged at most once per connection per this
    /// period (with the count it stands for).
    #[arg(long, env = "SYNCKIT_REFUSAL_LOG_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub(crate) refusal_log_interval: Duration,
    /// Largest WebSocket frame (and fragmented message) in bytes; larger ones close
    /// the connection (1009) before they are buffered. Default: the larger of
    /// SYNCKIT_MAX_MESSAGE_BYTES and SYNCKIT_MAX_TEXT_MESSAGE_BYTES (a text state
    /// arrives in one frame) plus 64 KiB.
    #[arg(long, env = "SYNCKIT_MAX_FRAME_BYTES")]
    pub(crate) max_frame_bytes: Option<usize>,
    /// Socket read buffer of a WebSocket connection, in bytes: what one read takes
    /// from the socket. Most of an idle connection's memory is buffers like this one;
    /// a larger frame still arrives whole (the buffer grows for it). At least 64.
    #[arg(long, env = "SYNCKIT_WS_READ_BUFFER_BYTES", default_value_t = crate::server::config::DEFAULT_WS_READ_BUFFER_BYTES, value_parser = clap::value_parser!(u32).range(64..))]
    pub(crate) ws_read_buffer_bytes: u32,
    /// Largest logical message in bytes when it is a delta_batch carrying only text
    /// states (SDK clients send a document's whole text state in one message and
    /// never chunk it); larger ones get an error reply. Other messages keep
    /// SYNCKIT_MAX_MESSAGE_BYTES.
    #[arg(long, env = "SYNCKIT_MAX_TEXT_MESSAGE_BYTES", default_value_t = crate::text::DEFAULT_MAX_TEXT_MESSAGE_BYTES)]
    pub(crate) max_text_message_bytes: usize,
    /// Largest text state (its JSON) in bytes; a larger one gets an error reply and
    /// nothing is applied. At most 4294967295.
    #[arg(long, env = "SYNCKIT_MAX_TEXT_STATE_BYTES", default_value_t = crate::text::DEFAULT_MAX_TEXT_STATE_BYTES)]
    max_text_state_bytes: usize,
    /// Blocks a text state may hold, and a document's merged text state; a state or
    /// merge past it gets an error reply and nothing is applied.
    #[arg(long, env = "SYNCKIT_MAX_TEXT_BLOCKS", default_value_t = crate::text::DEFAULT_MAX_TEXT_BLOCKS)]
    max_text_blocks: usize,
    /// Broadcast coalescing window (0 sends every write at once).
    #[arg(long, env = "SYNC_BATCH_DELAY", default_value = "50", value_parser = parse_duration)]
    pub(crate) batch_delay: Duration,
    /// Awareness entries expire this long after their last update.
    #[arg(long, env = "AWARENESS_TIMEOUT_MS", default_value = "30s", value_parser = parse_duration)]
    pub(crate) awareness_timeout: Duration,
    /// Restrict subscribe to the upstream playground's document ids.
    #[arg(long, env = "SYNCKIT_PLAYGROUND_ACCESS_FILTER", default_value = "false", value_parser = parse_bool)]
    pub(crate) playground_access_filter: bool,
    /// Relay counter/set/richtext CRDT ops to the document's other subscribers, on
    /// every instance (through Redis). Relayed, not stored: later subscribers never
    /// receive earlier ops.
    #[arg(long, env = "SYNCKIT_RELAY_CRDT_OPS", default_value = "false", value_parser = parse_bool)]
    pub(crate) relay_crdt_ops: bool,
    /// Allowed CORS origins, comma-separated ("*" for any). Alias: SYNCKIT_CORS_ORIGINS.
    #[arg(long, env = "CORS_ORIGIN", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Behind a reverse proxy: take the client IP (per-IP limit, logs) from
    /// X-Forwarded-For / X-Real-IP, believed only from SYNCKIT_TRUSTED_PROXIES.
    #[arg(long, env = "SYNCKIT_TRUST_PROXY_HEADERS", default_value = "false", value_parser = parse_bool)]
    pub(crate) trust_proxy_headers: bool,
    /// Networks of the trusted reverse proxies (comma-separated CIDRs or addresses).
    /// The client is the right-most X-Forwarded-For entry outside them.
    #[arg(
        long,
        env = "SYNCKIT_TRUSTED_PROXIES",
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub(crate) trusted_proxies: String,
    /// Serve the admin listener's reads (/stats, /rooms, /maintenance, /admin/*)
    /// without the admin credential. Only for a listener no one else can reach.
    #[arg(long, env = "SYNCKIT_ADMIN_READS_OPEN", default_value = "false", value_parser = parse_bool)]
    pub(crate) admin_reads_open: bool,
    /// Host names the admin listener answers to besides loopback and its own address
    /// (comma-separated; the Host header is checked to stop DNS rebinding).
    #[arg(long, env = "SYNCKIT_ADMIN_ALLOWED_HOSTS", value_delimiter = ',')]
    pub(crate) admin_allowed_hosts: Vec<String>,
    /// List cached document ids in GET /health (leaks ids; off by default).
    #[arg(long, env = "SYNCKIT_HEALTH_LIST_DOCUMENTS", default_value = "false", value_parser = parse_bool)]
    pub(crate) health_list_documents: bool,
    /// Also serve /stats, /metrics and /rooms on the public port.
    #[arg(long, env = "SYNCKIT_PUBLIC_STATS", default_value = "false", value_parser = parse_bool)]
    pub(crate) public_stats: bool,
    /// Enable POST /_test/clear for upstream test harnesses (it empties every
    /// document, session and presence). Refused (exit 2) with SYNCKIT_ENV=production.
    #[arg(long, env = "SYNCKIT_TEST_MODE", default_value = "false", value_parser = parse_bool)]
    pub(crate) test_mode: bool,
    /// Redis for running several instances as one service: document updates,
    /// awareness and presence cross instances through its pub/sub. redis://,
    /// rediss:// (TLS) or the C# form host:port,password=…,ssl=true. Unset: single
    /// instance. Redis down at start does not stop the server (it connects in the
    /// background).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
    /// Pub/sub channel prefix (C#-compatible: `<prefix>delta:<doc>`, `<prefix>awareness:<doc>`,
    /// `<prefix>presence`).
    #[arg(long, env = "REDIS_CHANNEL_PREFIX", default_value = "synckit:")]
    pub(crate) channel_prefix: String,
    /// Period of the server_heartbeat every instance publishes on `<prefix>presence`; an
    /// instance silent for three periods is shown as gone.
    #[arg(long, env = "SYNCKIT_PRESENCE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub(crate) presence_interval: Duration,
    /// Drain budget on SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value = "10s", value_parser = parse_duration)]
    pub(crate) shutdown_timeout: Duration,
    /// Log filter (e.g. info, synckit=debug). Alias: LOG_LEVEL.
    #[arg(long, env = "RUST_LOG")]
    pub(crate) log: Option<String>,
    /// Log format: pretty or json.
    #[arg(
        long,
        env = "LOG_FORMAT",
        default_value = "pretty",
        hide_possible_values = true
    )]
    log_format: crate::telemetry::LogFormat,
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
    /// Apply pending migrations at start. With false, the schema is only checked and
    /// the server refuses to start when something is missing.
    #[arg(long, env = "SYNCKIT_AUTO_MIGRATE", default_value = "true", value_parser = parse_bool)]
    pub(crate) auto_migrate: bool,
    /// Writes held while PostgreSQL is unreachable (applied and broadcast, acked once
    /// durable); past this, new writes get an error reply.
    #[arg(long, env = "SYNCKIT_WRITE_QUEUE_MAX", default_value_t = crate::storage::persistence::DEFAULT_MAX_BACKLOG)]
    write_queue_max: usize,
    /// Writer tasks committing groups of writes at once (1–64), each on its own pooled
    /// connection (keep DB_POOL_MAX above it). A document's writes always go to the same
    /// writer, so they commit in order; more writers keep more commits in flight.
    #[arg(long, env = "SYNCKIT_PERSIST_WRITERS", default_value_t = crate::storage::persistence::DEFAULT_WRITERS)]
    persist_writers: usize,
    /// Changed session rows (connects, disconnects) held for writing behind; past
    /// this, changes are dropped (counted) and repaired when the next write reconciles
    /// this instance's rows.
    #[arg(long, env = "SYNCKIT_SESSION_QUEUE_MAX", default_value_t = crate::storage::persistence::DEFAULT_SESSION_QUEUE_MAX)]
    pub(crate) session_queue_max: usize,
    /// How often the background prober checks PostgreSQL; health and readiness
    /// answer from what it last saw.
    #[arg(long, env = "SYNCKIT_STORAGE_PROBE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    storage_probe_interval: Duration,
    /// A probe PostgreSQL does not answer within this marks storage degraded.
    #[arg(long, env = "SYNCKIT_STORAGE_PROBE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    storage_probe_timeout: Duration,
    /// Where awareness (presence) lives: memory (per instance), postgres (needs
    /// DATABASE_URL) or redis (needs REDIS_URL; the C# key layout under REDIS_CHANNEL_PREFIX).
    #[arg(long, env = "SYNCKIT_AWARENESS_STORE", default_value = "memory")]
    pub(crate) awareness_store: AwarenessStoreKind,
    /// A shared awareness store (postgres, redis) that does not answer within this
    /// fails the call; further calls fail at once (one retry a second) until it is
    /// back, so presence never makes a connection wait for a backend outage.
    #[arg(long, env = "SYNCKIT_AWARENESS_STORE_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    awareness_store_timeout: Duration,
    /// Documents kept loaded in memory; the least recently used ones without
    /// subscribers or unpersisted writes are unloaded past this.
    #[arg(long, env = "SYNCKIT_MAX_CACHED_DOCUMENTS", default_value_t = 10_000)]
    pub(crate) max_cached_documents: usize,
    #[command(flatten)]
    pub(crate) schedule: super::schedule::ScheduleArgs,
}

/// Where the aliases that clap does not read (NODE_ENV, LOG_LEVEL, …) come from: the
/// process environment for `serve` and `check-config`, nothing for
/// `ServerConfig::for_tests`.
type Env = fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(any(test, feature = "test-util"))]
fn no_env(_: &str) -> Option<String> {
    None
}

/// The first of `names` set to a non-empty value.
fn alias(env: Env, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()))
}

fn parse_addr(s: &str, what: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("{what} {s:?} is not a host:port address"))?
        .next()
        .with_context(|| format!("{what} {s:?} resolved to no address"))
}

/// `ws://host:port/ws` → `host:port`, with `localhost` meaning loopback.
fn server_url_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest
        .split('/')
        .next()
        .unwrap_or(rest)
        .replace("localhost", "127.0.0.1");
    parse_addr(&hostport, "SYNCKIT_SERVER_URL")
}

/// The non-empty entries of a comma-separated list, trimmed.
fn trimmed<'a, S: AsRef<str> + ?Sized + 'a>(
    items: impl IntoIterator<Item = &'a S>,
) -> impl Iterator<Item = &'a str> {
    items
        .into_iter()
        .map(|s| s.as_ref().trim())
        .filter(|s| !s.is_empty())
}

impl ServeArgs {
    /// Build the typed configuration; every error says what to change.
    pub(crate) fn to_config(&self) -> anyhow::Result<ServerConfig> {
        self.to_config_in(process_env)
    }

    /// [`Self::to_config`] with the aliases read from `env`.
    fn to_config_in(&self, env: Env) -> anyhow::Result<ServerConfig> {
        let (production, secret) = self.production_and_secret(env)?;
        let (listen, admin_listen) = self.listen_addrs()?;
        let max_connections_per_ip = self.per_ip_limit(env)?;
        let cors_origins = self.cors_origins(env);
        self.check_bounds()?;
        Ok(ServerConfig {
            listen,
            admin_listen,
            production,
            sync: self.sync_settings(),
            jwt: self.jwt_settings(secret),
            batch_delay: self.batch_delay,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            write_timeout: self.write_timeout,
            max_queued_broadcasts: self.max_queued_broadcasts,
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip,
            ipv6_prefix_len: self.ipv6_prefix_len,
            max_frame_bytes: self.max_frame_bytes.unwrap_or_else(|| {
                crate::server::config::default_frame_limit(
                    self.max_message_bytes.max(self.max_text_message_bytes),
                )
            }),
            ws_read_buffer_bytes: self.ws_read_buffer_bytes as usize,
            shutdown_timeout: self.shutdown_timeout,
            awareness_sweep_interval: Duration::from_secs(5),
            cors_origins,
            trust_proxy_headers: self.trust_proxy_headers,
            trusted_proxies: crate::server::proxy::parse_networks(&self.trusted_proxies)
                .map_err(anyhow::Error::msg)?,
            admin_reads_open: self.admin_reads_open,
            admin_allowed_hosts: trimmed(&self.admin_allowed_hosts)
                .map(str::to_ascii_lowercase)
                .collect(),
            demo_login: self.demo_login,
            test_mode: self.test_mode,
            health_list_documents: self.health_list_documents,
            public_stats: self.public_stats,
            channel_prefix: self.channel_prefix.clone(),
            redis: self.redis_target()?,
            presence_interval: self.presence_interval.max(Duration::from_millis(100)),
            persistence: self.persistence_settings(),
            max_cached_documents: self.max_cached_documents.max(1),
            maintenance: self.schedule.jobs()?,
        })
    }

    /// The public listener (SYNCKIT_SERVER_URL's, else HOST:PORT) and the admin one
    /// (none when switched off).
    fn listen_addrs(&self) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
        let listen = match &self.server_url {
            Some(url) => server_url_addr(url)?,
            None => parse_addr(
                &format!("{}:{}", bracket(&self.host), self.port),
                "HOST/PORT",
            )?,
        };
        let admin_listen = match self.admin_listen.trim() {
            "" | "off" | "none" | "false" => None,
            a => Some(parse_addr(a, "SYNCKIT_ADMIN_LISTEN")?),
        };
        Ok((listen, admin_listen))
    }

    /// The per-IP connection limit: the flag, else its alias, else 50.
    fn per_ip_limit(&self, env: Env) -> anyhow::Result<usize> {
        Ok(match self.max_connections_per_ip {
            Some(n) => n,
            None => match alias(env, &["MAX_CONNECTIONS_PER_IP"]) {
                Some(v) => v
                    .parse()
                    .context("MAX_CONNECTIONS_PER_IP must be a whole number")?,
                None => 50,
            },
        })
    }

    /// The allowed CORS origins: the flag, else its alias, else any.
    fn cors_origins(&self, env: Env) -> Vec<String> {
        if !self.cors_origin.is_empty() {
            return self.cors_origin.clone();
        }
        alias(env, &["SYNCKIT_CORS_ORIGINS"])
            .map(|v| trimmed(v.split(',')).map(str::to_owned).collect())
            .unwrap_or_else(|| vec!["*".into()])
    }

    fn jwt_settings(&self, secret: String) -> JwtSettings {
        JwtSettings {
            secret,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            access_ttl: self.jwt_expires_in,
            refresh_ttl: self.jwt_refresh_expires_in,
            api_keys: trimmed(&self.api_keys).map(str::to_owned).collect(),
        }
    }

    /// The write queue's settings, each held to a floor that keeps it working.
    fn persistence_settings(&self) -> PersistenceSettings {
        PersistenceSettings {
            max_backlog: self.write_queue_max.max(1),
            writers: self
                .persist_writers
                .clamp(1, crate::storage::persistence::MAX_WRITERS),
            session_touch_interval: self.heartbeat_interval,
            session_queue_max: self.session_queue_max.max(1),
            probe_interval: self.storage_probe_interval.max(Duration::from_millis(100)),
            probe_timeout: self.storage_probe_timeout.max(Duration::from_millis(10)),
            ..PersistenceSettings::default()
        }
    }

    /// Whether this is production, and the JWT secret — or every production
    /// refusal at once, so one run lists all there is to fix.
    fn production_and_secret(&self, env: Env) -> anyhow::Result<(bool, String)> {
        let environment = self
            .environment
            .clone()
            .or_else(|| alias(env, &["NODE_ENV", "ASPNETCORE_ENVIRONMENT"]))
            .unwrap_or_else(|| "development".into());
        let production = environment.eq_ignore_ascii_case("production");
        let secret = match (&self.jwt_secret, production) {
            (Some(s), _) if s.len() < MIN_SECRET_LEN => Err(format!(
                "JWT_SECRET is {} characters; use at least {MIN_SECRET_LEN} (e.g. `openssl rand -base64 48`)",
                s.len()
            )),
            (Some(s), true) if s == DEVELOPMENT_SECRET => Err("JWT_SECRET is the development default; set a strong secret of your own for production".to_owned()),
            (Some(s), _) => Ok(s.clone()),
            (None, true) => Err(format!(
                "SYNCKIT_ENV=production requires JWT_SECRET: set it to a random secret of at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -base64 48`)"
            )),
            (None, false) => Ok(DEVELOPMENT_SECRET.to_owned()),
        };
        // Everything production refuses is reported at once, so one run lists all
        // there is to fix.
        let mut refusals: Vec<String> = secret.as_ref().err().cloned().into_iter().collect();
        if production {
            refusals.extend(self.production_refusals());
        }
        match secret {
            Ok(secret) if refusals.is_empty() => Ok((production, secret)),
            _ => bail!("{}", refusals.join("; ")),
        }
    }

    /// Settings whose bounds clap cannot express; each error names the variable.
    fn check_bounds(&self) -> anyhow::Result<()> {
        if !(1..=MAX_JSON_DEPTH_SETTING).contains(&self.max_json_depth) {
            bail!("SYNCKIT_MAX_JSON_DEPTH must be between 1 and {MAX_JSON_DEPTH_SETTING} (stored and relayed copies wrap a value in a few more levels, and JSON readers stop at 128)");
        }
        if self.max_text_state_bytes > u32::MAX as usize {
            bail!("SYNCKIT_MAX_TEXT_STATE_BYTES must be at most {} (a document's text is held in one 32-bit-indexed buffer)", u32::MAX);
        }
        if self.max_text_blocks == 0 {
            bail!("SYNCKIT_MAX_TEXT_BLOCKS must be at least 1");
        }
        if self.max_clock_entries_per_message == 0 || self.max_clock_entries_per_document == 0 {
            bail!("SYNCKIT_MAX_CLOCK_ENTRIES_PER_MESSAGE and SYNCKIT_MAX_CLOCK_ENTRIES_PER_DOCUMENT must be at least 1 (a write carries its writer's entry)");
        }
        if self.max_clock_entries_per_message < self.max_clock_entries_per_document {
            bail!("SYNCKIT_MAX_CLOCK_ENTRIES_PER_MESSAGE ({}) must be at least SYNCKIT_MAX_CLOCK_ENTRIES_PER_DOCUMENT ({}): SDK clients send back the document's whole clock with their writes", self.max_clock_entries_per_message, self.max_clock_entries_per_document);
        }
        if self.heartbeat_interval.is_zero() {
            bail!("WS_HEARTBEAT_INTERVAL must be greater than zero");
        }
        if self.write_timeout.is_zero() {
            bail!("SYNCKIT_WRITE_TIMEOUT must be greater than zero (e.g. 30s)");
        }
        if self.max_queued_broadcasts == 0 {
            bail!("SYNCKIT_MAX_QUEUED_BROADCASTS must be at least 1 (default 256)");
        }
        if self.header_read_timeout.is_zero() {
            bail!("SYNCKIT_HEADER_READ_TIMEOUT must be greater than zero (e.g. 10s)");
        }
        Ok(())
    }

    /// What every session and the hub read.
    fn sync_settings(&self) -> SyncSettings {
        SyncSettings {
            auth_required: self.auth_required,
            max_message_bytes: self.max_message_bytes,
            max_text_message_bytes: self.max_text_message_bytes,
            max_messages_per_minute: self.max_messages_per_minute,
            playground_access_filter: self.playground_access_filter,
            relay_crdt_ops: self.relay_crdt_ops,
            instance_id: uuid::Uuid::new_v4().to_string(),
            awareness_timeout: self.awareness_timeout,
            auth_timeout: self.auth_timeout,
            limits: Limits {
                max_json_depth: self.max_json_depth,
                max_clock_entries_per_message: self.max_clock_entries_per_message,
                max_clock_entries_per_document: self.max_clock_entries_per_document,
                max_awareness_clients_per_document: self.max_awareness_clients_per_document,
                max_awareness_clients_per_connection: self.max_awareness_clients_per_connection,
                max_awareness_state_bytes: self.max_awareness_state_bytes,
                max_subscriptions_per_connection: self.max_subscriptions_per_connection,
                max_text_ops_per_batch: self.max_text_ops_per_batch,
                refusal_log_interval: self.refusal_log_interval,
                text: crate::text::Limits {
                    max_blocks: self.max_text_blocks,
                    max_state_bytes: self.max_text_state_bytes,
                },
            },
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

impl ServeArgs {
    /// Settings production refuses (docs/operations.md §4.3), each with what to do.
    fn production_refusals(&self) -> Vec<String> {
        let mut refusals = Vec::new();
        if self.demo_login {
            refusals.push("SYNCKIT_DEMO_LOGIN=true is refused with SYNCKIT_ENV=production: POST /auth/login would mint a token for any email and password; remove it and mint tokens in your own backend with JWT_SECRET".to_owned());
        }
        if self.test_mode {
            refusals.push("SYNCKIT_TEST_MODE=true is refused with SYNCKIT_ENV=production: POST /_test/clear would let anyone erase every document; remove it".to_owned());
        }
        if !self.auth_required && !self.allow_no_auth_in_production {
            refusals.push("SYNCKIT_AUTH_REQUIRED=false is refused with SYNCKIT_ENV=production: anyone could read and write every document; keep authentication on (SDK clients can send `?token=<jwt>` on their server URL), or acknowledge it with SYNCKIT_ALLOW_NO_AUTH_IN_PRODUCTION=true".to_owned());
        }
        refusals
    }

    /// The log filter: RUST_LOG (or --log), else LOG_LEVEL, else `info`. Shared with
    /// `check-config` so it validates exactly what `serve` would install.
    pub(crate) fn log_filter(&self) -> String {
        self.log
            .clone()
            .or_else(|| alias(process_env, &["LOG_LEVEL"]))
            .unwrap_or_else(|| "info".into())
    }

    /// PostgreSQL settings when a database is configured; refuses a PostgreSQL
    /// awareness store without one. Shared with `check-config`.
    pub(crate) fn database_settings(&self) -> anyhow::Result<Option<PostgresSettings>> {
        let database = self.database.settings(self.auto_migrate);
        match self.awareness_store {
            AwarenessStoreKind::Postgres if database.is_none() => {
                bail!("--awareness-store postgres needs a database: set DATABASE_URL")
            }
            AwarenessStoreKind::Redis if self.redis_url().is_none() => {
                bail!("--awareness-store redis needs Redis: set REDIS_URL")
            }
            _ => Ok(database),
        }
    }

    /// `REDIS_URL` when set and not blank.
    fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.trim().is_empty())
    }

    /// The Redis endpoint when `REDIS_URL` is set. Shared with `check-config`, which
    /// checks it even when other settings are invalid.
    pub(crate) fn redis_target(
        &self,
    ) -> Result<Option<RedisTarget>, crate::pubsub::redis::RedisUrlError> {
        self.redis_url().map(RedisTarget::parse).transpose()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl ServeArgs {
    /// `serve` as `args` and an empty environment give it: every other setting is
    /// its default exactly as `--help` prints it, so defaults are defined once, in
    /// the clap attributes above. Clap's `env =` reads the process environment (a
    /// test process has DATABASE_URL, REDIS_URL, …), so the parse runs on the
    /// definitions with their env vars removed, rather than on a cleared
    /// environment, which other threads of a test binary would race with.
    fn without_env(args: &[&str]) -> anyhow::Result<ServeArgs> {
        use clap::FromArgMatches;
        let command = super::command()
            .find_subcommand("serve")
            .cloned()
            .context("the serve command is missing from the CLI")?
            .mut_args(|arg| arg.env(None::<&str>));
        let matches =
            command.try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))?;
        Ok(ServeArgs::from_arg_matches(&matches)?)
    }
}

/// The secret of [`ServerConfig::for_tests`] (at least `MIN_SECRET_LEN` characters).
#[cfg(any(test, feature = "test-util"))]
const TEST_SECRET: &str = "test-secret-for-synckit-tests-0123456789";

impl ServerConfig {
    /// A configuration for tests (the `test-util` feature): `serve`'s defaults (see
    /// `ServeArgs::without_env`; none of the process environment) on loopback,
    /// with auth as given, a port picked by the system, no admin listener, the
    /// test secret, proxy headers trusted from loopback (tests stand in for clients
    /// behind a proxy), admin reads open (most tests read /stats without a
    /// credential; the admin-listener tests close them again) and no scheduled
    /// maintenance (a test adds the jobs it runs).
    ///
    /// # Panics
    ///
    /// When `serve`'s own defaults do not make a configuration: a broken flag
    /// definition, which every test (and `serve` itself) would report.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_tests(auth_required: bool) -> ServerConfig {
        let auth_required = format!("--auth-required={auth_required}");
        let args = [
            "--host=127.0.0.1",
            "--port=0",
            "--admin-listen=off",
            &format!("--jwt-secret={TEST_SECRET}"),
            &auth_required,
            "--trust-proxy-headers=true",
            "--admin-reads-open=true",
        ];
        match ServeArgs::without_env(&args).and_then(|serve| serve.to_config_in(no_env)) {
            Ok(config) => ServerConfig {
                maintenance: Vec::new(),
                ..config
            },
            // Tests only (see the doc): serve's own defaults failing to build is a
            // bug every test must show at once.
            #[allow(clippy::panic)]
            Err(e) => panic!("serve's defaults do not make a configuration: {e:#}"),
        }
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(&args.log_filter(), args.log_format)?;
    let config = args.to_config()?;
    let database = args.database_settings()?;
    let runtime = tokio::runtime::Runtime::new().context("could not start the async runtime")?;
    let awareness = AwarenessChoice {
        store: args.awareness_store,
        timeout: args.awareness_store_timeout,
    };
    runtime.block_on(serve(config, database, awareness, args.listen_backlog))
}

/// `TcpListener::bind` with the backlog given: tokio's asks the kernel for 128, which a
/// reconnect storm of many thousand clients overflows (README "Production" → Many
/// connections).
fn bind_public(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As TcpListener::bind does: a restarted server binds again at once even while
    // connections of the previous one sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Which awareness store serves presence, and the deadline of a shared one.
struct AwarenessChoice {
    store: AwarenessStoreKind,
    timeout: Duration,
}

/// Build the backends. With PostgreSQL, one connection attempt is made now: a schema
/// that is missing objects (and may not be migrated) stops the start with the fix;
/// an unreachable database does not — the server serves from memory and the writer
/// keeps retrying (docs/storage.md §5).
async fn backends(
    config: &ServerConfig,
    database: Option<PostgresSettings>,
    awareness: &AwarenessChoice,
) -> anyhow::Result<Backends> {
    let mut backends = storage_backends(config, database).await?;
    let bounded = |store: Arc<dyn AwarenessStore>| -> Arc<dyn AwarenessStore> {
        Arc::new(BoundedAwarenessStore::new(store, awareness.timeout))
    };
    backends.awareness = match (awareness.store, &config.redis) {
        (AwarenessStoreKind::Postgres, _) => {
            let pool = backends
                .postgres
                .clone()
                .context("--awareness-store postgres needs DATABASE_URL")?;
            bounded(Arc::new(PostgresAwarenessStore::new(
                pool,
                config.sync.awareness_timeout,
            )))
        }
        (AwarenessStoreKind::Redis, Some(target)) => {
            let client = redis::Client::open(target.info.clone())
                .context("REDIS_URL cannot be used for the awareness store")?;
            // Under the fleet's prefix like every channel: two fleets on one Redis
            // must not share presence (the default prefix is C#'s `synckit:`).
            bounded(Arc::new(
                RedisAwarenessStore::from_client(client, config.sync.awareness_timeout)?
                    .with_key_prefix(config.channel_prefix.clone()),
            ))
        }
        _ => Arc::new(MemoryAwarenessStore::new(config.sync.awareness_timeout)),
    };
    if let Some(redis) = redis_pubsub(config)? {
        backends.pubsub = redis;
    }
    Ok(backends)
}

/// Storage: PostgreSQL when configured, memory otherwise.
async fn storage_backends(
    config: &ServerConfig,
    database: Option<PostgresSettings>,
) -> anyhow::Result<Backends> {
    let Some(settings) = database else {
        tracing::warn!(
            "DATABASE_URL not set: documents live in memory only and are lost on restart"
        );
        return Ok(Backends::in_memory(config));
    };
    let storage = Arc::new(PostgresStorage::new(&settings)?);
    let budget = settings.acquire_timeout + Duration::from_secs(1);
    // The writer connects again (and marks storage ready) when it starts; this
    // attempt only decides whether to start at all.
    match tokio::time::timeout(budget, storage.connect()).await {
        Ok(Ok(())) => tracing::info!("PostgreSQL connected; schema current"),
        Ok(Err(e)) if !e.is_transient() => {
            // A database that answers but refuses the schema is a schema problem
            // (exit 4); one that answers then fails a plain query is exit 3.
            let failure = if storage.health_check().await.is_ok() {
                Failure::SchemaNotCurrent
            } else {
                Failure::DatabaseUnreachable
            };
            return Err(anyhow::Error::new(failure).context(e.to_string()));
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "PostgreSQL unreachable at start: serving from memory and retrying; writes are acknowledged once it is back"),
        Err(_) => tracing::warn!("PostgreSQL did not answer in {budget:?}: serving from memory and retrying; writes are acknowledged once it is back"),
    }
    Ok(Backends::with_postgres(config, storage))
}

/// The Redis pub/sub backend when `REDIS_URL` is set. It connects in the background:
/// Redis being down does not stop the start (docs/storage.md §6.6).
fn redis_pubsub(config: &ServerConfig) -> anyhow::Result<Option<Arc<dyn PubSub>>> {
    let Some(target) = &config.redis else {
        return Ok(None);
    };
    if !target.ignored.is_empty() {
        tracing::info!(ignored = ?target.ignored, "REDIS_URL: StackExchange options without meaning here are ignored");
    }
    tracing::info!(redis = %target.display(), prefix = %config.channel_prefix, "several instances: pub/sub through Redis");
    let pubsub = RedisPubSub::start(RedisSettings::new(target.clone()))
        .context("REDIS_URL cannot be used")?;
    Ok(Some(Arc::new(pubsub)))
}

async fn serve(
    config: ServerConfig,
    database: Option<PostgresSettings>,
    awareness: AwarenessChoice,
    listen_backlog: u32,
) -> anyhow::Result<ExitCode> {
    let backends = backends(&config, database, &awareness).await?;
    let listener = bind_public(config.listen, listen_backlog).with_context(|| {
        format!(
            "could not listen on {} (is another server using the port? set PORT/HOST)",
            config.listen
        )
    })?;
    let admin = match config.admin_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "could not listen on admin address {addr} (set SYNCKIT_ADMIN_LISTEN, or \"off\")"
            )
        })?),
        None => None,
    };
    let local = listener.local_addr()?;
    if !config.sync.auth_required {
        if local.ip().is_loopback() {
            tracing::info!("authentication disabled (SYNCKIT_AUTH_REQUIRED=false): every connection is anonymous with full access");
        } else {
            tracing::warn!(address = %local, "AUTHENTICATION IS DISABLED on a non-loopback address: anyone who can reach this port can read and write every document");
        }
    }
    if config.demo_login {
        tracing::warn!("SYNCKIT_DEMO_LOGIN=true: POST /auth/login issues tokens for any email and password — development only");
    }
    if config.jwt.secret == DEVELOPMENT_SECRET {
        tracing::warn!(
            "JWT_SECRET not set: using the development secret (never do this in production)"
        );
    }
    tracing::info!(
        address = %local,
        admin = %admin
            .as_ref()
            .and_then(|a| a.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        storage = backends.storage.kind(),
        awareness = backends.awareness.kind(),
        pubsub = backends.pubsub.kind(),
        version = env!("CARGO_PKG_VERSION"),
        "synckit serve listening (WebSocket on /ws and /)"
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::on_signal(shutdown.clone()));
    crate::systemd::ignore_hangup()?;
    crate::systemd::supervise(shutdown.clone());
    let server = Server::new(config.clone(), backends);
    // The listeners are bound (connections wait in the backlog) and `run` marks the
    // server ready before its first await, so READY is not meaningfully early.
    crate::systemd::ready(local);
    let drained = server.run(listener, admin, shutdown).await;
    tracing::info!(drained, "stopped");
    crate::telemetry::flush(Duration::from_secs(1));
    Ok(if drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test configuration is serve's defaults with the documented overrides,
    /// whatever the test process's environment holds (under CI it has REDIS_URL
    /// and DATABASE_URL).
    #[test]
    fn test_configuration_is_serve_defaults_without_the_environment() {
        let test = ServerConfig::for_tests(false);
        let serve = ServeArgs::without_env(&[])
            .and_then(|a| a.to_config_in(no_env))
            .expect("defaults");
        assert_eq!(test.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(test.admin_listen, None);
        assert!(!test.sync.auth_required && serve.sync.auth_required);
        assert_eq!(test.jwt.secret, TEST_SECRET);
        assert!(test.trust_proxy_headers && test.admin_reads_open);
        assert!(test.maintenance.is_empty() && serve.maintenance.len() == 3);
        assert!(test.redis.is_none() && !test.production);
        assert_eq!(test.cors_origins, vec!["*".to_owned()]);
        assert_eq!(
            test.trusted_proxies,
            crate::server::proxy::loopback_networks()
        );
        assert_eq!(test.batch_delay, Duration::from_millis(50));
        assert_eq!(test.max_connections_per_ip, 50);
        assert_eq!(
            format!("{:?}", test.persistence),
            format!("{:?}", serve.persistence)
        );
        assert_eq!(test.max_frame_bytes, serve.max_frame_bytes);
    }

    /// SYNCKIT_LISTEN_BACKLOG: 1024 unless set, 0 refused, and the listener it builds
    /// accepts like `TcpListener::bind`'s (README "Production" → Many connections).
    #[tokio::test]
    async fn listen_backlog_setting_builds_the_public_listener() {
        let default = ServeArgs::without_env(&[]).expect("defaults");
        assert_eq!(default.listen_backlog, 1024);
        let set = ServeArgs::without_env(&["--listen-backlog", "8192"]).expect("set");
        assert_eq!(set.listen_backlog, 8192);
        assert!(ServeArgs::without_env(&["--listen-backlog", "0"]).is_err());

        let listener = bind_public(SocketAddr::from(([127, 0, 0, 1], 0)), 4096).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (_, peer) = listener.accept().await.expect("accept");
        assert_eq!(peer, client.local_addr().expect("client addr"));
    }

    #[test]
    fn the_broadcast_budget_is_a_setting_of_at_least_one() {
        let config =
            |args: &[&str]| ServeArgs::without_env(args).and_then(|a| a.to_config_in(no_env));
        let default = config(&[]).expect("defaults");
        assert_eq!(
            default.max_queued_broadcasts,
            crate::sync::peer::DEFAULT_BROADCAST_BUDGET
        );
        let set = config(&["--max-queued-broadcasts", "4096"]).expect("set");
        assert_eq!(set.max_queued_broadcasts, 4096);
        let zero = config(&["--max-queued-broadcasts", "0"]).expect_err("refused");
        assert!(
            zero.to_string().contains("SYNCKIT_MAX_QUEUED_BROADCASTS"),
            "{zero}"
        );
    }
}
