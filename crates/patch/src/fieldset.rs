//! Sets of field paths: what a field manager owns, in the FieldsV1 form kube-apiserver keeps
//! in `metadata.managedFields`.
//!
//! A set is a tree of [`PathElement`]s; a node is a *member* when the path itself is owned
//! (a leaf such as `f:image`, or a list item or map entry whose existence is owned, written
//! with a `"."` key when it also has children). The shape of the tree follows the schema as
//! upstream's structured-merge-diff does: struct fields are named `f:`, items of map-lists by
//! their keys `k:{"name":"web"}`, items of sets by value `v:"a"`, and atomic lists and maps
//! are a single leaf.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{FieldSetError, ListType, SchemaRef};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object (`f:name`).
    Field(String),
    /// A map-list item, by the canonical JSON object of its key fields (`k:{"name":"web"}`).
    Key(String),
    /// A set item, by its canonical JSON value (`v:"a"`).
    Value(String),
    /// A list item by position (`i:0`), only read from FieldsV1 written elsewhere.
    Index(usize),
}

/// A path of field names, map-list keys and set values from the object's root.
pub type FieldPath = Vec<PathElement>;

impl PathElement {
    /// The element of a map-list item identified by `keys`. A key the item lacks takes the
    /// `default` its schema declares (as upstream, so `{"containerPort": 80}` and a defaulted
    /// `{"containerPort": 80, "protocol": "TCP"}` are the same item); keys with neither are
    /// left out, and an item with no key at all has no element.
    pub fn key_of(
        item: &Value,
        keys: &[String],
        item_schema: SchemaRef<'_>,
    ) -> Option<PathElement> {
        let item = item.as_object()?;
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort();
        let mut key = Map::new();
        let mut present = false;
        for name in sorted {
            if let Some(value) = item.get(name) {
                key.insert(name.clone(), value.clone());
                present = true;
            } else if let Some(default) = item_schema.property(name).extension("default") {
                key.insert(name.clone(), default.clone());
            }
        }
        present.then(|| PathElement::Key(Value::Object(key).to_string()))
    }

    /// The element of a set item.
    pub fn value_of(item: &Value) -> PathElement {
        PathElement::Value(item.to_string())
    }

