//! How a connection ends: the goodbye each [`Exit`] calls for (a close code,
//! and `server_shutdown` on shutdown), bounded so that a stalled client gets
//! no more of the server's time. Boxed by the caller, as it runs once.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::protocol::{self, ServerMessage};
use crate::server::outlet;

use super::{Conn, Exit};

impl Conn {
    /// Says goodbye in the way `exit` calls for; bounded by the write timeout.
    pub(super) async fn finish(mut self, exit: Exit) {
        self.shared.metrics.disconnect(exit.reason());
        let close = match exit {
            Exit::Closed => None,
            Exit::Shutdown => {
                // Spread reconnects so a restart is not a thundering herd.
                let reconnect_after_ms = 1_000 + fastrand::u64(0..4_000);
                self.out.push(Message::Text(protocol::encode(
                    &ServerMessage::ServerShutdown { reconnect_after_ms },
                )));
                Some((CloseCode::Away, "server shutting down"))
            }
            Exit::SlowClient => {
                tracing::info!("closing a client that accepted no bytes for the write timeout");
                Some((CloseCode::Policy, "write timeout"))
            }
            Exit::KeepaliveTimeout => {
                tracing::info!("closing a client that answered no ping");
                Some((CloseCode::Policy, "keepalive timeout"))
            }
            Exit::Flood => {
                tracing::info!("closing a client that kept flooding past the rate limit");
                Some((CloseCode::Policy, "rate limit exceeded"))
            }
            Exit::TooBig => Some((CloseCode::Size, "message too big")),
        };
        // Release stations and subscriptions before the goodbye, which may
        // wait on a slow socket; from here on only this task writes.
        self.handed_off |= self.outlet.close();
        self.owned.clear();
        self.tuned = None;
        let Some((code, reason)) = close else { return };
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
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
        // A stalled client gets no more of our time.
        let limit = match exit {
            Exit::SlowClient | Exit::KeepaliveTimeout => Duration::from_millis(100),
            _ => self.shared.conn.write_timeout.min(Duration::from_secs(2)),
        };
        if let Ok(Err(e)) = tokio::time::timeout(limit, bye).await {
            tracing::debug!(error = %e, "close failed");
        }
    }
}
