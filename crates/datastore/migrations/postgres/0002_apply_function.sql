-- Applies a batch of writes in one statement, so no network round trip happens while the
-- revision counter is locked (see src/datastore/postgres.rs for the measurements).
-- Semantics are those of SqlBackend::apply_in_transaction (src/datastore/sql.rs): ops in
-- order, each with its own revision, failed comparisons take none; kinds: 0 create,
-- 1 update (compare on expected), 2 delete (compare on expected unless it is NULL).
-- Returns one row per op: applied, and the new revision (applied) or the key's current
-- revision (conflict; NULL when the key does not exist).
CREATE FUNCTION capstan_apply(
    kinds SMALLINT[], names TEXT[], vals BYTEA[], expected BIGINT[], expires BIGINT[]
) RETURNS TABLE (applied BOOLEAN, revision BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    head BIGINT;
    next_revision BIGINT;
    current_revision BIGINT;
    current_create BIGINT;
    present BOOLEAN;
BEGIN
    -- Every statement below takes a fresh snapshot (READ COMMITTED, volatile function),
    -- so after this lock they see everything the previous holder committed.
    SELECT r.revision INTO head FROM kv_revision r WHERE r.id = 1 FOR UPDATE;
    next_revision := head;
    FOR i IN 1 .. coalesce(array_length(names, 1), 0) LOOP
        SELECT c.revision, c.create_revision INTO current_revision, current_create
            FROM kv_current c WHERE c.name = names[i];
        present := FOUND;
        IF NOT present THEN
            current_revision := NULL;
        END IF;
        IF (kinds[i] = 0 AND present)
            OR (kinds[i] = 1 AND (NOT present OR current_revision <> expected[i]))
            OR (kinds[i] = 2 AND (NOT present OR (expected[i] IS NOT NULL AND current_revision <> expected[i])))
        THEN
            applied := FALSE;
            revision := current_revision;
            RETURN NEXT;
            CONTINUE;
        END IF;
        next_revision := next_revision + 1;
        IF kinds[i] = 0 THEN
            INSERT INTO kv_history (revision, name, create_revision, prev_revision, deleted, value)
                VALUES (next_revision, names[i], next_revision, 0, FALSE, vals[i]);
            INSERT INTO kv_current (name, revision, create_revision, expires_at)
                VALUES (names[i], next_revision, next_revision, expires[i]);
        ELSIF kinds[i] = 1 THEN
            INSERT INTO kv_history (revision, name, create_revision, prev_revision, deleted, value)
                VALUES (next_revision, names[i], current_create, current_revision, FALSE, vals[i]);
            UPDATE kv_current SET revision = next_revision, expires_at = expires[i]
                WHERE name = names[i];
        ELSE
            INSERT INTO kv_history (revision, name, create_revision, prev_revision, deleted, value)
                VALUES (next_revision, names[i], current_create, current_revision, TRUE, ''::BYTEA);
            DELETE FROM kv_current WHERE name = names[i];
        END IF;
        applied := TRUE;
        revision := next_revision;
        RETURN NEXT;
    END LOOP;
    IF next_revision > head THEN
        UPDATE kv_revision SET revision = next_revision WHERE id = 1;
    END IF;
END
$$;
