-- The revisioned key-value log. See src/datastore/sql.rs for how the tables work together.
-- Keys are ASCII with binary collation so ordering matches the other engines byte for byte.
CREATE TABLE kv_revision (
    id INTEGER PRIMARY KEY,
    revision BIGINT NOT NULL
) ENGINE = InnoDB;
INSERT INTO kv_revision (id, revision) VALUES (1, 0);

CREATE TABLE kv_compaction (
    id INTEGER PRIMARY KEY,
    compact_revision BIGINT NOT NULL,
    compacted_through BIGINT NOT NULL
) ENGINE = InnoDB;
INSERT INTO kv_compaction (id, compact_revision, compacted_through) VALUES (1, 0, 0);

CREATE TABLE kv_history (
    revision BIGINT PRIMARY KEY,
    name VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    create_revision BIGINT NOT NULL,
    prev_revision BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    value LONGBLOB NOT NULL,
    INDEX kv_history_name_revision (name, revision)
) ENGINE = InnoDB;

CREATE TABLE kv_current (
    name VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    revision BIGINT NOT NULL,
    create_revision BIGINT NOT NULL,
    expires_at BIGINT NULL,
    INDEX kv_current_expires_at (expires_at)
) ENGINE = InnoDB;

CREATE TABLE kv_lock (
    name VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    holder VARCHAR(255) NOT NULL,
    expires_at BIGINT NOT NULL
) ENGINE = InnoDB;
