//! One listener's connection, from TCP connect through upgrade, `welcome`
//! and `tune_in` to the frames it receives, and the short labels its
//! failures are counted under. Apart from the worker's process-level
//! plumbing because this is the code that runs 50,000 times over, where
//! every byte of a task and every syscall counts.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::Response as UpgradeResponse;
use tokio_tungstenite::tungstenite::{self, Message};

use super::ctx::{CONNECTED, Ctx, Lite, lock};
use super::socket::{io_reason, tcp_connect};

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

/// One listener, from TCP connect to the end of the run.
///
/// The handshake runs in a boxed future that is freed once it is done, so
/// the task a listener keeps for the whole run holds little more than its
/// socket (measured: an 11,184-byte task future when handshake, session and
/// the TLS variant shared one future; 1,128 bytes like this).
pub(super) async fn listener(ctx: Arc<Ctx>, local: usize, permit: OwnedSemaphorePermit) {
    let node = ctx.plan.url_of(ctx.plan.first + local);
    if ctx.targets[node].tls {
        // Boxed whole: its futures are large and would size every
        // listener's task, plain ones included.
        return Box::pin(tls_listener(ctx, local, permit)).await;
    }
    let url = ctx.targets[node].url.as_str();
    let config = Some(ctx.config);
    let upgrade = |s| tokio_tungstenite::client_async_with_config(url, s, config);
    // Bound to a variable, so the boxed handshake is freed before the
    // session starts (a temporary in `if let` would live as long as it).
    let opened = Box::pin(open(&ctx, local, permit, upgrade)).await;
    if let Some(ws) = opened {
        receive(&ctx, local, ws).await;
    }
}

/// [`listener`] over `wss://`.
async fn tls_listener(ctx: Arc<Ctx>, local: usize, permit: OwnedSemaphorePermit) {
    let node = ctx.plan.url_of(ctx.plan.first + local);
    let url = ctx.targets[node].url.as_str();
    let config = Some(ctx.config);
    // The settings every client connection uses: `--ca-cert`'s when given.
    let connector = match crate::client::tls_config() {
        Ok(tls) => Some(tokio_tungstenite::Connector::Rustls(tls)),
        Err(_) => {
            ctx.fail(local, "tls_config".into());
            return;
        }
    };
    let upgrade = |s| tokio_tungstenite::client_async_tls_with_config(url, s, config, connector);
    let opened = Box::pin(open(&ctx, local, permit, upgrade)).await;
    if let Some(ws) = opened {
        receive(&ctx, local, ws).await;
    }
}

/// Connects, upgrades, waits for `welcome` and tunes in. A failure is
/// recorded with its reason and gives `None`.
async fn open<S, F, Fut>(
    ctx: &Ctx,
    local: usize,
    permit: OwnedSemaphorePermit,
    upgrade: F,
) -> Option<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(TcpStream) -> Fut,
    Fut: Future<Output = Result<(WebSocketStream<S>, UpgradeResponse), tungstenite::Error>>,
{
    let i = ctx.plan.first + local;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(ctx.plan.handshake_timeout_ms);
    let stream = match tokio::time::timeout_at(deadline, tcp_connect(ctx, i)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ctx.fail_with(local, io_reason(&e)),
        Err(_) => return ctx.fail_with(local, "timeout".into()),
    };
    let mut ws = match tokio::time::timeout_at(deadline, upgrade(stream)).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return ctx.fail_with(local, ws_reason(&e)),
        Err(_) => return ctx.fail_with(local, "timeout".into()),
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
        return ctx.fail_with(local, reason);
    }
    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    lock(&ctx.handshake_us).record(took);
    drop(permit);
    ctx.state[local].store(CONNECTED, Ordering::Relaxed);
    ctx.connected.fetch_add(1, Ordering::Relaxed);
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
async fn receive<S>(ctx: &Arc<Ctx>, local: usize, mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let i = ctx.plan.first + local;
    let node = ctx.plan.url_of(i);
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
