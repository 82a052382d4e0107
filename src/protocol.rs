//! The radio wire protocol, version 1: every message, field, error code and
//! limit, shared by the server, the CLI clients and the load generator.
//!
//! docs/protocol.md is the prose contract; this module is its one
//! implementation. Inbound frames are decoded by [`decode_request`], which maps
//! every kind of bad input onto an [`ErrorCode`] instead of failing silently,
//! and outbound frames are encoded once by [`encode`] into a shared
//! [`Utf8Bytes`] that any number of sockets can write without copying.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest station name, in characters (all ASCII).
pub const MAX_STATION_LEN: usize = 64;
/// Longest track, in bytes of UTF-8.
pub const MAX_TRACK_BYTES: usize = 512;
/// Default inbound message limit; larger messages close with 1009.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4096;
/// `at_server_ms` further than this from the server's clock is ignored.
pub const MAX_AT_SERVER_SKEW_MS: i64 = 5_000;

/// The server's Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A validated station name: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
///
/// Cheap to clone (an `Arc<str>`), since every listener and registry entry
/// holds one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StationName(Arc<str>);

impl Serialize for StationName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl StationName {
    /// Validates `name`, returning the reason it is not a station name.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("a station name must not be empty".into());
        }
        if name.len() > MAX_STATION_LEN {
            return Err(format!(
                "a station name has at most {MAX_STATION_LEN} characters, this one has {}",
                name.chars().count()
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "a station name may use only A-Z a-z 0-9 . _ - (found {bad:?})"
            ));
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StationName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for StationName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StationName::new(&s).map_err(D::Error::custom)
    }
}

/// Every error code of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, a field missing or of the wrong type.
    BadMessage,
    /// `type` names no message of this protocol.
    UnknownType,
    /// A station name breaks the naming rule.
    InvalidStation,
    /// Another connection owns the station (or holds it in its grace period).
    StationTaken,
    /// The station is live, but not from this connection.
    NotOwner,
    /// `update`/`heartbeat`/`stop_broadcasting` before `start_broadcasting`.
    NotLive,
    /// Too many messages; a client that keeps flooding is closed with 1008.
    RateLimited,
    /// A binary frame, or a request beyond what the server supports.
    Unsupported,
    /// A broadcast key is required and was missing or wrong.
    Unauthorized,
    /// The request needs a backend (cluster mode's Redis) that is down right
    /// now; try again later.
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::InvalidStation,
        ErrorCode::StationTaken,
        ErrorCode::NotOwner,
        ErrorCode::NotLive,
        ErrorCode::RateLimited,
        ErrorCode::Unsupported,
        ErrorCode::Unauthorized,
        ErrorCode::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidStation => "invalid_station",
            ErrorCode::StationTaken => "station_taken",
            ErrorCode::NotOwner => "not_owner",
            ErrorCode::NotLive => "not_live",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a station stopped being live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    /// The broadcaster sent `stop_broadcasting`.
    Stopped,
    /// The broadcaster's connection closed and its grace period ran out.
    Disconnected,
    /// The broadcaster's node stopped renewing its lease (cluster mode).
    Timeout,
}

/// What caused a `sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncCause {
    Update,
    Heartbeat,
    TuneIn,
}

/// A station's whole playback state, as carried by `sync`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sync {
    pub station: StationName,
    pub seq: u64,
    pub track: String,
    pub position_ms: u64,
    pub playing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub server_time_ms: i64,
    pub cause: SyncCause,
}

impl Sync {
    /// The position at server time `at_ms`: advanced by the elapsed time while
    /// playing, unchanged while paused.
    pub fn position_at(&self, at_ms: i64) -> u64 {
        if self.playing {
            advance(self.position_ms, at_ms - self.server_time_ms)
        } else {
            self.position_ms
        }
    }
}

/// `position + delta`, saturating at zero and `u64::MAX`.
pub fn advance(position_ms: u64, delta_ms: i64) -> u64 {
    if delta_ms >= 0 {
        position_ms.saturating_add(delta_ms.unsigned_abs())
    } else {
        position_ms.saturating_sub(delta_ms.unsigned_abs())
    }
}

