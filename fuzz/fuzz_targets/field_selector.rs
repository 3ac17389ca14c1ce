//! Field selectors arrive in `?fieldSelector=` from any client: parsing must never panic,
//! and whatever parses must print back to a selector that parses to the same thing.
#![no_main]

use capstan::api::selector::{FieldSelector, field_value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = FieldSelector::parse(text) else {
        return;
    };
    let printed = selector.to_selector_string();
    let again = FieldSelector::parse(&printed).expect("a printed selector parses again");
    assert_eq!(again.to_selector_string(), printed, "printing is stable");
    let object = serde_json::json!({
        "metadata": {"name": "a", "namespace": "default"},
        "status": {"phase": "Running"},
        "spec": {"nodeName": "n1"}
    });
    let _ = selector.matches(|path| field_value(&object, path));
});
