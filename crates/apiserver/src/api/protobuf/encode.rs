//! Kubernetes JSON to protobuf bytes, driven by the schema table (the reverse of
//! `decode.rs`).
//!
//! Fields are written in tag order, as Go does. Repeated scalars are written unpacked, as
//! Kubernetes' proto2 gogo-protobuf code does. JSON keys that are not in the table are
//! ignored (the JSON decoder of the Kubernetes API server drops them too); a value of the
//! wrong JSON type is an error naming its path.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::schema::{FieldType, Label, Message, SCHEMA, Special};
use super::time::{parse_duration, parse_timestamp};
use super::wire::{FIXED64, put_bytes, put_key, put_varint_field};
use super::{MAGIC, MAX_DEPTH, ProtobufError};

/// Where in the object being encoded we are, for error messages (`spec.template.spec`).
pub(crate) struct Path {
    kind: String,
    segments: Vec<String>,
}

impl Path {
    pub(crate) fn new(kind: &str) -> Self {
        Path {
            kind: kind.to_string(),
            segments: Vec::new(),
        }
    }

    fn error(&self, problem: impl Into<String>) -> ProtobufError {
        ProtobufError::InvalidJson {
            kind: self.kind.clone(),
            path: if self.segments.is_empty() {
                "(root)".to_string()
            } else {
                self.segments.join(".")
            },
            problem: problem.into(),
        }
    }

    /// Run `encode` with `segment` appended to the path.
    fn within<T>(
        &mut self,
        segment: impl Into<String>,
        encode: impl FnOnce(&mut Self) -> Result<T, ProtobufError>,
    ) -> Result<T, ProtobufError> {
        self.segments.push(segment.into());
        let result = encode(self);
        self.segments.pop();
        result
    }
}

/// Wrap an encoded object in the magic prefix and a `runtime.Unknown`.
pub(crate) fn wrap_envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = Vec::with_capacity(raw.len() + type_meta.len() + 16);
    out.extend_from_slice(&MAGIC);
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, raw);
    // contentEncoding and contentType: empty, and written anyway, as Go does
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    out
}

