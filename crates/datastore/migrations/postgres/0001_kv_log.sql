-- The revisioned key-value log. See src/datastore/sql.rs for how the tables work together.
CREATE TABLE kv_revision (
    id INTEGER PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO kv_revision (id, revision) VALUES (1, 0);

CREATE TABLE kv_compaction (
    id INTEGER PRIMARY KEY,
    compact_revision BIGINT NOT NULL,
    compacted_through BIGINT NOT NULL
);
INSERT INTO kv_compaction (id, compact_revision, compacted_through) VALUES (1, 0, 0);

CREATE TABLE kv_history (
    revision BIGINT PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    create_revision BIGINT NOT NULL,
    prev_revision BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    value BYTEA NOT NULL
);
CREATE INDEX kv_history_name_revision ON kv_history (name, revision);

CREATE TABLE kv_current (
    name TEXT COLLATE "C" PRIMARY KEY,
    revision BIGINT NOT NULL,
    create_revision BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX kv_current_expires_at ON kv_current (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE kv_lock (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
