//! What the hub tells about its live documents — counts, summaries, subscriber
//! ids — and unloading them, for stats, the admin API and test mode.

use std::sync::Arc;

use super::{DocEntry, Hub, PeerList, PendingBatch};
use crate::sync::document::Document;

/// Summary of a live document, for stats and the admin API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DocumentSummary {
    pub(crate) id: String,
    pub(crate) subscribers: usize,
    pub(crate) awareness_subscribers: usize,
    pub(crate) fields: usize,
    pub(crate) approximate_bytes: usize,
    pub(crate) last_modified_ms: i64,
}

impl Hub {
    pub(crate) fn document_count(&self) -> usize {
        self.docs().len()
    }

    pub(crate) fn summaries(&self) -> Vec<DocumentSummary> {
        let entries: Vec<Arc<DocEntry>> = self.docs().values().cloned().collect();
        let mut out: Vec<DocumentSummary> = entries
            .iter()
            .map(|e| {
                let st = e.lock();
                DocumentSummary {
                    id: e.id.to_string(),
                    subscribers: st.subscribers.len(),
                    awareness_subscribers: st.awareness_subscribers.len(),
                    fields: st.doc.fields.len(),
                    approximate_bytes: st.doc.approximate_size(),
                    last_modified_ms: st.last_modified_ms,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Connection ids subscribed to a live document (documents, then awareness),
    /// for the admin API; `None` when the document is not loaded.
    pub(crate) fn subscriber_ids(&self, id: &str) -> Option<(Vec<u64>, Vec<u64>)> {
        let entry = self.get(id)?;
        let st = entry.lock();
        let ids = |list: &PeerList| list.iter().map(|p| p.conn_id).collect();
        Some((ids(&st.subscribers), ids(&st.awareness_subscribers)))
    }

    /// Unload a document before it is deleted from storage, so the cache cannot
    /// write it back. Refused (false) while anyone is subscribed, a broadcast is
    /// pending, writes are not yet durable, or a handler holds it; true when it is
    /// not (or no longer) loaded.
    pub(crate) fn forget(&self, id: &str) -> bool {
        let mut docs = self.docs();
        let Some(entry) = docs.get(id) else {
            return true;
        };
        if Arc::strong_count(entry) > 1 || self.storage.has_pending(id) {
            return false;
        }
        let idle = {
            let st = entry.lock();
            st.subscribers.is_empty()
                && st.awareness_subscribers.is_empty()
                && st.pending.order.is_empty()
        };
        if idle {
            docs.remove(id);
        }
        idle
    }

    /// Test mode's `POST /_test/clear` (docs/operations.md §1): every loaded
    /// document becomes empty — fields, clock, text and pending broadcast — and the
    /// ones nobody here listens to are unloaded; subscribers stay subscribed to the
    /// emptied documents. Writes already queued for storage are not touched (the
    /// caller drains them before clearing storage). Returns how many documents
    /// were loaded.
    pub(crate) fn clear(&self) -> usize {
        let mut docs = self.docs();
        let loaded = docs.len();
        docs.retain(|_, entry| {
            let mut st = entry.lock();
            st.doc = Document::default();
            st.pending = PendingBatch::default();
            st.last_modified_ms = 0;
            !(st.subscribers.is_empty() && st.awareness_subscribers.is_empty())
        });
        loaded
    }

    /// Total document subscriptions across live documents.
    pub(crate) fn subscription_count(&self) -> usize {
        let entries: Vec<Arc<DocEntry>> = self.docs().values().cloned().collect();
        entries.iter().map(|e| e.lock().subscribers.len()).sum()
    }
}
