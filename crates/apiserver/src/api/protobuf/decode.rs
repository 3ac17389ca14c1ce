//! Protobuf bytes to Kubernetes JSON, driven by the schema table.
//!
//! One walk serves every message: each wire field is looked up by tag, checked against its
//! declared wire type, and placed under its JSON name. Unknown tags are skipped, so a newer
//! client's fields do not break an older table. Repeated scalars are accepted packed or
//! not, as protobuf requires of decoders.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

use super::schema::{Field, FieldType, Label, Message, SCHEMA, Special};
use super::time::{format_duration, format_timestamp};
use super::wire::{FIXED64, LENGTH_DELIMITED, Reader, WireValue};
use super::{MAGIC, MAX_DEPTH, ProtobufError};

/// Decode a body (magic + `runtime.Unknown`) into the object's JSON, with `apiVersion` and
/// `kind` set. `depth` counts the enclosing messages when the body is embedded in a
/// RawExtension, so nested bodies share one nesting limit.
pub(crate) fn decode_body(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(&MAGIC)
        .ok_or(ProtobufError::MissingMagic)?;
    let unknown = unwrap_envelope(envelope)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::Malformed(format!(
            "unsupported contentEncoding {:?} (only unencoded raw bytes are accepted)",
            unknown.content_encoding
        )));
    }
    let message = SCHEMA
        .kind(&unknown.api_version, &unknown.kind)
        .ok_or_else(|| ProtobufError::UnknownKind {
            api_version: unknown.api_version.clone(),
            kind: unknown.kind.clone(),
        })?;
    let fields = decode_message(message, unknown.raw, depth)?;
    // apiVersion and kind first, as Kubernetes writes them (visible if serde_json ever
    // preserves insertion order)
    let mut object = Map::with_capacity(fields.len() + 2);
    object.insert("apiVersion".into(), Value::String(unknown.api_version));
    object.insert("kind".into(), Value::String(unknown.kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// The parts of a `runtime.Unknown` envelope the codec needs.
struct Envelope<'a> {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) raw: &'a [u8],
    pub(crate) content_encoding: String,
}

/// Read a `runtime.Unknown` {typeMeta(1) {apiVersion(1), kind(2)}, raw(2),
/// contentEncoding(3), contentType(4)}.
fn unwrap_envelope(bytes: &[u8]) -> Result<Envelope<'_>, ProtobufError> {
    const UNKNOWN: &str = "io.k8s.apimachinery.pkg.runtime.Unknown";
    const TYPE_META: &str = "io.k8s.apimachinery.pkg.runtime.TypeMeta";
    let mut envelope = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
    };
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.read_field()? {
        match tag {
            1 => {
                let mut type_meta = Reader::new(length_delimited(value, tag, UNKNOWN)?);
                while let Some((tag, value)) = type_meta.read_field()? {
                    match tag {
                        1 => envelope.api_version = text(value, tag, TYPE_META, "apiVersion")?,
                        2 => envelope.kind = text(value, tag, TYPE_META, "kind")?,
                        _ => {}
                    }
                }
            }
            2 => envelope.raw = length_delimited(value, tag, UNKNOWN)?,
            3 => envelope.content_encoding = text(value, tag, UNKNOWN, "contentEncoding")?,
            _ => {}
        }
    }
    if envelope.api_version.is_empty() || envelope.kind.is_empty() {
        return Err(ProtobufError::Malformed(
            "runtime.Unknown envelope without typeMeta.apiVersion and typeMeta.kind".into(),
        ));
    }
    Ok(envelope)
}

fn length_delimited<'a>(
    value: WireValue<'a>,
    tag: u32,
    message: &str,
) -> Result<&'a [u8], ProtobufError> {
    match value {
        WireValue::Bytes(bytes) => Ok(bytes),
        other => Err(wrong_wire_type(
            tag,
            message,
            other.wire_type(),
            "length-delimited",
        )),
    }
}

fn text(
    value: WireValue<'_>,
    tag: u32,
    message: &str,
    field: &str,
) -> Result<String, ProtobufError> {
    let bytes = length_delimited(value, tag, message)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| invalid(field, message, "invalid UTF-8 in a string"))
}

fn wrong_wire_type(
    tag: u32,
    message: &str,
    wire_type: u8,
    expected: &'static str,
) -> ProtobufError {
    ProtobufError::WireType {
        tag,
        message: message.to_string(),
        wire_type,
        expected,
    }
}

fn invalid(field: &str, message: &str, problem: impl Into<String>) -> ProtobufError {
    ProtobufError::InvalidValue {
        field: field.to_string(),
        message: message.to_string(),
        problem: problem.into(),
    }
}

