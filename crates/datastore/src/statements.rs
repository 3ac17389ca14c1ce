//! The statement texts of the log, written once with `?` placeholders and rewritten to `$n`
//! for Postgres at start-up. Every value is bound, never spliced; the texts are kept for the
//! life of the process, which is what prepared-statement caches want anyway.

/// The statement texts of one engine.
pub(crate) struct Statements {
    pub current_revision: &'static str,
    pub compaction_state: &'static str,
    /// Locks the counter row for the rest of the transaction.
    pub lock_revision: &'static str,
    pub set_revision: &'static str,
    pub get: &'static str,
    pub get_at: &'static str,
    pub list_current: &'static str,
    pub changed_names: &'static str,
    pub count: &'static str,
    pub history: &'static str,
    pub history_in_range: &'static str,
    pub expired: &'static str,
    pub compact_predecessors: &'static str,
    pub compact_tombstones: &'static str,
    pub publish_compact: &'static str,
    pub set_compacted_through: &'static str,
    /// Appended to the multi-row insert into `kv_current` to make it an upsert.
    pub upsert_current_suffix: &'static str,
}

/// Portable statement texts; `{for_update}` and `{upsert}` are filled per engine.
pub(crate) struct Templates {
    pub for_update: &'static str,
    pub upsert_current_suffix: &'static str,
    pub dollar_placeholders: bool,
}

impl Templates {
    /// Builds the statements of an engine. Called once per engine per process (the texts
    /// are kept for the life of the process, which prepared statement caches want anyway).
    pub(crate) fn build(&self) -> Statements {
        let text = |sql: &str| -> &'static str {
            let sql = sql.replace("{for_update}", self.for_update);
            let sql = if self.dollar_placeholders {
                number_placeholders(&sql)
            } else {
                sql
            };
            Box::leak(sql.into_boxed_str())
        };
        Statements {
            current_revision: text("SELECT revision FROM kv_revision WHERE id = 1"),
            compaction_state: text(
                "SELECT compact_revision, compacted_through FROM kv_compaction WHERE id = 1",
            ),
            lock_revision: text("SELECT revision FROM kv_revision WHERE id = 1{for_update}"),
            set_revision: text("UPDATE kv_revision SET revision = ? WHERE id = 1"),
            get: text(
                "SELECT c.revision, c.create_revision, h.value FROM kv_current c \
                 JOIN kv_history h ON h.revision = c.revision WHERE c.name = ?",
            ),
            get_at: text(
                "SELECT revision, create_revision, deleted, value FROM kv_history \
                 WHERE name = ? AND revision <= ? ORDER BY revision DESC LIMIT 1",
            ),
            list_current: text(
                "SELECT c.name, c.revision, c.create_revision, h.value FROM kv_current c \
                 JOIN kv_history h ON h.revision = c.revision \
                 WHERE c.name >= ? AND c.name < ? AND c.revision <= ? ORDER BY c.name LIMIT ?",
            ),
            // Keys of a range changed in a revision window. The name bounds are wrapped in
            // substr() so no planner uses the (name, revision) index for them: that index
            // would walk the whole range (O(table)); the primary key walks only the window.
            changed_names: text(
                "SELECT name, revision FROM kv_history WHERE revision > ? AND revision <= ? \
                 AND substr(name, 1) >= ? AND substr(name, 1) < ? ORDER BY revision LIMIT ?",
            ),
            count: text("SELECT COUNT(*) FROM kv_current WHERE name >= ? AND name < ?"),
            history: text(
                "SELECT h.revision, h.name, h.create_revision, h.prev_revision, h.deleted, h.value, p.value \
                 FROM kv_history h LEFT JOIN kv_history p ON p.revision = h.prev_revision \
                 WHERE h.revision > ? AND h.revision <= ? ORDER BY h.revision LIMIT ?",
            ),
            history_in_range: text(
                "SELECT h.revision, h.name, h.create_revision, h.prev_revision, h.deleted, h.value, p.value \
                 FROM kv_history h LEFT JOIN kv_history p ON p.revision = h.prev_revision \
                 WHERE h.revision > ? AND h.revision <= ? AND substr(h.name, 1) >= ? AND substr(h.name, 1) < ? \
                 ORDER BY h.revision LIMIT ?",
            ),
            expired: text(
                "SELECT name, revision FROM kv_current WHERE expires_at IS NOT NULL AND expires_at <= ? \
                 ORDER BY expires_at LIMIT ?",
            ),
            compact_predecessors: text(
                "SELECT prev_revision FROM kv_history WHERE revision > ? AND revision <= ? AND prev_revision > 0",
            ),
            compact_tombstones: text(
                "DELETE FROM kv_history WHERE revision > ? AND revision <= ? AND deleted",
            ),
            publish_compact: text(
                "UPDATE kv_compaction SET compact_revision = ? WHERE id = 1 AND compact_revision < ?",
            ),
            set_compacted_through: text(
                "UPDATE kv_compaction SET compacted_through = ? WHERE id = 1 AND compacted_through < ?",
            ),
            upsert_current_suffix: self.upsert_current_suffix,
        }
    }
}

/// Rewrites `?` placeholders to `$1, $2, …` (the statements above contain no `?` inside
/// string literals).
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            number_placeholders("a = ? AND b < ? LIMIT ?"),
            "a = $1 AND b < $2 LIMIT $3"
        );
    }
}
