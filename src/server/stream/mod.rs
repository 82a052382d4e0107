//! Every live station as an MP3 stream in Icecast's dialect, for any radio
//! app: `GET /stations/{name}/stream` (docs/stream.md).
//!
//! **Encoded once per station** ([`Streams`]): the first stream listener
//! of a station starts its [`Encoding`] (one ffmpeg encoder, one decoder
//! at a time: `engine.rs`), fed at real time by one task (`feed.rs`) that
//! follows the station's view as the sync fan-out does (`follow.rs`); the
//! encoder's MP3 is cut into chunks of whole frames kept in a ring of the
//! newest burst (`ring.rs`), and every listener of the station is written
//! the same shared chunks (`listener.rs`), with ICY title blocks built
//! once per title when it asked (`icy.rs`). The last listener to leave
//! drops the encoding, which stops its task and kills its processes; a
//! station without stream listeners costs nothing.
//!
//! A stream listener is a listener of its station (its `Tuned` guard: the
//! station's `listeners`, `radio_listeners`), of any backend: in cluster
//! mode any node streams any station, from the states its subscriber
//! receives. Its connection is under `--max-connections`, the per-address
//! cap (a proxied client counted against its own address) and the Origin
//! rules, checked by the router.

mod engine;
mod feed;
mod follow;
mod icy;
mod listener;
mod ring;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::StationName;
use crate::server::backend::Backend as _;
use crate::server::backend::any::AnyBackend;
use crate::server::config::StreamConfig;
use crate::server::media::{Library, percent_decode};
use crate::server::metrics::stream::StreamSeries;
use crate::server::response::{Body, full, method_not_allowed, text};
use crate::server::station::Station;
use ring::{Ring, Snapshot};

/// What every station's stream path starts with.
const PREFIX: &str = "/stations/";
/// And ends with.
const SUFFIX: &str = "/stream";

/// Whether `path` is a station's stream.
pub(crate) fn serves(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// The stations' streams: the encodings running, by station.
pub(crate) struct Streams {
    config: StreamConfig,
    write_timeout: Duration,
    running: Running,
    media: Arc<Library>,
    series: Arc<StreamSeries>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

type Running = Arc<Mutex<HashMap<StationName, Weak<Encoding>>>>;

/// One station's encoding, shared by its stream listeners; dropping the
/// last stops it.
pub(crate) struct Encoding {
    station: Arc<Station>,
    rx: watch::Receiver<Arc<Snapshot>>,
    stop: CancellationToken,
    running: Running,
    series: Arc<StreamSeries>,
}

impl Drop for Encoding {
    fn drop(&mut self) {
        self.stop.cancel();
        self.series.encoders.dec();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mine = running
            .get(&self.station.name)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self));
        if mine {
            running.remove(&self.station.name);
        }
    }
}

/// What a stream request brings besides its path.
pub(crate) struct Asked<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The scheme the client used (`https` behind TLS), for `icy-url`.
    pub scheme: &'static str,
}

impl Streams {
    /// The streams' MP3 bitrate (`--stream-bitrate`), kb/s.
    pub(crate) fn bitrate_kbps(&self) -> u32 {
        self.config.bitrate_kbps
    }

