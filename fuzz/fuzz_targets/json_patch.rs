//! RFC 6902 patches come from any client with `application/json-patch+json`. The input is
//! two JSON documents one after the other: the object, then the patch.
#![no_main]

use capstan_patch::json_patch;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut documents = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(target)), Some(Ok(patch))) = (documents.next(), documents.next()) else {
        return;
    };
    let _ = json_patch(&target, &patch);
});
