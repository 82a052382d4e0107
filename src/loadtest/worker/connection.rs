//! One listener's connection, from TCP connect through upgrade, `welcome`
//! and `tune_in` to the frames it receives, and the short labels its
//! failures are counted under. Apart from the worker's process-level
//! plumbing because this is the code that runs 50,000 times over, where
//! every byte of a task and every syscall counts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::Response as UpgradeResponse;
use tokio_tungstenite::tungstenite::{self, Message};

use super::ctx::{Ctx, Lite, lock};
use crate::loadtest::net::{connect_from, io_reason};

fn ws_reason(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(e) => io_reason(e),
        tungstenite::Error::Http(resp) => format!("http_{}", resp.status().as_u16()),
        tungstenite::Error::Tls(_) => "tls".into(),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "closed_during_handshake".into()
        }
        _ => "handshake".into(),
    }
}

/// Opens the TCP connection of global listener `i` to node `node`, bound to
/// its source address.
async fn tcp_connect(ctx: &Ctx, i: usize, node: usize) -> std::io::Result<TcpStream> {
    connect_from(ctx.targets[node].addr, ctx.plan.source_of(i)).await
}

/// The node of global listener `i`'s `hop`th connection (0: its first)
/// among `n`: its own node, then the others in turn, starting at one that
/// depends on `i`, so that the listeners of a node that dies spread evenly
/// over the rest instead of all landing on the next one.
pub(super) fn failover_node(i: usize, hop: usize, n: usize) -> usize {
    let start = i % n;
    if n < 2 || hop % n == 0 {
        return start;
    }
    let offset = (i / n) % (n - 1);
    (start + 1 + (hop % n - 1 + offset) % (n - 1)) % n
}

