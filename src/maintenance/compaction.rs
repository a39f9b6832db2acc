//! Snapshot + compaction: documents whose delta history grew past a threshold get a
//! snapshot of their current state and clock, then lose the deltas it covers. The
//! history stays bounded without losing the ability to restore a document.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::storage::{AdminStore, MaintenanceStore, NewSnapshot, StorageError};

/// Documents handled per run, so one run stays short.
const DOCUMENTS_PER_RUN: u32 = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactionReport {
    pub documents_compacted: u64,
    pub deltas_removed: u64,
}

/// Snapshot and compact every document with more than `threshold` deltas (up to
/// `DOCUMENTS_PER_RUN`, 100). The snapshot is the row as stored, read the way the admin
/// API reads a document that is not loaded, hence the [`AdminStore`] bound.
pub async fn compact_large_documents(
    storage: &(impl MaintenanceStore + AdminStore + ?Sized),
    threshold: u64,
) -> Result<CompactionReport, StorageError> {
    let mut report = CompactionReport::default();
    for (document_id, _) in storage
        .documents_over_delta_threshold(threshold, DOCUMENTS_PER_RUN)
        .await?
    {
        let Some(row) = storage.get_document(&document_id).await? else {
            continue;
        };
        let version: BTreeMap<String, u64> = storage.get_vector_clock(&document_id).await?;
        storage
            .save_snapshot(&NewSnapshot {
                document_id: document_id.clone(),
                state: row.state,
                version,
                compressed: false,
            })
            .await?;
        report.deltas_removed += storage.compact(&document_id).await?;
        report.documents_compacted += 1;
    }
    Ok(report)
}
