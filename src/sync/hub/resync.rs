//! Resynchronisation from shared storage: documents gaining local interest (or
//! whose text may have raced a peer's to storage) are planned, the fields changed
//! meanwhile recorded, and the live document brought in line with what storage
//! holds once the resync task has read it back.

use std::sync::Arc;

use serde_json::Map;
use tokio::time::Instant;

use super::{DocEntry, DocState, Hub, ResyncRequests};
use crate::hash::FastSet;
use crate::protocol::message::tombstone;
use crate::pubsub::PubSubState;
use crate::storage::StoredDocument;

#[derive(Default)]
pub(super) struct ResyncMark {
    /// Planned and not yet finished.
    pending: u32,
    /// Fields changed since the first of them was planned: their live value is
    /// newer than anything a resynchronisation could read back from storage.
    touched: FastSet<String>,
}

impl DocState {
    pub(super) fn touch<'a>(&mut self, fields: impl IntoIterator<Item = &'a String>) {
        if let Some(mark) = &mut self.resync {
            mark.touched.extend(fields.into_iter().cloned());
        }
    }

    fn plan_resync(&mut self) {
        self.resync.get_or_insert_with(ResyncMark::default).pending += 1;
    }

    fn finish_resync(&mut self) {
        if let Some(mark) = &mut self.resync {
            mark.pending = mark.pending.saturating_sub(1);
            if mark.pending == 0 {
                self.resync = None;
            }
        }
    }
}

impl Hub {
    /// Plan a resynchronisation of one document from shared storage, run by the
    /// resync task after its settling delay (nothing to read back without shared
    /// storage and peers).
    pub(super) fn queue_resync(&self, entry: &Arc<DocEntry>, st: &mut DocState) {
        if self.storage.is_shared() && self.pubsub.state() != PubSubState::SingleInstance {
            st.plan_resync();
            if self
                .resync_tx
                .try_send((entry.clone(), Instant::now()))
                .is_err()
            {
                tracing::debug!(document_id = %entry.id, "resync queue full: document not resynchronised");
                st.finish_resync();
            }
        }
    }

    /// The resynchronisation requests of documents gaining interest; taken once.
    pub(crate) fn take_resync_requests(&self) -> Option<ResyncRequests> {
        self.resync_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Plan a resynchronisation: from now on, record which fields change in every
    /// document somebody here subscribes to, and return those documents.
    pub(crate) fn begin_resync(&self) -> Vec<Arc<DocEntry>> {
        let entries: Vec<Arc<DocEntry>> = self.docs().values().cloned().collect();
        entries
            .into_iter()
            .filter(|entry| {
                let mut st = entry.lock();
                if st.subscribers.is_empty() {
                    return false;
                }
                st.plan_resync();
                true
            })
            .collect()
    }

    /// Bring a live document in line with what storage holds (after pub/sub was
    /// cut, other instances' writes are only there): every field that differs and
    /// did not change since [`Hub::begin_resync`] takes the stored value (a field
    /// storage lacks is deleted), broadcast to local subscribers like a remote
    /// update (the stored text is merged separately, by [`Hub::merge_stored_text`]).
    /// Returns the number of fields changed, or `None` when this instance has
    /// writes to the document not yet in storage — storage is then behind us and the
    /// caller retries later.
    pub(crate) fn reconcile(
        &self,
        entry: &Arc<DocEntry>,
        stored: Option<StoredDocument>,
        now_ms: i64,
    ) -> Option<usize> {
        let mut st = entry.lock();
        // Under the document lock: local writes submit under it too.
        if self.storage.has_pending(&entry.id) {
            return None;
        }
        let touched = st
            .resync
            .as_ref()
            .map(|m| m.touched.clone())
            .unwrap_or_default();
        st.finish_resync();
        let stored = stored.unwrap_or_default();
        let mut changes = Map::new();
        for (field, value) in &stored.fields {
            if !touched.contains(field) && st.doc.fields.get(field) != Some(value) {
                changes.insert(field.clone(), value.clone());
            }
        }
        for field in st.doc.fields.keys() {
            if !touched.contains(field) && !stored.fields.contains_key(field) {
                changes.insert(field.clone(), tombstone());
            }
        }
        for (writer, value) in &stored.clock {
            st.doc.clock.observe(writer, *value);
        }
        let schedule = self.apply_remote_locked(&mut st, &changes, now_ms);
        drop(st);
        if schedule {
            self.schedule_flush(entry);
        }
        Some(changes.len())
    }

    /// A planned resynchronisation gave up on a document.
    pub(crate) fn abandon_resync(&self, entry: &DocEntry) {
        entry.lock().finish_resync();
    }
}