/// One listener, from TCP connect to the end of the run. With
/// `--reconnect`, a lost connection is made again on another node
/// ([`failover_node`]), after the clients' backoff, until the run ends.
pub(super) async fn listener(ctx: Arc<Ctx>, local: usize, permit: OwnedSemaphorePermit) {
    let i = ctx.plan.first + local;
    let n = ctx.targets.len();
    let mut hop = 0;
    let mut node = ctx.plan.url_of(i);
    if !ctx.plan.reconnect {
        session(&ctx, local, node, Some(permit)).await;
        return;
    }
    let mut permit = Some(permit);
    let mut backoff = crate::client::Backoff::default();
    loop {
        let first = permit.is_some();
        let reached = session(&ctx, local, node, permit.take()).await;
        if first && !reached {
            return; // failed in the ramp: counted as failed, not retried
        }
        if reached {
            backoff.reset();
        }
        hop += 1;
        node = failover_node(i, hop, n);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection of a listener to `node`: a first one when it holds the
/// ramp's `permit`, else a reconnect. True when it was made (and has ended
/// since).
///
/// The handshake runs in a boxed future that is freed once it is done, so
/// the task a listener keeps for the whole run holds little more than its
/// socket (measured: an 11,184-byte task future when handshake, session and
/// the TLS variant shared one future; 1,128 bytes like this).
async fn session(
    ctx: &Arc<Ctx>,
    local: usize,
    node: usize,
    permit: Option<OwnedSemaphorePermit>,
) -> bool {
    if ctx.targets[node].tls {
        // Boxed whole: its futures are large and would size every
        // listener's task, plain ones included.
        return Box::pin(tls_session(ctx, local, node, permit)).await;
    }
    let url = ctx.targets[node].url.as_str();
    let config = Some(ctx.config);
    let upgrade = |s| tokio_tungstenite::client_async_with_config(url, s, config);
    // Bound to a variable, so the boxed handshake is freed before the
    // session starts (a temporary in `if let` would live as long as it).
    let opened = Box::pin(open(ctx, local, node, permit, upgrade)).await;
    match opened {
        Some(ws) => {
            receive(ctx, local, node, ws).await;
            true
        }
        None => false,
    }
}

/// [`session`] over `wss://`.
async fn tls_session(
    ctx: &Arc<Ctx>,
    local: usize,
    node: usize,
    permit: Option<OwnedSemaphorePermit>,
) -> bool {
    let url = ctx.targets[node].url.as_str();
    let config = Some(ctx.config);
    // The settings every client connection uses: `--ca-cert`'s when given.
    let connector = match crate::client::tls_config() {
        Ok(tls) => Some(tokio_tungstenite::Connector::Rustls(tls)),
        Err(_) => {
            ctx.fail(local, "tls_config".into());
            return false;
        }
    };
    let upgrade = |s| tokio_tungstenite::client_async_tls_with_config(url, s, config, connector);
    let opened = Box::pin(open(ctx, local, node, permit, upgrade)).await;
    match opened {
        Some(ws) => {
            receive(ctx, local, node, ws).await;
            true
        }
        None => false,
    }
}

/// Connects, upgrades, waits for `welcome` and tunes in. A failure is
/// recorded with its reason and gives `None`; without the ramp's `permit`
/// this is a reconnect, counted apart.
async fn open<S, F, Fut>(
    ctx: &Ctx,
    local: usize,
    node: usize,
    permit: Option<OwnedSemaphorePermit>,
    upgrade: F,
) -> Option<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(TcpStream) -> Fut,
    Fut: Future<Output = Result<(WebSocketStream<S>, UpgradeResponse), tungstenite::Error>>,
{
    let i = ctx.plan.first + local;
    let again = permit.is_none();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(ctx.plan.handshake_timeout_ms);
    let stream = match tokio::time::timeout_at(deadline, tcp_connect(ctx, i, node)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ctx.open_failed(local, again, io_reason(&e)),
        Err(_) => return ctx.open_failed(local, again, "timeout".into()),
    };
    let mut ws = match tokio::time::timeout_at(deadline, upgrade(stream)).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return ctx.open_failed(local, again, ws_reason(&e)),
        Err(_) => return ctx.open_failed(local, again, "timeout".into()),
    };
    let welcome = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break Err("no_welcome".to_owned()),
            Ok(None) => break Err("closed_during_handshake".to_owned()),
            Ok(Some(Err(e))) => break Err(ws_reason(&e)),
            Ok(Some(Ok(Message::Text(t)))) => {
                break match serde_json::from_str::<Lite>(t.as_str()) {
                    Ok(f) if f.ty == "welcome" => Ok(()),
                    _ => Err("no_welcome".to_owned()),
                };
            }
            Ok(Some(Ok(Message::Close(_)))) => break Err("closed_during_handshake".to_owned()),
            Ok(Some(Ok(_))) => {}
        }
    };
    if let Err(reason) = welcome {
        return ctx.open_failed(local, again, reason);
    }
    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    lock(&ctx.handshake_us).record(took);
    drop(permit);
    ctx.opened(local, again);
    let station = ctx.plan.station_of(i);
    if ws
        .send(Message::Text(ctx.tune_frames[station].clone()))
        .await
        .is_err()
    {
        ctx.drop_listener(local);
        return None;
    }
    Some(ws)
}

/// Measures every frame a tuned-in listener receives until its connection
/// ends (or the worker exits).
async fn receive<S>(ctx: &Arc<Ctx>, local: usize, node: usize, mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let i = ctx.plan.first + local;
    let station = ctx.plan.station_of(i) as u32;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                ctx.on_text(local, station, node, t.as_str());
                if let Some(media) = super::media::FETCHER.get() {
                    super::media::on_text(ctx, media, local, t.as_str());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code =
                    frame.map_or_else(|| "none".to_owned(), |f| u16::from(f.code).to_string());
                *ctx.shard(local).close_codes.entry(code).or_default() += 1;
                return ctx.drop_listener(local);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return ctx.drop_listener(local),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::failover_node;

    #[test]
    fn a_dead_nodes_listeners_spread_over_the_rest_and_every_node_is_tried() {
        let n = 3;
        // The listeners of node 0 (i = 0, 3, 6, ...) move to 1 and 2 in turn.
        let next: Vec<usize> = (0..6).map(|k| failover_node(3 * k, 1, n)).collect();
        assert_eq!(next, vec![1, 2, 1, 2, 1, 2]);
        for i in 0..12 {
            let mut seen: Vec<usize> = (0..n).map(|hop| failover_node(i, hop, n)).collect();
            assert_eq!(seen[0], i % n, "starts at its own node");
            seen.sort_unstable();
            assert_eq!(seen, vec![0, 1, 2], "listener {i} tries every node");
        }
        assert_eq!(failover_node(5, 3, 1), 0);
    }
}
