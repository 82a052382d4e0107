//! A track every listener failed to play (`track_failed`): the station
//! moves on to the next track of its order, and the order passes over the
//! failed one from then on; with nothing left to play, it pauses. Either
//! way the broadcaster says why on stderr.

use super::Broadcaster;
use crate::client;
use crate::protocol::ServerMessage;

impl Broadcaster {
    /// The server says (`track_failed`) every listener failed to play a
    /// track. Acts only while that track still plays here, and asks the
    /// session to send the new state.
    pub(super) fn track_failed(&mut self, msg: ServerMessage) {
        let ServerMessage::TrackFailed {
            track,
            listeners,
            reason,
            ..
        } = msg
        else {
            return;
        };
        if self.player.track.as_ref().is_none_or(|c| c.track != track) {
            return;
        }
        let track = track.as_str();
        self.queue.mark_failed(track);
        let who = match listeners {
            1 => "the station's one listener".to_owned(),
            n => format!("all {n} of the station's listeners"),
        };
        let why = reason.map_or_else(String::new, |r| format!(" ({})", client::printable(&r)));
        match self.queue.step(true) {
            Ok(next) => {
                self.console.say(&format!(
                    "{who} could not play {track:?}{why}; skipping to {:?}",
                    next.track
                ));
                self.player.load(next, 0, true);
            }
            Err(e) => {
                self.console
                    .say(&format!("{who} could not play {track:?}{why}; paused: {e}"));
                self.player.hold_at_end();
            }
        }
        self.resend = true;
    }
}
