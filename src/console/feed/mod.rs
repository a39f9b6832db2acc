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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::action::Action;
use super::app::FeedRequest;
use super::model::{DocumentDetail, InstanceReport, PeerStatus, RedisReport, SourceState};
use postgres::Database;

/// Where the console reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// Admin API addresses (`http://127.0.0.1:9091`).
    pub servers: Vec<String>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub channel_prefix: String,
    /// Sent with every admin-API request.
    pub credential: super::credential::Credential,
}

/// Admin addresses announced on the presence channel, shared by the Redis tap
/// (which learns them) and the poller (which polls them too).
type Discovered = Arc<Mutex<Vec<String>>>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Rounds of discovery `--once` makes (each polls the addresses the previous one
/// learned); a fleet is found in one or two.
const DISCOVERY_ROUNDS: usize = 4;
/// Instances polled at most (a bound on what presence can make the console do).
const MAX_INSTANCES: usize = 64;
/// `--once` waits at most this long for presence when no instance states its
/// heartbeat period.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// … and never longer than this, whatever they state.
const MAX_SETTLE: Duration = Duration::from_secs(60);

/// Logs a source's state when it changes, not on every refresh: a source that
/// stays down for an hour logs two lines, not thousands.
#[derive(Default)]
struct StateLog {
    last: Mutex<BTreeMap<String, bool>>,
}

impl StateLog {
    /// Returns whether this was a change (and logged it).
    pub(crate) fn observe(&self, source: &str, state: &SourceState) -> bool {
        let up = match state {
            SourceState::Off => return false,
            SourceState::Up { .. } => true,
            SourceState::Down { .. } => false,
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let before = last.insert(source.to_owned(), up);
        if before == Some(up) || (before.is_none() && up) {
            return false;
        }
        match state {
            SourceState::Down { error } => {
                tracing::warn!(source, %error, "console: source down (logged once until it is back)")
            }
            _ => tracing::info!(source, "console: source back"),
        }
        true
    }
}

/// The polling side of the feed.
pub struct Poller {
    config: FeedConfig,
    database: Option<Result<Database, String>>,
    /// Announced on Redis presence (the tap fills it).
    discovered: Discovered,
    /// Announced in the `/stats` fleet lists of the instances polled last.
    listed: Mutex<Vec<String>>,
    /// Per address: the instance id and the newest event sequence number seen.
    events_seen: Mutex<BTreeMap<String, (Option<String>, u64)>>,
    /// Announced addresses that turned out to reach an instance already polled under
    /// another address (`localhost` vs `127.0.0.1`): not polled again, so nothing is
    /// counted twice.
    aliases: Mutex<BTreeSet<String>>,
    log: StateLog,
}

/// The admin addresses of the instances a `/stats` lists as running or silent
/// (not those that said goodbye: their API is closed).
fn announced(reports: &[InstanceReport]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|r| r.stats.as_ref())
        .flat_map(|s| s.instances.iter())
        .filter(|e| !e.is_self && e.status != PeerStatus::Offline)
        .filter_map(|e| e.metadata.admin.clone())
        .collect()
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
            listed: Mutex::new(Vec::new()),
            events_seen: Mutex::new(BTreeMap::new()),
            aliases: Mutex::new(BTreeSet::new()),
            log: StateLog::default(),
        }
    }

    fn servers(&self) -> Vec<String> {
        let mut servers = self.config.servers.clone();
        let discovered = self
            .discovered
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let listed = self.listed.lock().map(|d| d.clone()).unwrap_or_default();
        let aliases = self.aliases.lock().map(|a| a.clone()).unwrap_or_default();
        for address in discovered.into_iter().chain(listed) {
            if !servers.contains(&address)
                && !aliases.contains(&address)
                && servers.len() < MAX_INSTANCES
            {
                servers.push(address);
            }
        }
        servers
    }

    fn events_after(&self, address: &str) -> u64 {
        self.events_seen
            .lock()
            .map(|m| m.get(address).map_or(0, |(_, seq)| *seq))
            .unwrap_or(0)
    }

    /// Remember the newest event of each answer; after a restart (a new instance
    /// id at the address) ask for everything again.
    fn saw_events(&self, report: &InstanceReport) {
        let Some(stats) = &report.stats else { return };
        let Ok(mut seen) = self.events_seen.lock() else {
            return;
        };
        let entry = seen
            .entry(report.address.clone())
            .or_insert((stats.instance_id.clone(), 0));
        if entry.0 != stats.instance_id {
            *entry = (stats.instance_id.clone(), 0);
            return;
        }
        if let Some(newest) = report.events.iter().map(|e| e.seq).max() {
            entry.1 = entry.1.max(newest);
        }
    }

    /// Poll every instance concurrently.
    pub async fn instances(&self) -> Vec<InstanceReport> {
        let now = now_ms();
        let polls = self.servers().into_iter().map(|address| async move {
            let after = self.events_after(&address);
            let token = self.config.credential.bearer();
            admin::poll(&address, now, after, token.as_deref()).await
        });
        let mut reports = futures_util::future::join_all(polls).await;
        self.drop_aliases(&mut reports);
        for r in &reports {
            self.log.observe(&format!("admin {}", r.address), &r.state);
            self.saw_events(r);
        }
        if let Ok(mut listed) = self.listed.lock() {
            *listed = announced(&reports);
        }
        reports
    }

    /// Keep one report per instance (the configured address first) and remember
    /// the other addresses as aliases.
    fn drop_aliases(&self, reports: &mut Vec<InstanceReport>) {
        let mut ids = BTreeSet::new();
        let mut aliases = Vec::new();
        reports.retain(|r| {
            let Some(id) = r.stats.as_ref().and_then(|s| s.instance_id.clone()) else {
                return true;
            };
            let first = ids.insert(id);
            if !first {
                aliases.push(r.address.clone());
            }
            first
        });
        if let Ok(mut known) = self.aliases.lock() {
            known.extend(
                aliases
                    .into_iter()
                    .filter(|a| !self.config.servers.contains(a)),
            );
        }
    }

    /// Poll until no answer names an instance not yet polled (bounded rounds).
    pub(crate) async fn fleet(&self) -> Vec<InstanceReport> {
        let mut reports = self.instances().await;
        for _ in 1..DISCOVERY_ROUNDS {
            let polled: Vec<&str> = reports.iter().map(|r| r.address.as_str()).collect();
            if self.servers().iter().all(|s| polled.contains(&s.as_str())) {
                break;
            }
            reports = self.instances().await;
        }
        reports
    }

    pub async fn database(&self, filter: &str) -> super::model::DatabaseReport {
        let report = match &self.database {
            None => super::model::DatabaseReport::default(),
            Some(Err(error)) => super::model::DatabaseReport {
                state: SourceState::Down {
                    error: error.clone(),
                },
                ..Default::default()
            },
            Some(Ok(db)) => db.poll(filter).await,
        };
        self.log.observe("postgres", &report.state);
        report
    }

    /// A document's drill-down: subscribers and awareness merged from every
    /// instance (each knows only its own), fields and clock from one that has it
    /// loaded (else the first that answers, else PostgreSQL), history from
    /// PostgreSQL.
    pub async fn detail(&self, id: &str) -> DocumentDetail {
        let mut detail = DocumentDetail {
            id: id.to_owned(),
            fields: Value::Null,
            ..DocumentDetail::default()
        };
        let mut found = false;
        let mut from_loaded = false;
        let answers =
            futures_util::future::join_all(self.servers().into_iter().map(|address| async move {
                let token = self.config.credential.bearer();
                (admin::detail(&address, id, token.as_deref()).await, address)
            }))
            .await;
        for (answer, address) in answers {
            match answer {
                Ok(body) => {
                    if body.loaded {
                        detail
                            .loaded_on
                            .push(super::rows::short_instance(&body.instance_id));
                    }
                    if !found || (body.loaded && !from_loaded) {
                        detail.fields = body.fields.clone();
                        detail.clock = body.clock.clone();
                        found = true;
                        from_loaded = body.loaded;
                    }
                    for s in body.subscribers {
                        if !detail.subscribers.contains(&s) {
                            detail.subscribers.push(s);
                        }
                    }
                    for a in admin::awareness_clients(id, body.awareness) {
                        if !detail.awareness.iter().any(|b| b.client_id == a.client_id) {
                            detail.awareness.push(a);
                        }
                    }
                    if let Some(e) = body.awareness_error {
                        detail.problems.push(format!("{address}: {e}"));
                    }
                }
                Err(e) if e.contains("404") => {}
                Err(e) => detail.problems.push(format!("{address}: {e}")),
            }
        }
        detail.subscribers.sort();
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

/// Run the feed until cancelled: polls on the requested refresh, at once when the
/// request changes (a new filter or document), and the Redis tap alongside.
pub(crate) async fn run(
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

/// The admin addresses presence announced, of instances that did not say goodbye.
fn presence_admins(report: &RedisReport) -> Vec<String> {
    report
        .fleet
        .iter()
        .filter(|m| m.status != PeerStatus::Offline)
        .filter_map(|m| m.metadata.admin.clone())
        .collect()
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
            let admins = presence_admins(report);
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

/// How long `--once` waits for presence: the longest heartbeat period an
/// instance states, bounded.
fn settle_time(reports: &[InstanceReport]) -> Duration {
    reports
        .iter()
        .filter_map(|r| r.stats.as_ref())
        .flat_map(|s| s.instances.iter())
        .filter_map(|e| e.metadata.heartbeat_interval_ms)
        .filter_map(|ms| u64::try_from(ms).ok())
        .max()
        .map_or(DEFAULT_HEARTBEAT, Duration::from_millis)
        .min(MAX_SETTLE)
}

/// The instances presence should hear: those the polled ones list as running — a
/// polled instance only when it is connected to Redis (a single instance sends no
/// heartbeats, and waiting for one would only delay the answer).
fn expected_online(reports: &[InstanceReport]) -> BTreeSet<String> {
    reports
        .iter()
        .filter_map(|r| r.stats.as_ref())
        .flat_map(|s| {
            let heartbeats = s.pubsub.state.as_deref() == Some("connected");
            s.instances.iter().filter(move |e| !e.is_self || heartbeats)
        })
        .filter(|e| e.status == PeerStatus::Online)
        .map(|e| e.server_id.clone())
        .collect()
}

/// Fold the tap's successive reports into one: every sample, the newest rates,
/// state and fleet.
fn fold(into: &mut Option<RedisReport>, report: RedisReport) {
    match into {
        Some(acc) => {
            acc.samples.extend(report.samples);
            acc.rates = report.rates;
            acc.state = report.state;
            acc.fleet = report.fleet;
        }
        None => *into = Some(report),
    }
}

/// One poll of every source, for `--once`: the fleet is polled until no answer
/// names an instance not yet polled; Redis is sampled for `sample` and, so the
/// fleet it shows has settled, until its presence has heard every instance the
/// polled ones list as online — one heartbeat period at most.
pub(crate) async fn once(config: FeedConfig, filter: &str, sample: Duration) -> Vec<Action> {
    let poller = Poller::new(config.clone());
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let (_request_tx, request) = watch::channel(FeedRequest {
        refresh_ms: u64::try_from(sample.as_millis()).unwrap_or(1000),
        ..FeedRequest::default()
    });
    let started = tokio::time::Instant::now();
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
    let (mut instances, database) = tokio::join!(poller.fleet(), poller.database(filter));
    let mut actions = vec![Action::Database(Box::new(database))];
    if let Some(task) = redis {
        let expected = expected_online(&instances);
        let deadline = started + sample.max(settle_time(&instances)) + Duration::from_secs(3);
        let mut folded: Option<RedisReport> = None;
        loop {
            let Ok(Some(Action::Redis(report))) =
                tokio::time::timeout_at(deadline, rx.recv()).await
            else {
                break;
            };
            let down = !report.state.is_up();
            fold(&mut folded, *report);
            let heard: BTreeSet<&str> = folded
                .iter()
                .flat_map(|r| r.fleet.iter())
                .filter(|m| m.status == PeerStatus::Online)
                .map(|m| m.server_id.as_str())
                .collect();
            if down || expected.iter().all(|id| heard.contains(id.as_str())) {
                break;
            }
        }
        cancel.cancel();
        let _ = task.await;
        let report = folded.unwrap_or_else(|| RedisReport {
            state: SourceState::Down {
                error: "no answer".into(),
            },
            ..Default::default()
        });
        // Presence may have named instances no poll found yet.
        let admins = presence_admins(&report);
        let polled: Vec<&str> = instances.iter().map(|r| r.address.as_str()).collect();
        if admins.iter().any(|a| !polled.contains(&a.as_str())) {
            if let Ok(mut d) = poller.discovered.lock() {
                *d = admins;
            }
            instances = poller.fleet().await;
        }
        actions.push(Action::Redis(Box::new(report)));
    }
    actions.insert(0, Action::Instances(instances));
    poller.close().await;
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_state_is_logged_when_it_changes_not_every_refresh() {
        let log = StateLog::default();
        let up = SourceState::Up { latency_ms: 1 };
        let down = SourceState::Down {
            error: "refused".into(),
        };
        assert!(!log.observe("redis", &up), "up from the start is not news");
        assert!(log.observe("redis", &down));
        for _ in 0..100 {
            assert!(!log.observe("redis", &down), "still down: nothing more");
        }
        assert!(log.observe("redis", &up), "back");
        assert!(!log.observe("redis", &SourceState::Off));
        assert!(
            log.observe("postgres", &down),
            "down from the start is news"
        );
    }
}