    /// The FieldsV1 key of this element.
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(key) => format!("k:{key}"),
            PathElement::Value(value) => format!("v:{value}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    fn from_fields_v1_key(key: &str) -> Option<PathElement> {
        let (kind, rest) = key.split_at_checked(2)?;
        match kind {
            "f:" => Some(PathElement::Field(rest.to_owned())),
            "k:" => match serde_json::from_str::<Value>(rest).ok()? {
                key @ Value::Object(_) => Some(PathElement::Key(key.to_string())),
                _ => None,
            },
            "v:" => serde_json::from_str::<Value>(rest)
                .ok()
                .map(|value| PathElement::value_of(&value)),
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }

    /// Whether `item` (of a list) is the one this element names.
    pub fn matches_item(&self, position: usize, item: &Value) -> bool {
        match self {
            PathElement::Field(_) => false,
            PathElement::Key(key) => match serde_json::from_str::<Value>(key) {
                // A key field the item lacks is one it would get by default (see `key_of`).
                Ok(Value::Object(key)) => {
                    key.iter()
                        .all(|(name, v)| item.get(name).is_none_or(|found| found == v))
                        && key.iter().any(|(name, v)| item.get(name) == Some(v))
                }
                _ => false,
            },
            PathElement::Value(value) => {
                serde_json::from_str::<Value>(value).is_ok_and(|value| value == *item)
            }
            PathElement::Index(index) => *index == position,
        }
    }
}

/// Upstream's path form, used in conflict messages: `.spec.template.spec.containers[name="web"].image`.
pub fn format_path(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathElement::Key(key) => {
                let pairs: Vec<String> = match serde_json::from_str::<Value>(key) {
                    Ok(Value::Object(key)) => key.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![key.clone()],
                };
                out.push_str(&format!("[{}]", pairs.join(",")));
            }
            PathElement::Value(value) => out.push_str(&format!("[={value}]")),
            PathElement::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    children: BTreeMap<PathElement, Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    member: bool,
    children: FieldSet,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        FieldSet::default()
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Adds `path` (the empty path is not a field and is ignored).
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let node = self.children.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.children.insert(rest);
        }
    }

    /// Whether `path` itself is a member.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|node| node.member)
    }

    /// Whether `path` or anything below it is a member.
    pub fn contains_at_or_below(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some(_) => self.node(path).is_some(),
        }
    }

    fn node(&self, path: &[PathElement]) -> Option<&Node> {
        let (first, rest) = path.split_first()?;
        let node = self.children.get(first)?;
        if rest.is_empty() {
            Some(node)
        } else {
            node.children.node(rest)
        }
    }

    /// Removes `path` and everything below it.
    pub fn remove_subtree(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            self.children.clear();
            return;
        };
        if rest.is_empty() {
            self.children.remove(first);
        } else if let Some(node) = self.children.get_mut(first) {
            node.children.remove_subtree(rest);
            if !node.member && node.children.is_empty() {
                self.children.remove(first);
            }
        }
    }

    /// Keeps only the top-level elements `keep` accepts (and everything below them).
    pub fn retain_top_level(&mut self, keep: impl Fn(&PathElement) -> bool) {
        self.children.retain(|element, _| keep(element));
    }

    /// Every member path, parents before children.
    pub fn paths(&self) -> Vec<FieldPath> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
        for (element, node) in &self.children {
            prefix.push(element.clone());
            if node.member {
                out.push(prefix.clone());
            }
            node.children.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Members of either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for (element, node) in &other.children {
            let mine = out.children.entry(element.clone()).or_default();
            mine.member |= node.member;
            mine.children = mine.children.union(&node.children);
        }
        out
    }

    /// Members of both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        self.combine(other, |a, b| a && b)
    }

    /// Members of `self` that are not members of `other` (membership only: owning a map
    /// entry does not own what is below it).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (element, node) in &self.children {
            let (member, children) = match other.children.get(element) {
                Some(theirs) => (
                    node.member && !theirs.member,
                    node.children.difference(&theirs.children),
                ),
                None => (node.member, node.children.clone()),
            };
            if member || !children.is_empty() {
                out.children
                    .insert(element.clone(), Node { member, children });
            }
        }
        out
    }

    fn combine(&self, other: &FieldSet, keep: fn(bool, bool) -> bool) -> FieldSet {
        let mut out = FieldSet::new();
        for (element, node) in &self.children {
            let Some(theirs) = other.children.get(element) else {
                continue;
            };
            let member = keep(node.member, theirs.member);
            let children = node.children.combine(&theirs.children, keep);
            if member || !children.is_empty() {
                out.children
                    .insert(element.clone(), Node { member, children });
            }
        }
        out
    }

    /// Reads a `fieldsV1` document.
    pub fn from_fields_v1(fields: &Value) -> Result<FieldSet, FieldSetError> {
        Self::read_fields_v1(fields, &mut Vec::new())
    }

    fn read_fields_v1(fields: &Value, at: &mut Vec<String>) -> Result<FieldSet, FieldSetError> {
        let error = |at: &Vec<String>, reason: &str| FieldSetError {
            path: if at.is_empty() {
                ".".to_owned()
            } else {
                at.join(" ")
            },
            reason: reason.to_owned(),
        };
        let Value::Object(entries) = fields else {
            return Err(error(at, "expected an object"));
        };
        let mut set = FieldSet::new();
        for (key, child) in entries {
            if key == "." {
                continue;
            }
            at.push(key.clone());
            let element = PathElement::from_fields_v1_key(key)
                .ok_or_else(|| error(at, "expected a key starting with f:, k:, v: or i:"))?;
            let Value::Object(grandchildren) = child else {
                return Err(error(at, "expected an object"));
            };
            let member = grandchildren.is_empty() || grandchildren.contains_key(".");
            let children = Self::read_fields_v1(child, at)?;
            at.pop();
            set.children.insert(element, Node { member, children });
        }
        Ok(set)
    }

    /// The `fieldsV1` document of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        for (element, node) in &self.children {
            let mut child = match node.children.to_fields_v1() {
                Value::Object(child) => child,
                _ => Map::new(),
            };
            if node.member && !child.is_empty() {
                child.insert(".".to_owned(), Value::Object(Map::new()));
            }
            out.insert(element.to_fields_v1_key(), Value::Object(child));
        }
        Value::Object(out)
    }

    /// The fields set in `object`, shaped by `schema`.
    pub fn from_object(object: &Value, schema: SchemaRef<'_>) -> FieldSet {
        let mut set = FieldSet::new();
        walk(object, schema, &mut Vec::new(), &mut |path, _| {
            set.insert(path)
        });
        set
    }
}

/// The leaf values of `object` (scalars, atomic lists and maps, set items, empty maps), by
/// path: what "modified" is judged on.
pub(crate) fn leaves<'v>(
    object: &'v Value,
    schema: SchemaRef<'_>,
) -> BTreeMap<FieldPath, &'v Value> {
    let mut out = BTreeMap::new();
    walk(object, schema, &mut Vec::new(), &mut |path, leaf| {
        if let Some(value) = leaf
            && !path.is_empty()
        {
            out.insert(path.to_vec(), value);
        }
    });
    out
}

