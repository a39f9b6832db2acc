//! Field writes: a client's, checked against the document's clock bounds and
//! applied, queued for broadcast and submitted to storage under the document lock;
//! another instance's, applied and broadcast here; and the snapshot a
//! `sync_response` reads.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{DocEntry, DocState, Hub, QueuedField, OVERFLOW_WRITER};
use crate::hash::FastMap;
use crate::storage::{DocumentWrite, FieldChange, PersistTicket, StorageError};
use crate::sync::admission::{ClockRefusal, MAX_CLOCK_ADVANCE};
use crate::sync::clock::VectorClock;

/// What `sync_response` needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DocumentSnapshot {
    pub(crate) state: Map<String, Value>,
    pub(crate) clock: Map<String, Value>,
    pub(crate) text: Option<(crate::text::StateJson, f64)>,
}

/// One client field write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldWrite {
    pub(crate) field: String,
    pub(crate) value: Value,
    pub(crate) writer: String,
}

/// What one inbound message changes in one document.
#[derive(Debug, Default)]
pub(crate) struct Changes<'a> {
    pub(crate) fields: Vec<FieldWrite>,
    pub(crate) clocks: Vec<&'a Map<String, Value>>,
    /// The local connection that wrote them (its echo is its own reply).
    pub(crate) origin: Option<u64>,
}

/// The result of applying [`Changes`].
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) ticket: PersistTicket,
    /// Set when the write's clock was refused: nothing was applied.
    pub(crate) refused: Option<ClockRefusal>,
    /// Its broadcast (made at once, with batching off) left a subscriber crowded:
    /// the writer should pace (src/sync/peer.rs).
    pub(crate) crowded: bool,
}

impl Hub {
    pub(crate) fn snapshot(&self, entry: &DocEntry) -> DocumentSnapshot {
        let (state, clock, text) = {
            let st = entry.lock();
            let text = st.doc.text.as_ref().map(|t| (t.json_shared(), t.clock()));
            (st.doc.state_json(), st.doc.clock_json(), text)
        };
        DocumentSnapshot { state, clock, text }
    }

    /// Apply one inbound message's changes, queue the field results for broadcast,
    /// and submit the write to storage — all under the document lock.
    pub(crate) fn apply(
        &self,
        entry: &Arc<DocEntry>,
        changes: Changes<'_>,
        now_ms: i64,
    ) -> Applied {
        // Refuse before applying: a write nobody else has seen yet can be retried by
        // its client; one applied and broadcast but never persisted cannot.
        if self.storage.is_full() {
            return Applied {
                ticket: PersistTicket::done(Err(StorageError::BacklogFull(self.storage.backlog()))),
                refused: None,
                crowded: false,
            };
        }
        let mut st = entry.lock();
        if let Err(refusal) = check_clock(&st.doc.clock, &changes) {
            return Applied {
                ticket: PersistTicket::done(Ok(())),
                refused: Some(refusal),
                crowded: false,
            };
        }
        let origin = changes.origin;
        let (write, queued) = self.write_locked(&entry.id, &mut st, changes);
        if !write.is_empty() {
            st.last_modified_ms = now_ms;
        }
        let schedule = self.queue_locked(&mut st, queued, true);
        if let Some(origin) = origin {
            if !st.pending.order.is_empty() && !st.pending.writers.contains(&origin) {
                st.pending.writers.push(origin);
            }
        }
        let ticket = if write.is_empty() {
            PersistTicket::done(Ok(()))
        } else {
            self.storage.submit(write)
        };
        drop(st);
        let crowded = schedule && self.schedule_flush(entry);
        Applied {
            ticket,
            refused: None,
            crowded,
        }
    }

