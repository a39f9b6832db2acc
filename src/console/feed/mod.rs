//! The feed: the console's only I/O. Every refresh it polls each instance's admin
//! API and PostgreSQL (and the open document's detail), while a separate task taps
//! Redis pub/sub; each source reports as an [`Action`], so any source may be slow,
//! missing or down without holding up the others.
//!
//! Sources: [`admin`] (HTTP admin API), [`postgres`] (one page per table per
//! refresh), [`redis`] (sampled PSUBSCRIBE tap + fleet presence).

pub mod admin;
pub mod http;
pub mod postgres;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::action::Action;
use super::app::FeedRequest;
use super::model::{DocumentDetail, InstanceReport, SourceState};
use postgres::Database;

/// Where the console reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// Admin API addresses (`http://127.0.0.1:9091`).
    pub servers: Vec<String>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub channel_prefix: String,
}

/// Admin addresses announced on the presence channel, shared by the Redis tap
/// (which learns them) and the poller (which polls them too).
pub type Discovered = Arc<Mutex<Vec<String>>>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The polling side of the feed.
pub struct Poller {
    config: FeedConfig,
    database: Option<Result<Database, String>>,
    discovered: Discovered,
}

impl Poller {
    pub fn new(config: FeedConfig) -> Poller {
        let database = config
            .database_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(Database::new);
        Poller {
            config,
            database,
            discovered: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn servers(&self) -> Vec<String> {
        let mut servers = self.config.servers.clone();
        let discovered = self
            .discovered
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        for address in discovered {
            if !servers.contains(&address) {
                servers.push(address);
            }
        }
        servers
    }

    /// Poll every instance concurrently.
    pub async fn instances(&self) -> Vec<InstanceReport> {
        let now = now_ms();
        let polls = self
            .servers()
            .into_iter()
            .map(|address| async move { admin::poll(&address, now).await });
        futures_util::future::join_all(polls).await
    }

    pub async fn database(&self, filter: &str) -> super::model::DatabaseReport {
        match &self.database {
            None => super::model::DatabaseReport::default(),
            Some(Err(error)) => super::model::DatabaseReport {
                state: SourceState::Down {
                    error: error.clone(),
                },
                ..Default::default()
            },
            Some(Ok(db)) => db.poll(filter).await,
        }
    }

    /// A document's drill-down: memory state from whichever instance has it
    /// loaded (else the first that answers), history from PostgreSQL.
    pub async fn detail(&self, id: &str) -> DocumentDetail {
        let mut detail = DocumentDetail {
            id: id.to_owned(),
            fields: Value::Null,
            ..DocumentDetail::default()
        };
        let mut found = false;
        for address in self.servers() {
            match admin::detail(&address, id).await {
                Ok(body) => {
                    let loaded = body.get("loaded").and_then(Value::as_bool) == Some(true);
                    if loaded {
                        detail.loaded_on.push(
                            body.get("instanceId")
                                .and_then(Value::as_str)
                                .map_or(address.clone(), super::rows::short_instance),
                        );
                    }
                    if !found || loaded {
                        fill_from_admin(&mut detail, &body);
                        found = true;
                    }
                }
                Err(e) if e.contains("404") => {}
                Err(e) => detail.problems.push(format!("{address}: {e}")),
            }
        }
        if let Some(Ok(db)) = &self.database {
            match db.history(id).await {
                Ok((deltas, snapshots)) => {
                    detail.deltas = deltas;
                    detail.snapshots = snapshots;
                }
                Err(e) => detail.problems.push(format!("PostgreSQL: {e}")),
            }
            if !found {
                match db.stored(id).await {
                    Ok(Some((fields, clock))) => {
                        detail.fields = fields;
                        detail.clock = clock
                            .into_iter()
                            .map(|(k, v)| (k, u64::try_from(v).unwrap_or(0)))
                            .collect();
                    }
                    Ok(None) => detail.problems.push("not found".into()),
                    Err(e) => detail.problems.push(format!("PostgreSQL: {e}")),
                }
            }
        }
        detail
    }

    pub async fn close(&self) {
        if let Some(Ok(db)) = &self.database {
            db.close().await;
        }
    }
}

fn fill_from_admin(detail: &mut DocumentDetail, body: &Value) {
    detail.fields = body.get("fields").cloned().unwrap_or(Value::Null);
    detail.clock = body
        .get("clock")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default();
    detail.subscribers = body
        .get("subscribers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    detail.awareness =
        admin::parse_awareness_clients(&detail.id, body.get("awareness").unwrap_or(&Value::Null));
}

/// Run the feed until cancelled: polls on the requested refresh, at once when the
/// request changes (a new filter or document), and the Redis tap alongside.
pub async fn run(
    config: FeedConfig,
    mut request: watch::Receiver<FeedRequest>,
    tx: mpsc::Sender<Action>,
    cancel: CancellationToken,
) {
    let poller = Poller::new(config.clone());
    if let Some(url) = config.redis_url.clone().filter(|u| !u.is_empty()) {
        tokio::spawn(redis_with_discovery(
            url,
            config.channel_prefix.clone(),
            tx.clone(),
            request.clone(),
            cancel.clone(),
            poller.discovered.clone(),
        ));
    } else {
        let report = super::model::RedisReport::default();
        let _ = tx.send(Action::Redis(Box::new(report))).await;
    }
    loop {
        let current = request.borrow_and_update().clone();
        let (instances, database) = tokio::join!(
            poller.instances(),
            poller.database(&current.documents_filter)
        );
        let mut sent = tx.send(Action::Instances(instances)).await.is_ok()
            && tx.send(Action::Database(Box::new(database))).await.is_ok();
        if let Some(id) = &current.detail {
            let detail = poller.detail(id).await;
            sent = sent && tx.send(Action::Detail(Box::new(detail))).await.is_ok();
        }
        if !sent {
            break;
        }
        let wait = Duration::from_millis(current.refresh_ms.max(100));
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            changed = request.changed() => if changed.is_err() { break },
        }
    }
    poller.close().await;
}

/// The Redis tap, also publishing discovered admin addresses to the poller.
async fn redis_with_discovery(
    url: String,
    prefix: String,
    tx: mpsc::Sender<Action>,
    request: watch::Receiver<FeedRequest>,
    cancel: CancellationToken,
    discovered: Discovered,
) {
    let (inner_tx, mut inner_rx) = mpsc::channel(16);
    let tap = tokio::spawn(redis::run(url, prefix, inner_tx, request, cancel.clone()));
    while let Some(action) = inner_rx.recv().await {
        if let Action::Redis(report) = &action {
            let admins: Vec<String> = report
                .fleet
                .iter()
                .filter(|m| m.online)
                .filter_map(|m| m.admin.clone())
                .collect();
            if let Ok(mut d) = discovered.lock() {
                *d = admins;
            }
        }
        if tx.send(action).await.is_err() {
            break;
        }
    }
    cancel.cancel();
    let _ = tap.await;
}

/// One poll of every source, for `--once`: Redis is sampled for `sample` (its
/// traffic needs time to be seen).
pub async fn once(config: FeedConfig, filter: &str, sample: Duration) -> Vec<Action> {
    let poller = Poller::new(config.clone());
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let (_request_tx, request) = watch::channel(FeedRequest {
        refresh_ms: u64::try_from(sample.as_millis()).unwrap_or(1000),
        ..FeedRequest::default()
    });
    let redis = config
        .redis_url
        .clone()
        .filter(|u| !u.is_empty())
        .map(|url| {
            tokio::spawn(redis::run(
                url,
                config.channel_prefix.clone(),
                tx,
                request,
                cancel.clone(),
            ))
        });
    let (instances, database) = tokio::join!(poller.instances(), poller.database(filter));
    let mut actions = vec![
        Action::Instances(instances),
        Action::Database(Box::new(database)),
    ];
    if let Some(task) = redis {
        // The first report comes after one sampling window.
        match tokio::time::timeout(sample + Duration::from_secs(3), rx.recv()).await {
            Ok(Some(action)) => actions.push(action),
            _ => actions.push(Action::Redis(Box::new(super::model::RedisReport {
                state: SourceState::Down {
                    error: "no answer".into(),
                },
                ..Default::default()
            }))),
        }
        cancel.cancel();
        let _ = task.await;
    }
    poller.close().await;
    actions
}
