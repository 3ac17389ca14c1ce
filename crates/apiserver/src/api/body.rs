//! Content negotiation: request bodies in JSON, YAML or Kubernetes protobuf, responses in
//! JSON (or YAML, or protobuf when the client lists it first), and the alternative
//! representations clients ask for in `Accept` (`as=Table`, `as=PartialObjectMetadata`).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::{ApiError, MAX_BODY_BYTES};
use super::protobuf;

/// The media type of Kubernetes protobuf.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The format of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`.
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

/// The kind of a PATCH body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Kubernetes strategic merge patch.
    Strategic,
    /// Server-side apply (YAML or JSON).
    Apply,
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The format of an object body (POST/PUT), from Content-Type.
pub fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    match media_type(headers).as_str() {
        "application/json" | "" | "*/*" => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(BodyFormat::Yaml),
        PROTOBUF => Ok(BodyFormat::Protobuf),
        _ => Err(ApiError::UnsupportedMediaType {
            accepted: "application/json, application/yaml, application/vnd.kubernetes.protobuf"
                .to_string(),
        }),
    }
}

/// The patch type, from Content-Type.
pub fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    match media_type(headers).as_str() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
        _ => Err(ApiError::UnsupportedMediaType {
            accepted: "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json".to_string(),
        }),
    }
}

/// How much of an oversized body is read (and dropped) before answering 413, so an
/// HTTP/1.1 client that is still sending sees the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a whole request body, refusing more than [`MAX_BODY_BYTES`] with 413.
pub async fn read_body(_headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut collected: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= MAX_BODY_BYTES {
            collected.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge);
    }
    Ok(Bytes::from(collected))
}

/// Decodes an object body.
pub fn decode_object(bytes: &[u8], format: BodyFormat) -> Result<Value, ApiError> {
    let value = match format {
        BodyFormat::Json => serde_json::from_slice::<Value>(bytes).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?,
        BodyFormat::Yaml => decode_yaml(bytes)?,
        BodyFormat::Protobuf => {
            protobuf::decode_object(bytes).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be an object (a JSON or YAML mapping)",
        ));
    }
    Ok(value)
}

/// Decodes a YAML (or JSON, which is YAML) document.
pub fn decode_yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8 text"))?;
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Ok(value);
    }
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
}

/// What representation a response should carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The objects themselves.
    Object,
    /// A `meta.k8s.io/v1 Table`.
    Table,
    /// `PartialObjectMetadata(List)`.
    PartialObjectMetadata,
}

/// How to encode a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The representation.
    pub representation: Representation,
    /// The wire format.
    pub format: BodyFormat,
}

/// Picks the first media range of `Accept` this server can produce.
pub fn negotiate(headers: &HeaderMap) -> Result<Negotiated, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut as_ = None;
        for param in parts {
            if let Some((key, value)) = param.split_once('=')
                && key.trim() == "as"
            {
                as_ = Some(value.trim().trim_matches('"').to_string());
            }
        }
        let format = match media.as_str() {
            "application/json" | "*/*" | "application/*" | "" => BodyFormat::Json,
            "application/yaml" => BodyFormat::Yaml,
            PROTOBUF => BodyFormat::Protobuf,
            _ => continue,
        };
        let representation = match as_.as_deref() {
            None => Representation::Object,
            Some("Table") => Representation::Table,
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") => {
                Representation::PartialObjectMetadata
            }
            Some(_) => continue,
        };
        // Tables and metadata are served as JSON only.
        if representation != Representation::Object && format == BodyFormat::Protobuf {
            continue;
        }
        return Ok(Negotiated {
            representation,
            format,
        });
    }
    Err(ApiError::NotAcceptable)
}

/// `value` as JSON text (a writer into a `Vec`, not the `Display` formatter, which costs
/// more per byte).
fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| value.to_string().into_bytes())
}

/// A response carrying `value` with `code`, encoded as `format` (protobuf only when the
/// codec knows the kind; JSON otherwise).
pub fn respond(code: StatusCode, value: &Value, format: BodyFormat) -> Response {
    let (content_type, body): (&'static str, Vec<u8>) = match format {
        BodyFormat::Protobuf => match protobuf::encode_object(value) {
            Ok(bytes) => (PROTOBUF, bytes),
            Err(_) => ("application/json", json_bytes(value)),
        },
        BodyFormat::Yaml => match serde_saphyr::to_string(value) {
            Ok(text) => ("application/yaml", text.into_bytes()),
            Err(_) => ("application/json", json_bytes(value)),
        },
        BodyFormat::Json => ("application/json", json_bytes(value)),
    };
    let mut response = (code, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn kubectl_get_asks_for_a_table() {
        let n = negotiate(&accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")).expect("acceptable");
        assert_eq!(n.representation, Representation::Table);
        assert_eq!(n.format, BodyFormat::Json);
    }

    #[test]
    fn protobuf_first_is_honoured() {
        let n = negotiate(&accept("application/vnd.kubernetes.protobuf, */*")).expect("acceptable");
        assert_eq!(n.format, BodyFormat::Protobuf);
        assert!(negotiate(&accept("text/html")).is_err());
    }

    #[test]
    fn yaml_bodies_decode() {
        let value = decode_object(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
            BodyFormat::Yaml,
        )
        .expect("yaml");
        assert_eq!(value["metadata"]["name"], "x");
        assert!(decode_object(b"{not json", BodyFormat::Json).is_err());
        assert!(decode_object(b"[1]", BodyFormat::Json).is_err());
    }
}
