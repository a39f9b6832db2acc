//! The console's pages on the admin listener: live sessions, live documents, a
//! document's detail, awareness; the answers of the operator actions and errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One live connection of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveSession {
    /// Fleet-unique connection key (`<instance>:conn-<n>`), also the session row id.
    pub id: String,
    pub conn_id: u64,
    /// `None` until the connection authenticates.
    pub user: Option<String>,
    /// The client's User-Agent.
    pub client: Option<String>,
    pub remote_ip: String,
    pub connected_at_ms: i64,
    pub last_seen_ms: i64,
    pub subscriptions: Vec<String>,
}

/// `GET /admin/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionsPage {
    pub instance_id: String,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub sessions: Vec<LiveSession>,
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
pub struct DocumentsPage {
    pub instance_id: String,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub documents: Vec<LiveDocumentInfo>,
}

/// One client's awareness state in one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwarenessClientInfo {
    pub client_id: String,
    pub connection_id: String,
    pub state: Value,
    pub clock: u64,
    pub last_seen_ms: i64,
    pub expires_in_ms: i64,
}

/// The awareness of one document (`GET /admin/documents/{id}/awareness`, and each
/// entry of `GET /admin/awareness`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentAwareness {
    pub document_id: String,
    pub clients: Vec<AwarenessClientInfo>,
    /// Set when the awareness store could not be read (`clients` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /admin/awareness`: per live document of the instance, in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwarenessPage {
    pub instance_id: String,
    /// `memory`, `redis` or `postgres`.
    pub store: String,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub documents: Vec<DocumentAwareness>,
}

/// `GET /admin/documents/{id}`: from memory when loaded here, else as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentDetail {
    pub id: String,
    pub instance_id: String,
    pub loaded: bool,
    pub fields: Value,
    pub clock: BTreeMap<String, u64>,
    /// Connection keys of this instance's subscribers.
    pub subscribers: Vec<String>,
    pub awareness_subscribers: Vec<String>,
    pub awareness: Vec<AwarenessClientInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awareness_error: Option<String>,
}

/// Every refusal and failure of the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `DELETE /admin/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disconnected {
    pub disconnected: String,
}

/// `DELETE /admin/documents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: String,
    pub existed: bool,
}
