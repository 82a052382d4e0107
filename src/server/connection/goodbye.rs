//! How a connection ends: the goodbye each reason to end it (a
//! [`Disconnect`], the reason `radio_disconnects_total` counts) calls for:
//! a close code, and `server_shutdown` on shutdown, bounded so that a
//! stalled client gets no more of the server's time. Boxed by the caller,
//! as it runs once.
//!
//! Closing properly (RFC 6455 §7.1.1): after its close frame the server
//! writes nothing more, but keeps reading, and discarding, until the peer's
//! close frame arrives or [`DRAIN`] passes, and only then shuts the socket.
//! A socket closed with unread input makes the kernel send a reset, which
//! can destroy the close frame before the client reads it; so a client
//! closed for flooding learns why (1008) instead of seeing a reset.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use futures_util::StreamExt as _;

use crate::protocol::{self, ServerMessage};
use crate::server::outlet;
use crate::server::warnings::Reason;

use super::{Conn, Disconnect};

impl Conn {
    /// Says goodbye in the way `why` calls for; bounded by the write timeout.
    pub(super) async fn finish(mut self, why: Disconnect) {
        self.shared.metrics.disconnect(why);
        let close = self.close_for(why);
        // Release stations and subscriptions before the goodbye, which may
        // wait on a slow socket; from here on only this task writes.
        self.handed_off |= self.outlet.close();
        self.owned.clear();
        self.tuned = None;
        let Some((code, reason)) = close.filter(|_| !self.torn) else {
            return;
        };
        // A stalled client gets no more of our time.
        let limit = match why {
            Disconnect::SlowClient | Disconnect::KeepaliveTimeout => Duration::from_millis(100),
            _ => self.shared.conn.write_timeout.min(Duration::from_secs(2)),
        };
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if self.send_close(frame, limit).await {
            self.drain().await;
        }
    }

    /// The close code and reason `why` calls for (none when the peer is
    /// gone); queues `server_shutdown` first on shutdown, and counts a
    /// client-caused close in the warnings.
    fn close_for(&mut self, why: Disconnect) -> Option<(CloseCode, &'static str)> {
        let (code, reason, note) = match why {
            Disconnect::Closed => return None,
            Disconnect::Shutdown => {
                // Spread reconnects so a restart is not a thundering herd.
                let reconnect_after_ms = 1_000 + fastrand::u64(0..4_000);
                self.out.push(Message::Text(protocol::encode(
                    &ServerMessage::ServerShutdown { reconnect_after_ms },
                )));
                return Some((CloseCode::Away, "server shutting down"));
            }
            Disconnect::SlowClient => (CloseCode::Policy, "write timeout", Reason::SlowClient),
            Disconnect::KeepaliveTimeout => (
                CloseCode::Policy,
                "keepalive timeout",
                Reason::KeepaliveTimeout,
            ),
            Disconnect::RateLimit => (CloseCode::Policy, "rate limit exceeded", Reason::Flood),
            Disconnect::TooBig => (CloseCode::Size, "message too big", Reason::TooBig),
            Disconnect::KeyLockout => (
                CloseCode::Policy,
                "too many wrong broadcast keys",
                Reason::KeyLockout,
            ),
        };
        self.note(note);
        Some((code, reason))
    }

    /// Writes what is still owed (the rest of a handed-over frame, queued
    /// frames), then the close frame, within `limit`; true if it went out.
    async fn send_close(&mut self, frame: CloseFrame, limit: Duration) -> bool {
        let rest = match self.handed_off {
            true => self.outlet.handed_over(),
            false => None,
        };
        let outlet = &self.outlet;
        let ws = &mut self.ws;
        let frames = std::mem::take(&mut self.out);
        let bye = async move {
            if let Some(rest) = rest {
                outlet::write_all(outlet, &rest).await?;
            }
            for f in frames {
                ws.feed(f).await?;
            }
            ws.close(Some(frame)).await
        };
        match tokio::time::timeout(limit, bye).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "close failed");
                false
            }
            Err(_) => false,
        }
    }

    /// The close frame is out: reads (and drops) what the peer still sends
    /// until its own close, so that no reset overtakes ours.
    async fn drain(&mut self) {
        let ws = &mut self.ws;
        let drain = async move {
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        };
        if tokio::time::timeout(DRAIN, drain).await.is_err() {
            tracing::debug!("no close frame from the peer within {DRAIN:?}");
        }
    }

    /// Counts a client-caused close in the aggregated warnings.
    fn note(&self, reason: Reason) {
        tracing::debug!(?reason, "closing the connection");
        self.shared.warnings.note(reason);
    }
}

/// How long a closed connection keeps reading for the peer's close frame.
pub(super) const DRAIN: Duration = Duration::from_secs(2);
