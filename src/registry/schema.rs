//! Placeholder until the generated definitions land.
use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

static EMPTY: LazyLock<BTreeMap<String, Value>> = LazyLock::new(BTreeMap::new);

/// The OpenAPI definitions of the built-in kinds.
pub fn builtin_definitions() -> &'static BTreeMap<String, Value> {
    &EMPTY
}
