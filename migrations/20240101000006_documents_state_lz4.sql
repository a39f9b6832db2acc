-- synckit addition: documents.state is compressed with LZ4 instead of pglz. Every
-- commit group rewrites each document's whole state, and once a state passes about
-- 2 KB PostgreSQL compresses it on every write: with pglz that was the largest single
-- cost of a persisted write (docs/storage.md §1.9). Only how new values are stored
-- changes: the column keeps its type, existing values stay as they are, and every
-- reader (the TypeScript server too) sees the same JSONB. Skipped on a server without
-- LZ4 support (before PostgreSQL 14, or built without it).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE documents ALTER COLUMN state SET COMPRESSION lz4;
    END IF;
END
$$;
