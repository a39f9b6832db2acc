//! The Redis source: a sampled tap on the fleet's pub/sub traffic and the fleet's
//! presence. It PSUBSCRIBEs to `<prefix>*` — an ordinary subscriber, like any
//! instance — and never uses MONITOR, which would slow every command on the server.
//! Every message is counted (per-channel rates); at most `SAMPLES_PER_SECOND` are
//! kept for display, so a busy fleet costs the console a bounded amount of work.
//!
//! `Sampler` is pure (tested without Redis); [`run`] is the connection loop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::console::action::Action;
use crate::console::app::FeedRequest;
use crate::console::model::{
    ChannelRate, FleetMember, PeerStatus, PresenceMetadata, RedisReport, SourceState, TrafficSample,
};

/// Samples kept per second; the rest are only counted.
const SAMPLES_PER_SECOND: u32 = 20;
/// Payloads larger than this are not parsed for their type and origin.
const PARSE_LIMIT: usize = 64 * 1024;
/// A fleet member silent for this many of its heartbeat periods is shown gone
/// (as the servers judge their peers).
const GONE_AFTER_HEARTBEATS: i64 = 3;
/// The period assumed for members that do not state theirs.
const DEFAULT_PERIOD_MS: i64 = 10_000;
/// What a sampled payload keeps for display: strings cut to this many characters,
/// arrays and objects to this many entries, nesting to this depth, and this many
/// values in all. Bounds the memory of the Traffic view whatever is published.
const KEEP_CHARS: usize = 80;
const KEEP_ENTRIES: usize = 20;
const KEEP_DEPTH: usize = 6;
const KEEP_VALUES: usize = 200;

/// A copy of `v` with long values cut (`…`), for display. Depth-bounded, so a
/// deeply nested payload cannot recurse far.
pub fn truncate_payload(v: &Value) -> Value {
    let mut budget = KEEP_VALUES;
    cut(v, 0, &mut budget)
}

