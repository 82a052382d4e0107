//! `--fetch-media`: each listener also fetches the media it would play, as
//! the web player does (src/server/player/app.js). At tune-in and at each
//! track change it fetches the track its `sync` names, by the URL
//! `/api/library` gives (a `Range: bytes=0-` request, as a media element
//! makes); with prefetch it also fetches the announced `next` ahead of the
//! current track's end, at its own moment of the last half minute (4 s to
//! 30 s before the end, or a share of what is left of a shorter track), and
//! then makes no request when that track starts.
//!
//! Measured: the bytes received, the requests and those refused (a status
//! other than 200/206, or no answer), and for each track a listener starts,
//! the time from the track's start on the station's timeline (server clock)
//! until the listener holds its first 256 KiB (or the whole file, when
//! smaller): 0 when a prefetch had them before the start.
//!
//! Plain-TCP bodies are dropped by the kernel as they arrive, chunked ones
//! counted through their framing ([`discard`]); TLS ones are read through
//! hyper.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};

use super::ctx::{Ctx, lock, now_us};
use super::discard;
use crate::client::http::Endpoint;
pub(crate) use crate::loadtest::media::{FetchMedia, MediaReport};
use crate::loadtest::net::{connect_from, io_reason};
use crate::loadtest::stats::Hist;

/// What a listener must hold of a track to start playing it.
pub(crate) const PLAYABLE_BYTES: u64 = 256 * 1024;
/// The player's prefetch window: at least this long before the end ...
const PRELOAD_MIN_MS: u64 = 4_000;
/// ... and at most this long.
const PRELOAD_MAX_MS: u64 = 30_000;
/// One request's time, connection included, before it counts as refused.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The worker's fetcher, when the plan says `--fetch-media` (one a
/// process: set once at start, before any listener connects).
pub(super) static FETCHER: std::sync::OnceLock<Arc<Fetcher>> = std::sync::OnceLock::new();

/// The fields of a `sync` this needs.
#[derive(Deserialize)]
struct SyncLite<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(default, borrow)]
    track: Option<&'a str>,
    #[serde(default)]
    position_ms: u64,
    #[serde(default)]
    playing: bool,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    server_time_ms: i64,
    #[serde(default, borrow)]
    next: Option<NextLite<'a>>,
    #[serde(default, borrow)]
    cause: Option<&'a str>,
}

#[derive(Deserialize)]
struct NextLite<'a> {
    #[serde(borrow)]
    track: &'a str,
}

/// One listener's media: what it plays, and what it fetched ahead.
#[derive(Default)]
struct Held {
    track: Option<String>,
    /// The next track it fetched (or is fetching) ahead.
    ahead: Option<String>,
    /// Its prefetch timer, for the next track it planned.
    planned: Option<(String, tokio::task::JoinHandle<()>)>,
}

/// One track start of one listener: when it started (server clock, ms)
/// and when its fetch held 256 KiB; recorded once both are known.
#[derive(Default)]
struct Moments {
    start_ms: Option<i64>,
    playable_ms: Option<i64>,
    recorded: bool,
    /// The listener's first track (its tune-in), timed from the tune-in.
    tune_in: bool,
}

type Playable = Arc<Mutex<Moments>>;

/// Sets one of a start's moments and records the wait once both are in.
fn mark(media: &Fetcher, playable: &Playable, set: impl FnOnce(&mut Moments)) {
    let mut m = lock(playable);
    set(&mut m);
    if let (Some(start), Some(at), false) = (m.start_ms, m.playable_ms, m.recorded) {
        m.recorded = true;
        let hist = if m.tune_in {
            &media.tune_in_playable_ms
        } else {
            &media.playable_ms
        };
        lock(hist).record(u64::try_from(at - start).unwrap_or(0));
    }
}

