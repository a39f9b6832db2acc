//! The broadcast batch: field results coalesced per document for the batch window,
//! then flushed — one delta per field, encoded once per encoding and shared by all
//! subscribers — and this instance's part published to pub/sub.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{DocEntry, DocState, Hub, Pending, PendingBatch, PeerList, QueuedField};
use crate::hash::FastMap;
use crate::protocol::encode::{encode_body, field_delta_body, next_message_id, push_json_string};
use crate::protocol::{EncodedFrame, Encoding, Framed, MessageType};
use crate::pubsub::PubSubState;
use crate::sync::clock::VectorClock;
use crate::sync::peer::{Outgoing, Tally};

impl Hub {
    /// Returns whether a flush must be scheduled (the batch went from empty to not).
    pub(super) fn queue_locked(&self, st: &mut DocState, fields: Vec<QueuedField>, local: bool) -> bool {
        if fields.is_empty() {
            return false;
        }
        let was_empty = st.pending.order.is_empty();
        for (field, value, writer) in fields {
            match st.pending.values.get_mut(&field) {
                Some(slot) => {
                    slot.value = value;
                    slot.local |= local;
                    slot.writer = writer;
                }
                None => {
                    st.pending.order.push(field.clone());
                    let pending = Pending {
                        value,
                        local,
                        writer,
                    };
                    st.pending.values.insert(field, pending);
                }
            }
        }
        if was_empty {
            st.pending.since = Some(Instant::now());
        }
        was_empty
    }

    /// Flush now with batching off, else queue the flush for the end of the window.
    /// Returns whether a flush made here left a subscriber crowded (see
    /// [`Hub::flush`]).
    pub(super) fn schedule_flush(&self, entry: &Arc<DocEntry>) -> bool {
        if self.settings.batch_delay.is_zero() {
            return self.flush(entry);
        }
        let due = Instant::now() + self.settings.batch_delay;
        if self.flush_tx.send((entry.clone(), due)).is_err() {
            // The flusher is gone (shutdown): deliver now rather than never.
            return self.flush(entry);
        }
        false
    }

    /// Send a document's pending batch: one SDK-shape `delta` per field to every
    /// subscriber including the writers, then publish the local part to pub/sub.
    ///
    /// A field's delta carries a compact clock — the entry its write ticked and the
    /// document's largest entry — not the whole clock: SDK clients order updates by
    /// max(clock), which this keeps, and a delta stays small however many writers
    /// the document has had (`sync_response` carries the whole clock).
    ///
    /// Returns whether a subscriber was left crowded (half its broadcast budget
    /// waiting), so that whoever caused the flush right now — a writer with
    /// batching off, the relay of other instances' writes — paces itself
    /// (src/sync/peer.rs). The batch window's flusher does not: a window is one
    /// broadcast per subscriber however fast its writers write, so slowing them
    /// would not shorten the backlog.
    pub(crate) fn flush(&self, entry: &DocEntry) -> bool {
        let clustered = self.pubsub.state() != PubSubState::SingleInstance;
        let Some(taken) = take_batch(entry, clustered) else {
            return false;
        };
        let now_ms = self.now_ms();
        let TakenBatch {
            batch,
            clocks,
            clock_json,
            full_clock,
            subscribers,
        } = taken;
        let PendingBatch {
            order,
            values,
            since,
            writers,
        } = batch;
        let (bodies, published) = delta_bodies(
            &entry.id,
            order,
            values,
            &clocks,
            &clock_json,
            full_clock.is_some(),
            now_ms,
        );
        let tally = self.deliver_deltas(&subscribers, &writers, &bodies, now_ms);
        let messages = tally.delivered * bodies.len() as u64;
        self.metrics.broadcast_flushes.inc();
        self.metrics.broadcast_deliveries.add(messages);
        self.metrics.message_out(MessageType::Delta, messages);
        if let Some(since) = since {
            self.metrics
                .broadcast_latency
                .observe_ms(since.elapsed().as_secs_f64() * 1000.0);
        }
        if let (false, Some(full_clock)) = (published.is_empty(), full_clock) {
            let msg = serde_json::json!({
                "type": "delta",
                "id": next_message_id(now_ms),
                "timestamp": now_ms,
                "documentId": &*entry.id,
                "delta": published,
                "vectorClock": serde_json::from_str::<Value>(&full_clock).unwrap_or(Value::Null),
                "origin": self.settings.instance_id,
            });
            self.publish(&self.settings.channels.delta(&entry.id), &msg);
        }
        tally.crowded
    }