fn cut(v: &Value, depth: usize, budget: &mut usize) -> Value {
    if *budget == 0 {
        return Value::String("…".into());
    }
    *budget -= 1;
    match v {
        Value::String(s) if s.chars().count() > KEEP_CHARS => {
            let mut t: String = s.chars().take(KEEP_CHARS).collect();
            t.push('…');
            Value::String(t)
        }
        Value::Array(_) | Value::Object(_) if depth >= KEEP_DEPTH => Value::String("…".into()),
        Value::Array(items) => {
            let mut out: Vec<Value> = items
                .iter()
                .take(KEEP_ENTRIES)
                .map(|i| cut(i, depth + 1, budget))
                .collect();
            if items.len() > KEEP_ENTRIES {
                out.push(Value::String(format!(
                    "… {} more",
                    items.len() - KEEP_ENTRIES
                )));
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> = map
                .iter()
                .take(KEEP_ENTRIES)
                .map(|(k, i)| (k.clone(), cut(i, depth + 1, budget)))
                .collect();
            if map.len() > KEEP_ENTRIES {
                out.insert(
                    "…".into(),
                    Value::String(format!("{} more", map.len() - KEEP_ENTRIES)),
                );
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Counts and samples pub/sub messages between two reports.
#[derive(Debug, Default)]
struct Sampler {
    prefix: String,
    totals: BTreeMap<String, u64>,
    window: BTreeMap<String, u64>,
    window_start_ms: i64,
    samples: Vec<TrafficSample>,
    second: i64,
    sampled_this_second: u32,
    fleet: BTreeMap<String, FleetMember>,
}

impl Sampler {
    pub(crate) fn new(prefix: &str, now_ms: i64) -> Sampler {
        Sampler {
            prefix: prefix.to_owned(),
            window_start_ms: now_ms,
            ..Sampler::default()
        }
    }

    /// `(kind, document)` of a channel: `<prefix>delta:<doc>` → `("delta", doc)`.
    pub(crate) fn classify(&self, channel: &str) -> (String, Option<String>) {
        let rest = channel.strip_prefix(&self.prefix).unwrap_or(channel);
        match rest.split_once(':') {
            Some((kind, document)) => (kind.to_owned(), Some(document.to_owned())),
            None => (rest.to_owned(), None),
        }
    }

    pub(crate) fn observe(&mut self, channel: &str, payload: &[u8], now_ms: i64) {
        let (kind, document) = self.classify(channel);
        *self.totals.entry(kind.clone()).or_insert(0) += 1;
        *self.window.entry(kind.clone()).or_insert(0) += 1;
        let parsed: Option<Value> = (payload.len() <= PARSE_LIMIT)
            .then(|| serde_json::from_slice(payload).ok())
            .flatten();
        if kind == "presence" {
            if let Some(msg) = &parsed {
                self.presence(msg, now_ms);
            }
        }
        let second = now_ms.div_euclid(1000);
        if second != self.second {
            self.second = second;
            self.sampled_this_second = 0;
        }
        if self.sampled_this_second >= SAMPLES_PER_SECOND {
            return;
        }
        self.sampled_this_second += 1;
        let field = |k: &str| {
            parsed
                .as_ref()
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        self.samples.push(TrafficSample {
            at_ms: now_ms,
            channel: channel.to_owned(),
            kind: field("type").unwrap_or_else(|| kind.clone()),
            document: document.or_else(|| field("documentId")),
            size: payload.len(),
            origin: field("origin").or_else(|| field("serverId")),
            payload: parsed.as_ref().map(truncate_payload),
        });
    }

    fn presence(&mut self, msg: &Value, now_ms: i64) {
        let Some(server_id) = msg.get("serverId").and_then(Value::as_str) else {
            return;
        };
        let status = if msg.get("type").and_then(Value::as_str) == Some("server_offline") {
            PeerStatus::Offline
        } else {
            PeerStatus::Online
        };
        let metadata = msg
            .get("metadata")
            .and_then(Value::as_object)
            .map(PresenceMetadata::from_map);
        let member = self
            .fleet
            .entry(server_id.to_owned())
            .or_insert_with(|| FleetMember {
                server_id: server_id.to_owned(),
                ..FleetMember::default()
            });
        member.last_seen_ms = now_ms;
        member.status = status;
        // A goodbye carries no metadata: keep what the heartbeats said.
        if let Some(m) = metadata.filter(|m| !m.is_empty()) {
            member.metadata = m;
        }
    }

    /// What happened since the last report; the window restarts.
    pub(crate) fn report(&mut self, now_ms: i64, state: SourceState) -> RedisReport {
        let seconds = ((now_ms - self.window_start_ms) as f64 / 1000.0).max(0.001);
        let rates = self
            .totals
            .iter()
            .map(|(kind, total)| ChannelRate {
                kind: kind.clone(),
                per_second: *self.window.get(kind).unwrap_or(&0) as f64 / seconds,
                total: *total,
            })
            .collect();
        self.window.clear();
        self.window_start_ms = now_ms;
        for member in self.fleet.values_mut() {
            let period = member
                .metadata
                .heartbeat_interval_ms
                .filter(|p| *p > 0)
                .unwrap_or(DEFAULT_PERIOD_MS);
            if member.status == PeerStatus::Online
                && now_ms - member.last_seen_ms > period * GONE_AFTER_HEARTBEATS
            {
                member.status = PeerStatus::Gone;
            }
        }
        RedisReport {
            state,
            samples: std::mem::take(&mut self.samples),
            rates,
            fleet: self.fleet.values().cloned().collect(),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Tap `<prefix>*` until cancelled, reporting every refresh interval; reconnects
/// after a failure (and reports the source down meanwhile).
pub async fn run(
    url: String,
    prefix: String,
    tx: mpsc::Sender<Action>,
    request: watch::Receiver<FeedRequest>,
    cancel: CancellationToken,
) {
    let mut sampler = Sampler::new(&prefix, now_ms());
    let log = super::StateLog::default();
    loop {
        let error = match tap(&url, &prefix, &mut sampler, &tx, &request, &cancel, &log).await {
            Ok(()) => return,
            Err(e) => e,
        };
        let state = SourceState::Down { error };
        if !log.observe("redis", &state) {
            tracing::debug!(?state, "console: redis tap still failing; retrying");
        }
        let report = sampler.report(now_ms(), state);
        if tx.send(Action::Redis(Box::new(report))).await.is_err() {
            return;
        }
        let wait = Duration::from_millis(request.borrow().refresh_ms.max(1000));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One connection's life: Ok when cancelled, Err when Redis failed.
async fn tap(
    url: &str,
    prefix: &str,
    sampler: &mut Sampler,
    tx: &mpsc::Sender<Action>,
    request: &watch::Receiver<FeedRequest>,
    cancel: &CancellationToken,
    log: &super::StateLog,
) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut commands = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    pubsub
        .psubscribe(format!("{prefix}*"))
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = pubsub.on_message();
    let refresh = || Duration::from_millis(request.borrow().refresh_ms.max(100));
    let mut next_report = tokio::time::Instant::now() + refresh();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            msg = messages.next() => {
                let Some(msg) = msg else { return Err("connection closed".into()) };
                sampler.observe(msg.get_channel_name(), msg.get_payload_bytes(), now_ms());
            }
            _ = tokio::time::sleep_until(next_report) => {
                next_report = tokio::time::Instant::now() + refresh();
                let started = Instant::now();
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut commands).await;
                pong.map_err(|e| e.to_string())?;
                let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let state = SourceState::Up { latency_ms };
                log.observe("redis", &state);
                let report = sampler.report(now_ms(), state);
                if tx.send(Action::Redis(Box::new(report))).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_bounded_and_every_message_counted() {
        let mut s = Sampler::new("synckit:", 0);
        for i in 0..100 {
            s.observe(
                "synckit:delta:doc-1",
                br#"{"type":"delta","origin":"inst-a"}"#,
                500 + i,
            );
        }
        s.observe(
            "synckit:presence",
            br#"{"type":"server_heartbeat","serverId":"inst-b","timestamp":1,"metadata":{"admin":"http://10.0.0.2:9091"}}"#,
            1500,
        );
        let r = s.report(2000, SourceState::Up { latency_ms: 1 });
        assert_eq!(r.samples.len(), SAMPLES_PER_SECOND as usize + 1);
        assert_eq!(r.samples[0].document.as_deref(), Some("doc-1"));
        assert_eq!(r.samples[0].origin.as_deref(), Some("inst-a"));
        let delta = r
            .rates
            .iter()
            .find(|x| x.kind == "delta")
            .expect("delta rate");
        assert_eq!(delta.total, 100);
        assert!((delta.per_second - 50.0).abs() < 1e-9);
        assert_eq!(r.fleet.len(), 1);
        assert_eq!(
            r.fleet[0].metadata.admin.as_deref(),
            Some("http://10.0.0.2:9091")
        );
        assert_eq!(r.fleet[0].status, PeerStatus::Online);
        let later = s.report(200_000, SourceState::Up { latency_ms: 1 });
        assert!(later.samples.is_empty());
        assert_eq!(
            later.fleet[0].status,
            PeerStatus::Gone,
            "silent presence shows gone"
        );
        s.observe(
            "synckit:presence",
            br#"{"type":"server_offline","serverId":"inst-b","timestamp":2}"#,
            200_001,
        );
        let r = s.report(200_002, SourceState::Up { latency_ms: 1 });
        assert_eq!(r.fleet[0].status, PeerStatus::Offline);
        assert!(
            r.fleet[0].metadata.admin.is_some(),
            "a goodbye keeps what was known"
        );
    }

    #[test]
    fn payloads_are_kept_cut_and_bounded() {
        let long = "x".repeat(500);
        let many: Vec<u32> = (0..100).collect();
        let mut deep = serde_json::json!(1);
        for _ in 0..100 {
            deep = serde_json::json!([deep]);
        }
        let v = serde_json::json!({"s": long, "a": many, "d": deep});
        let t = truncate_payload(&v);
        assert_eq!(
            t["s"].as_str().map(|s| s.chars().count()),
            Some(KEEP_CHARS + 1)
        );
        assert_eq!(t["a"].as_array().map(Vec::len), Some(KEEP_ENTRIES + 1));
        assert!(t.to_string().len() < 4096, "{t}");
        let wide: serde_json::Map<String, Value> = (0..5000)
            .map(|i| (format!("k{i}"), Value::from(i)))
            .collect();
        let t = truncate_payload(&Value::Object(wide));
        assert!(t.as_object().is_some_and(|m| m.len() == KEEP_ENTRIES + 1));
    }
}