/// The worker's media side.
pub(super) struct Fetcher {
    mode: FetchMedia,
    /// Library id to URL (a path on the node, or an absolute URL).
    urls: HashMap<String, String>,
    held: Vec<Mutex<Held>>,
    /// Per listener and track fetched ahead: when it became playable.
    ahead_playable: Vec<Mutex<Option<Playable>>>,
    requests: AtomicU64,
    bytes: AtomicU64,
    starts: AtomicU64,
    ahead_starts: AtomicU64,
    unknown: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
    playable_ms: Mutex<Hist>,
    tune_in_playable_ms: Mutex<Hist>,
}

impl Fetcher {
    /// Reads the library of the first node (the ids and their URLs).
    pub(super) async fn new(mode: FetchMedia, url: &str, count: usize) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Entry {
            id: String,
            #[serde(default)]
            url: String,
        }
        let endpoint = Endpoint::of_ws_url(url)?;
        let (status, body) = endpoint.get("/api/library").await?;
        if status != StatusCode::OK {
            anyhow::bail!(
                "--fetch-media: {} answered {status}",
                endpoint.url("/api/library")
            );
        }
        let entries: Vec<Entry> = serde_json::from_slice(&body)
            .context("--fetch-media: /api/library is not a radio library")?;
        let urls = entries
            .into_iter()
            .map(|e| {
                let url = if e.url.is_empty() {
                    crate::client::http::media_path(&e.id)
                } else {
                    e.url
                };
                (e.id, url)
            })
            .collect();
        Ok(Self {
            mode,
            urls,
            held: (0..count).map(|_| Mutex::new(Held::default())).collect(),
            ahead_playable: (0..count).map(|_| Mutex::new(None)).collect(),
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            starts: AtomicU64::new(0),
            ahead_starts: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            refused: Mutex::new(BTreeMap::new()),
            playable_ms: Mutex::new(Hist::new()),
            tune_in_playable_ms: Mutex::new(Hist::new()),
        })
    }

    pub(super) fn report(&self) -> MediaReport {
        MediaReport {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            refused: lock(&self.refused).clone(),
            starts: self.starts.load(Ordering::Relaxed),
            ahead_starts: self.ahead_starts.load(Ordering::Relaxed),
            playable_ms: lock(&self.playable_ms).data(),
            tune_in_playable_ms: lock(&self.tune_in_playable_ms).data(),
            unknown_tracks: self.unknown.load(Ordering::Relaxed),
        }
    }
}

/// The server's clock now, in ms, as node `node`'s listeners see it.
fn server_now_ms(ctx: &Ctx, node: usize) -> i64 {
    (now_us() + ctx.offsets_us[node].load(Ordering::Relaxed)) / 1000
}