    /// Send a flush's deltas to every subscriber — encoded once per encoding, the
    /// same frames shared by all — the batch's writers as the echo of their own
    /// write. Returns how many subscribers took them, and whether one was left
    /// crowded; a subscriber too slow to take them is closed.
    #[inline]
    fn deliver_deltas(
        &self,
        subscribers: &PeerList,
        writers: &[u64],
        bodies: &[(String, String)],
        now_ms: i64,
    ) -> Tally {
        let frames_for = |encoding: Encoding| -> Framed {
            let frames: Vec<EncodedFrame> = bodies
                .iter()
                .map(|(id, body)| encode_body(MessageType::Delta, id, now_ms, body, encoding))
                .collect();
            Framed::new(&frames)
        };
        let mut binary: Option<Framed> = None;
        let mut json: Option<Framed> = None;
        let mut tally = Tally::default();
        for peer in subscribers.iter() {
            let frames = match peer.encoding() {
                Encoding::Binary => binary.get_or_insert_with(|| frames_for(Encoding::Binary)),
                Encoding::Json => json.get_or_insert_with(|| frames_for(Encoding::Json)),
            };
            let item = Outgoing::Frames(frames.clone());
            let delivery = if writers.contains(&peer.conn_id) {
                peer.deliver_own(item)
            } else {
                peer.deliver(item)
            };
            if !tally.count(delivery) {
                self.metrics.slow_clients_closed.inc();
            }
        }
        tally
    }

    /// Flush every pending batch now (shutdown).
    pub(crate) fn flush_all(&self) {
        let entries: Vec<Arc<DocEntry>> = self.docs().values().cloned().collect();
        for entry in entries {
            self.flush(&entry);
        }
    }

    pub(crate) fn publish(&self, channel: &str, msg: &Value) {
        if let Some(id) = msg.get("id").and_then(Value::as_str) {
            self.published_ids.remember(id);
        }
        self.pubsub
            .publish(channel, Bytes::from(msg.to_string().into_bytes()));
        self.metrics.pubsub_published.inc();
    }

    /// Whether a received message id is one we published (an echo).
    pub(crate) fn published_recently(&self, id: &str) -> bool {
        self.published_ids.contains(id)
    }
}

/// A document's pending batch, taken under its lock with what its deltas need
/// (see [`Hub::flush`]).
struct TakenBatch {
    batch: PendingBatch,
    /// Writer → its compact clock (JSON).
    clocks: FastMap<String, String>,
    /// The compact clock of a field no local writer ticked (JSON); empty when every
    /// field of the batch has its writer.
    clock_json: String,
    /// The whole clock, for other instances (clustered only).
    full_clock: Option<String>,
    subscribers: PeerList,
}

/// Take a document's pending batch, if any, under the lock only for that: the
/// deltas are built and sent without it.
#[inline]
fn take_batch(entry: &DocEntry, clustered: bool) -> Option<TakenBatch> {
    let mut st = entry.lock();
    if st.pending.order.is_empty() {
        return None;
    }
    let batch = std::mem::take(&mut st.pending);
    // The largest entry once per flush, not once per writer.
    let largest = largest_entry(&st.doc.clock);
    // One compact clock per distinct writer, not per field: a flush of one
    // writer's burst has thousands of fields and one writer.
    let mut clocks: FastMap<String, String> = FastMap::default();
    let mut writerless = false;
    for pending in batch.values.values() {
        match pending.writer.as_deref() {
            Some(w) if !clocks.contains_key(w) => {
                clocks.insert(w.to_owned(), compact_clock(&st.doc.clock, largest, Some(w)));
            }
            Some(_) => {}
            None => writerless = true,
        }
    }
    let clock_json = if writerless {
        compact_clock(&st.doc.clock, largest, None)
    } else {
        String::new()
    };
    Some(TakenBatch {
        batch,
        clocks,
        clock_json,
        // Other instances merge the whole clock (one message per flush).
        full_clock: clustered.then(|| st.doc.clock.to_json_string()),
        subscribers: st.subscribers.clone(),
    })
}

