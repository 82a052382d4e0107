//! Decoding what clients send: one typed parse for good input, and for bad
//! input a second, loose parse that says precisely what is wrong, as the
//! [`DecodeError`] (an `error` frame) to answer with.

use serde_json::Value;

use super::ids::StationName;
use super::messages::{ClientMessage, ErrorCode, MAX_TRACK_BYTES, RequestType, ServerMessage};

/// Why an inbound frame was refused: the `error` frame to answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    /// The request's `type`, when it had a readable one.
    pub request_type: Option<String>,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>, request_type: Option<&str>) -> Self {
        Self {
            code,
            message: message.into(),
            request_type: request_type.map(str::to_owned),
        }
    }

    /// The `error` frame that answers this.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
            request_type: self.request_type.clone(),
        }
    }
}

/// Decodes and validates one inbound text frame.
///
/// The happy path is a single typed parse. Only a frame that fails it is
/// parsed again, loosely, to say precisely what is wrong with it.
pub fn decode_request(text: &str) -> Result<ClientMessage, DecodeError> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(msg) => validate(msg),
        Err(err) => Err(classify(text, &err)),
    }
}

fn validate(msg: ClientMessage) -> Result<ClientMessage, DecodeError> {
    const NONE: (&str, Option<&String>) = ("", None);
    // Text fields a server keeps or passes on: at most MAX_TRACK_BYTES each.
    let texts = match &msg {
        ClientMessage::Update(u) => [
            ("track", Some(&u.track)),
            ("title", u.title.as_ref()),
            ("artist", u.artist.as_ref()),
            ("next", u.next.as_ref()),
        ],
        ClientMessage::Heartbeat(h) => [("next", h.next.as_ref()), NONE, NONE, NONE],
        ClientMessage::CannotPlay { track, reason, .. } => [
            ("track", Some(track)),
            ("reason", reason.as_ref()),
            NONE,
            NONE,
        ],
        _ => [NONE; 4],
    };
    for (name, value) in texts {
        let len = value.map_or(0, String::len);
        if len > MAX_TRACK_BYTES {
            return Err(DecodeError::new(
                ErrorCode::BadMessage,
                format!("{name} is {len} bytes long; the limit is {MAX_TRACK_BYTES}"),
                Some(msg.type_name()),
            ));
        }
    }
    if let ClientMessage::Ping { id: Some(id), .. } = &msg {
        if !(id.is_string() || id.is_number()) {
            return Err(DecodeError::new(
                ErrorCode::BadMessage,
                "ping id must be a string or a number",
                Some("ping"),
            ));
        }
    }
    Ok(msg)
}

fn classify(text: &str, err: &serde_json::Error) -> DecodeError {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return DecodeError::new(ErrorCode::BadMessage, format!("not JSON: {e}"), None);
        }
    };
    let Some(obj) = value.as_object() else {
        return DecodeError::new(
            ErrorCode::BadMessage,
            "a message must be a JSON object",
            None,
        );
    };
    let Some(ty) = obj.get("type").and_then(Value::as_str) else {
        return DecodeError::new(
            ErrorCode::BadMessage,
            "a message needs a string field \"type\"",
            None,
        );
    };
    if RequestType::from_wire(ty).is_none() {
        return DecodeError::new(
            ErrorCode::UnknownType,
            format!("unknown message type {ty:?}"),
            Some(ty),
        );
    }
    if let Some(Value::String(station)) = obj.get("station") {
        if let Err(why) = StationName::new(station) {
            return DecodeError::new(ErrorCode::InvalidStation, why, Some(ty));
        }
    }
    // serde's message names the field and the expected type; drop its
    // "at line 1 column N" suffix, which means nothing to a client.
    let mut message = err.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    DecodeError::new(ErrorCode::BadMessage, message, Some(ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode_request(text).expect_err("should be refused").code
    }

    #[test]
    fn decodes_every_request() {
        let cases = [
            r#"{"type":"ping","id":7,"client_time_ms":12}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"start_broadcasting","station":"s","resume_token":"t","key":"k"}"#,
            r#"{"type":"stop_broadcasting","station":"s"}"#,
            r#"{"type":"update","station":"s","track":"t","position_ms":0,"playing":true,"duration_ms":5,"title":"T","artist":"A","next":"u","at_server_ms":9,"ack":true}"#,
            r#"{"type":"heartbeat","station":"s","position_ms":10,"next":"u"}"#,
            r#"{"type":"tune_in","station":"s","extra":[1,2]}"#,
            r#"{"type":"tune_out"}"#,
            r#"{"type":"list_stations"}"#,
            r#"{"type":"cannot_play","station":"s","track":"t","reason":"404"}"#,
        ];
        for (case, ty) in cases.iter().zip(
            [
                "ping",
                "ping",
                "start_broadcasting",
                "stop_broadcasting",
                "update",
                "heartbeat",
                "tune_in",
                "tune_out",
                "list_stations",
                "cannot_play",
            ]
            .iter(),
        ) {
            let msg = decode_request(case).unwrap_or_else(|e| panic!("{case}: {e:?}"));
            assert_eq!(msg.type_name(), *ty);
        }
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(code("not json"), ErrorCode::BadMessage);
        assert_eq!(code("[1,2]"), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"station":"s"}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"tune_in","station":"no spaces"}"#),
            ErrorCode::InvalidStation
        );
        assert_eq!(code(r#"{"type":"tune_in"}"#), ErrorCode::BadMessage);
        assert_eq!(
            code(r#"{"type":"update","station":"s","track":"t","position_ms":-1,"playing":true}"#),
            ErrorCode::BadMessage
        );
        let long = "x".repeat(513);
        assert_eq!(
            code(&format!(
                r#"{{"type":"update","station":"s","track":"{long}","position_ms":1,"playing":true}}"#
            )),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(&format!(
                r#"{{"type":"update","station":"s","track":"t","title":"{long}","position_ms":1,"playing":true}}"#
            )),
            ErrorCode::BadMessage
        );
        for next in [
            format!(
                r#"{{"type":"update","station":"s","track":"t","next":"{long}","position_ms":1,"playing":true}}"#
            ),
            format!(r#"{{"type":"heartbeat","station":"s","next":"{long}","position_ms":1}}"#),
        ] {
            let refused = decode_request(&next).unwrap_err();
            assert!(
                refused.message.starts_with("next is 513 bytes"),
                "{refused:?}"
            );
        }
        let refused = decode_request(&format!(
            r#"{{"type":"cannot_play","station":"s","track":"t","reason":"{long}"}}"#
        ))
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::BadMessage);
        assert_eq!(refused.request_type.as_deref(), Some("cannot_play"));
        assert!(
            refused.message.starts_with("reason is 513 bytes"),
            "{refused:?}"
        );
        assert_eq!(
            code(r#"{"type":"ping","id":{"a":1}}"#),
            ErrorCode::BadMessage
        );
        let err = decode_request(r#"{"type":"update","station":"s"}"#).unwrap_err();
        assert_eq!(err.request_type.as_deref(), Some("update"));
        assert!(!err.message.contains("line 1"), "{}", err.message);
    }
}
