//! Request bodies (POST, PUT, apply) come from any client as JSON, YAML or Kubernetes
//! protobuf. The first byte picks the format the Content-Type would: 0 JSON, 1 YAML,
//! anything else protobuf; the rest is the body. A protobuf body that decodes must encode
//! back without a panic, as the server does when it answers in protobuf.
#![no_main]

use capstan_apiserver::api::body::{BodyFormat, decode_object};
use capstan_apiserver::api::protobuf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = match selector {
        0 => BodyFormat::Json,
        1 => BodyFormat::Yaml,
        _ => BodyFormat::Protobuf,
    };
    let Ok(object) = decode_object(body, format) else {
        return;
    };
    if format == BodyFormat::Protobuf {
        let _ = protobuf::encode_object(&object);
    }
});
