//! The console's feed against a running server on real PostgreSQL (and the Redis tap
//! against real Redis): the admin API's live sessions, documents, detail and
//! awareness, paging, the admin-token actions (recorded in the run history), and the
//! feed's view of every source, including sources that are down.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{http, open_config, start_with, user_token, Client, TestServer};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use synckit::console::action::{Action, OperatorAction};
use synckit::console::app::FeedRequest;
use synckit::console::feed::{self, admin, FeedConfig, Poller};
use synckit::console::model::SourceState;
use synckit::server::{Backends, ServerConfig};
use synckit::testing::awareness::MemoryAwarenessStore;
use synckit::testing::pubsub::LocalPubSub;
use synckit::testing::storage::PostgresStorage;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

fn backends(config: &ServerConfig, pool: &PgPool) -> Backends {
    let own = PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with((*pool.connect_options()).clone());
    Backends::with_postgres(config, Arc::new(PostgresStorage::from_pool(own, true)))
}

async fn server(pool: &PgPool) -> (TestServer, std::net::SocketAddr) {
    let config = open_config();
    let backends = backends(&config, pool);
    let (server, admin) = start_with(config, backends, true).await;
    (server, admin.expect("admin listener"))
}

/// A subscribed client that wrote one field and announced its presence.
async fn active_client(server: &TestServer, doc: &str) -> Client {
    let mut c = Client::connect(server, false).await;
    c.send(json!({"type": "subscribe", "documentId": doc}))
        .await;
    c.expect("sync_response").await;
    c.send(
        json!({"type": "delta", "documentId": doc, "field": "title", "value": "hello",
                  "clock": {"c1": 1}, "clientId": "c1", "timestamp": 1, "messageId": "m1"}),
    )
    .await;
    c.expect("ack").await;
    c.send(
        json!({"type": "awareness_update", "documentId": doc, "clientId": "c1",
                  "state": {"name": "Ada", "cursor": 3}, "clock": 1}),
    )
    .await;
    // The awareness update is applied before the next message is read.
    c.send(json!({"type": "ping"})).await;
    c.expect("pong").await;
    c
}