/// A frame listener `local` received: starts the fetches it calls for.
pub(super) fn on_text(ctx: &Arc<Ctx>, media: &Arc<Fetcher>, local: usize, text: &str) {
    let Ok(s) = serde_json::from_str::<SyncLite>(text) else {
        return;
    };
    if s.ty != "sync" {
        return;
    }
    let Some(track) = s.track else { return };
    let node = ctx.plan.url_of(ctx.plan.first + local);
    let mut held = lock(&media.held[local]);
    if held.track.as_deref() != Some(track) {
        held.track = Some(track.to_owned());
        // A track change is timed from the track's start on the station's
        // timeline; a tune-in (mid-track) from the moment it arrived.
        let tune_in = s.cause == Some("tune_in");
        let start_ms = if tune_in {
            server_now_ms(ctx, node)
        } else {
            s.server_time_ms - i64::try_from(s.position_ms).unwrap_or(0)
        };
        start_track(ctx, media, local, &mut held, track, start_ms, tune_in);
    }
    if media.mode != FetchMedia::Prefetch {
        return;
    }
    let next = s
        .next
        .as_ref()
        .map(|n| n.track)
        .filter(|_| s.playing && s.duration_ms.is_some());
    let Some(next) = next else { return };
    if held.ahead.as_deref() == Some(next) || held.planned.as_ref().is_some_and(|(t, _)| t == next)
    {
        return;
    }
    let Some(url) = media.urls.get(next).cloned() else {
        return;
    };
    if let Some((_, timer)) = held.planned.take() {
        timer.abort();
    }
    // Each listener at its own moment of the window before the end.
    let duration = s.duration_ms.unwrap_or(0);
    let elapsed = u64::try_from(server_now_ms(ctx, node) - s.server_time_ms).unwrap_or(0);
    let left = duration.saturating_sub(s.position_ms + elapsed);
    let share = ((ctx.plan.first + local) as f64 * 0.618_034).fract();
    let lead = PRELOAD_MIN_MS + (share * (PRELOAD_MAX_MS - PRELOAD_MIN_MS) as f64) as u64;
    let wait = if left > lead {
        left - lead
    } else {
        (share * left.saturating_sub(PRELOAD_MIN_MS) as f64) as u64
    };
    let (ctx2, media2, next_owned) = (ctx.clone(), media.clone(), next.to_owned());
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let playable = Playable::default();
        {
            let mut held = lock(&media2.held[local]);
            // Started meanwhile: fetched as the current track already.
            if held.track.as_deref() == Some(next_owned.as_str()) {
                return;
            }
            held.ahead = Some(next_owned);
            *lock(&media2.ahead_playable[local]) = Some(playable.clone());
            media2.requests.fetch_add(1, Ordering::Relaxed);
        }
        fetch(&ctx2, &media2, local, &url, playable).await;
    });
    held.planned = Some((next.to_owned(), timer));
}

/// Listener `local` starts `track` (at `start_ms`, server clock): from
/// what it fetched ahead, or by fetching it now.
fn start_track(
    ctx: &Arc<Ctx>,
    media: &Arc<Fetcher>,
    local: usize,
    held: &mut Held,
    track: &str,
    start_ms: i64,
    tune_in: bool,
) {
    let Some(url) = media.urls.get(track).cloned() else {
        media.unknown.fetch_add(1, Ordering::Relaxed);
        return;
    };
    media.starts.fetch_add(1, Ordering::Relaxed);
    if held.ahead.as_deref() == Some(track) {
        held.ahead = None;
        held.planned = None;
        media.ahead_starts.fetch_add(1, Ordering::Relaxed);
        if let Some(playable) = lock(&media.ahead_playable[local]).take() {
            mark(media, &playable, |m| m.start_ms = Some(start_ms));
        }
        return;
    }
    if let Some((_, timer)) = held.planned.take_if(|(t, _)| t == track) {
        timer.abort();
    }
    let playable = Playable::default();
    mark(media, &playable, |m| {
        m.start_ms = Some(start_ms);
        m.tune_in = tune_in;
    });
    media.requests.fetch_add(1, Ordering::Relaxed);
    let (ctx, media) = (ctx.clone(), media.clone());
    tokio::spawn(async move {
        // Behind the other listeners' frames already read: a task spawned
        // here runs next on this thread, and its connect would come before
        // the `sync` of every listener still waiting to be read, which on
        // their own machines would not wait for this one.
        tokio::task::yield_now().await;
        fetch(&ctx, &media, local, &url, playable).await;
    });
}

/// One `GET` of `url` with `Range: bytes=0-`, read to its end; sets
/// `playable` when 256 KiB (or the whole body) are in.
/// (Counted in `requests` by the caller, before it is spawned.)
async fn fetch(ctx: &Ctx, media: &Fetcher, local: usize, url: &str, playable: Playable) {
    let node = ctx.plan.url_of(ctx.plan.first + local);
    let outcome = tokio::time::timeout(
        REQUEST_TIMEOUT,
        get(ctx, media, local, node, url, &playable),
    )
    .await;
    let reason = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(reason)) => reason,
        Err(_) => "timeout".to_owned(),
    };
    *lock(&media.refused).entry(reason).or_default() += 1;
}

