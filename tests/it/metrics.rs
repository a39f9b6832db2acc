//! `/metrics` of a live `synckit serve` on PostgreSQL, as Prometheus reads it: the
//! names, types and base units (seconds, bytes; no `_ms`), counters ending in
//! `_total`, histograms with `+Inf` buckets, `synckit_build_info`, `process_*`, the
//! pool and query timings, and a maintenance run counted with its last success.
//! The server runs on the test PostgreSQL and Redis, so every series exists.

use std::process::Stdio;

use sqlx::PgPool;

use crate::common::exposition::{self, Exposition};
use crate::common::{database_url, http, spawn_serve_logged};

const API_KEY: &str = "metrics-test-api-key-0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `synckit serve` on `pool`'s database and the test Redis, with an admin
/// listener; returns the child
/// (killed on drop), the public and the admin address.
pub async fn serve_on(
    pool: &PgPool,
) -> (
    tokio::process::Child,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let url = database_url(pool);
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (child, server) = spawn_serve_logged(
        &[
            ("DATABASE_URL", &url),
            ("REDIS_URL", &redis),
            ("SYNCKIT_ADMIN_LISTEN", &admin.to_string()),
            ("SYNCKIT_AUTH_APIKEYS", API_KEY),
        ],
        Stdio::inherit(),
    )
    .await;
    (child, server.addr, admin)
}

/// Scrape, after one cleanup run through the admin API (so the per-job series exist).
pub async fn scrape_after_a_cleanup(admin: std::net::SocketAddr) -> (String, Exposition) {
    let bearer = format!("Bearer {API_KEY}");
    let ran = http(
        admin,
        "POST",
        "/admin/actions/cleanup",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(ran.status, 200, "{ran:?}");
    let r = http(admin, "GET", "/metrics", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some(synckit::server::stats::CONTENT_TYPE)
    );
    let parsed = exposition::parse(&r.body);
    (r.body, parsed)
}

#[sqlx::test(migrations = "./migrations")]
async fn metrics_of_a_live_server_have_standard_names_types_and_units(pool: PgPool) {
    let (_child, _public, admin) = serve_on(&pool).await;
    let (text, m) = scrape_after_a_cleanup(admin).await;

    for (name, family) in &m.families {
        assert!(family.help, "{name} has HELP");
        assert!(!name.contains("_ms"), "{name}: base units only");
        for (suffix, unit) in [("_seconds", "seconds"), ("_bytes", "bytes")] {
            if name.ends_with(suffix) {
                assert_eq!(
                    family.unit.as_deref(),
                    Some(unit),
                    "{name} declares its unit"
                );
            }
        }
        for (sample, labels, _) in &family.samples {
            match family.kind.as_str() {
                "counter" => assert_eq!(sample, &format!("{name}_total"), "counter sample"),
                "gauge" => assert_eq!(sample, name),
                "info" => assert_eq!(sample, &format!("{name}_info")),
                "histogram" => assert!(
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| sample == &format!("{name}{s}")),
                    "{sample} of histogram {name}"
                ),
                other => panic!("{name}: unexpected type {other}"),
            }
            if sample.ends_with("_bucket") {
                assert!(labels.contains_key("le"), "{sample} {labels:?}");
            }
        }
        if family.kind == "histogram" {
            assert!(
                family
                    .samples
                    .iter()
                    .any(|(_, l, _)| l.get("le").map(String::as_str) == Some("+Inf")),
                "{name} has a +Inf bucket"
            );
        }
    }

    let expect = [
        ("synckit_build", "info"),
        ("synckit_uptime_seconds", "gauge"),
        ("synckit_connections_open", "gauge"),
        ("synckit_subscriptions", "gauge"),
        ("synckit_awareness_clients", "gauge"),
        ("synckit_documents_cached", "gauge"),
        ("synckit_websocket_received_bytes", "counter"),
        ("synckit_broadcast_latency_seconds", "histogram"),
        ("synckit_slow_clients_closed", "counter"),
        ("synckit_writers_paced", "counter"),
        ("synckit_persist_backlog", "gauge"),
        ("synckit_storage_degraded", "gauge"),
        ("synckit_postgres_pool_connections", "gauge"),
        ("synckit_postgres_acquire_seconds", "histogram"),
        ("synckit_postgres_query_seconds", "histogram"),
        ("synckit_pubsub_connected", "gauge"),
        ("synckit_pubsub_state", "gauge"),
        ("synckit_refusals", "counter"),
        ("synckit_log_lines_dropped", "counter"),
        ("synckit_maintenance_runs", "counter"),
        ("synckit_maintenance_failures", "counter"),
        ("synckit_maintenance_duration_seconds", "histogram"),
        (
            "synckit_maintenance_last_success_timestamp_seconds",
            "gauge",
        ),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ];
    for (name, kind) in expect {
        let family = m
            .families
            .get(name)
            .unwrap_or_else(|| panic!("{name} not exported:\n{text}"));
        assert_eq!(family.kind, kind, "{name}");
    }
    // Every definition of the table is exported (the Redis ping once one answered).
    for def in synckit::server::stats::METRICS {
        if def.name == "synckit_pubsub_ping" {
            continue;
        }
        assert!(
            m.families.contains_key(&def.family()),
            "{} exported",
            def.family()
        );
    }

    assert_eq!(
        m.value(
            "synckit_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("synckit_maintenance_runs_total", &[("task", "cleanup")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("synckit_maintenance_failures_total", &[("task", "cleanup")]),
        Some(0.0)
    );
    let now = chrono::Utc::now().timestamp() as f64;
    let last = m
        .value(
            "synckit_maintenance_last_success_timestamp_seconds",
            &[("task", "cleanup")],
        )
        .expect("last success");
    assert!((now - last).abs() < 60.0, "last success {last}, now {now}");
    let open = m
        .value("synckit_postgres_pool_connections", &[("state", "open")])
        .expect("pool size");
    assert!(open >= 1.0, "the pool is connected");
    assert!(m.value("process_resident_memory_bytes", &[]).expect("rss") > 1e6);
    let states: f64 = ["single-instance", "connected", "disconnected"]
        .iter()
        .filter_map(|s| m.value("synckit_pubsub_state", &[("state", s)]))
        .sum();
    assert_eq!(states, 1.0, "exactly one pub/sub state is current");
}
