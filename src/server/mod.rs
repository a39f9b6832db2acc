//! The HTTP/WebSocket server: routes, lifecycle, and background tasks (flusher,
//! pub/sub relay, resynchronisation, presence, awareness sweep). `run` takes its listeners and its shutdown signal
//! from the caller so tests bind `127.0.0.1:0` and stop it at will.

pub(crate) mod admin;
mod auth_routes;
pub mod carry_out;
pub(crate) mod config;
pub mod connection;
pub(crate) mod http;
mod layers;
pub(crate) mod listen;
pub(crate) mod live;
pub(crate) mod presence;
pub(crate) mod process;
pub mod proxy;
pub(crate) mod registry;
pub mod stats;
mod sweeper;
pub mod upgrade;
pub(crate) mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ServerConfig;

use crate::auth::Authenticator;
use crate::awareness::{AwarenessStore, MemoryAwarenessStore};
use crate::metrics::Metrics;
use crate::pubsub::{Channels, Fleet, LocalPubSub, PubSub, PubSubState};
use crate::storage::{MemoryStorage, Persistence, PostgresStorage, StorageAdapter};
use crate::sync::hub::{FlushQueue, HubSettings};
use crate::sync::{Hub, SyncService};
use registry::ConnectionRegistry;

/// Where the server is in its life, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Lifecycle {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

pub struct AppState {
    pub config: ServerConfig,
    pub sync: Arc<SyncService>,
    pub(crate) registry: Arc<ConnectionRegistry>,
    /// Live sessions of this instance (admin API, disconnect action).
    pub(crate) live: Arc<live::LiveSessions>,
    pub(crate) started: std::time::Instant,
    /// This host's name, for `/stats` and heartbeats.
    pub(crate) host: Option<String>,
    lifecycle: AtomicU8,
    next_conn: AtomicU64,
    /// Cancelled during shutdown after batches are flushed: sockets close with 1001.
    connections_cancel: CancellationToken,
    tracker: TaskTracker,
    /// Cancelled when shutdown starts: the background tasks (relay, resync,
    /// presence, sweeper, scheduler, watcher) stop and running maintenance jobs are
    /// interrupted (docs/operations.md §6).
    pub(crate) background: CancellationToken,
    /// The background tasks, the maintenance runs asked for on the admin API and
    /// closed connections' awareness leaves (`SyncService::tasks`): shutdown joins
    /// them, within its budget, before the pub/sub connection and the pools close.
    pub(crate) tasks: TaskTracker,
    /// The maintenance scheduler (its jobs' next runs feed the admin API).
    pub scheduler: Arc<crate::maintenance::Scheduler>,
    /// The PostgreSQL pool storage runs on, if any ([`Backends::postgres`]): its
    /// connection counts are in `/metrics`.
    pub(crate) postgres: Option<sqlx::PgPool>,
}

impl AppState {
    fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::Relaxed) {
            0 => Lifecycle::Starting,
            1 => Lifecycle::Ready,
            _ => Lifecycle::Draining,
        }
    }

    fn set_lifecycle(&self, l: Lifecycle) {
        self.lifecycle.store(l as u8, Ordering::Relaxed);
    }

    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn instance_id(&self) -> &str {
        &self.config.sync.instance_id
    }
}

/// The backends a server runs on; the defaults are all in memory.
pub struct Backends {
    pub storage: Arc<dyn StorageAdapter>,
    pub awareness: Arc<dyn AwarenessStore>,
    pub pubsub: Arc<dyn PubSub>,
    /// The PostgreSQL pool when storage is on PostgreSQL: carried here rather than
    /// asked of the storage so a backend need not know about PostgreSQL. `/metrics`
    /// reports it, and `serve` shares it with the PostgreSQL awareness store.
    pub postgres: Option<sqlx::PgPool>,
}

impl Backends {
    pub fn in_memory(config: &ServerConfig) -> Backends {
        Backends {
            storage: Arc::new(MemoryStorage::new()),
            awareness: Arc::new(MemoryAwarenessStore::new(config.sync.awareness_timeout)),
            pubsub: Arc::new(LocalPubSub::single_instance()),
            postgres: None,
        }
    }