    pub(crate) fn new(
        config: StreamConfig,
        write_timeout: Duration,
        media: Arc<Library>,
        series: Arc<StreamSeries>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            config,
            write_timeout,
            running: Arc::default(),
            media,
            series,
            tasks,
            shutdown,
        }
    }

    /// `GET`/`HEAD /stations/{name}/stream`: 404 when the station is not
    /// live, 503 when its encoding cannot start.
    pub(crate) async fn answer(&self, asked: Asked<'_>, backend: &AnyBackend) -> Response<Body> {
        let Some(encoded) = asked
            .path
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_suffix(SUFFIX))
        else {
            return text(
                StatusCode::NOT_FOUND,
                format!("no such page: {}", asked.path),
            );
        };
        if asked.method != Method::GET && asked.method != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        let decoded = percent_decode(encoded).unwrap_or_default();
        let name = match StationName::new(&decoded) {
            Ok(name) => name,
            Err(why) => return text(StatusCode::BAD_REQUEST, why),
        };
        let not_live = || {
            text(
                StatusCode::NOT_FOUND,
                format!(
                    "station {name} is not live: nobody broadcasts it now \
                     (GET /api/stations lists the live ones)"
                ),
            )
        };
        let icy = asked
            .headers
            .get("icy-metadata")
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"1");
        if asked.method == Method::HEAD {
            if !backend.is_live(&name).await {
                return not_live();
            }
            return self.head(&name, icy, &asked, full(bytes::Bytes::new()));
        }
        let tuned = match backend.tune_in(&name).await {
            Ok(tuned) => tuned,
            Err(refusal) => return text(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()),
        };
        if !tuned.station.view().live {
            return not_live();
        }
        let encoding = match self.join(&tuned.station) {
            Ok(encoding) => encoding,
            Err(e) => {
                tracing::error!(station = %name, error = %e, "cannot start the station's stream");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the stream cannot start: {e}"),
                );
            }
        };
        let body = listener::body(listener::Setup {
            rx: encoding.rx.clone(),
            icy,
            write_timeout: self.write_timeout,
            shutdown: self.shutdown.clone(),
            series: self.series.clone(),
            hold: Box::new((tuned, encoding)),
        });
        self.head(&name, icy, &asked, body)
    }

    /// The station's encoding: the running one, or a new one.
    fn join(&self, station: &Arc<Station>) -> std::io::Result<Arc<Encoding>> {
        // An encoding found unfit may be the last of it: it must drop after
        // the lock, since its `Drop` takes the lock (locals drop in reverse).
        let mut _unfit = None;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = running.get(&station.name).and_then(Weak::upgrade) {
            if Arc::ptr_eq(&e.station, station) && !e.rx.borrow().ended {
                return Ok(e);
            }
            _unfit = Some(e);
        }
        let (encoder, pcm_in, mp3) = engine::encoder(self.config.bitrate_kbps)?;
        let burst_samples = self.config.burst.as_millis() as u64 * engine::RATE / 1000;
        let (ring, rx) = Ring::new((burst_samples / ring::FRAME_SAMPLES) as usize);
        let stop = self.shutdown.child_token();
        let marks = Arc::default();
        self.tasks
            .spawn(ring::collect(mp3, ring, Arc::clone(&marks), stop.clone()));
        let feed = feed::Feed {
            station: station.clone(),
            media: self.media.clone(),
            encoder,
            pcm_in,
            lead: self.config.burst,
            marks,
            cpu: self.series.cpu_seconds.clone(),
            tasks: self.tasks.clone(),
            stop: stop.clone(),
        };
        self.tasks.spawn(feed.run());
        self.series.encoders.inc();
        tracing::info!(station = %station.name, "stream encoding started");
        let encoding = Arc::new(Encoding {
            station: station.clone(),
            rx,
            stop,
            running: self.running.clone(),
            series: self.series.clone(),
        });
        running.insert(station.name.clone(), Arc::downgrade(&encoding));
        Ok(encoding)
    }

    /// The stream's answer with `body`: HTTP/1.0 as Icecast answers (the
    /// body ends when the connection closes: no chunked encoding, which
    /// some radio devices do not read), with the ICY headers.
    fn head(&self, name: &StationName, icy: bool, asked: &Asked<'_>, body: Body) -> Response<Body> {
        let mut res = Response::new(body);
        *res.version_mut() = Version::HTTP_10;
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-store"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        let mut put = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        put("icy-name", name.to_string());
        put(
            "icy-description",
            format!("{name}, a station of a synchronized radio"),
        );
        put("icy-genre", "Various".into());
        put("icy-br", self.config.bitrate_kbps.to_string());
        put("icy-pub", "0".into());
        if let Some(host) = asked
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        {
            let station = percent_encoding::utf8_percent_encode(
                name.as_str(),
                percent_encoding::NON_ALPHANUMERIC,
            );
            put(
                "icy-url",
                format!("{}://{host}/?station={station}", asked.scheme),
            );
        }
        if icy {
            put("icy-metaint", icy::METAINT.to_string());
        }
        res
    }
}
