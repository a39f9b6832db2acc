//! The console's pages on the admin listener: live sessions, live documents, a
//! document's detail, awareness; the answers of the operator actions and errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One live connection of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LiveSession {
    /// Fleet-unique connection key (`<instance>:conn-<n>`), also the session row id.
    pub(crate) id: String,
    pub(crate) conn_id: u64,
    /// `None` until the connection authenticates.
    pub(crate) user: Option<String>,
    /// The client's User-Agent.
    pub(crate) client: Option<String>,
    pub(crate) remote_ip: String,
    pub(crate) connected_at_ms: i64,
    pub(crate) last_seen_ms: i64,
    pub(crate) subscriptions: Vec<String>,
}

/// `GET /admin/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionsPage {
    pub(crate) instance_id: String,
    pub(crate) total: usize,
    pub(crate) offset: usize,
    pub(crate) limit: usize,
    pub(crate) sessions: Vec<LiveSession>,
}

/// A document loaded in an instance's memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LiveDocumentInfo {
    pub id: String,
    pub subscribers: u64,
    pub awareness_subscribers: u64,
    pub fields: u64,
    pub approximate_bytes: u64,
    pub last_modified_ms: i64,
}

/// `GET /admin/documents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DocumentsPage {
    pub(crate) instance_id: String,
    pub(crate) total: usize,
    pub(crate) offset: usize,
    pub(crate) limit: usize,
    pub(crate) documents: Vec<LiveDocumentInfo>,
}

/// One client's awareness state in one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AwarenessClientInfo {
    pub(crate) client_id: String,
    pub(crate) connection_id: String,
    pub(crate) state: Value,
    pub(crate) clock: u64,
    pub(crate) last_seen_ms: i64,
    pub(crate) expires_in_ms: i64,
}

/// The awareness of one document (`GET /admin/documents/{id}/awareness`, and each
/// entry of `GET /admin/awareness`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DocumentAwareness {
    pub(crate) document_id: String,
    pub(crate) clients: Vec<AwarenessClientInfo>,
    /// Set when the awareness store could not be read (`clients` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// `GET /admin/awareness`: per live document of the instance, in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AwarenessPage {
    pub(crate) instance_id: String,
    /// `memory`, `redis` or `postgres`.
    pub(crate) store: String,
    pub(crate) total: usize,
    pub(crate) offset: usize,
    pub(crate) limit: usize,
    pub(crate) documents: Vec<DocumentAwareness>,
}

/// `GET /admin/documents/{id}`: from memory when loaded here, else as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DocumentDetail {
    pub(crate) id: String,
    pub(crate) instance_id: String,
    pub(crate) loaded: bool,
    pub(crate) fields: Value,
    pub(crate) clock: BTreeMap<String, u64>,
    /// Connection keys of this instance's subscribers.
    pub(crate) subscribers: Vec<String>,
    pub(crate) awareness_subscribers: Vec<String>,
    pub(crate) awareness: Vec<AwarenessClientInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) awareness_error: Option<String>,
}

/// Every refusal and failure of the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApiError {
    pub(crate) error: String,
}

/// `DELETE /admin/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Disconnected {
    pub(crate) disconnected: String,
}

/// `DELETE /admin/documents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Deleted {
    pub(crate) deleted: String,
    pub(crate) existed: bool,
}