fn config(admin: std::net::SocketAddr, pool: &PgPool) -> FeedConfig {
    FeedConfig {
        servers: vec![format!("http://{admin}")],
        database_url: Some(common::database_url(pool)),
        redis_url: None,
        channel_prefix: "synckit:".into(),
        credential: Default::default(),
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn the_feed_sees_live_sessions_documents_awareness_and_rows(pool: PgPool) {
    let (server, admin) = server(&pool).await;
    let _client = active_client(&server, "feed-doc").await;
    let poller = Poller::new(config(admin, &pool));

    let reports = poller.instances().await;
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert!(report.state.is_up(), "{:?}", report.state);
    let stats = report.stats.as_ref().expect("stats");
    assert_eq!(stats.connections.open, Some(1));
    assert!(stats.messages_in() >= Some(3), "{stats:?}");
    assert_eq!(report.sessions.len(), 1);
    let session = &report.sessions[0];
    assert!(session.live);
    assert_eq!(session.subscriptions, vec!["feed-doc"]);
    assert_eq!(session.remote.as_deref(), Some("127.0.0.1"));
    assert!(session
        .user
        .as_deref()
        .is_some_and(|u| u.starts_with("anonymous")));
    assert!(session
        .id
        .starts_with(stats.instance_id.as_deref().expect("id")));
    let doc = report
        .documents
        .iter()
        .find(|d| d.id == "feed-doc")
        .expect("live doc");
    assert_eq!((doc.subscribers, doc.fields), (1, 1));
    let presence = &report.awareness;
    assert_eq!(presence.len(), 1, "{presence:?}");
    assert_eq!(presence[0].state["name"], "Ada");
    assert!(presence[0].expires_in_ms.is_some_and(|ms| ms > 20_000));

    // Session rows are written behind the connection (batched with other writes).
    let mut db = poller.database("").await;
    for _ in 0..50 {
        if !db.sessions.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        db = poller.database("").await;
    }
    assert!(db.state.is_up(), "{:?}", db.state);
    let stored = db
        .documents
        .iter()
        .find(|d| d.id == "feed-doc")
        .expect("stored doc");
    assert_eq!(stored.fields, 1);
    assert!(stored.size_bytes > 0);
    assert_eq!(db.sessions.len(), 1, "the session row");
    assert_eq!(db.sessions[0].id, session.id, "row id = live session key");
    assert_eq!(db.documents_total, 1);
    let filtered = poller.database("no-such").await;
    assert!(filtered.documents.is_empty());
    let filtered = poller.database("FEED").await;
    assert_eq!(filtered.documents.len(), 1, "case-insensitive filter");

    let detail = poller.detail("feed-doc").await;
    assert_eq!(detail.fields["title"], "hello");
    assert!(
        detail.clock.get("c1").is_some_and(|c| *c >= 1),
        "{:?}",
        detail.clock
    );
    assert_eq!(detail.subscribers, vec![session.id.clone()]);
    assert_eq!(detail.awareness.len(), 1);
    assert_eq!(detail.deltas.len(), 1);
    assert_eq!(detail.deltas[0].field, "title");
    assert_eq!(detail.loaded_on.len(), 1);
    assert!(detail.problems.is_empty(), "{:?}", detail.problems);
    let missing = poller.detail("never-written").await;
    assert_eq!(missing.problems, vec!["not found"]);
    poller.close().await;
    server.shutdown.cancel();
}

#[sqlx::test(migrations = "./migrations")]
async fn admin_pages_are_bounded_and_offset(pool: PgPool) {
    let (server, admin) = server(&pool).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(active_client(&server, &format!("page-{i}")).await);
    }
    let page = http(admin, "GET", "/admin/sessions?limit=2&offset=1", &[], None)
        .await
        .json();
    assert_eq!(page["total"], 3);
    assert_eq!(page["sessions"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["offset"], 1);
    let docs = http(admin, "GET", "/admin/documents?limit=1", &[], None)
        .await
        .json();
    assert_eq!(docs["total"], 3);
    assert_eq!(docs["documents"][0]["id"], "page-0");
    let capped = http(admin, "GET", "/admin/documents?limit=999999", &[], None)
        .await
        .json();
    assert_eq!(capped["limit"], 1000);
    let awareness = http(admin, "GET", "/admin/awareness?offset=2", &[], None)
        .await
        .json();
    assert_eq!(awareness["documents"][0]["documentId"], "page-2");
    let one = http(admin, "GET", "/admin/documents/page-1/awareness", &[], None)
        .await
        .json();
    assert_eq!(one["clients"][0]["clientId"], "c1");
    let missing = http(admin, "GET", "/admin/documents/nope", &[], None).await;
    assert_eq!(missing.status, 404);
    server.shutdown.cancel();
}

#[sqlx::test(migrations = "./migrations")]
async fn actions_need_an_admin_token_and_are_recorded(pool: PgPool) {
    let (server, admin) = server(&pool).await;
    let mut client = active_client(&server, "doomed").await;
    let via = format!("http://{admin}");
    let cleanup = OperatorAction::Cleanup {
        via: via.clone(),
        target: "test".into(),
        retention: None,
    };

    let refused = admin::perform(&cleanup, None).await.expect_err("no token");
    assert!(refused.contains("no admin token"), "{refused}");
    let user = user_token("mallory", &["*"], &["*"], false);
    let refused = admin::perform(&cleanup, Some(&user))
        .await
        .expect_err("not admin");
    assert!(refused.contains("403"), "{refused}");
    let refused = admin::perform(&cleanup, Some("garbage"))
        .await
        .expect_err("bad token");
    assert!(refused.contains("401"), "{refused}");

    let token = user_token("root", &[], &[], true);
    let done = admin::perform(&cleanup, Some(&token))
        .await
        .expect("cleanup");
    assert!(done.contains("sessionsDeleted"), "{done}");
    let prune = OperatorAction::PruneAwareness {
        via: via.clone(),
        target: "test".into(),
    };
    let done = admin::perform(&prune, Some(&token)).await.expect("prune");
    assert!(done.contains("expired"), "{done}");
    let runs = Poller::new(config(admin, &pool)).database("").await.runs;
    let jobs: Vec<&str> = runs.iter().map(|r| r.job.as_str()).collect();
    assert!(
        jobs.contains(&"cleanup") && jobs.contains(&"awareness-prune"),
        "{jobs:?}"
    );
    assert!(runs.iter().all(|r| r.outcome == "ok"));

    // A document in use is not deleted under its subscribers.
    let delete = OperatorAction::DeleteDocument {
        id: "doomed".into(),
        via: via.clone(),
    };
    let refused = admin::perform(&delete, Some(&token))
        .await
        .expect_err("in use");
    assert!(refused.contains("409"), "{refused}");

    let session = Poller::new(config(admin, &pool)).instances().await[0].sessions[0]
        .id
        .clone();
    let kick = OperatorAction::Disconnect {
        session: session.clone(),
        user: "-".into(),
        via: via.clone(),
    };
    admin::perform(&kick, Some(&token))
        .await
        .expect("disconnect");
    let closed = client.expect("__close").await;
    assert_eq!(closed["code"], 1008);
    assert_eq!(closed["reason"], "Disconnected by an administrator");
    let gone = admin::perform(&kick, Some(&token))
        .await
        .expect_err("already gone");
    assert!(gone.contains("404"), "{gone}");

    // Once the connection has fully closed, the document can go.
    let mut deleted = Err(String::new());
    for _ in 0..50 {
        deleted = admin::perform(&delete, Some(&token)).await;
        if deleted.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deleted.expect("delete after disconnect");
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM documents WHERE id = 'doomed'")
        .fetch_optional(&pool)
        .await
        .expect("query");
    assert_eq!(exists, None);
    server.shutdown.cancel();
}

#[tokio::test]
async fn sources_that_are_down_are_reported_as_down() {
    // Ports nothing listens on (bound then released).
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (api, db) = (free(), free());
    let poller = Poller::new(FeedConfig {
        servers: vec![format!("http://127.0.0.1:{api}")],
        database_url: Some(format!("postgres://postgres@127.0.0.1:{db}/test")),
        redis_url: None,
        channel_prefix: "synckit:".into(),
        credential: Default::default(),
    });
    let started = std::time::Instant::now();
    let reports = poller.instances().await;
    assert!(
        matches!(&reports[0].state, SourceState::Down { error } if error.contains("unreachable"))
    );
    let database = poller.database("").await;
    assert!(
        matches!(database.state, SourceState::Down { .. }),
        "{:?}",
        database.state
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "down sources answer fast"
    );
    let off = Poller::new(FeedConfig {
        servers: vec![],
        database_url: None,
        redis_url: None,
        channel_prefix: "x".into(),
        credential: Default::default(),
    });
    assert_eq!(off.database("").await.state, SourceState::Off);
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").expect("REDIS_URL must point at a Redis for this test")
}

#[tokio::test]
async fn the_redis_tap_samples_prefixed_traffic_and_presence() {
    let prefix = format!("consoletest-{}:", uuid::Uuid::new_v4());
    let (tx, mut rx) = mpsc::channel(16);
    let (_request_tx, request) = watch::channel(FeedRequest {
        refresh_ms: 200,
        ..FeedRequest::default()
    });
    let cancel = CancellationToken::new();
    let tap = tokio::spawn(feed::redis::run(
        redis_url(),
        prefix.clone(),
        tx,
        request,
        cancel.clone(),
    ));
    let client = redis::Client::open(redis_url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut seen_delta = false;
    let mut seen_fleet = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen_delta && seen_fleet) && tokio::time::Instant::now() < deadline {
        let delta = json!({"type": "delta", "documentId": "d1", "origin": "inst-x"}).to_string();
        let presence = json!({"type": "server_heartbeat", "serverId": "inst-x", "timestamp": 1,
                              "metadata": {"admin": "http://127.0.0.1:1"}})
        .to_string();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{prefix}delta:d1"))
            .arg(&delta)
            .query_async(&mut conn)
            .await
            .expect("publish");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{prefix}presence"))
            .arg(&presence)
            .query_async(&mut conn)
            .await
            .expect("publish");
        // Traffic on other prefixes is not the fleet's and is not seen.
        let _: i64 = redis::cmd("PUBLISH")
            .arg("unrelated:delta:d1")
            .arg("{}")
            .query_async(&mut conn)
            .await
            .expect("publish");
        let Ok(Some(Action::Redis(report))) =
            tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
        else {
            continue;
        };
        assert!(report.state.is_up(), "{:?}", report.state);
        assert!(report
            .samples
            .iter()
            .all(|s| s.channel.starts_with(&prefix)));
        if let Some(s) = report
            .samples
            .iter()
            .find(|s| s.document.as_deref() == Some("d1"))
        {
            assert_eq!(s.kind, "delta");
            assert_eq!(s.origin.as_deref(), Some("inst-x"));
            seen_delta = report
                .rates
                .iter()
                .any(|r| r.kind == "delta" && r.total >= 1);
        }
        seen_fleet |= report.fleet.iter().any(|m| {
            m.server_id == "inst-x"
                && m.status == synckit::console::model::PeerStatus::Online
                && m.metadata.admin.is_some()
        });
    }
    assert!(seen_delta, "delta sampled and counted");
    assert!(seen_fleet, "presence heartbeat seen");
    cancel.cancel();
    tap.await.expect("tap stops");
}

#[tokio::test]
async fn a_redis_that_is_down_is_reported_down() {
    let (tx, mut rx) = mpsc::channel(4);
    let (_request_tx, request) = watch::channel(FeedRequest {
        refresh_ms: 200,
        ..FeedRequest::default()
    });
    let cancel = CancellationToken::new();
    let tap = tokio::spawn(feed::redis::run(
        "redis://127.0.0.1:1".into(),
        "synckit:".into(),
        tx,
        request,
        cancel.clone(),
    ));
    let action = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a report");
    let Some(Action::Redis(report)) = action else {
        panic!("expected a redis report")
    };
    assert!(
        matches!(report.state, SourceState::Down { .. }),
        "{:?}",
        report.state
    );
    cancel.cancel();
    tap.await.expect("tap stops");
}

/// Two instances on one database and Redis, a subscriber of the same document on
/// each: the list and the drill-down both count two.
#[sqlx::test(migrations = "./migrations")]
async fn the_drill_down_merges_subscribers_across_instances(pool: PgPool) {
    use common::redis::{another, fleet_config, redis_url, start_instance, test_prefix};
    let url = redis_url();
    let config = fleet_config(&test_prefix());
    let a = start_instance(config.clone(), &url, common::pg_storage(&pool)).await;
    let b = start_instance(another(&config), &url, common::pg_storage(&pool)).await;
    let _on_a = active_client(&a.server, "shared-doc").await;
    let mut on_b = Client::connect(&b.server, false).await;
    on_b.send(json!({"type": "subscribe", "documentId": "shared-doc"}))
        .await;
    on_b.expect("sync_response").await;
    let poller = Poller::new(FeedConfig {
        servers: vec![format!("http://{}", a.admin), format!("http://{}", b.admin)],
        database_url: Some(common::database_url(&pool)),
        redis_url: None,
        channel_prefix: "synckit:".into(),
        credential: Default::default(),
    });
    let mut app = synckit::console::app::App::new(0, 1000, false);
    synckit::console::update::update(&mut app, Action::Instances(poller.instances().await));
    let row = synckit::console::rows::documents(&app)
        .into_iter()
        .find(|r| r.id == "shared-doc")
        .expect("listed");
    assert_eq!(row.subscribers, 2, "the list sums the instances");
    let detail = poller.detail("shared-doc").await;
    assert_eq!(
        detail.subscribers.len(),
        2,
        "the drill-down agrees: {detail:?}"
    );
    assert_eq!(detail.loaded_on.len(), 2);
    assert_eq!(detail.awareness.len(), 1, "awareness from A");
    assert_eq!(detail.fields["title"], "hello");
    poller.close().await;
    a.stop().await;
    b.stop().await;
}

/// With the database unreachable, `/maintenance` still answers at once with the
/// jobs (the run log's error named), and the console shows the jobs.
#[tokio::test]
async fn the_jobs_show_while_the_run_log_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .expect("lazy pool");
    let mut config = open_config();
    config.maintenance = vec![synckit::testing::maintenance::JobConfig {
        name: "cleanup",
        kind: synckit::testing::maintenance::JobKind::Cleanup(Default::default()),
        schedule: synckit::testing::maintenance::Schedule::parse("0 3 * * *").expect("cron"),
        enabled: true,
    }];
    let backends = Backends {
        awareness: Arc::new(MemoryAwarenessStore::new(config.sync.awareness_timeout)),
        pubsub: Arc::new(LocalPubSub::single_instance()),
        ..Backends::with_postgres(&config, Arc::new(PostgresStorage::from_pool(pool, true)))
    };
    let (server, admin) = start_with(config, backends, true).await;
    let admin = admin.expect("admin");
    let started = std::time::Instant::now();
    let page = http(admin, "GET", "/maintenance", &[], None).await.json();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(page["jobs"][0]["name"], "cleanup", "{page}");
    assert_eq!(page["runs"], json!([]));
    assert!(page["runsError"].is_string(), "{page}");
    assert_eq!(page["cleanup"]["sessionsOlderThanSecs"], 86_400);
    let report = admin::poll(&format!("http://{admin}"), 0, 0, None).await;
    assert_eq!(report.jobs.len(), 1, "{report:?}");
    assert_eq!(
        report.cleanup.and_then(|c| c.max_snapshots_per_document),
        Some(10)
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("run history:")),
        "{:?}",
        report.problems
    );
    server.shutdown.cancel();
}

/// An admin page this console cannot read is a named problem, not zeros.
#[tokio::test]
async fn an_unreadable_page_is_a_problem_and_stats_fields_missing_are_unknown() {
    use axum::routing::get;
    use axum::Json;
    let app = axum::Router::new()
        .route(
            "/stats",
            get(|| async { Json(json!({"instanceId": "old", "connections": {"open": 2}})) }),
        )
        .route(
            "/admin/sessions",
            get(|| async { Json(json!({"sessions": "not a list"})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let report = admin::poll(&format!("http://{addr}"), 0, 0, None).await;
    assert!(report.state.is_up());
    let stats = report.stats.as_ref().expect("stats");
    assert_eq!(stats.connections.open, Some(2));
    assert_eq!(stats.documents.cached, None, "absent: unknown, not 0");
    assert_eq!(stats.persistence.backlog, None);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("/admin/sessions") && p.contains("not readable")),
        "{:?}",
        report.problems
    );
    assert!(report
        .problems
        .iter()
        .any(|p| p.contains("/admin/documents") && p.contains("404")));
}

/// An instance reached under two addresses (named as `localhost`, announced as
/// `127.0.0.1`) is polled and counted once.
#[sqlx::test(migrations = "./migrations")]
async fn an_instance_under_two_addresses_is_counted_once(pool: PgPool) {
    let (server, admin) = server(&pool).await;
    let _client = active_client(&server, "once-doc").await;
    let poller = Poller::new(FeedConfig {
        servers: vec![
            format!("http://{admin}"),
            format!("http://localhost:{}", admin.port()),
        ],
        database_url: None,
        redis_url: None,
        channel_prefix: "synckit:".into(),
        credential: Default::default(),
    });
    let reports = poller.instances().await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let mut app = synckit::console::app::App::new(0, 1000, false);
    synckit::console::update::update(&mut app, Action::Instances(reports));
    let row = synckit::console::rows::documents(&app)
        .into_iter()
        .find(|r| r.id == "once-doc")
        .expect("listed");
    assert_eq!(row.subscribers, 1);
    assert_eq!(synckit::console::rows::fleet(&app).len(), 1);
    poller.close().await;
    server.shutdown.cancel();
}
