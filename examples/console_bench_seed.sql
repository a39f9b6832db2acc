-- Seed for the console benchmark (BENCHMARKS.md, "Console"): 100,000 documents with
-- a field map, 300,000 deltas and 200,000 clock entries, 10,000 sessions, 2,000
-- awareness rows and 1,000 maintenance runs; then ANALYZE, as autovacuum would.
-- Run on an empty, migrated database:
--   psql "$DATABASE_URL" -f examples/console_bench_seed.sql
INSERT INTO documents (id, state, updated_at)
SELECT 'doc-' || g,
       jsonb_build_object('id', 'doc-' || g, 'fields',
           jsonb_build_object('title', 'Document ' || g, 'count', g, 'done', g % 2 = 0,
                              'tags', jsonb_build_array('a', 'b', 'c'))),
       now() - make_interval(secs => g)
FROM generate_series(1, 100000) g;

INSERT INTO vector_clocks (document_id, client_id, clock_value)
SELECT 'doc-' || g, 'client-' || c, g + c
FROM generate_series(1, 100000) g, generate_series(1, 2) c;

INSERT INTO deltas (document_id, client_id, operation_type, field_path, value, clock_value, max_clock_value, timestamp)
SELECT 'doc-' || g, 'client-1', 'set', 'f' || k, to_jsonb(k), k, k, now() - make_interval(secs => g + k)
FROM generate_series(1, 100000) g, generate_series(1, 3) k;

INSERT INTO sessions (id, user_id, client_id, connected_at, last_seen, metadata)
SELECT 'bench-instance:conn-' || g, 'user-' || (g % 2000), NULL,
       now() - interval '2 hours', now() - make_interval(secs => g),
       jsonb_build_object('ip', '10.0.' || (g / 256) % 256 || '.' || g % 256,
                          'userAgent', 'bench-client/1.0', 'serverId', 'bench-instance')
FROM generate_series(1, 10000) g;

INSERT INTO awareness_states (document_id, client_id, connection_id, state, clock_value, last_seen)
SELECT 'doc-' || (g % 500), 'client-' || g, 'bench-instance:conn-' || g,
       jsonb_build_object('name', 'User ' || g, 'cursor', g), g, now()
FROM generate_series(1, 2000) g;

INSERT INTO maintenance_runs (job, scheduled_for, instance_id, started_at, finished_at, outcome, counts)
SELECT CASE g % 3 WHEN 0 THEN 'cleanup' WHEN 1 THEN 'awareness-prune' ELSE 'compaction' END,
       now() - make_interval(mins => g), 'bench-instance',
       now() - make_interval(mins => g), now() - make_interval(mins => g) + interval '40 ms',
       'ok', '{"sessionsDeleted": 0}'
FROM generate_series(1, 1000) g;

ANALYZE;
