//! Field selectors arrive in `?fieldSelector=` from any client: parsing must never panic,
//! and whatever parses must print back to a selector that parses to the same terms (their
//! order follows the raw term text, as upstream's does, so `==` and `=` may sort apart).
#![no_main]

use capstan_machinery::selector::{FieldSelector, field_value};
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
    let terms = |text: &str| {
        let mut terms: Vec<String> = text.split(',').map(str::to_string).collect();
        terms.sort();
        terms
    };
    assert_eq!(
        terms(&again.to_selector_string()),
        terms(&printed),
        "printing keeps the terms"
    );
    let object = serde_json::json!({
        "metadata": {"name": "a", "namespace": "default"},
        "status": {"phase": "Running"},
        "spec": {"nodeName": "n1"}
    });
    let _ = selector.matches(|path| field_value(&object, path));
});