    /// The in-memory part of [`Hub::apply`], under the document lock: merge the
    /// client clocks and write the fields, returning the storage write and the
    /// field results to broadcast.
    #[inline]
    fn write_locked(
        &self,
        id: &Arc<str>,
        st: &mut DocState,
        changes: Changes<'_>,
    ) -> (DocumentWrite, Vec<QueuedField>) {
        let mut write = DocumentWrite {
            document_id: id.clone(),
            changes: Vec::with_capacity(changes.fields.len()),
            clock: Vec::new(),
            text: None,
        };
        // Merge the client's clock before ticking: the writer's entry then ends up
        // strictly above the counter the client stamped its own write with, so the
        // SDK's LWW register takes the server's echo even when its client id sorts
        // above "server" (a tie would otherwise keep the local value).
        //
        // The document's clock holds at most `max_clock_entries` writers: once it is
        // full, a new writer's ticks go to the shared OVERFLOW_WRITER entry and the
        // entries a client clock names that the document lacks are not merged. The
        // write itself is applied either way, so a full clock never locks a
        // document; SDK clients order updates by max(clock), which still grows.
        let mut room = ClockRoom::new(&st.doc.clock, self.settings.max_clock_entries);
        let writers: Vec<String> = changes
            .fields
            .iter()
            .map(|f| room.writer(&st.doc.clock, &f.writer))
            .collect();
        let mut clock_changes: FastMap<String, u64> = FastMap::default();
        for clock in changes.clocks {
            let fitting = fitting_entries(&st.doc.clock, &mut room, clock);
            for (writer, value) in st.doc.clock.merge_json(fitting.as_ref().unwrap_or(clock)) {
                clock_changes.insert(writer, value);
            }
        }
        if room.full {
            self.metrics.refused(crate::metrics::Refusal::ClockFull);
        }
        let mut queued = Vec::with_capacity(changes.fields.len());
        for (FieldWrite { field, value, .. }, writer) in changes.fields.into_iter().zip(writers) {
            let out = st.doc.write_field(field, value, &writer);
            write.changes.push(FieldChange {
                field: out.field.clone(),
                value: (!out.deleted).then(|| out.authoritative.clone()),
                writer: out.writer.clone(),
                clock_value: out.tick,
            });
            queued.push((out.field, out.authoritative, Some(out.writer)));
        }
        for c in &write.changes {
            clock_changes.insert(c.writer.clone(), c.clock_value);
        }
        st.touch(write.changes.iter().map(|c| &c.field));
        // Persist the final value of every entry that moved.
        write.clock = clock_changes
            .into_keys()
            .map(|w| {
                let v = st.doc.clock.get(&w);
                (w, v)
            })
            .collect();
        (write, queued)
    }

    /// Apply field values another instance decided (not persisted here: the origin
    /// instance persisted them) and broadcast them to local subscribers. Returns
    /// whether that left a subscriber crowded (see [`Hub::flush`]).
    pub(crate) fn apply_remote(
        &self,
        entry: &Arc<DocEntry>,
        fields: &Map<String, Value>,
        clock: Option<&Map<String, Value>>,
        now_ms: i64,
    ) -> bool {
        let mut st = entry.lock();
        if let Some(clock) = clock {
            st.doc.clock.merge_json(clock);
        }
        st.touch(fields.keys());
        self.apply_remote_locked(&mut st, fields, now_ms);
        drop(st);
        // The origin instance already batched these (one message per flush there):
        // deliver at once instead of waiting a second batch window here.
        self.flush(entry)
    }

    /// Apply authoritative values and queue them for local broadcast (not for
    /// publishing). Returns whether a flush must be scheduled.
    pub(super) fn apply_remote_locked(
        &self,
        st: &mut DocState,
        fields: &Map<String, Value>,
        now_ms: i64,
    ) -> bool {
        for (field, value) in fields {
            st.doc.apply_authoritative(field, value);
        }
        st.last_modified_ms = now_ms;
        let queued = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), None))
            .collect();
        self.queue_locked(st, queued, false)
    }
}

/// Whether a write's clock may be merged: no entry leads the document's largest
/// counter by more than [`MAX_CLOCK_ADVANCE`]. Checked before anything is applied.
fn check_clock(clock: &VectorClock, changes: &Changes<'_>) -> Result<(), ClockRefusal> {
    let highest = clock.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let limit = highest.saturating_add(MAX_CLOCK_ADVANCE);
    if changes
        .clocks
        .iter()
        .flat_map(|c| c.values())
        .any(|v| v.as_u64().is_some_and(|v| v > limit))
    {
        return Err(ClockRefusal::Advance);
    }
    Ok(())
}

/// Room for new writers in a document's clock during one write (see
/// [`Hub::write_locked`]).
struct ClockRoom {
    left: usize,
    /// Set when something did not fit.
    full: bool,
}

impl ClockRoom {
    fn new(clock: &VectorClock, max_entries: usize) -> ClockRoom {
        let own = clock.iter().filter(|(w, _)| *w != OVERFLOW_WRITER).count();
        ClockRoom {
            left: max_entries.saturating_sub(own),
            full: false,
        }
    }

    /// Whether `writer` has or gets an entry (taking room if it is new).
    fn admit(&mut self, clock: &VectorClock, writer: &str) -> bool {
        if clock.contains(writer) || writer == OVERFLOW_WRITER {
            return true;
        }
        if self.left == 0 {
            self.full = true;
            return false;
        }
        self.left -= 1;
        true
    }