    /// `storage` with this instance's own awareness and pub/sub: what `serve` runs
    /// on with a database and without Redis, and what the PostgreSQL tests start.
    pub fn with_storage(config: &ServerConfig, storage: Arc<dyn StorageAdapter>) -> Backends {
        Backends {
            storage,
            ..Backends::in_memory(config)
        }
    }

    /// PostgreSQL storage (as [`Backends::with_storage`]) with its pool kept beside
    /// it: what `serve` runs on with a database.
    pub fn with_postgres(config: &ServerConfig, storage: Arc<PostgresStorage>) -> Backends {
        Backends {
            postgres: Some(storage.pool().clone()),
            ..Backends::with_storage(config, storage)
        }
    }
}

/// A built server, not yet running.
pub struct Server {
    pub state: Arc<AppState>,
    flush_queue: FlushQueue,
}

impl Server {
    pub fn new(config: ServerConfig, backends: Backends) -> Server {
        Server::with_clock(config, backends, crate::clock::SystemClock::shared())
    }

    /// A server reading wall time from `clock` (tests inject a
    /// `TestClock` (the `test-util` feature); [`Server::new`] uses the system clock).
    pub fn with_clock(
        config: ServerConfig,
        backends: Backends,
        clock: crate::clock::SharedClock,
    ) -> Server {
        let metrics = Arc::new(Metrics::default());
        let mut persistence_settings = config.persistence.clone();
        // Session ids are `<instance id>:conn-<n>` (see `Session::connection_key`).
        persistence_settings.session_prefix = format!("{}:", config.sync.instance_id);
        let persistence = Arc::new(Persistence::new(backends.storage, persistence_settings));
        let (hub, flush_queue) = Hub::new(
            persistence,
            backends.pubsub,
            metrics.clone(),
            HubSettings {
                batch_delay: config.batch_delay,
                instance_id: config.sync.instance_id.clone(),
                channels: Channels::new(config.channel_prefix.clone()),
                max_cached_documents: config.max_cached_documents,
                max_clock_entries: config.sync.limits.max_clock_entries_per_document,
                text_limits: config.sync.limits.text,
                clock: clock.clone(),
            },
        );
        let sync = Arc::new(SyncService {
            hub,
            awareness: backends.awareness,
            auth: Arc::new(Authenticator::with_clock(config.jwt.clone(), clock.clone())),
            metrics,
            settings: config.sync.clone(),
            fleet: Arc::new(Fleet::new(config.presence_interval)),
            resync: Arc::new(tokio::sync::Notify::new()),
            events: Arc::new(crate::events::EventLog::default()),
            clock,
            tasks: TaskTracker::new(),
        });
        let shared_awareness = sync.awareness.is_shared();
        let jobs = config
            .maintenance
            .iter()
            .filter(|j| j.applies(shared_awareness))
            .cloned()
            .collect();
        let scheduler = Arc::new(crate::maintenance::Scheduler::new(
            jobs,
            sync.clone(),
            config.sync.instance_id.clone(),
        ));
        let tasks = sync.tasks.clone();
        let state = Arc::new(AppState {
            config,
            sync,
            registry: Arc::new(ConnectionRegistry::default()),
            live: Arc::new(live::LiveSessions::default()),
            started: std::time::Instant::now(),
            host: crate::admin_api::host_name(),
            lifecycle: AtomicU8::new(Lifecycle::Starting as u8),
            next_conn: AtomicU64::new(0),
            connections_cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            background: CancellationToken::new(),
            tasks,
            scheduler,
            postgres: backends.postgres,
        });
        Server { state, flush_queue }
    }