/// One delta body (with its message id) per field of a flushed batch, in
/// first-queued order, and — when `publish` (clustered) — the fields this instance
/// must publish (its own).
#[inline]
fn delta_bodies(
    document_id: &str,
    order: Vec<String>,
    mut values: FastMap<String, Pending>,
    clocks: &FastMap<String, String>,
    clock_json: &str,
    publish: bool,
    now_ms: i64,
) -> (Vec<(String, String)>, Map<String, Value>) {
    let mut bodies = Vec::with_capacity(order.len());
    let mut published = Map::new();
    for field in order {
        if let Some(Pending {
            value,
            local,
            writer,
        }) = values.remove(&field)
        {
            let clock = writer
                .as_ref()
                .and_then(|w| clocks.get(w))
                .map_or(clock_json, String::as_str);
            bodies.push((
                next_message_id(now_ms),
                field_delta_body(document_id, &field, &value, clock),
            ));
            if local && publish {
                published.insert(field, value);
            }
        }
    }
    (bodies, published)
}

/// The document's largest clock entry (ties: the smallest writer id).
fn largest_entry(clock: &VectorClock) -> Option<(&str, u64)> {
    clock
        .iter()
        .max_by_key(|(w, v)| (**v, std::cmp::Reverse(*w)))
        .map(|(w, v)| (w.as_str(), *v))
}

