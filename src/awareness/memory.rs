//! In-memory awareness store: per document, client id → entry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    may_replace, AwarenessEntry, AwarenessError, AwarenessStore, AwarenessUpdate, SetOutcome,
};

/// Document id → client id → entry.
type Documents = HashMap<String, HashMap<String, AwarenessEntry>>;

pub struct MemoryAwarenessStore {
    timeout_ms: i64,
    documents: Mutex<Documents>,
}

impl MemoryAwarenessStore {
    pub fn new(timeout: Duration) -> MemoryAwarenessStore {
        MemoryAwarenessStore {
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
            documents: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Documents>, AwarenessError> {
        self.documents
            .lock()
            .map_err(|_| AwarenessError::Unavailable("awareness lock poisoned".into()))
    }

    fn is_expired(&self, entry: &AwarenessEntry, now_ms: i64) -> bool {
        now_ms.saturating_sub(entry.last_seen_ms) >= self.timeout_ms
    }

    /// Remove entries matching `pred`, dropping emptied documents.
    fn remove_where(
        &self,
        pred: impl Fn(&AwarenessEntry) -> bool,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        let mut docs = self.lock()?;
        let mut removed = Vec::new();
        docs.retain(|_, clients| {
            clients.retain(|_, e| {
                if pred(e) {
                    removed.push(e.clone());
                    false
                } else {
                    true
                }
            });
            !clients.is_empty()
        });
        Ok(removed)
    }
}

#[async_trait]
impl AwarenessStore for MemoryAwarenessStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn set(&self, update: AwarenessUpdate) -> Result<SetOutcome, AwarenessError> {
        let mut docs = self.lock()?;
        let clients = docs.entry(update.document_id.clone()).or_default();
        if let Some(existing) = clients.get(&update.client_id) {
            if !may_replace(existing, &update, self.is_expired(existing, update.now_ms)) {
                return Ok(SetOutcome::NotOwner);
            }
        }
        let Some(state) = update.state else {
            clients.remove(&update.client_id);
            if clients.is_empty() {
                docs.remove(&update.document_id);
            }
            return Ok(SetOutcome::Left);
        };
        if let Some(existing) = clients.get(&update.client_id) {
            if update.clock <= existing.clock {
                return Ok(SetOutcome::Stale);
            }
        }
        clients.insert(
            update.client_id.clone(),
            AwarenessEntry {
                document_id: update.document_id,
                client_id: update.client_id,
                connection_id: update.connection_id,
                user_id: update.user_id,
                state,
                clock: update.clock,
                last_seen_ms: update.now_ms,
            },
        );
        Ok(SetOutcome::Accepted)
    }

    async fn get_all(
        &self,
        document_id: &str,
        now_ms: i64,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        let docs = self.lock()?;
        let mut entries: Vec<AwarenessEntry> = docs
            .get(document_id)
            .map(|clients| {
                clients
                    .values()
                    .filter(|e| !self.is_expired(e, now_ms))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        entries.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(entries)
    }

    async fn remove_connection(
        &self,
        connection_id: &str,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        self.remove_where(|e| e.connection_id == connection_id)
    }

    #[cfg(any(test, feature = "test-util"))]
    async fn expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        let docs = self.lock()?;
        Ok(docs
            .values()
            .flat_map(|clients| clients.values())
            .filter(|e| self.is_expired(e, now_ms))
            .cloned()
            .collect())
    }

    async fn prune_expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        self.remove_where(|e| self.is_expired(e, now_ms))
    }

    async fn count(&self) -> Result<usize, AwarenessError> {
        Ok(self.lock()?.values().map(HashMap::len).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(
        client: &str,
        conn: &str,
        state: Option<serde_json::Value>,
        clock: u64,
        now: i64,
    ) -> AwarenessUpdate {
        AwarenessUpdate {
            document_id: "d".into(),
            client_id: client.into(),
            connection_id: conn.into(),
            user_id: "u".into(),
            state,
            clock,
            now_ms: now,
        }
    }

    #[tokio::test]
    async fn clock_ordering_and_leaves() {
        let s = MemoryAwarenessStore::new(Duration::from_secs(30));
        assert_eq!(
            s.set(update("a", "c1", Some(json!({"x":1})), 2, 0))
                .await
                .ok(),
            Some(SetOutcome::Accepted)
        );
        assert_eq!(
            s.set(update("a", "c1", Some(json!({"x":2})), 2, 1))
                .await
                .ok(),
            Some(SetOutcome::Stale)
        );
        assert_eq!(
            s.set(update("a", "c1", Some(json!({"x":0})), 1, 1))
                .await
                .ok(),
            Some(SetOutcome::Stale)
        );
        let all = s.get_all("d", 1).await.expect("get");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, json!({"x":1}));
        // A leave wins whatever its clock.
        assert_eq!(
            s.set(update("a", "c1", None, 0, 2)).await.ok(),
            Some(SetOutcome::Left)
        );
        assert!(s.get_all("d", 2).await.expect("get").is_empty());
        assert_eq!(s.count().await.expect("count"), 0);
    }

    #[tokio::test]
    async fn expiry_and_prune() {
        let s = MemoryAwarenessStore::new(Duration::from_secs(30));
        s.set(update("a", "c1", Some(json!({})), 1, 0))
            .await
            .expect("set");
        s.set(update("b", "c1", Some(json!({})), 1, 10_000))
            .await
            .expect("set");
        assert!(s.expired(29_999).await.expect("expired").is_empty());
        assert_eq!(s.expired(30_000).await.expect("expired").len(), 1);
        assert_eq!(s.get_all("d", 30_000).await.expect("get").len(), 1);
        let pruned = s.prune_expired(30_000).await.expect("prune");
        assert_eq!(pruned[0].client_id, "a");
        assert_eq!(s.count().await.expect("count"), 1);
    }

    #[tokio::test]
    async fn remove_connection_returns_its_entries() {
        let s = MemoryAwarenessStore::new(Duration::from_secs(30));
        s.set(update("a", "c1", Some(json!({})), 1, 0))
            .await
            .expect("set");
        s.set(update("b", "c2", Some(json!({})), 1, 0))
            .await
            .expect("set");
        let removed = s.remove_connection("c1").await.expect("remove");
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].client_id, "a");
        assert_eq!(s.count().await.expect("count"), 1);
    }
}