    /// Serve until `shutdown` is cancelled, then drain (docs/operations.md §6). Returns
    /// whether every pending write was persisted within the shutdown budget.
    pub async fn run(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> bool {
        let Server { state, flush_queue } = self;
        let mut background = BackgroundTasks::start(&state, flush_queue);
        let listeners = Listeners::start(&state, listener, admin);
        state.set_lifecycle(Lifecycle::Ready);
        tracing::info!(instance_id = %state.instance_id(), "ready");

        shutdown.cancelled().await;
        state.sync.events.record(
            state.sync.now_ms(),
            crate::events::EventKind::ShutdownStarted,
            "shutdown started: draining connections and writes",
        );
        let deadline = tokio::time::Instant::now() + state.config.shutdown_timeout;
        state.set_lifecycle(Lifecycle::Draining);
        tracing::info!("shutting down: flushing broadcasts and closing connections");
        background.stop_feeding(&state, deadline).await;
        let drained = background.drain_writes(&state, deadline).await;
        listeners.stop().await;
        drained
    }
}

/// The tasks a running server keeps besides its connections: the storage writer,
/// the broadcast flusher, and those joined through `AppState::tasks` (relay,
/// resync, presence, the awareness sweeper, the scheduler, the watcher).
struct BackgroundTasks {
    writer: tokio::task::JoinHandle<()>,
    /// The storage writer outlives the connections: it stops only after the
    /// drain, so writes accepted during shutdown still commit.
    writer_stop: CancellationToken,
    flusher: tokio::task::JoinHandle<()>,
    presence: Option<tokio::task::JoinHandle<()>>,
}

impl BackgroundTasks {
    fn start(state: &Arc<AppState>, flush_queue: FlushQueue) -> BackgroundTasks {
        let sync = &state.sync;
        let background = &state.background;
        let tasks = &state.tasks;
        let writer_stop = CancellationToken::new();
        let writer = tokio::spawn(sync.hub.storage().clone().run(writer_stop.clone()));
        let flusher = tokio::spawn(crate::fanout::flusher::run(
            sync.hub.clone(),
            flush_queue,
            background.clone(),
        ));
        if let Some(rx) = sync.hub.pubsub().take_incoming() {
            tasks.spawn(crate::fanout::relay::run(
                sync.clone(),
                rx,
                background.clone(),
            ));
        }
        let clustered = sync.hub.pubsub().state() != PubSubState::SingleInstance;
        // Read-backs need shared storage: after a pub/sub outage (a fleet), and after
        // a PostgreSQL outage (documents opened meanwhile lack their stored state).
        if clustered || sync.hub.storage().is_shared() {
            tasks.spawn(crate::fanout::resync::run(sync.clone(), background.clone()));
        }
        let presence =
            clustered.then(|| tasks.spawn(presence::run(state.clone(), background.clone())));
        if !sync.awareness.is_shared() {
            tasks.spawn(sweeper::awareness_sweeper(state.clone(), background.clone()));
        }
        tasks.spawn(state.scheduler.clone().run(background.clone()));
        tasks.spawn(watch::run(state.clone(), background.clone()));
        BackgroundTasks {
            writer,
            writer_stop,
            flusher,
            presence,
        }
    }

    /// Shutdown steps 2–4: stop the background tasks, flush the last broadcasts,
    /// close the connections and join every background task, within `deadline`.
    async fn stop_feeding(&mut self, state: &AppState, deadline: tokio::time::Instant) {
        state.background.cancel();
        if let Some(presence) = self.presence.take() {
            // It says goodbye to the fleet as it stops.
            let _ = presence.await;
        }
        let _ = (&mut self.flusher).await;
        state.connections_cancel.cancel();
        state.tracker.close();
        if tokio::time::timeout_at(deadline, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the shutdown budget");
        }
        // Every background task has stopped (an interrupted maintenance run is
        // recorded as such) before the pools close under it.
        let tasks = &state.tasks;
        tasks.close();
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = tasks.len(),
                "some background tasks did not stop within the shutdown budget"
            );
        }
    }

    /// Shutdown steps 5–6: everything published so far (last flushes, awareness
    /// leaves, goodbye) goes out before the pub/sub connection closes; then the
    /// write queue drains and the pool closes. Returns whether every write was
    /// persisted.
    async fn drain_writes(self, state: &AppState, deadline: tokio::time::Instant) -> bool {
        let storage = state.sync.hub.storage();
        state.sync.hub.pubsub().close().await;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let drained = storage.drain(remaining).await;
        if !drained {
            tracing::error!(
                backlog = storage.backlog(),
                "shutdown budget ran out with writes not yet persisted"
            );
        }
        self.writer_stop.cancel();
        if drained {
            let _ = self.writer.await;
        } else {
            self.writer.abort();
        }
        // A connection stuck on a lock or a dead host must not hold the exit.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let grace = remaining.max(std::time::Duration::from_secs(1));
        if tokio::time::timeout(grace, storage.adapter().disconnect())
            .await
            .is_err()
        {
            tracing::warn!("the storage pool did not close within the shutdown budget");
        }
        drained
    }
}