async fn get(
    ctx: &Ctx,
    media: &Fetcher,
    local: usize,
    node: usize,
    url: &str,
    playable: &Playable,
) -> Result<(), String> {
    let target = &ctx.targets[node];
    // A path is on the listener's node; an absolute URL (a CDN) elsewhere.
    let (tls, authority, path, tcp) = if url.starts_with('/') {
        let tcp = connect_from(
            ctx.targets[ctx.plan.url_of(ctx.plan.first + local)].addr,
            ctx.plan.source_of(ctx.plan.first + local),
        )
        .await
        .map_err(|e| io_reason(&e))?;
        let authority = http::Uri::try_from(target.url.as_str())
            .ok()
            .and_then(|u| u.authority().map(ToString::to_string))
            .unwrap_or_default();
        (target.tls, authority, url.to_owned(), tcp)
    } else {
        let uri = http::Uri::try_from(url).map_err(|_| "bad_url".to_owned())?;
        let tls = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("bad_url")?.to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| io_reason(&e))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let authority = uri.authority().map(ToString::to_string).unwrap_or(host);
        (tls, authority, path, tcp)
    };
    if tls {
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_owned();
        let config = crate::client::tls_config().map_err(|_| "tls_config".to_owned())?;
        let name =
            rustls::pki_types::ServerName::try_from(host).map_err(|_| "bad_url".to_owned())?;
        let io = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|_| "tls".to_owned())?;
        exchange(ctx, media, node, io, &authority, &path, playable).await
    } else {
        let mut tally = Tally::new(ctx, media, node, playable);
        let result = discard::get(tcp, &authority, &path, |n| tally.add(n)).await;
        tally.finish(result)
    }
}

/// A fetch's progress: the bytes it got, and the moment they made the
/// track playable.
struct Tally<'a> {
    ctx: &'a Ctx,
    media: &'a Fetcher,
    node: usize,
    playable: &'a Playable,
    got: u64,
    marked: bool,
}

impl<'a> Tally<'a> {
    fn new(ctx: &'a Ctx, media: &'a Fetcher, node: usize, playable: &'a Playable) -> Self {
        Self {
            ctx,
            media,
            node,
            playable,
            got: 0,
            marked: false,
        }
    }

    fn add(&mut self, n: u64) {
        self.got += n;
        self.media.bytes.fetch_add(n, Ordering::Relaxed);
        if !self.marked && self.got >= PLAYABLE_BYTES {
            self.mark();
        }
    }

    /// The body ended: a whole body smaller than 256 KiB is playable too.
    fn finish(&mut self, result: Result<(), String>) -> Result<(), String> {
        if result.is_ok() && !self.marked {
            self.mark();
        }
        result
    }

    fn mark(&mut self) {
        self.marked = true;
        let now = server_now_ms(self.ctx, self.node);
        mark(self.media, self.playable, |m| m.playable_ms = Some(now));
    }
}

async fn exchange<S>(
    ctx: &Ctx,
    media: &Fetcher,
    node: usize,
    io: S,
    authority: &str,
    path: &str,
    playable: &Playable,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| "handshake".to_owned())?;
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header(header::HOST, authority)
        .header(header::RANGE, "bytes=0-")
        .body(Empty::<Bytes>::new())
        .map_err(|_| "bad_url".to_owned())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|_| "no_answer".to_owned())?;
    let status = resp.status();
    if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
        conn.abort();
        return Err(format!("http_{}", status.as_u16()));
    }
    let mut body = resp.into_body();
    let mut tally = Tally::new(ctx, media, node, playable);
    let result = loop {
        match body.frame().await {
            None => break Ok(()),
            Some(Err(_)) => break Err("body_cut".to_owned()),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    tally.add(data.len() as u64);
                }
            }
        }
    };
    drop(sender);
    conn.abort();
    tally.finish(result)
}