/// Decode one message into its JSON object (special messages included: the caller wants
/// an object only at the top level, where kinds are never special).
pub(crate) fn decode_message(
    message: &Message,
    bytes: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::Malformed(format!(
            "messages nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let mut object = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.read_field()? {
        let Some(field) = message.field(tag) else {
            continue; // a field newer than the table: skip it, as protobuf intends
        };
        match field.label {
            Label::Optional => {
                if let Some(json) = decode_value(message, field, value, depth)? {
                    object.insert(field.json_name.clone(), json);
                } else {
                    object.remove(&field.json_name);
                }
            }
            Label::Repeated => {
                let items = repeated_values(message, field, value, depth)?;
                let entry = object
                    .entry(field.json_name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(array) = entry {
                    array.extend(items);
                }
            }
            Label::Map => {
                let (key, json) = decode_map_entry(message, field, value, depth)?;
                let entry = object
                    .entry(field.json_name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = entry {
                    map.insert(key, json);
                }
            }
            Label::Inline => {
                let bytes = length_delimited(value, tag, &message.name)?;
                let inner = nested(message, field)?;
                object.extend(decode_message(inner, bytes, depth + 1)?);
            }
        }
    }
    Ok(object)
}

/// The message type of a message-typed field.
fn nested<'s>(message: &Message, field: &Field) -> Result<&'s Message, ProtobufError> {
    match &field.field_type {
        FieldType::Message(name) => SCHEMA.message(name).ok_or_else(|| {
            invalid(
                &field.json_name,
                &message.name,
                format!("unknown message type {name}"),
            )
        }),
        _ => Err(invalid(
            &field.json_name,
            &message.name,
            "not a message field",
        )),
    }
}

/// The values of one occurrence of a repeated field: one value, or several if packed.
fn repeated_values(
    message: &Message,
    field: &Field,
    value: WireValue<'_>,
    depth: usize,
) -> Result<Vec<Value>, ProtobufError> {
    let packable = matches!(
        field.field_type,
        FieldType::Bool | FieldType::Int32 | FieldType::Int64 | FieldType::Double
    );
    match value {
        WireValue::Bytes(bytes) if packable => {
            let mut reader = Reader::new(bytes);
            let mut items = Vec::new();
            while !reader.is_empty() {
                let element = if field.field_type == FieldType::Double {
                    WireValue::Fixed64(reader.read_fixed64()?)
                } else {
                    WireValue::Varint(reader.read_varint()?)
                };
                items.extend(decode_value(message, field, element, depth)?);
            }
            Ok(items)
        }
        _ => Ok(decode_value(message, field, value, depth)?
            .into_iter()
            .collect()),
    }
}

/// A map entry message {key(1) string, value(2)}; a missing value is the type's default.
fn decode_map_entry(
    message: &Message,
    field: &Field,
    value: WireValue<'_>,
    depth: usize,
) -> Result<(String, Value), ProtobufError> {
    let mut reader = Reader::new(length_delimited(value, field.tag, &message.name)?);
    let mut key = String::new();
    let mut json = None;
    while let Some((tag, value)) = reader.read_field()? {
        match tag {
            1 => key = text(value, field.tag, &message.name, &field.json_name)?,
            2 => json = Some(decode_value(message, field, value, depth)?),
            _ => {}
        }
    }
    let json = match (json.flatten(), &field.field_type) {
        (Some(json), _) => json,
        (None, FieldType::Message(_)) => Value::Object(Map::new()),
        (None, _) => Value::String(String::new()),
    };
    Ok((key, json))
}

/// One scalar or message value; `None` when Kubernetes JSON omits it (an empty string or
/// byte string outside arrays and maps, a zero timestamp, empty raw JSON).
fn decode_value(
    message: &Message,
    field: &Field,
    value: WireValue<'_>,
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    let expect = |wire_type: u8, name: &'static str| {
        if value.wire_type() == wire_type {
            Ok(())
        } else {
            Err(wrong_wire_type(
                field.tag,
                &message.name,
                value.wire_type(),
                name,
            ))
        }
    };
    let varint = || match value {
        WireValue::Varint(varint) => Ok(varint),
        _ => Err(wrong_wire_type(
            field.tag,
            &message.name,
            value.wire_type(),
            "varint",
        )),
    };
    Ok(match &field.field_type {
        FieldType::String => {
            expect(LENGTH_DELIMITED, "length-delimited")?;
            let string = text(value, field.tag, &message.name, &field.json_name)?;
            (!string.is_empty() || field.label != Label::Optional).then_some(Value::String(string))
        }
        FieldType::Bytes => {
            let bytes = length_delimited(value, field.tag, &message.name)?;
            (!bytes.is_empty() || field.label != Label::Optional)
                .then(|| Value::String(BASE64.encode(bytes)))
        }
        FieldType::Bool => Some(Value::Bool(varint()? != 0)),
        FieldType::Int32 => Some(Value::from(varint()? as i32)),
        FieldType::Int64 => Some(Value::from(varint()? as i64)),
        FieldType::Double => {
            expect(FIXED64, "64-bit")?;
            let WireValue::Fixed64(bits) = value else {
                return Ok(None);
            };
            let number = Number::from_f64(f64::from_bits(bits)).ok_or_else(|| {
                invalid(
                    &field.json_name,
                    &message.name,
                    "NaN or infinity has no JSON form",
                )
            })?;
            Some(Value::Number(number))
        }
        FieldType::Message(_) => {
            let bytes = length_delimited(value, field.tag, &message.name)?;
            let inner = nested(message, field)?;
            match inner.special {
                Some(special) => decode_special(inner, special, bytes, depth + 1)?,
                None => Some(Value::Object(decode_message(inner, bytes, depth + 1)?)),
            }
        }
    })
}

/// The Kubernetes JSON form of a special message (see [`Special`]).
fn decode_special(
    message: &Message,
    special: Special,
    bytes: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    if special == Special::RawJson {
        return decode_raw_json(message, bytes, depth);
    }
    let fields = decode_message(message, bytes, depth)?;
    let get = |name: &str| fields.get(name);
    let int = |name: &str| get(name).and_then(Value::as_i64).unwrap_or(0);
    let string = |name: &str| get(name).and_then(Value::as_str).unwrap_or("").to_string();
    let problem = |text: String| {
        invalid(
            message.name.rsplit('.').next().unwrap_or(""),
            &message.name,
            text,
        )
    };
    Ok(match special {
        Special::Time | Special::MicroTime => {
            if bytes.is_empty() {
                // Go writes its zero time as an empty message and as null in JSON: omit it.
                // (A non-empty message with seconds 0 is 1970-01-01, as in Go.)
                return Ok(None);
            }
            let (seconds, nanos) = (int("seconds"), int("nanos"));
            let nanos = i32::try_from(nanos).map_err(|_| problem(format!("nanos {nanos}")))?;
            let formatted =
                format_timestamp(seconds, nanos, special == Special::MicroTime).map_err(problem)?;
            Some(Value::String(formatted))
        }
        Special::Duration => Some(Value::String(format_duration(int("duration")))),
        Special::IntOrString => Some(if int("type") == 1 {
            Value::String(string("strVal"))
        } else {
            Value::from(int("intVal"))
        }),
        Special::Quantity => {
            let quantity = string("string");
            Some(Value::String(if quantity.is_empty() {
                "0".into()
            } else {
                quantity
            }))
        }
        Special::RawJson => None, // returned above, before the fields are decoded
        Special::SchemaOrArray => match (get("jSonSchemas"), get("schema")) {
            (Some(array), _) => Some(array.clone()),
            (None, schema) => schema.cloned(),
        },
        Special::SchemaOrBool => match get("schema") {
            Some(schema) => Some(schema.clone()),
            None => Some(Value::Bool(
                get("allows").and_then(Value::as_bool).unwrap_or(false),
            )),
        },
        Special::SchemaOrStringArray => match (get("property"), get("schema")) {
            (Some(array), _) => Some(array.clone()),
            (None, schema) => schema.cloned(),
        },
        Special::StringList => Some(get("items").cloned().unwrap_or(Value::Array(Vec::new()))),
    })
}

/// RawExtension, apiextensions JSON, FieldsV1: the JSON value held in `raw` (field 1).
fn decode_raw_json(
    message: &Message,
    bytes: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    let mut raw: &[u8] = &[];
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.read_field()? {
        if tag == 1 {
            raw = length_delimited(value, tag, &message.name)?;
        }
    }
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.starts_with(&MAGIC) {
        // an embedded object serialised as protobuf (watch events) rather than JSON
        return decode_body(raw, depth + 1).map(Some);
    }
    let json = serde_json::from_slice(raw)
        .map_err(|error| invalid("raw", &message.name, format!("raw is not JSON: {error}")))?;
    Ok(Some(json))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn packed_and_unpacked_repeated_scalars_both_decode() {
        let (message, field) = find_repeated_int32();
        let mut unpacked = Vec::new();
        for value in [1i64, 2, 300] {
            super::super::wire::put_varint_field(&mut unpacked, field.tag, value);
        }
        let mut packed_payload = Vec::new();
        for value in [1u64, 2, 300] {
            super::super::wire::put_varint(&mut packed_payload, value);
        }
        let mut packed = Vec::new();
        super::super::wire::put_bytes(&mut packed, field.tag, &packed_payload);
        for bytes in [unpacked, packed] {
            let object = decode_message(message, &bytes, 0).unwrap();
            assert_eq!(object[&field.json_name], serde_json::json!([1, 2, 300]));
        }
    }

    fn find_repeated_int32() -> (&'static Message, &'static Field) {
        SCHEMA
            .message("io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement")
            .into_iter()
            .find_map(|message| {
                message
                    .fields
                    .iter()
                    .find(|field| {
                        field.label == Label::Repeated && field.field_type == FieldType::Int32
                    })
                    .map(|field| (message, field))
            })
            .expect("batch/v1 PodFailurePolicyOnExitCodesRequirement has repeated int32 values")
    }
}
