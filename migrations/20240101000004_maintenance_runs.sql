-- synckit addition: the history of maintenance runs (cleanup, awareness pruning,
-- compaction). The unique (job, scheduled_for) pair is also the fleet-wide claim:
-- when several instances share the database, the one whose insert succeeds runs
-- that scheduled occurrence and the others skip it.
CREATE TABLE IF NOT EXISTS maintenance_runs (
    id BIGSERIAL PRIMARY KEY,
    job VARCHAR(100) NOT NULL,
    scheduled_for TIMESTAMP WITH TIME ZONE NOT NULL,
    instance_id VARCHAR(255) NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    finished_at TIMESTAMP WITH TIME ZONE,
    outcome VARCHAR(20) NOT NULL DEFAULT 'running',
    counts JSONB NOT NULL DEFAULT '{}',
    error TEXT,
    UNIQUE (job, scheduled_for)
);

CREATE INDEX IF NOT EXISTS idx_maintenance_runs_started_at ON maintenance_runs (started_at DESC);
