//! Every message of the protocol and its fields, the error codes and the
//! limits, and [`encode`], which serializes a server frame once.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::ids::StationName;

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
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
    /// The client's address holds its share of the server's stations (live
    /// or in their grace period); another station may be claimed once one
    /// of them stops or its grace period ends.
    TooManyStations,
    /// A broadcast key is required and was missing or wrong.
    Unauthorized,
    /// The request needs a backend (cluster mode's Redis) that is down right
    /// now; try again later.
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::InvalidStation,
        ErrorCode::StationTaken,
        ErrorCode::NotOwner,
        ErrorCode::NotLive,
        ErrorCode::RateLimited,
        ErrorCode::Unsupported,
        ErrorCode::TooManyStations,
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
            ErrorCode::TooManyStations => "too_many_stations",
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

/// Who plays a live station: `broadcaster_online`'s and `tuned`'s `reason`,
/// and a history entry's `by`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineReason {
    /// A broadcaster's connection (`start_broadcasting`).
    #[default]
    Live,
    /// The server itself, from the station's own source (`radio serve
    /// --station`), while no broadcaster holds it.
    Auto,
}

impl OnlineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OnlineReason::Live => "live",
            OnlineReason::Auto => "auto",
        }
    }
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
pub struct SyncState {
    pub station: StationName,
    pub seq: u64,
    pub track: String,
    pub position_ms: u64,
    pub playing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The track's title: from the server's library when `track` is one of
    /// its ids, else as the broadcaster gave it (older servers send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The track's artist, like `title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// The gain in dB that brings the track to the library's even loudness
    /// (-18 LUFS, EBU R128): from the server's library once it has measured
    /// the track; absent for a track it has not (yet), or cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_db: Option<f64>,
    /// What plays after this track, when the station knows it (a station
    /// the server runs, or a broadcaster that said): players fetch it
    /// ahead of this track's end. Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextTrack>,
    pub server_time_ms: i64,
    pub cause: SyncCause,
}

/// The track a station plays next, as `sync` announces it: a library track,
/// described by the server's library.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NextTrack {
    pub track: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The next track's loudness gain in dB, like `SyncState::gain_db`:
    /// a player that starts it ahead starts it at this gain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_db: Option<f64>,
}

impl SyncState {
    /// The position at server time `at_ms`: advanced by the elapsed time while
    /// playing, unchanged while paused. A playing station never runs past its
    /// track's end: with a known `duration_ms` its position stops there (until
    /// its broadcaster says what plays next). Every extrapolation goes through
    /// here: tune-in snapshots, `stations`, and the clients.
    pub fn position_at(&self, at_ms: i64) -> u64 {
        if !self.playing {
            return self.position_ms;
        }
        let position = advance(self.position_ms, at_ms.saturating_sub(self.server_time_ms));
        match self.duration_ms {
            Some(end) => position.min(end),
            None => position,
        }
    }

    /// Whether a playing station has reached its track's end at `at_ms`.
    pub fn ended_at(&self, at_ms: i64) -> bool {
        self.duration_ms
            .is_some_and(|end| self.playing && self.position_at(at_ms) >= end)
    }
}

