//! RFC 7386 merge patches come from any client with `application/merge-patch+json`. The
//! input is two JSON documents one after the other: the object, then the patch. Applying
//! a merge patch twice changes nothing more (the RFC's idempotence).
#![no_main]

use capstan_patch::merge_patch;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut documents = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(target)), Some(Ok(patch))) = (documents.next(), documents.next()) else {
        return;
    };
    let once = merge_patch(&target, &patch);
    let twice = merge_patch(&once, &patch);
    assert_eq!(once, twice, "a merge patch is idempotent");
});