/// One entry of `stations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StationSummary {
    pub station: StationName,
    pub listeners: u64,
    /// Whether a broadcaster holds the station (including its grace period).
    #[serde(default)]
    pub live: bool,
    pub track: Option<String>,
    pub playing: bool,
    pub position_ms: u64,
    pub server_time_ms: i64,
}

/// Every frame the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        protocol: u32,
        session_id: String,
        server_time_ms: i64,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_time_ms: Option<i64>,
        server_time_ms: i64,
    },
    Broadcasting {
        station: StationName,
        resume_token: String,
    },
    Stopped {
        station: StationName,
    },
    Tuned {
        station: StationName,
        live: bool,
    },
    TunedOut,
    Sync(Sync),
    BroadcasterOnline {
        station: StationName,
    },
    BroadcasterOffline {
        station: StationName,
        reason: OfflineReason,
    },
    Stations {
        stations: Vec<StationSummary>,
    },
    Ack {
        station: StationName,
        seq: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_type: Option<String>,
    },
    ServerShutdown {
        reconnect_after_ms: u64,
    },
}

/// Encodes a server frame once; the result can be written to many sockets.
pub fn encode<T: Serialize>(msg: &T) -> Utf8Bytes {
    // Serializing these types cannot fail: every map key is a string and no
    // value is a non-finite float.
    match serde_json::to_string(msg) {
        Ok(s) => Utf8Bytes::from(s),
        Err(e) => Utf8Bytes::from(format!(
            r#"{{"type":"error","code":"bad_message","message":"encoding failed: {e}"}}"#
        )),
    }
}

/// An `update` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub station: StationName,
    pub track: String,
    pub position_ms: u64,
    pub playing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_server_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ack: bool,
}

/// A `heartbeat` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub station: StationName,
    pub position_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_server_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ack: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Every frame a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_time_ms: Option<i64>,
    },
    StartBroadcasting {
        station: StationName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    StopBroadcasting {
        station: StationName,
    },
    Update(Update),
    Heartbeat(Heartbeat),
    TuneIn {
        station: StationName,
    },
    TuneOut,
    ListStations,
}

/// Declares [`RequestType`] and [`ClientMessage::request_type`] from one
/// table, so the list of request types (metrics labels, `unknown_type`) can
/// never disagree with the messages that exist: a variant missing here fails
/// to compile, a misspelt wire name fails `request_types_match_the_wire`.
macro_rules! request_types {
    ($($variant:ident => $wire:literal,)*) => {
        /// The `type` of a client request, one per [`ClientMessage`] variant.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum RequestType {
            $($variant,)*
        }

        impl RequestType {
            /// Every request type, in a fixed order (metrics labels).
            pub const ALL: &'static [RequestType] = &[$(RequestType::$variant,)*];

            /// The wire name of this `type`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(RequestType::$variant => $wire,)*
                }
            }

            /// The request type with wire name `name`.
            pub fn from_wire(name: &str) -> Option<RequestType> {
                match name {
                    $($wire => Some(RequestType::$variant),)*
                    _ => None,
                }
            }
        }

        impl ClientMessage {
            /// This message's `type`.
            pub fn request_type(&self) -> RequestType {
                match self {
                    $(ClientMessage::$variant { .. } => RequestType::$variant,)*
                }
            }
        }
    };
}

request_types! {
    Ping => "ping",
    StartBroadcasting => "start_broadcasting",
    StopBroadcasting => "stop_broadcasting",
    Update => "update",
    Heartbeat => "heartbeat",
    TuneIn => "tune_in",
    TuneOut => "tune_out",
    ListStations => "list_stations",
}

