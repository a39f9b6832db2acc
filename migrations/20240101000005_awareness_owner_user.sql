-- synckit addition: the user that owns an awareness entry, so a client id can only
-- be updated or removed by its own connection or user (issue 11). Existing rows
-- belong to no user ('') and expire as before.
ALTER TABLE awareness_states ADD COLUMN IF NOT EXISTS user_id VARCHAR(255) NOT NULL DEFAULT '';