    /// The entry a field write by `writer` ticks: its own, or the shared one.
    fn writer(&mut self, clock: &VectorClock, writer: &str) -> String {
        if self.admit(clock, writer) {
            writer.to_owned()
        } else {
            OVERFLOW_WRITER.to_owned()
        }
    }
}

/// The entries of a client clock that fit the document's clock (see
/// [`Hub::write_locked`]), copied only once one does not: `None` when the clock fits
/// whole (the usual case), so it is merged as it came.
#[inline]
fn fitting_entries(
    clock: &VectorClock,
    room: &mut ClockRoom,
    incoming: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    let mut fitting: Option<Map<String, Value>> = None;
    for (i, (writer, value)) in incoming.iter().enumerate() {
        let admitted = room.admit(clock, writer);
        match (&mut fitting, admitted) {
            (None, true) | (Some(_), false) => {}
            (None, false) => {
                fitting = Some(
                    incoming
                        .iter()
                        .take(i)
                        .map(|(w, v)| (w.clone(), v.clone()))
                        .collect(),
                );
            }
            (Some(f), true) => {
                f.insert(writer.clone(), value.clone());
            }
        }
    }
    fitting
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::test_support::{hub, hub_on};
    use crate::storage::Persistence;

    #[tokio::test]
    async fn a_full_document_clock_shares_one_entry_among_new_writers() {
        let hub = hub(10);
        let entry = hub.open("d").await.expect("open");
        let write = |writer: &str| Changes {
            fields: vec![FieldWrite {
                field: writer.into(),
                value: Value::from(1),
                writer: writer.into(),
            }],
            ..Changes::default()
        };
        for w in ["a", "b", "c"] {
            assert_eq!(hub.apply(&entry, write(w), 0).refused, None);
        }
        // A new writer past the cap is applied, on the shared entry.
        assert_eq!(hub.apply(&entry, write("d"), 0).refused, None);
        assert_eq!(hub.apply(&entry, write("e"), 0).refused, None);
        let snap = hub.snapshot(&entry);
        assert_eq!(snap.state["d"], serde_json::json!(1));
        assert_eq!(snap.clock.len(), 4, "{:?}", snap.clock);
        assert_eq!(snap.clock[OVERFLOW_WRITER], serde_json::json!(2));
        // Known writers keep their own entries; a clock naming only known writers
        // merges, entries the document lacks are not merged once it is full.
        let clock = serde_json::json!({"a": 5, "zz": 1});
        let mut again = write("a");
        again.clocks = vec![clock.as_object().expect("object")];
        assert_eq!(hub.apply(&entry, again, 0).refused, None);
        let snap = hub.snapshot(&entry);
        assert_eq!(snap.clock["a"], serde_json::json!(6));
        assert!(!snap.clock.contains_key("zz"));
        // A jump far past the document's counters would freeze max(clock).
        let jump = serde_json::json!({"a": MAX_CLOCK_ADVANCE + 100});
        let mut far = write("a");
        far.clocks = vec![jump.as_object().expect("object")];
        assert_eq!(
            hub.apply(&entry, far, 0).refused,
            Some(ClockRefusal::Advance)
        );
        assert_eq!(hub.snapshot(&entry).clock["a"], serde_json::json!(6));
    }

    #[tokio::test]
    async fn a_full_write_queue_refuses_before_applying() {
        let storage = Persistence::new(
            Arc::new(crate::storage::MemoryStorage::new()),
            crate::storage::PersistenceSettings {
                max_backlog: 1,
                commit_at_once: false,
                ..Default::default()
            },
        );
        let hub = hub_on(storage, 10);
        let entry = hub.open("d").await.expect("open");
        let write = |field: &str| Changes {
            fields: vec![FieldWrite {
                field: field.into(),
                value: Value::from(1),
                writer: "w".into(),
            }],
            ..Changes::default()
        };
        // No writer task runs, so the first write stays queued and fills the queue.
        let first = hub.apply(&entry, write("a"), 0);
        let second = hub.apply(&entry, write("b"), 0);
        assert!(matches!(
            second.ticket.wait().await,
            Err(StorageError::BacklogFull(1))
        ));
        let snap = hub.snapshot(&entry);
        assert!(snap.state.contains_key("a"));
        assert!(
            !snap.state.contains_key("b"),
            "a refused write is not applied"
        );
        drop(first);
    }
}