impl ClientMessage {
    /// The wire name of this message's `type`.
    pub fn type_name(&self) -> &'static str {
        self.request_type().as_str()
    }
}

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    if let ClientMessage::Update(u) = &msg {
        if u.track.len() > MAX_TRACK_BYTES {
            return Err(DecodeError::new(
                ErrorCode::BadMessage,
                format!(
                    "track is {} bytes long; the limit is {MAX_TRACK_BYTES}",
                    u.track.len()
                ),
                Some("update"),
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

/// A random token of `bytes` bytes from the OS, hex-encoded.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // The OS generator failing is not recoverable in a sane way; fall
        // back to a time-and-counter mix so we still never repeat a token.
        let t = now_ms().unsigned_abs();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 8) * 8)) as u8 ^ fastrand::u8(..);
        }
    }
    let mut out = String::with_capacity(bytes * 2);
    for b in buf {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode_request(text).expect_err("should be refused").code
    }

    #[test]
    fn station_names() {
        assert!(StationName::new("a").is_ok());
        assert!(StationName::new("Lo-Fi_radio.1").is_ok());
        assert!(StationName::new(&"x".repeat(64)).is_ok());
        assert!(StationName::new("").is_err());
        assert!(StationName::new(&"x".repeat(65)).is_err());
        assert!(StationName::new("a b").is_err());
        assert!(StationName::new("é").is_err());
        assert!(StationName::new("a/b").is_err());
    }

    #[test]
    fn decodes_every_request() {
        let cases = [
            r#"{"type":"ping","id":7,"client_time_ms":12}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"start_broadcasting","station":"s","resume_token":"t","key":"k"}"#,
            r#"{"type":"stop_broadcasting","station":"s"}"#,
            r#"{"type":"update","station":"s","track":"t","position_ms":0,"playing":true,"duration_ms":5,"at_server_ms":9,"ack":true}"#,
            r#"{"type":"heartbeat","station":"s","position_ms":10}"#,
            r#"{"type":"tune_in","station":"s","extra":[1,2]}"#,
            r#"{"type":"tune_out"}"#,
            r#"{"type":"list_stations"}"#,
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
            ]
            .iter(),
        ) {
            let msg = decode_request(case).unwrap_or_else(|e| panic!("{case}: {e:?}"));
            assert_eq!(msg.type_name(), *ty);
        }
    }

    #[test]
    fn request_types_match_the_wire() {
        // Every field any request needs, so each `type` decodes.
        for &t in RequestType::ALL {
            let frame = serde_json::json!({
                "type": t.as_str(), "station": "s", "track": "t",
                "position_ms": 0, "playing": true,
            });
            let msg: ClientMessage = serde_json::from_value(frame)
                .unwrap_or_else(|e| panic!("{t} is not a wire type: {e}"));
            assert_eq!(msg.request_type(), t);
            assert_eq!(RequestType::from_wire(t.as_str()), Some(t));
        }
        assert_eq!(RequestType::ALL.len(), 8);
        // Metrics index their counters by `as usize`.
        for (i, &t) in RequestType::ALL.iter().enumerate() {
            assert_eq!(t as usize, i);
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
            code(r#"{"type":"ping","id":{"a":1}}"#),
            ErrorCode::BadMessage
        );
        let err = decode_request(r#"{"type":"update","station":"s"}"#).unwrap_err();
        assert_eq!(err.request_type.as_deref(), Some("update"));
        assert!(!err.message.contains("line 1"), "{}", err.message);
    }

    #[test]
    fn server_messages_round_trip() {
        let sync = ServerMessage::Sync(Sync {
            station: StationName::new("s").unwrap(),
            seq: 3,
            track: "t".into(),
            position_ms: 1000,
            playing: true,
            duration_ms: None,
            server_time_ms: 5,
            cause: SyncCause::Heartbeat,
        });
        let text = encode(&sync);
        assert!(
            text.as_str()
                .starts_with(r#"{"type":"sync","station":"s","seq":3"#)
        );
        let back: ServerMessage = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(back, sync);
        let tuned_out = encode(&ServerMessage::TunedOut);
        assert_eq!(tuned_out.as_str(), r#"{"type":"tuned_out"}"#);
    }

    #[test]
    fn position_advances_only_while_playing() {
        let mut s = Sync {
            station: StationName::new("s").unwrap(),
            seq: 1,
            track: "t".into(),
            position_ms: 1000,
            playing: true,
            duration_ms: None,
            server_time_ms: 10_000,
            cause: SyncCause::Update,
        };
        assert_eq!(s.position_at(10_500), 1500);
        assert_eq!(s.position_at(9_000), 0);
        s.playing = false;
        assert_eq!(s.position_at(10_500), 1000);
    }

    #[test]
    fn tokens_are_random_hex() {
        let a = random_token(16);
        let b = random_token(16);
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
