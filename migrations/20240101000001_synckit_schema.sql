-- SyncKit canonical schema, Version: 0.1.0 (STORAGE.md §1).
-- Kept object-for-object identical to the schema the SyncKit TypeScript server
-- applies, so a database it created is adopted unchanged and stays readable by it.
-- Every statement is idempotent: on an existing SyncKit database this is a no-op.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

CREATE TABLE IF NOT EXISTS documents (
    id VARCHAR(255) PRIMARY KEY,
    state JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    version BIGINT NOT NULL DEFAULT 1
);

CREATE INDEX IF NOT EXISTS idx_documents_updated_at ON documents (updated_at DESC);

CREATE TABLE IF NOT EXISTS vector_clocks (
    document_id VARCHAR(255) NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    client_id VARCHAR(255) NOT NULL,
    clock_value BIGINT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    PRIMARY KEY (document_id, client_id)
);

CREATE INDEX IF NOT EXISTS idx_vector_clocks_document_id ON vector_clocks (document_id);
CREATE INDEX IF NOT EXISTS idx_vector_clocks_updated_at ON vector_clocks (updated_at DESC);

CREATE TABLE IF NOT EXISTS deltas (
    id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    document_id VARCHAR(255) NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    client_id VARCHAR(255) NOT NULL,
    operation_type VARCHAR(50) NOT NULL,
    field_path VARCHAR(500) NOT NULL,
    value JSONB,
    clock_value BIGINT NOT NULL,
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_deltas_document_id ON deltas (document_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_deltas_timestamp ON deltas (timestamp DESC);

CREATE TABLE IF NOT EXISTS sessions (
    id VARCHAR(255) PRIMARY KEY,
    user_id VARCHAR(255) NOT NULL,
    client_id VARCHAR(255),
    connected_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    last_seen TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    metadata JSONB DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS idx_sessions_user_id ON sessions (user_id);
CREATE INDEX IF NOT EXISTS idx_sessions_last_seen ON sessions (last_seen DESC);

CREATE TABLE IF NOT EXISTS snapshots (
    id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    document_id VARCHAR(255) NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    state JSONB NOT NULL,
    version JSONB NOT NULL,
    size_bytes INTEGER NOT NULL,
    compressed BOOLEAN DEFAULT FALSE,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_snapshots_document_id ON snapshots (document_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_snapshots_created_at ON snapshots (created_at DESC);

CREATE OR REPLACE FUNCTION update_updated_at_column()
RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = NOW();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS update_documents_updated_at ON documents;
CREATE TRIGGER update_documents_updated_at
    BEFORE UPDATE ON documents
    FOR EACH ROW
    EXECUTE FUNCTION update_updated_at_column();

CREATE OR REPLACE FUNCTION increment_document_version()
RETURNS TRIGGER AS $$
BEGIN
    NEW.version = OLD.version + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS increment_documents_version ON documents;
CREATE TRIGGER increment_documents_version
    BEFORE UPDATE ON documents
    FOR EACH ROW
    EXECUTE FUNCTION increment_document_version();

CREATE OR REPLACE FUNCTION cleanup_old_sessions()
RETURNS INTEGER AS $$
DECLARE
    deleted_count INTEGER;
BEGIN
    DELETE FROM sessions WHERE last_seen < NOW() - INTERVAL '24 hours';
    GET DIAGNOSTICS deleted_count = ROW_COUNT;
    RETURN deleted_count;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION cleanup_old_deltas()
RETURNS INTEGER AS $$
DECLARE
    deleted_count INTEGER;
BEGIN
    DELETE FROM deltas WHERE timestamp < NOW() - INTERVAL '30 days';
    GET DIAGNOSTICS deleted_count = ROW_COUNT;
    RETURN deleted_count;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE VIEW documents_with_clocks AS
SELECT
    d.id,
    d.state,
    d.version,
    d.created_at,
    d.updated_at,
    json_object_agg(vc.client_id, vc.clock_value) FILTER (WHERE vc.client_id IS NOT NULL) AS vector_clock
FROM documents d
LEFT JOIN vector_clocks vc ON d.id = vc.document_id
GROUP BY d.id, d.state, d.version, d.created_at, d.updated_at;

COMMENT ON TABLE documents IS 'Stores document states with JSONB for flexible schema';
COMMENT ON TABLE vector_clocks IS 'Tracks vector clock values for causality tracking';
COMMENT ON TABLE deltas IS 'Audit trail of all document operations (optional)';
COMMENT ON TABLE sessions IS 'Active WebSocket session tracking (optional)';
COMMENT ON TABLE snapshots IS 'Point-in-time snapshots of document states (optional)';
COMMENT ON COLUMN documents.state IS 'Document state stored as JSONB for flexibility';
COMMENT ON COLUMN documents.version IS 'Monotonically increasing version number';
COMMENT ON COLUMN vector_clocks.clock_value IS 'Lamport timestamp for this client';
COMMENT ON COLUMN deltas.operation_type IS 'Type of operation: set, delete, or merge';
COMMENT ON COLUMN snapshots.version IS 'Vector clock state at time of snapshot';
