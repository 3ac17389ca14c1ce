//! Label selectors arrive in `?labelSelector=` from any client: parsing must never panic,
//! and whatever parses must print back to a selector that parses to the same thing.
#![no_main]

use capstan_machinery::selector::LabelSelector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = LabelSelector::parse(text) else {
        return;
    };
    let printed = selector.to_selector_string();
    let again = LabelSelector::parse(&printed).expect("a printed selector parses again");
    assert_eq!(again.to_selector_string(), printed, "printing is stable");
    let labels = serde_json::json!({"app": "web", "tier": "front", "x": ""});
    let _ = selector.matches(labels.as_object());
    let _ = selector.matches(None);
});
