-- synckit addition: the PostgreSQL awareness store (`--awareness-store postgres`).
-- One row per (document, client); the newest clock wins. Not one of the five
-- SyncKit table names, so other servers never see it.
CREATE TABLE IF NOT EXISTS awareness_states (
    document_id VARCHAR(255) NOT NULL,
    client_id VARCHAR(255) NOT NULL,
    connection_id VARCHAR(255) NOT NULL,
    state JSONB NOT NULL,
    clock_value BIGINT NOT NULL,
    last_seen TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    PRIMARY KEY (document_id, client_id)
);

-- Pruning scans by age; leave-on-close removes by connection. Get-all for a
-- document (ordered by client id) is served by the primary key.
CREATE INDEX IF NOT EXISTS idx_awareness_states_last_seen ON awareness_states (last_seen);
CREATE INDEX IF NOT EXISTS idx_awareness_states_connection ON awareness_states (connection_id);
