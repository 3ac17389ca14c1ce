//! Continue tokens come back from clients in `?continue=`: decoding must never panic, and
//! a token that decodes must encode to one that decodes to the same thing.
#![no_main]

use capstan_apiserver::storage::ContinueToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = ContinueToken::decode(text) else {
        return;
    };
    let again = ContinueToken::decode(&token.encode()).expect("an encoded token decodes");
    assert_eq!(again, token, "a token survives encode and decode");
});
