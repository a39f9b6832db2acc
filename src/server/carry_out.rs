//! The connection layer's half of the sans-I/O session: it does what a session's
//! [`Outcome`] asks — sends the replies, makes the broadcasts, starts the effects —
//! and performs the I/O the session waits on (a load, an awareness read or write, a
//! text merge, a large decode), handing each answer back until the message is done
//! (ARCHITECTURE.md, "The session is sans-I/O").

use std::sync::Arc;

use tokio::time::Instant;

use crate::fanout::publish;
use crate::protocol::encode::next_message_id;
use crate::protocol::{encode, DecodeError, ServerMessage};
use crate::sync::session::{Broadcast, CloseRequest, Done, Effect, Io, Outcome, Reply};
use crate::sync::{Outgoing, Peer, Session, SyncService};

/// Carry out `outcome`, a step of `session` at `now`, and every step its I/O leads
/// to: `Err` when the session asked for the connection to close (its replies sent
/// first).
pub async fn carry_out(
    svc: &Arc<SyncService>,
    peer: &Peer,
    session: &mut Session,
    mut outcome: Outcome,
    now: Instant,
) -> Result<(), CloseRequest> {
    loop {
        let (io, close) = deliver(svc, peer, outcome);
        if let Some(close) = close {
            return Err(close);
        }
        let Some(io) = io else {
            return Ok(());
        };
        let done = perform(svc, *io).await;
        outcome = session.resume(done, now);
    }
}

/// The part of an outcome that needs no waiting: replies, broadcasts and effects,
/// done now. Gives back its I/O and its close, if any.
pub(crate) fn deliver(
    svc: &Arc<SyncService>,
    peer: &Peer,
    outcome: Outcome,
) -> (Option<Box<Io>>, Option<CloseRequest>) {
    let Outcome {
        replies,
        broadcasts,
        effects,
        io,
        close,
    } = outcome;
    for reply in replies {
        send_reply(svc, peer, reply);
    }
    for broadcast in broadcasts {
        make_broadcast(svc, peer, broadcast);
    }
    for effect in effects {
        start_effect(svc, effect);
    }
    (io, close)
}

/// Send a reply to this connection in its encoding, counted.
pub(crate) fn send_reply(svc: &SyncService, peer: &Peer, reply: Reply) {
    let Reply { msg, id } = reply;
    let now = svc.now_ms();
    let id = id.unwrap_or_else(|| next_message_id(now));
    let frame = encode(&msg, &id, now, peer.encoding());
    if let ServerMessage::Error { error, .. } = &msg {
        svc.metrics.error_sent(error);
    }
    if matches!(msg, ServerMessage::Ack { .. }) {
        svc.metrics.acks_sent.inc();
    }
    svc.metrics.message_out(msg.kind(), 1);
    peer.send_own(Outgoing::Frame(frame));
}

/// Send to this instance's other subscribers now and publish to the other instances.
/// A broadcast that crowded a subscriber paces its sender, as a field write does
/// (src/sync/peer.rs).
fn make_broadcast(svc: &SyncService, peer: &Peer, broadcast: Broadcast) {
    let conn_id = Some(peer.conn_id);
    let crowded = match broadcast {
        Broadcast::Ops { entry, msg } => {
            let crowded = svc.hub.send_to_subscribers(&entry, &msg, false, conn_id);
            publish::publish_op_relay(&svc.hub, &entry.id, &msg);
            crowded
        }
        Broadcast::Awareness { document_id, msg } => {
            publish::broadcast_awareness(&svc.hub, &document_id, &msg, conn_id, true)
        }
    };
    if crowded {
        peer.ask_to_pace();
    }
}

fn start_effect(svc: &Arc<SyncService>, effect: Effect) {
    let storage = svc.hub.storage();
    match effect {
        // Written behind: a connection never waits on the database.
        Effect::SaveSession(record) => storage.save_session(record),
        Effect::TouchSession(id) => storage.touch_session(&id),
        Effect::DeleteSession(id) => storage.delete_session(&id),
        Effect::RemoveAwareness { connection } => remove_awareness(svc, connection),
    }
}

/// Remove a closed connection's awareness entries and broadcast their leaves, from
/// a task of its own: with a shared store (PostgreSQL, Redis) the removal is a
/// round trip, and the close frame must not wait on it — nor on an outage (the store
/// is bounded, README "Running several instances"). Entries a failed removal leaves
/// behind expire.
fn remove_awareness(svc: &Arc<SyncService>, connection: String) {
    let svc_for_task = svc.clone();
    svc.tasks.spawn(async move {
        let svc = svc_for_task;
        match svc.awareness.remove_connection(&connection).await {
            Ok(entries) => {
                for entry in &entries {
                    publish::announce_leave(&svc.hub, entry);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not remove awareness of closed connection")
            }
        }
    });
}

/// Do one piece of I/O a session waits on, and give its answer.
pub(crate) async fn perform(svc: &SyncService, io: Io) -> Done {
    match io {
        Io::Decode(frame) => {
            // A decode that panicked is garbage, answered like any other.
            let decoded = tokio::task::spawn_blocking(move || frame.decode())
                .await
                .unwrap_or(Err(DecodeError::Invalid));
            Done::Decoded(decoded)
        }
        Io::Open(id) => Done::Opened(svc.hub.open(&id).await),
        Io::AwarenessRead {
            document_id,
            now_ms,
        } => Done::AwarenessRead(svc.awareness.get_all(&document_id, now_ms).await),
        Io::AwarenessSet(update) => Done::AwarenessSet(svc.awareness.set(update).await),
        Io::MergeText {
            target,
            state,
            clock,
            now_ms,
        } => Done::TextMerged(svc.hub.apply_text(&target, state, clock, now_ms).await),
    }
}
