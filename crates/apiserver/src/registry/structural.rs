//! Custom objects against their CRD's structural schema (`openAPIV3Schema`), as
//! kube-apiserver treats them: defaults filled in, unknown fields pruned, then validated.
//!
//! One walk does all three, so what is pruned is never validated and what is validated is
//! exactly what gets stored. The same walk, run on a copy, lists what pruning would remove
//! ([`unknown_fields`]) for `fieldValidation=Strict|Warn`.
//!
//! Covered: `type` (string, integer, number, boolean, object, array), `nullable`, `enum`,
//! `required`, `minimum`/`maximum` (and their `exclusive*` flags), `multipleOf`,
//! `minLength`/`maxLength`, `minItems`/`maxItems`, `minProperties`/`maxProperties`,
//! `items`, `properties`, `additionalProperties` (schema or bool), `default`, and the
//! `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string` and
//! `x-kubernetes-embedded-resource` extensions. Not covered (accepted as valid): `pattern`
//! and `format` (no regex engine among our dependencies), `allOf`/`anyOf`/`oneOf`/`not`,
//! `uniqueItems`, list-type and CEL rules.
//!
//! Paths and messages follow upstream: `spec.items[0].name`,
//! `Invalid value: "string": spec.replicas in body must be of type integer: "string"`.

use serde_json::{Map, Value};

use super::error::FieldError;

/// Fields of a resource (the root, or an embedded resource) kept whatever the schema says:
/// the generic metadata checks own them.
const RESOURCE_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Fills in defaults, prunes fields the schema does not know and validates `object`
/// against `schema`; returns every invalid field (empty when valid).
pub fn validate_and_prune(schema: &Value, object: &mut Value) -> Vec<FieldError> {
    let mut walk = Walk::default();
    walk.node(schema, object, "", true);
    walk.errors
}

/// The paths (`spec.foo`, `spec.items[0].bar`) [`validate_and_prune`] would remove from
/// `object`, in key order.
pub fn unknown_fields(schema: &Value, object: &Value) -> Vec<String> {
    let mut copy = object.clone();
    let mut walk = Walk::default();
    walk.node(schema, &mut copy, "", true);
    walk.pruned
}

#[derive(Default)]
struct Walk {
    errors: Vec<FieldError>,
    pruned: Vec<String>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema[name].as_bool().unwrap_or(false)
}