/// Encode the fields of `message` found in the JSON object `map`.
pub(crate) fn encode_message(
    message: &Message,
    map: &Map<String, Value>,
    path: &mut Path,
) -> Result<Vec<u8>, ProtobufError> {
    if path.segments.len() > MAX_DEPTH {
        return Err(path.error(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let mut out = Vec::new();
    for field in &message.fields {
        if field.label == Label::Inline {
            let inner = nested(&field.field_type, path)?;
            let bytes = encode_message(inner, map, path)?;
            if !bytes.is_empty() {
                put_bytes(&mut out, field.tag, &bytes);
            }
            continue;
        }
        let Some(value) = map.get(&field.json_name).filter(|value| !value.is_null()) else {
            continue;
        };
        path.within(field.json_name.as_str(), |path| match field.label {
            Label::Repeated => {
                let Value::Array(items) = value else {
                    return Err(path.error("expected an array"));
                };
                for (index, item) in items.iter().enumerate() {
                    path.within(index.to_string(), |path| {
                        encode_value(&mut out, field.tag, &field.field_type, item, path)
                    })?;
                }
                Ok(())
            }
            Label::Map => {
                let Value::Object(entries) = value else {
                    return Err(path.error("expected an object"));
                };
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                for (key, item) in sorted {
                    let mut entry = Vec::new();
                    put_bytes(&mut entry, 1, key.as_bytes());
                    if !item.is_null() {
                        path.within(key.as_str(), |path| {
                            encode_value(&mut entry, 2, &field.field_type, item, path)
                        })?;
                    }
                    put_bytes(&mut out, field.tag, &entry);
                }
                Ok(())
            }
            Label::Optional | Label::Inline => {
                encode_value(&mut out, field.tag, &field.field_type, value, path)
            }
        })?;
    }
    Ok(out)
}

fn nested<'s>(field_type: &FieldType, path: &Path) -> Result<&'s Message, ProtobufError> {
    match field_type {
        FieldType::Message(name) => SCHEMA
            .message(name)
            .ok_or_else(|| path.error(format!("unknown message type {name}"))),
        _ => Err(path.error("not a message field")),
    }
}

/// Append one value of a field (an element, for repeated fields) under `tag`.
fn encode_value(
    out: &mut Vec<u8>,
    tag: u32,
    field_type: &FieldType,
    value: &Value,
    path: &mut Path,
) -> Result<(), ProtobufError> {
    match field_type {
        FieldType::String => {
            let text = value
                .as_str()
                .ok_or_else(|| path.error("expected a string"))?;
            put_bytes(out, tag, text.as_bytes());
        }
        FieldType::Bytes => {
            let text = value
                .as_str()
                .ok_or_else(|| path.error("expected a base64 string"))?;
            let bytes = BASE64
                .decode(text)
                .map_err(|error| path.error(format!("invalid base64: {error}")))?;
            put_bytes(out, tag, &bytes);
        }
        FieldType::Bool => {
            let flag = value
                .as_bool()
                .ok_or_else(|| path.error("expected a boolean"))?;
            put_varint_field(out, tag, i64::from(flag));
        }
        FieldType::Int32 => {
            let number = integer(value, path)?;
            let number = i32::try_from(number)
                .map_err(|_| path.error(format!("{number} does not fit in int32")))?;
            put_varint_field(out, tag, i64::from(number));
        }
        FieldType::Int64 => put_varint_field(out, tag, integer(value, path)?),
        FieldType::Double => {
            let number = value
                .as_f64()
                .ok_or_else(|| path.error("expected a number"))?;
            put_key(out, tag, FIXED64);
            out.extend_from_slice(&number.to_bits().to_le_bytes());
        }
        FieldType::Message(_) => {
            let inner = nested(field_type, path)?;
            let bytes = match inner.special {
                Some(special) => encode_special(inner, special, value, path)?,
                None => {
                    let map = value
                        .as_object()
                        .ok_or_else(|| path.error("expected an object"))?;
                    encode_message(inner, map, path)?
                }
            };
            put_bytes(out, tag, &bytes);
        }
    }
    Ok(())
}

/// An integer; JSON numbers like `3.0` are accepted, as Go's decoder does.
fn integer(value: &Value, path: &Path) -> Result<i64, ProtobufError> {
    if let Some(number) = value.as_i64() {
        return Ok(number);
    }
    match value.as_f64() {
        Some(float) if float.fract() == 0.0 && float.abs() < 9.2e18 => Ok(float as i64),
        _ => Err(path.error("expected an integer")),
    }
}

/// The protobuf form of a message whose JSON form is special (see [`Special`]).
fn encode_special(
    message: &Message,
    special: Special,
    value: &Value,
    path: &mut Path,
) -> Result<Vec<u8>, ProtobufError> {
    let mut out = Vec::new();
    let text = |path: &Path, what: &str| {
        value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| path.error(format!("expected {what}")))
    };
    match special {
        Special::Time | Special::MicroTime => {
            let (seconds, nanos) = parse_timestamp(&text(path, "an RFC 3339 timestamp")?)
                .map_err(|e| path.error(e))?;
            put_varint_field(&mut out, 1, seconds);
            put_varint_field(&mut out, 2, i64::from(nanos));
        }
        Special::Duration => {
            let nanos =
                parse_duration(&text(path, "a duration string")?).map_err(|e| path.error(e))?;
            put_varint_field(&mut out, 1, nanos);
        }
        Special::IntOrString => {
            let (kind, int_value, string_value) = match value {
                Value::String(string) => (1, 0, string.as_str()),
                _ => {
                    let number = integer(value, path)?;
                    let number = i32::try_from(number)
                        .map_err(|_| path.error(format!("{number} does not fit in int32")))?;
                    (0, number, "")
                }
            };
            put_varint_field(&mut out, 1, kind);
            put_varint_field(&mut out, 2, i64::from(int_value));
            put_bytes(&mut out, 3, string_value.as_bytes());
        }
        Special::Quantity => {
            let quantity = match value {
                Value::String(string) => string.clone(),
                Value::Number(number) => number.to_string(),
                _ => return Err(path.error("expected a quantity string such as \"100m\"")),
            };
            put_bytes(&mut out, 1, quantity.as_bytes());
        }
        Special::RawJson => {
            let raw = serde_json::to_vec(value)
                .map_err(|error| path.error(format!("unserialisable JSON: {error}")))?;
            put_bytes(&mut out, 1, &raw);
        }
        Special::SchemaOrArray | Special::SchemaOrStringArray => {
            let schema_type = field_type(message, 1, path)?;
            match value {
                Value::Array(items) => {
                    let item_type = field_type(message, 2, path)?;
                    for (index, item) in items.iter().enumerate() {
                        path.within(index.to_string(), |path| {
                            encode_value(&mut out, 2, &item_type, item, path)
                        })?;
                    }
                }
                _ => encode_value(&mut out, 1, &schema_type, value, path)?,
            }
        }
        Special::SchemaOrBool => match value {
            Value::Bool(allows) => put_varint_field(&mut out, 1, i64::from(*allows)),
            _ => {
                put_varint_field(&mut out, 1, 1);
                let schema_type = field_type(message, 2, path)?;
                encode_value(&mut out, 2, &schema_type, value, path)?;
            }
        },
        Special::StringList => {
            let Value::Array(items) = value else {
                return Err(path.error("expected an array of strings"));
            };
            for (index, item) in items.iter().enumerate() {
                path.within(index.to_string(), |path| {
                    encode_value(&mut out, 1, &FieldType::String, item, path)
                })?;
            }
        }
    }
    Ok(out)
}

fn field_type(message: &Message, tag: u32, path: &Path) -> Result<FieldType, ProtobufError> {
    message
        .field(tag)
        .map(|field| field.field_type.clone())
        .ok_or_else(|| path.error(format!("{} has no field {tag}", message.name)))
}
