//! The messages on a station's Redis channel, parsed in one place.
//!
//! The Lua scripts publish them (`lua/*.lua`); each node's subscriber task
//! applies them to the station's cell in the order Redis ran them. The
//! format is a kind byte and a payload, so a state's frame travels as the
//! very bytes every listener receives:
//!
//! | message | meaning |
//! |---|---|
//! | `S` frame | a new state (an encoded `sync` frame) |
//! | `L` | the station went live, with no state yet |
//! | `H` by | a server-run station passed to another player (`live`, `auto`), or went live with it |
//! | `D` reason | the station went offline (`stopped`, `disconnected`, `timeout`) |
//! | `Z1` frame | snapshot: live, with this state (empty: none yet) |
//! | `Z2` frame | snapshot: live, played by the server, with this state |
//! | `Z0` reason | snapshot: offline |
//! | `Z?` | snapshot: Redis does not know the station |

use crate::protocol::{OfflineReason, OnlineReason};

/// One message of a station's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelMsg<'a> {
    /// `S`: a new state's encoded `sync` frame.
    State(&'a str),
    /// `L`: live, no state yet.
    Live,
    /// `H`: played by another player from now on (a broadcaster took a
    /// server-run station over, or the server took it back).
    HandOver(OnlineReason),
    /// `D`: offline.
    Offline(OfflineReason),
    /// `Z`: the station as Redis has it, asked for by a node that subscribed
    /// or reconnected.
    Snapshot(Snapshot<'a>),
}

/// The station in a `Z` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Snapshot<'a> {
    /// `Z1` (or `Z2`, played by the server): live, with its newest frame
    /// if it has one.
    Live(Option<&'a str>, OnlineReason),
    /// `Z0`: offline, and why.
    Offline(OfflineReason),
    /// `Z?`: unknown to Redis (it lost its data, or the station expired).
    Unknown,
}

/// A channel message this node cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("an empty message")]
    Empty,
    #[error("unknown message kind {0:?}")]
    UnknownKind(char),
    #[error("a state that is not UTF-8")]
    NotUtf8,
}

impl<'a> ChannelMsg<'a> {
    /// Parses one payload as published by the scripts.
    pub(crate) fn parse(payload: &'a [u8]) -> Result<Self, ParseError> {
        let (&kind, rest) = payload.split_first().ok_or(ParseError::Empty)?;
        Ok(match kind {
            b'S' => ChannelMsg::State(std::str::from_utf8(rest).map_err(|_| ParseError::NotUtf8)?),
            b'L' => ChannelMsg::Live,
            b'H' => ChannelMsg::HandOver(player(rest)),
            b'D' => ChannelMsg::Offline(reason(rest)),
            b'Z' => ChannelMsg::Snapshot(match rest.split_first() {
                Some((kind @ (b'1' | b'2'), frame)) => Snapshot::Live(
                    std::str::from_utf8(frame).ok().filter(|f| !f.is_empty()),
                    if *kind == b'2' {
                        OnlineReason::Auto
                    } else {
                        OnlineReason::Live
                    },
                ),
                Some((b'0', why)) => Snapshot::Offline(reason(why)),
                _ => Snapshot::Unknown,
            }),
            other => return Err(ParseError::UnknownKind(char::from(other))),
        })
    }
}

/// Who plays, as the scripts write it: anything but `auto` is a
/// broadcaster.
fn player(s: &[u8]) -> OnlineReason {
    if s == b"auto" {
        OnlineReason::Auto
    } else {
        OnlineReason::Live
    }
}

/// An offline reason as the scripts write it; anything else is a timeout
/// (the one reason a script infers rather than is told).
fn reason(s: &[u8]) -> OfflineReason {
    match s {
        b"stopped" => OfflineReason::Stopped,
        b"disconnected" => OfflineReason::Disconnected,
        _ => OfflineReason::Timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let frame = r#"{"type":"sync"}"#;
        assert_eq!(
            ChannelMsg::parse(format!("S{frame}").as_bytes()),
            Ok(ChannelMsg::State(frame))
        );
        assert_eq!(ChannelMsg::parse(b"L"), Ok(ChannelMsg::Live));
        assert_eq!(
            ChannelMsg::parse(b"Dstopped"),
            Ok(ChannelMsg::Offline(OfflineReason::Stopped))
        );
        assert_eq!(
            ChannelMsg::parse(b"Ddisconnected"),
            Ok(ChannelMsg::Offline(OfflineReason::Disconnected))
        );
        assert_eq!(
            ChannelMsg::parse(b"Dtimeout"),
            Ok(ChannelMsg::Offline(OfflineReason::Timeout))
        );
        assert_eq!(
            ChannelMsg::parse(format!("Z1{frame}").as_bytes()),
            Ok(ChannelMsg::Snapshot(Snapshot::Live(
                Some(frame),
                OnlineReason::Live
            )))
        );
        assert_eq!(
            ChannelMsg::parse(format!("Z2{frame}").as_bytes()),
            Ok(ChannelMsg::Snapshot(Snapshot::Live(
                Some(frame),
                OnlineReason::Auto
            )))
        );
        assert_eq!(
            ChannelMsg::parse(b"Z1"),
            Ok(ChannelMsg::Snapshot(Snapshot::Live(
                None,
                OnlineReason::Live
            )))
        );
        assert_eq!(
            ChannelMsg::parse(b"Hauto"),
            Ok(ChannelMsg::HandOver(OnlineReason::Auto))
        );
        assert_eq!(
            ChannelMsg::parse(b"Hlive"),
            Ok(ChannelMsg::HandOver(OnlineReason::Live))
        );
        assert_eq!(
            ChannelMsg::parse(b"Z0stopped"),
            Ok(ChannelMsg::Snapshot(Snapshot::Offline(
                OfflineReason::Stopped
            )))
        );
        assert_eq!(
            ChannelMsg::parse(b"Z?"),
            Ok(ChannelMsg::Snapshot(Snapshot::Unknown))
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(ChannelMsg::parse(b""), Err(ParseError::Empty));
        assert_eq!(ChannelMsg::parse(b"X1"), Err(ParseError::UnknownKind('X')));
        assert_eq!(ChannelMsg::parse(b"S\xff\xfe"), Err(ParseError::NotUtf8));
        // A snapshot frame that is not UTF-8 is a live station with no state.
        assert_eq!(
            ChannelMsg::parse(b"Z1\xff"),
            Ok(ChannelMsg::Snapshot(Snapshot::Live(
                None,
                OnlineReason::Live
            )))
        );
    }
}