/// The clock a broadcast delta carries: `writer`'s entry and the document's largest
/// one (so max(clock) is the document's), as JSON.
///
/// Written directly, keys in order as a JSON object of ours always has them: built
/// as a tree and printed, it was a tenth of a delta's cost with batching off
/// (BENCHMARKS.md "Per-delta work").
fn compact_clock(
    clock: &VectorClock,
    largest: Option<(&str, u64)>,
    writer: Option<&str>,
) -> String {
    let own = writer
        .filter(|w| clock.contains(w))
        .map(|w| (w, clock.get(w)));
    let entries = match (largest, own) {
        (Some(a), Some(b)) if a.0 == b.0 => [Some(b), None],
        (Some(a), Some(b)) if b.0 < a.0 => [Some(b), Some(a)],
        (a, b) => [a, b],
    };
    let mut out = String::with_capacity(48);
    out.push('{');
    for (i, (w, v)) in entries.into_iter().flatten().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, w);
        out.push(':');
        out.push_str(itoa::Buffer::new().format(v));
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::{Changes, FieldWrite, HubSettings};
    use crate::metrics::Metrics;
    use crate::pubsub::{Channels, LocalPubSub};
    use crate::storage::Persistence;
    use crate::sync::peer::Peer;
    use std::time::Duration;

    #[test]
    fn a_broadcast_clock_is_the_writer_and_the_largest_entry() {
        let clock: VectorClock = (0..1000).map(|i| (format!("w{i:04}"), i)).collect();
        let largest = largest_entry(&clock);
        assert_eq!(largest, Some(("w0999", 999)));
        let c: Value =
            serde_json::from_str(&compact_clock(&clock, largest, Some("w0007"))).expect("json");
        assert_eq!(c, serde_json::json!({"w0999": 999, "w0007": 7}));
        let c: Value = serde_json::from_str(&compact_clock(&clock, largest, None)).expect("json");
        assert_eq!(c, serde_json::json!({"w0999": 999}));
    }

    /// The bytes are those of the clock as a JSON object (keys sorted, escaped), for
    /// the writer before, after and equal to the largest entry, and one not in it.
    #[test]
    fn a_broadcast_clock_is_written_as_its_json_object() {
        let clock: VectorClock = [("b\"q", 5), ("a", 2), ("z\u{1}", 9), ("m", 9)]
            .into_iter()
            .map(|(w, v)| (w.to_owned(), v))
            .collect();
        let largest = largest_entry(&clock);
        assert_eq!(largest, Some(("m", 9)), "ties go to the smaller id");
        for writer in [None, Some("a"), Some("m"), Some("z\u{1}"), Some("b\"q"), Some("gone")] {
            let mut object = Map::new();
            if let Some((w, v)) = largest {
                object.insert(w.to_owned(), Value::from(v));
            }
            if let Some(w) = writer.filter(|w| clock.contains(w)) {
                object.insert(w.to_owned(), Value::from(clock.get(w)));
            }
            let expected = Value::Object(object).to_string();
            assert_eq!(compact_clock(&clock, largest, writer), expected, "{writer:?}");
        }
        assert_eq!(compact_clock(&VectorClock::default(), None, Some("a")), "{}");
    }

    #[tokio::test]
    async fn a_writers_echo_is_its_own_reply_and_never_closes_it() {
        let (hub, _flushes) = Hub::new(
            Arc::new(Persistence::in_memory()),
            Arc::new(LocalPubSub::single_instance()),
            Arc::new(Metrics::default()),
            HubSettings {
                batch_delay: Duration::ZERO,
                instance_id: "test".into(),
                channels: Channels::new("synckit:"),
                max_cached_documents: 10,
                max_clock_entries: 10,
                text_limits: crate::text::Limits::default(),
                clock: crate::clock::SystemClock::shared(),
            },
        );
        let entry = hub.open("d").await.expect("open");
        // Neither outbox is drained: the writer and a subscriber that does not read.
        let (writer, _w) = Peer::new(1);
        let (reader, _r) = Peer::new(2);
        hub.subscribe(&entry, &writer);
        hub.subscribe(&entry, &reader);
        let half = crate::sync::peer::DEFAULT_BROADCAST_BUDGET / 2;
        let mut crowded = Vec::new();
        for i in 0..crate::sync::peer::DEFAULT_BROADCAST_BUDGET + 10 {
            let applied = hub.apply(
                &entry,
                Changes {
                    fields: vec![FieldWrite {
                        field: format!("f{i}"),
                        value: Value::from(i),
                        writer: "w".into(),
                    }],
                    origin: Some(writer.conn_id),
                    ..Changes::default()
                },
                0,
            );
            crowded.push(applied.crowded);
        }
        assert!(
            !writer.overflowed().is_cancelled(),
            "the writer's echoes are its own replies"
        );
        assert!(writer.own_backlogged(), "so its socket stops being read");
        assert!(
            reader.overflowed().is_cancelled(),
            "a subscriber that does not read is closed"
        );
        assert_eq!(
            crowded.iter().position(|c| *c),
            Some(half - 1),
            "the write that left the subscriber half its budget behind says so"
        );
    }

    #[tokio::test]
    async fn a_remote_write_that_crowds_a_subscriber_says_so() {
        let hub = super::super::test_support::hub(10);
        let entry = hub.open("d").await.expect("open");
        // Room for 8 broadcasts: the fourth waiting is half of it.
        let (reader, _r) = Peer::with_broadcast_budget(2, 8);
        hub.subscribe(&entry, &reader);
        let crowded: Vec<bool> = (0..5)
            .map(|i| {
                let fields: Map<String, Value> =
                    [(format!("f{i}"), Value::from(i))].into_iter().collect();
                hub.apply_remote(&entry, &fields, None, 0)
            })
            .collect();
        assert_eq!(crowded, [false, false, false, true, true]);
        assert!(!reader.overflowed().is_cancelled(), "crowded, not closed");
    }

    #[tokio::test]
    async fn a_message_sent_to_subscribers_says_when_it_crowded_one() {
        let hub = super::super::test_support::hub(10);
        let entry = hub.open("d").await.expect("open");
        let (sender, _s) = Peer::with_broadcast_budget(1, 8);
        let (reader, _r) = Peer::with_broadcast_budget(2, 8);
        hub.subscribe(&entry, &sender);
        hub.subscribe(&entry, &reader);
        let msg = crate::protocol::ServerMessage::AwarenessUpdate {
            document_id: "d".into(),
            client_id: "c".into(),
            state: Value::Null,
            clock: 1,
        };
        let crowded: Vec<bool> = (0..5)
            .map(|_| hub.send_to_subscribers(&entry, &msg, true, Some(sender.conn_id)))
            .collect();
        assert_eq!(crowded, [false, false, false, true, true]);
    }
}