/// Whether a track may be chosen by an automatic order: the library's
/// order, a playlist, a station the server runs. Only a track whose
/// duration is known: without one its end never comes, so a station that
/// moves on at each track's end would sit on it for ever. (A person may
/// still play such a track by name.)
pub fn schedulable(duration_ms: Option<u64>) -> bool {
    duration_ms.is_some_and(|ms| ms > 0)
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
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
        /// Who plays it, when it is live (older servers send none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<OnlineReason>,
    },
    TunedOut,
    Sync(SyncState),
    /// The station went live, or passed from one player to the other: a
    /// broadcaster took over a server-run station, or the server took it
    /// back (older servers send no `reason`).
    BroadcasterOnline {
        station: StationName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<OnlineReason>,
    },
    BroadcasterOffline {
        station: StationName,
        reason: OfflineReason,
    },
    Stations {
        stations: Vec<StationSummary>,
        /// Live stations in all; more than `stations` holds when truncated.
        #[serde(default)]
        total: usize,
        /// Whether `stations` leaves some out (`radio serve --max-list`).
        #[serde(default)]
        truncated: bool,
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
    /// To a broadcaster: every listener of its station (at least one)
    /// reported that it cannot play `track`, the station's current track.
    TrackFailed {
        station: StationName,
        track: String,
        /// How many listeners reported it: all of the station's.
        listeners: u64,
        /// The first report's reason, if it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
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
    /// Shown to listeners when `track` is not in the server's library (the
    /// library's own title wins when it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// The library id of the track that plays after this one, when the
    /// broadcaster knows it; the server announces it to listeners (with
    /// the library's title, artist and duration) if its library has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
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
    /// Like `update`'s; absent, the last one announced stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
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
    /// A listener's player cannot play `track` of the station it is tuned to.
    CannotPlay {
        station: StationName,
        track: String,
        /// What the player said, for the broadcaster and the logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
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
    CannotPlay => "cannot_play",
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(RequestType::ALL.len(), 9);
        // Metrics index their counters by `as usize`.
        for (i, &t) in RequestType::ALL.iter().enumerate() {
            assert_eq!(t as usize, i);
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let sync = ServerMessage::Sync(SyncState {
            station: StationName::new("s").unwrap(),
            seq: 3,
            track: "t".into(),
            position_ms: 1000,
            playing: true,
            duration_ms: None,
            title: Some("T".into()),
            artist: None,
            gain_db: Some(-3.5),
            next: None,
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
        assert!(text.as_str().contains(r#""title":"T""#), "{text}");
        assert!(!text.as_str().contains("artist"), "{text}");
        assert!(text.as_str().contains(r#""gain_db":-3.5"#), "{text}");
        // An older server's sync, without the optional fields, still reads.
        let old: ServerMessage = serde_json::from_str(
            r#"{"type":"sync","station":"s","seq":1,"track":"t","position_ms":0,"playing":true,"server_time_ms":1,"cause":"update"}"#,
        )
        .unwrap();
        assert!(matches!(
            old,
            ServerMessage::Sync(SyncState {
                title: None,
                gain_db: None,
                ..
            })
        ));
        // `next` goes out only when known, and reads back.
        let mut with_next = sync_at(0, Some(4_000));
        with_next.next = Some(NextTrack {
            track: "b.ogg".into(),
            title: Some("B".into()),
            artist: None,
            duration_ms: Some(3_000),
            gain_db: None,
        });
        let text = encode(&ServerMessage::Sync(with_next.clone()));
        assert!(
            text.as_str()
                .contains(r#""next":{"track":"b.ogg","title":"B","duration_ms":3000}"#),
            "{text}"
        );
        let back: ServerMessage = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(back, ServerMessage::Sync(with_next));
        assert!(!encode(&sync).as_str().contains("next"));
        let tuned_out = encode(&ServerMessage::TunedOut);
        assert_eq!(tuned_out.as_str(), r#"{"type":"tuned_out"}"#);
    }

    /// A sync at `position_ms` stamped at server time 10 s.
    fn sync_at(position_ms: u64, duration_ms: Option<u64>) -> SyncState {
        SyncState {
            station: StationName::new("s").unwrap(),
            seq: 1,
            track: "t".into(),
            position_ms,
            playing: true,
            duration_ms,
            title: None,
            artist: None,
            gain_db: None,
            next: None,
            server_time_ms: 10_000,
            cause: SyncCause::Update,
        }
    }

    #[test]
    fn position_advances_only_while_playing() {
        let mut s = sync_at(1000, None);
        assert_eq!(s.position_at(10_500), 1500);
        assert_eq!(s.position_at(9_000), 0);
        assert!(!s.ended_at(99_000));
        s.playing = false;
        assert_eq!(s.position_at(10_500), 1000);
    }

    #[test]
    fn a_playing_position_stops_at_the_tracks_end() {
        let mut s = sync_at(39_000, Some(40_000));
        assert_eq!(s.position_at(10_500), 39_500);
        assert!(!s.ended_at(10_500));
        assert_eq!(s.position_at(16_000), 40_000);
        assert!(s.ended_at(16_000));
        // Paused, the position is what the broadcaster said.
        s.playing = false;
        s.position_ms = 41_000;
        assert_eq!(s.position_at(16_000), 41_000);
        assert!(!s.ended_at(16_000));
    }
}
