//! Registration messages cross the network on `/v1-capstan/connect`: agents read
//! `ServerMessage`s and servers read `AgentMessage`s. Decoding must never panic, and a
//! decoded message must survive encoding and decoding again.
#![no_main]

use capstan_machinery::join::{AgentMessage, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<ServerMessage>(data) {
        let json = serde_json::to_vec(&message).expect("a server message encodes");
        let again: ServerMessage = serde_json::from_slice(&json).expect("it decodes again");
        assert_eq!(again, message);
    }
    if let Ok(message) = serde_json::from_slice::<AgentMessage>(data) {
        let json = serde_json::to_vec(&message).expect("an agent message encodes");
        let again: AgentMessage = serde_json::from_slice(&json).expect("it decodes again");
        assert_eq!(again, message);
    }
});