/// Visits every member path of `value`: `Some(value)` for leaves, `None` for members that
/// own only their existence (list items, undeclared map entries with children).
fn walk<'v>(
    value: &'v Value,
    schema: SchemaRef<'_>,
    path: &mut FieldPath,
    visit: &mut dyn FnMut(&[PathElement], Option<&'v Value>),
) {
    match value {
        Value::Object(_) if schema.is_atomic_map() && !path.is_empty() => visit(path, Some(value)),
        Value::Object(map) => {
            for (key, child) in map {
                let (child_schema, declared) = schema.field(key);
                path.push(PathElement::Field(key.clone()));
                match child {
                    Value::Object(entries) if entries.is_empty() => visit(path, Some(child)),
                    _ => walk(child, child_schema, path, visit),
                }
                if !declared {
                    visit(path, None);
                }
                path.pop();
            }
        }
        Value::Array(items) => match schema.list_type() {
            ListType::Atomic => visit(path, Some(value)),
            ListType::Set => {
                for item in items {
                    path.push(PathElement::value_of(item));
                    visit(path, Some(item));
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                let item_schema = schema.items();
                let elements: Option<Vec<PathElement>> = items
                    .iter()
                    .map(|item| PathElement::key_of(item, &keys, item_schema))
                    .collect();
                let Some(elements) = elements else {
                    // Items without their keys cannot be told apart: own the list whole.
                    visit(path, Some(value));
                    return;
                };
                for (item, element) in items.iter().zip(elements) {
                    path.push(element);
                    walk(item, item_schema, path, visit);
                    visit(path, None);
                    path.pop();
                }
            }
        },
        scalar => visit(path, Some(scalar)),
    }
}

/// The value at `path` in `object`.
pub fn value_at<'v>(object: &'v Value, path: &[PathElement]) -> Option<&'v Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(object);
    };
    let child = match (first, object) {
        (PathElement::Field(name), Value::Object(map)) => map.get(name)?,
        (element, Value::Array(items)) => items
            .iter()
            .enumerate()
            .find(|(position, item)| element.matches_item(*position, item))
            .map(|(_, item)| item)?,
        _ => return None,
    };
    value_at(child, rest)
}

/// Removes the field or list item at `path` from `object`; absent paths are left alone.
pub(crate) fn remove_at(object: &mut Value, path: &[PathElement]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (first, object) {
        (PathElement::Field(name), Value::Object(map)) => {
            if rest.is_empty() {
                map.remove(name);
            } else if let Some(child) = map.get_mut(name) {
                remove_at(child, rest);
            }
        }
        (element, Value::Array(items)) => {
            let found = items
                .iter()
                .enumerate()
                .position(|(position, item)| element.matches_item(position, item));
            if let Some(position) = found {
                if rest.is_empty() {
                    items.remove(position);
                } else {
                    remove_at(&mut items[position], rest);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::super::schema::fixtures;
    use super::*;

    fn deployment_schema(defs: &BTreeMap<String, Value>) -> SchemaRef<'_> {
        SchemaRef::definition(defs, "io.k8s.api.apps.v1.Deployment")
    }

    #[test]
    fn an_object_walked_with_its_schema_gives_upstream_fields_v1() {
        let defs = fixtures::definitions();
        let object = json!({
            "metadata": {"labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "command": ["run"]}]}}},
        });
        let set = FieldSet::from_object(&object, deployment_schema(&defs));
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}, "f:command": {}},
                }}}},
            })
        );
    }

    #[test]
    fn fields_v1_round_trips_and_rejects_garbage() {
        let fields = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}},
                                       "f:list": {"i:0": {}}}});
        let set = FieldSet::from_fields_v1(&fields).unwrap();
        assert_eq!(set.to_fields_v1(), fields);
        assert!(set.contains(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into())
        ]));
        assert!(!set.contains(&[PathElement::Field("metadata".into())]));
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"k:[1]": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
    }

    #[test]
    fn set_algebra_on_members() {
        let a = FieldSet::from_object(&json!({"a": 1, "b": {"c": 2, "d": 3}}), SchemaRef::none());
        let b = FieldSet::from_object(&json!({"b": {"c": 9}, "e": 1}), SchemaRef::none());
        let paths = |set: &FieldSet| -> Vec<String> {
            set.paths().iter().map(|p| format_path(p)).collect()
        };
        assert_eq!(paths(&a.intersection(&b)), vec![".b", ".b.c"]);
        assert_eq!(paths(&a.difference(&b)), vec![".a", ".b.d"]);
        assert_eq!(paths(&a.union(&b)), vec![".a", ".b", ".b.c", ".b.d", ".e"]);
        assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn paths_read_like_upstream_and_locate_values() {
        let defs = fixtures::definitions();
        let object = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx"}, {"name": "side", "image": "busybox"}]}}}});
        let leaves = leaves(&object, deployment_schema(&defs));
        let image = leaves
            .keys()
            .find(|path| format_path(path) == ".spec.template.spec.containers[name=\"side\"].image")
            .unwrap();
        assert_eq!(value_at(&object, image), Some(&json!("busybox")));
        let mut edited = object.clone();
        remove_at(&mut edited, &image[..image.len() - 1]);
        assert_eq!(
            edited["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx"}])
        );
    }
}
