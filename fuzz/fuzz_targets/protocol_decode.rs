//! The protocol decoder (`decode_request`): every inbound text frame of
//! every client goes through it. Never panics; an accepted request keeps
//! the protocol's limits; a refusal encodes as an `error` frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radio::protocol::{self, ClientMessage, MAX_TRACK_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::decode_request(text) {
        Ok(ClientMessage::Update(u)) => assert!(u.track.len() <= MAX_TRACK_BYTES),
        Ok(_) => {}
        Err(e) => {
            let frame = protocol::encode(&e.to_message());
            assert!(frame.as_str().contains("\"error\""));
        }
    }
});
