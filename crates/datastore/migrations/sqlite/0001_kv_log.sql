-- The revisioned key-value log. See src/datastore/sql.rs for how the tables work together.
CREATE TABLE kv_revision (
    id INTEGER PRIMARY KEY,
    revision INTEGER NOT NULL
);
INSERT INTO kv_revision (id, revision) VALUES (1, 0);

CREATE TABLE kv_compaction (
    id INTEGER PRIMARY KEY,
    compact_revision INTEGER NOT NULL,
    compacted_through INTEGER NOT NULL
);
INSERT INTO kv_compaction (id, compact_revision, compacted_through) VALUES (1, 0, 0);

CREATE TABLE kv_history (
    revision INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted BOOLEAN NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX kv_history_name_revision ON kv_history (name, revision);

CREATE TABLE kv_current (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX kv_current_expires_at ON kv_current (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE kv_lock (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