/// The public and admin listeners. They stay open while draining so readiness
/// answers 503 and new upgrades are refused with 503 (docs/operations.md §6 step
/// 1); they close at the end.
struct Listeners {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listeners {
    fn start(state: &Arc<AppState>, public: TcpListener, admin: Option<TcpListener>) -> Listeners {
        let stop = CancellationToken::new();
        let options = listen::ListenOptions {
            header_read_timeout: state.config.header_read_timeout,
            nodelay: true,
        };
        let metrics = &state.sync.metrics;
        let mut tasks = vec![tokio::spawn(listen::serve(
            public,
            public_router(state.clone()),
            options,
            metrics.clone(),
            stop.clone(),
        ))];
        if let Some(admin) = admin {
            let options = listen::ListenOptions {
                nodelay: false,
                ..options
            };
            tasks.push(tokio::spawn(listen::serve(
                admin,
                http::admin_router(state.clone()),
                options,
                metrics.clone(),
                stop.clone(),
            )));
        }
        Listeners { stop, tasks }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Acks and broadcasts are small frames written as they happen. With Nagle's algorithm a
/// frame written while an earlier one is still unacknowledged waits for the peer's ACK,
/// which a receiver that only reads may delay by ~40 ms: with `SYNC_BATCH_DELAY=0` at
/// 1,000 deltas/s that was a delivery p50 of 9 ms and a max of 47 ms (BENCHMARKS.md).
/// The writer task already coalesces a burst into one flush, so Nagle saves nothing.
fn set_nodelay(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted socket");
    }
}

fn public_router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/", get(root_or_upgrade))
        .route("/health", get(http::health))
        .route("/health/live", get(http::live))
        .route("/health/ready", get(http::ready))
        .merge(auth_routes::router());
    if state.config.public_stats {
        router = router.merge(http::stats_routes());
    }
    if state.config.test_mode {
        router = router.route("/_test/clear", post(http::test_clear));
    }
    layers::with_common_layers(router, &state.config).with_state(state)
}

async fn ws_upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    try_accept(state, peer, query, request).unwrap_or_else(|(state, refused)| {
        state
            .sync
            .metrics
            .refused(crate::metrics::Refusal::InvalidUpgrade);
        refused.into_response()
    })
}

/// `/` serves the info body, or upgrades when asked to (TS serves both there).
async fn root_or_upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    match try_accept(state, peer, query, request) {
        Ok(response) => response,
        Err(_) => http::info().await,
    }
}

/// Accept `request` as a WebSocket connection when it asks to upgrade; else give
/// back the state and why it is not an upgrade, for the route to answer.
fn try_accept(
    state: Arc<AppState>,
    peer: SocketAddr,
    query: Option<String>,
    mut request: Request,
) -> Result<Response, (Arc<AppState>, upgrade::NotAnUpgrade)> {
    match upgrade::Upgrade::from_request(&mut request) {
        Ok(ws) => Ok(accept(state, peer, request.headers(), query, ws)),
        Err(refused) => Err((state, refused)),
    }
}

fn accept(
    state: Arc<AppState>,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<String>,
    ws: upgrade::Upgrade,
) -> Response {
    if state.lifecycle() == Lifecycle::Draining {
        return http::unavailable("Server is shutting down");
    }
    let ip = proxy::client_ip(
        headers,
        peer,
        state.config.trust_proxy_headers,
        &state.config.trusted_proxies,
    );
    let user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let token = query.as_deref().and_then(query_token);
    let limit = state.config.max_frame_bytes;
    let tracker = state.tracker.clone();
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .read_buffer_size(state.config.ws_read_buffer_bytes);
    ws.respond(config, move |socket| {
        tracker.track_future(connection::serve_socket(
            state, socket, ip, user_agent, token,
        ))
    })
}

/// The `token` parameter of an upgrade URL (`/ws?token=<jwt>`), percent-decoded.
fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
        .filter(|token| !token.is_empty())
}
