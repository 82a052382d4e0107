//! What a station publishes and its listeners see: the [`View`] a station's
//! cell holds, the [`State`] in it with its frame encoded once, the
//! [`Playback`] a broadcaster chooses, and [`wire_frame`], which turns a
//! message into the WebSocket frame every listener is sent.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::{
    self, NextTrack, OfflineReason, OnlineReason, ServerMessage, StationName, SyncCause, SyncState,
};

/// What listeners of a station see: replaced whole on every change.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// A broadcaster holds the station (also during its grace period).
    pub live: bool,
    /// Why it last went offline, when it is not live.
    pub offline_reason: Option<OfflineReason>,
    /// Who plays it while live: a broadcaster, or the server itself (a
    /// server-run station, `radio serve --station`).
    pub by: OnlineReason,
    /// Bumped at every hand-over between the two while live, so that a
    /// listener told of one player is told of the next ([`View::mark`]).
    pub turn: u32,
    /// The newest state, from the broadcaster's last `update`/`heartbeat`.
    pub state: Option<State>,
}

impl View {
    /// Offline for `reason`, with no state.
    pub(crate) fn offline(reason: OfflineReason) -> Self {
        Self {
            live: false,
            offline_reason: Some(reason),
            state: None,
            ..Self::default()
        }
    }

    /// Live, with `state` if there is one yet.
    pub(crate) fn live(state: Option<State>) -> Self {
        Self {
            live: true,
            offline_reason: None,
            state,
            ..Self::default()
        }
    }

    /// What a listener must have been told to be up to date with this
    /// view's liveness: 0 offline, else one number per player's turn. A
    /// listener told another mark is sent the notice ([`View::notice`]).
    pub(crate) fn mark(&self) -> u64 {
        if self.live {
            u64::from(self.turn) + 1
        } else {
            0
        }
    }

    /// The notice of this view's liveness: `broadcaster_online` with who
    /// plays, or `broadcaster_offline` with why.
    pub(crate) fn notice(&self, station: &StationName) -> ServerMessage {
        let station = station.clone();
        if self.live {
            ServerMessage::BroadcasterOnline {
                station,
                reason: Some(self.by),
            }
        } else {
            ServerMessage::BroadcasterOffline {
                station,
                reason: self.offline_reason.unwrap_or(OfflineReason::Disconnected),
            }
        }
    }
}

/// One published state and its `sync` frame, encoded once for every
/// listener: as the WebSocket frame the fan-out writes, and as the message
/// text inside it that a connection's own task writes through tungstenite.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub sync: SyncState,
    /// `sync`'s JSON (a view into `wire`).
    pub frame: Utf8Bytes,
    /// The whole WebSocket frame: header and `frame`.
    pub wire: Bytes,
    /// When it was published on this node (`radio_fanout_seconds`).
    pub published: std::time::Instant,
}

impl State {
    /// Encodes `sync`'s frame, once.
    pub(crate) fn new(sync: SyncState) -> Self {
        let msg = ServerMessage::Sync(sync);
        let json = protocol::encode(&msg);
        match msg {
            ServerMessage::Sync(sync) => Self::framed(sync, json.as_str()),
            _ => unreachable!("built as a sync above"),
        }
    }

    /// A state from a frame another process encoded (a cluster node's).
    pub(crate) fn from_frame(frame: &str) -> Option<Self> {
        match serde_json::from_str::<ServerMessage>(frame) {
            Ok(ServerMessage::Sync(sync)) => Some(Self::framed(sync, frame)),
            _ => {
                tracing::warn!(frame, "ignoring a malformed state");
                None
            }
        }
    }

    fn framed(sync: SyncState, json: &str) -> Self {
        let wire = wire_frame(json.as_bytes());
        let body = wire.slice(wire.len() - json.len()..);
        // The body is `json`'s bytes, so it is UTF-8; the fallback copies.
        let frame = Utf8Bytes::try_from(body).unwrap_or_else(|_| Utf8Bytes::from(json));
        Self {
            sync,
            frame,
            wire,
            published: std::time::Instant::now(),
        }
    }
}

