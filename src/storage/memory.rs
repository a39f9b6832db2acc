//! In-memory storage: the embedded default. A real backend (documents survive hub
//! eviction, sessions are tracked), just not across restarts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{
    DocumentWrite, PersistTicket, SessionRecord, StorageAdapter, StorageError, StoredDocument,
};

#[derive(Default)]
pub struct MemoryStorage {
    documents: Mutex<HashMap<String, StoredDocument>>,
    sessions: Mutex<HashMap<String, SessionRecord>>,
}

impl MemoryStorage {
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// Number of persisted sessions (for stats and tests).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn apply(&self, write: DocumentWrite) -> Result<(), StorageError> {
        let mut docs = self
            .documents
            .lock()
            .map_err(|_| StorageError::Query("memory storage lock poisoned".into()))?;
        let doc = docs.entry(write.document_id.to_string()).or_default();
        for change in write.changes {
            match change.value {
                Some(v) => {
                    doc.fields.insert(change.field, v);
                }
                None => {
                    doc.fields.remove(&change.field);
                }
            }
        }
        for (writer, value) in write.clock {
            match doc.clock.iter_mut().find(|(w, _)| *w == writer) {
                Some((_, v)) => *v = (*v).max(value),
                None => doc.clock.push((writer, value)),
            }
        }
        if let Some(text) = write.text {
            doc.text = Some(text);
        }
        Ok(())
    }
}

#[async_trait]
impl StorageAdapter for MemoryStorage {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn load_document(&self, id: &str) -> Result<Option<StoredDocument>, StorageError> {
        let docs = self
            .documents
            .lock()
            .map_err(|_| StorageError::Query("memory storage lock poisoned".into()))?;
        Ok(docs.get(id).cloned())
    }

    fn submit(&self, write: DocumentWrite) -> PersistTicket {
        PersistTicket::done(self.apply(write))
    }

    async fn save_session(&self, session: SessionRecord) -> Result<(), StorageError> {
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(session.id.clone(), session);
        }
        Ok(())
    }

    async fn touch_sessions(&self, _ids: &[String]) -> Result<(), StorageError> {
        Ok(())
    }

    async fn delete_session(&self, id: &str) -> Result<(), StorageError> {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(id);
        }
        Ok(())
    }

    async fn health_check(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn backlog(&self) -> usize {
        0
    }

    async fn drain(&self, _budget: Duration) -> bool {
        true
    }
}

/// Metadata stored with a session row.
pub fn session_metadata(ip: &str, user_agent: Option<&str>, server_id: &str) -> Value {
    serde_json::json!({ "ip": ip, "userAgent": user_agent, "serverId": server_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FieldChange;
    use serde_json::json;
    use std::sync::Arc;

    #[tokio::test]
    async fn writes_apply_in_order_and_load_back() {
        let s = MemoryStorage::new();
        assert_eq!(s.load_document("d").await.expect("load"), None);
        let write = |field: &str, value: Option<Value>, clock: u64| DocumentWrite {
            document_id: Arc::from("d"),
            changes: vec![FieldChange {
                field: field.into(),
                value,
                writer: "w".into(),
                clock_value: clock,
            }],
            clock: vec![("w".into(), clock)],
            text: None,
        };
        s.submit(write("a", Some(json!(1)), 1))
            .wait()
            .await
            .expect("ok");
        s.submit(write("b", Some(json!(2)), 2))
            .wait()
            .await
            .expect("ok");
        s.submit(write("a", None, 3)).wait().await.expect("ok");
        let doc = s.load_document("d").await.expect("load").expect("exists");
        assert_eq!(Value::Object(doc.fields), json!({"b": 2}));
        assert_eq!(doc.clock, vec![("w".to_string(), 3)]);
    }

    #[tokio::test]
    async fn sessions_are_saved_and_deleted() {
        let s = MemoryStorage::new();
        s.save_session(SessionRecord {
            id: "c1".into(),
            user_id: "u".into(),
            client_id: None,
            metadata: session_metadata("1.2.3.4", None, "srv"),
        })
        .await
        .expect("save");
        assert_eq!(s.session_count(), 1);
        s.delete_session("c1").await.expect("delete");
        assert_eq!(s.session_count(), 0);
    }
}
