//! This instance's presence on `<prefix>presence` (docs/storage.md §6.4): `server_online`
//! whenever pub/sub (re)connects — with `"resync": true` after an outage, so peers
//! read back what we wrote while cut off — a `server_heartbeat` with our stats every
//! period, and `server_offline` when the server stops. What the peers announce is
//! kept by the relay in `pubsub::Fleet`.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::pubsub::presence::{PresenceEvent, PresenceKind};
use crate::pubsub::{Connection, PubSubState};

/// What a heartbeat tells the fleet (the typed metadata `/stats` shows too).
pub(crate) fn metadata(state: &AppState) -> Map<String, Value> {
    super::stats::self_metadata(state).to_map()
}

fn announce(state: &AppState, kind: PresenceKind, metadata: Map<String, Value>) {
    let event = PresenceEvent {
        kind,
        server_id: state.instance_id().to_owned(),
        metadata,
    };
    let hub = &state.sync.hub;
    hub.publish(
        &hub.settings().channels.presence(),
        &event.to_json(state.sync.now_ms()),
    );
}

fn online(state: &AppState, after_outage: bool) {
    let mut m = super::stats::self_metadata(state);
    m.resync = Some(after_outage);
    announce(state, PresenceKind::Online, m.to_map());
}

/// Announce and heartbeat until cancelled, then say goodbye.
pub(crate) async fn run(state: Arc<AppState>, cancel: CancellationToken) {
    let pubsub = state.sync.hub.pubsub().clone();
    let channel = state.sync.hub.settings().channels.presence();
    pubsub.subscribe(&channel);
    let mut connections = pubsub.connections();
    // Announce now if connected; otherwise (or also, at worst) the first
    // connection announces.
    if let Some(rx) = &mut connections {
        rx.borrow_and_update();
    }
    if pubsub.state() == PubSubState::Connected {
        online(&state, false);
    }
    let period = state.config.presence_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => announce(&state, PresenceKind::Heartbeat, metadata(&state)),
            c = next_connection(&mut connections) => online(&state, c.after_outage),
        }
    }
    announce(&state, PresenceKind::Offline, Map::new());
    pubsub.unsubscribe(&channel);
}

async fn next_connection(rx: &mut Option<watch::Receiver<Connection>>) -> Connection {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        return std::future::pending().await;
    }
    *rx.borrow_and_update()
}
