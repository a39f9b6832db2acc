-- synckit addition (additive; SyncKit servers ignore the column): the highest
-- vector-clock entry of the document after the write that produced the delta, so
-- "deltas since clock N" is an indexed range scan instead of a client-side filter.
ALTER TABLE deltas ADD COLUMN IF NOT EXISTS max_clock_value BIGINT;

-- Rows written before this column existed (or later by another server) carry their
-- writer's tick, the best lower bound available.
UPDATE deltas SET max_clock_value = clock_value WHERE max_clock_value IS NULL;

CREATE INDEX IF NOT EXISTS idx_deltas_document_max_clock ON deltas (document_id, max_clock_value);
