//! The shipped Grafana dashboard and Prometheus alert rules
//! (packaging/monitoring/) only use metrics a live server exports: every
//! `synckit_*` and `process_*` name in their expressions is scraped from a
//! `synckit serve` on PostgreSQL and Redis. (`promtool check rules` and
//! `promtool test rules` run in .ci/run.)

use std::collections::BTreeSet;

use sqlx::PgPool;

const DASHBOARD: &str = include_str!("../../packaging/monitoring/synckit-dashboard.json");
const RULES: &str = include_str!("../../packaging/monitoring/synckit-alerts.yml");

/// Metric names in a PromQL expression: identifiers starting `synckit_` or
/// `process_` (label values are quoted, so never taken for names).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_quotes = false;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_quotes = !in_quotes;
            word.clear();
            continue;
        }
        if !in_quotes && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("synckit_") || word.starts_with("process_") {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard worth installing");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("target expr").to_owned())
        .collect()
}

fn rule_exprs() -> Vec<String> {
    RULES
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_owned())
        .collect()
}

#[test]
fn the_rules_cover_what_operators_must_hear_about() {
    let alerts: Vec<&str> = RULES
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    for alert in [
        "SynckitInstanceDown",
        "SynckitStorageDegraded",
        "SynckitWriteBacklogGrowing",
        "SynckitPubSubDisconnected",
        "SynckitCleanupFailing",
        "SynckitCleanupNotRun",
        "SynckitSlowClientClosesSpiking",
    ] {
        assert!(alerts.contains(&alert), "{alert} in {alerts:?}");
    }
    assert_eq!(rule_exprs().len(), alerts.len(), "one expr per alert");
    assert_eq!(
        metric_names(r#"rate(synckit_x_total{job="synckit_y"}[5m]) > process_z"#),
        ["process_z", "synckit_x_total"].map(String::from).into()
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn every_metric_the_dashboard_and_rules_use_is_exported(pool: PgPool) {
    let (_child, _public, admin) = crate::metrics::serve_on(&pool).await;
    // Redis is connected in the background; its ping gauge follows the first PING.
    let mut exported = BTreeSet::new();
    for _ in 0..50 {
        let (_, m) = crate::metrics::scrape_after_a_cleanup(admin).await;
        exported = m.sample_names();
        if exported.contains("synckit_pubsub_ping_seconds") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let used: BTreeSet<String> = dashboard_exprs()
        .iter()
        .chain(rule_exprs().iter())
        .flat_map(|e| metric_names(e))
        .collect();
    assert!(used.len() >= 20, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
}