/// What a broadcaster chooses in an `update`, with what the server's library
/// says of its track (filled once, where the update is stamped): the rest of
/// a `sync` (station, `seq`, server time, cause) is the server's to stamp.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Playback {
    pub track: String,
    pub position_ms: u64,
    pub playing: bool,
    pub duration_ms: Option<u64>,
    pub title: Option<String>,
    pub artist: Option<String>,
    /// The library's gain for the track (its loudness measured).
    pub gain_db: Option<f64>,
    /// What plays after it, when known (`sync`'s `next`).
    pub next: Option<NextTrack>,
}

impl Playback {
    /// The `sync` this playback becomes, stamped now.
    pub(crate) fn stamp(self, station: StationName, seq: u64, cause: SyncCause) -> SyncState {
        SyncState {
            station,
            seq,
            track: self.track,
            position_ms: self.position_ms,
            playing: self.playing,
            duration_ms: self.duration_ms,
            title: self.title,
            artist: self.artist,
            gain_db: self.gain_db,
            next: self.next,
            server_time_ms: protocol::now_ms(),
            cause,
        }
    }

    /// A heartbeat's playback: `last`'s track, duration, title, artist, gain
    /// and next track at a new position (and play state, and next track,
    /// when given).
    pub(crate) fn carried(last: &SyncState, beat: Beat) -> Self {
        Self {
            track: last.track.clone(),
            position_ms: beat.position_ms,
            playing: beat.playing.unwrap_or(last.playing),
            duration_ms: last.duration_ms,
            title: last.title.clone(),
            artist: last.artist.clone(),
            gain_db: last.gain_db,
            next: beat.next.unwrap_or_else(|| last.next.clone()),
        }
    }
}

/// What a `heartbeat` changes: the position, and the play state and the
/// next track when it says them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Beat {
    pub position_ms: u64,
    pub playing: Option<bool>,
    /// `Some` when the heartbeat names a next track: what the library says
    /// of it (`None` when the library lacks it, so nothing is announced).
    pub next: Option<Option<NextTrack>>,
}

/// One text frame as it goes on the wire from a server: FIN and opcode,
/// the length, then the payload (unmasked).
pub(crate) fn wire_frame(payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(0x81);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StationName {
        StationName::new(s).expect("a valid name")
    }

    #[test]
    fn a_state_is_encoded_once_and_read_back() {
        let playback = Playback {
            track: "a.ogg".into(),
            position_ms: 5,
            playing: true,
            duration_ms: Some(9),
            title: Some("A".into()),
            artist: None,
            gain_db: Some(-2.25),
            next: None,
        };
        let state = State::new(playback.stamp(name("s"), 3, SyncCause::Update));
        let back = State::from_frame(state.frame.as_str()).expect("a sync frame");
        assert_eq!(back.sync, state.sync);
        assert!(State::from_frame(r#"{"type":"pong","server_time_ms":1}"#).is_none());
    }

    #[test]
    fn a_heartbeat_keeps_the_next_track_unless_it_names_one() {
        let next = |id: &str| NextTrack {
            track: id.into(),
            title: None,
            artist: None,
            duration_ms: Some(1),
            gain_db: None,
        };
        let mut last = Playback {
            track: "a.ogg".into(),
            position_ms: 0,
            playing: true,
            duration_ms: Some(9),
            title: None,
            artist: None,
            gain_db: Some(-1.5),
            next: Some(next("b.ogg")),
        }
        .stamp(name("s"), 1, SyncCause::Update);
        let beat = |position_ms, next| Beat {
            position_ms,
            playing: None,
            next,
        };
        let kept = Playback::carried(&last, beat(5, None));
        assert_eq!((kept.position_ms, kept.next), (5, Some(next("b.ogg"))));
        assert_eq!(kept.gain_db, Some(-1.5), "the gain goes on with its track");
        let told = Playback::carried(&last, beat(6, Some(Some(next("c.ogg")))));
        assert_eq!(told.next, Some(next("c.ogg")));
        // A next track the library lacks: nothing is announced.
        assert_eq!(Playback::carried(&last, beat(6, Some(None))).next, None);
        last.next = None;
        assert_eq!(Playback::carried(&last, beat(7, None)).next, None);
    }

    #[test]
    fn frames_carry_the_payload_length() {
        let short = wire_frame(b"hi");
        assert_eq!(&short[..], b"\x81\x02hi");
        let medium = wire_frame(&[b'a'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let long = wire_frame(&vec![b'a'; 70_000]);
        assert_eq!(long[1], 127);
        assert_eq!(&long[2..10], &70_000u64.to_be_bytes());
    }
}