/// The OpenAPI type name of a JSON value, as upstream reports a mismatch.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// A value as upstream prints it in a message: strings quoted, numbers bare.
fn render(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn invalid(path: &str, value: &Value, detail: String) -> FieldError {
    FieldError {
        field: path.to_string(),
        cause: "FieldValueInvalid",
        message: format!("Invalid value: {}: {path} in body {detail}", render(value)),
    }
}

impl Walk {
    /// Checks `value` at `path` against `schema`; `resource` when it is the root or an
    /// embedded resource (its apiVersion, kind and metadata are kept).
    fn node(&mut self, schema: &Value, value: &mut Value, path: &str, resource: bool) {
        if value.is_null() {
            if !flag(schema, "nullable") && (schema["type"].is_string() || is_int_or_string(schema))
            {
                self.type_error(schema, value, path);
            }
            return;
        }
        if !self.type_matches(schema, value, path) {
            return;
        }
        self.check_enum(schema, value, path);
        match value {
            Value::Number(_) => self.check_number(schema, value, path),
            Value::String(text) => {
                let length = text.chars().count() as u64;
                if let Some(min) = schema["minLength"].as_u64()
                    && length < min
                {
                    let detail = format!("should be at least {min} chars long");
                    self.errors.push(invalid(path, value, detail));
                }
                if let Some(max) = schema["maxLength"].as_u64()
                    && length > max
                {
                    let detail = format!("should be at most {max} chars long");
                    self.errors.push(invalid(path, value, detail));
                }
            }
            Value::Array(items) => {
                let count = items.len() as u64;
                if let Some(min) = schema["minItems"].as_u64()
                    && count < min
                {
                    let detail = format!("should have at least {min} items");
                    self.errors.push(invalid(path, &Value::from(count), detail));
                }
                if let Some(max) = schema["maxItems"].as_u64()
                    && count > max
                {
                    let detail = format!("should have at most {max} items");
                    self.errors.push(invalid(path, &Value::from(count), detail));
                }
                let item_schema = &schema["items"];
                if item_schema.is_object() {
                    let embedded = flag(item_schema, "x-kubernetes-embedded-resource");
                    for (index, item) in items.iter_mut().enumerate() {
                        self.node(item_schema, item, &format!("{path}[{index}]"), embedded);
                    }
                }
            }
            Value::Object(fields) => {
                let embedded = resource || flag(schema, "x-kubernetes-embedded-resource");
                self.object(schema, fields, path, embedded, resource && path.is_empty());
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn type_matches(&mut self, schema: &Value, value: &Value, path: &str) -> bool {
        let matches = if is_int_or_string(schema) {
            value.is_string() || (value.is_number() && is_integer(value))
        } else {
            match schema["type"].as_str() {
                Some("string") => value.is_string(),
                Some("integer") => value.is_number() && is_integer(value),
                Some("number") => value.is_number(),
                Some("boolean") => value.is_boolean(),
                Some("object") => value.is_object(),
                Some("array") => value.is_array(),
                _ => true,
            }
        };
        if !matches {
            self.type_error(schema, value, path);
        }
        matches
    }

    fn type_error(&mut self, schema: &Value, value: &Value, path: &str) {
        let expected = if is_int_or_string(schema) {
            "integer,string"
        } else {
            schema["type"].as_str().unwrap_or("")
        };
        let actual = type_name(value);
        self.errors.push(FieldError {
            field: path.to_string(),
            cause: "FieldValueTypeInvalid",
            message: format!(
                "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
            ),
        });
    }

    fn check_enum(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(allowed) = schema["enum"].as_array() else {
            return;
        };
        if allowed.iter().any(|a| a == value) {
            return;
        }
        let supported: Vec<String> = allowed.iter().map(render).collect();
        self.errors.push(FieldError {
            field: path.to_string(),
            cause: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                render(value),
                supported.join(", ")
            ),
        });
    }

    fn check_number(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(number) = value.as_f64() else {
            return;
        };
        if let Some(min) = schema["minimum"].as_f64() {
            let exclusive = flag(schema, "exclusiveMinimum");
            if number < min || (exclusive && number == min) {
                let relation = if exclusive { "" } else { " or equal to" };
                let detail = format!(
                    "should be greater than{relation} {}",
                    render(&schema["minimum"])
                );
                self.errors.push(invalid(path, value, detail));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            let exclusive = flag(schema, "exclusiveMaximum");
            if number > max || (exclusive && number == max) {
                let relation = if exclusive { "" } else { " or equal to" };
                let detail = format!(
                    "should be less than{relation} {}",
                    render(&schema["maximum"])
                );
                self.errors.push(invalid(path, value, detail));
            }
        }
        if let Some(factor) = schema["multipleOf"].as_f64()
            && factor > 0.0
            && (number / factor).fract() != 0.0
        {
            let detail = format!("should be a multiple of {}", render(&schema["multipleOf"]));
            self.errors.push(invalid(path, value, detail));
        }
    }

    /// An object's fields: defaults, then pruning and validation field by field, then
    /// `required` and the property counts.
    fn object(
        &mut self,
        schema: &Value,
        fields: &mut Map<String, Value>,
        path: &str,
        embedded: bool,
        root: bool,
    ) {
        let properties = schema["properties"].as_object();
        if let Some(properties) = properties {
            for (name, property) in properties {
                if !fields.contains_key(name)
                    && let Some(default) = property.get("default")
                {
                    fields.insert(name.clone(), default.clone());
                }
            }
        }
        let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
        let additional = &schema["additionalProperties"];
        let names: Vec<String> = fields.keys().cloned().collect();
        for name in names {
            let field_path = child(path, &name);
            if embedded && RESOURCE_FIELDS.contains(&name.as_str()) {
                // The root's apiVersion/kind/metadata are the generic layer's to check;
                // an embedded resource's are validated only when its schema lists them.
                let listed = properties.and_then(|p| p.get(&name));
                if let (false, Some(sub), Some(value)) = (root, listed, fields.get_mut(&name)) {
                    self.node(sub, value, &field_path, false);
                }
                continue;
            }
            let sub = properties
                .and_then(|p| p.get(&name))
                .or_else(|| additional.is_object().then_some(additional));
            match (sub, fields.get_mut(&name)) {
                (Some(sub), Some(value)) => {
                    let nested = flag(sub, "x-kubernetes-embedded-resource");
                    self.node(sub, value, &field_path, nested);
                }
                _ if preserve || additional.as_bool() == Some(true) => {}
                _ => {
                    fields.remove(&name);
                    self.pruned.push(field_path);
                }
            }
        }
        if let Some(required) = schema["required"].as_array() {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    self.errors.push(required_error(&child(path, name)));
                }
            }
        }
        if embedded && !root {
            for name in ["apiVersion", "kind"] {
                if fields
                    .get(name)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    let mut error = required_error(&child(path, name));
                    error.message.push_str(": must not be empty");
                    self.errors.push(error);
                }
            }
        }
        let count = fields.len() as u64;
        let whole = Value::Object(fields.clone());
        if let Some(min) = schema["minProperties"].as_u64()
            && count < min
        {
            let detail = format!("should have at least {min} properties");
            self.errors.push(invalid(path, &whole, detail));
        }
        if let Some(max) = schema["maxProperties"].as_u64()
            && count > max
        {
            let detail = format!("should have at most {max} properties");
            self.errors.push(invalid(path, &whole, detail));
        }
    }
}

fn is_int_or_string(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-int-or-string")
}

fn required_error(path: &str) -> FieldError {
    FieldError {
        field: path.to_string(),
        cause: "FieldValueRequired",
        message: "Required value".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "integer", "minimum": 1},
            "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                "x-kubernetes-preserve-unknown-fields": true},
            "mode": {"type": "string", "default": "fast"}
        }}}})
    }

    #[test]
    fn nested_paths_name_the_array_index() {
        let mut object = json!({"spec": {"size": 1, "items": [{"name": 3, "extra": true}]}});
        let errors = validate_and_prune(&schema(), &mut object);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.items[0].name");
        assert_eq!(object["spec"]["items"][0], json!({"name": 3}));
        assert_eq!(object["spec"]["mode"], "fast", "defaults are filled in");
    }

    #[test]
    fn minimum_and_embedded_resources() {
        let mut object = json!({"spec": {"size": 0, "template": {"spec": {}}}});
        let errors = validate_and_prune(&schema(), &mut object);
        let messages: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert!(
            messages.contains(
                &"spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
                    .to_string()
            ),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("spec.template.kind: Required value"))
        );
    }

    #[test]
    fn unknown_fields_are_listed_not_removed() {
        let object = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"size": 2, "bogus": 1}, "other": {}});
        assert_eq!(unknown_fields(&schema(), &object), ["other", "spec.bogus"]);
        assert_eq!(object["spec"]["bogus"], 1);
    }
}
