//! Private player sessions: where each browser was in the library, so a
//! reload resumes there (`GET`/`PUT /api/session`).
//!
//! Why it is built this way (the seed's `get_or_create_position` grew without
//! bound and was cleaned up in the request path):
//! - **Ids are issued by the server only.** A cookie value is a key into the
//!   map or it is ignored; an unknown or forged value never creates an entry
//!   under that name. A `GET` never allocates: a browser without a session
//!   gets the empty state, and the first `PUT` creates its session with a
//!   fresh random id (128 bits from the OS).
//! - **Bounded.** At most `--max-sessions` entries; beyond it the least
//!   recently used is evicted. Recency is a counter kept in a `BTreeMap`
//!   beside the map, so eviction and expiry pop from its front without a scan.
//! - **Expiry off the request path.** [`sweep_task`] runs every
//!   `--session-sweep` in the server's task tracker, removes sessions idle
//!   longer than `--session-ttl`, and stops on shutdown.
//! - The cookie is `HttpOnly` (scripts cannot read it), `SameSite=Lax` (not
//!   sent on cross-site subrequests), `Path=/`, and lives as long as the TTL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::protocol::{MAX_TRACK_BYTES, random_token};
use crate::server::response::{Body, json, method_not_allowed, text};

/// The path sessions are served at.
pub const PATH: &str = "/api/session";
/// The session cookie's name.
pub const COOKIE: &str = "radio_session";
/// Random bytes in a session id (hex-encoded in the cookie).
const ID_BYTES: usize = 16;
/// Largest `PUT /api/session` body.
const MAX_BODY: usize = 2048;

/// What a session remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub track: Option<String>,
    #[serde(default)]
    pub position_ms: u64,
}

#[derive(Debug)]
struct Entry {
    position: Position,
    last_used: Instant,
    /// This entry's key in `Inner::recency`.
    tick: u64,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Entry>,
    /// Use order: the smallest tick is the least recently used.
    recency: BTreeMap<u64, String>,
    next_tick: u64,
}

impl Inner {
    fn touch(&mut self, id: &str, now: Instant) -> Option<&mut Entry> {
        let tick = self.next_tick;
        let entry = self.by_id.get_mut(id)?;
        self.recency.remove(&entry.tick);
        self.recency.insert(tick, id.to_owned());
        self.next_tick += 1;
        entry.tick = tick;
        entry.last_used = now;
        Some(entry)
    }

    fn remove_oldest(&mut self) -> bool {
        match self.recency.pop_first() {
            Some((_, id)) => {
                self.by_id.remove(&id);
                true
            }
            None => false,
        }
    }
}

/// Every private session.
pub struct Sessions {
    inner: Mutex<Inner>,
    ttl: Duration,
    max: usize,
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session's position, if `id` names a live session (and marks it used).
    pub fn get(&self, id: &str) -> Option<Position> {
        self.lock()
            .touch(id, Instant::now())
            .map(|e| e.position.clone())
    }

    /// Saves `position` under `id` when it names a session; otherwise creates
    /// a session with a new id. Returns the id used and whether it is new.
    pub fn put(&self, id: Option<&str>, position: Position) -> (String, bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(id) = id {
            if let Some(e) = inner.touch(id, now) {
                e.position = position;
                return (id.to_owned(), false);
            }
        }
        while inner.by_id.len() >= self.max && inner.remove_oldest() {}
        let id = random_token(ID_BYTES);
        let tick = inner.next_tick;
        inner.next_tick += 1;
        inner.recency.insert(tick, id.clone());
        inner.by_id.insert(
            id.clone(),
            Entry {
                position,
                last_used: now,
                tick,
            },
        );
        (id, true)
    }

    /// Removes sessions idle longer than the TTL; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut removed = 0;
        // Recency order is use order, so the idle ones are all at the front.
        while let Some((_, id)) = inner.recency.first_key_value() {
            let idle = inner
                .by_id
                .get(id)
                .is_none_or(|e| now.duration_since(e.last_used) > self.ttl);
            if !idle {
                break;
            }
            inner.remove_oldest();
            removed += 1;
        }
        removed
    }

    /// `GET`/`PUT /api/session` ([`PATH`]).
    pub async fn route(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let cookie = session_cookie(req.headers());
        match *req.method() {
            Method::GET | Method::HEAD => {
                let position = cookie.and_then(|id| self.get(&id)).unwrap_or_default();
                json(StatusCode::OK, &position)
            }
            Method::PUT => {
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
                        );
                    }
                };
                let position: Position = match serde_json::from_slice(&body) {
                    Ok(p) => p,
                    Err(e) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "expected JSON {{\"track\": string or null, \"position_ms\": \
                                 non-negative integer}}: {e}"
                            ),
                        );
                    }
                };
                if position
                    .track
                    .as_ref()
                    .is_some_and(|t| t.len() > MAX_TRACK_BYTES)
                {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("track is longer than {MAX_TRACK_BYTES} bytes"),
                    );
                }
                let (id, _new) = self.put(cookie.as_deref(), position.clone());
                let mut res = json(StatusCode::OK, &position);
                // Sent on every save so the cookie's lifetime follows use.
                let cookie = format!(
                    "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
                    self.ttl.as_secs().max(1)
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    res.headers_mut().insert(header::SET_COOKIE, v);
                }
                res
            }
            _ => method_not_allowed("GET, PUT"),
        }
    }
}

/// The session cookie's value, when it has the shape of an id we issue.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| v.len() == ID_BYTES * 2 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Sweeps idle sessions every `every` until shutdown.
pub async fn sweep_task(sessions: Arc<Sessions>, every: Duration, shutdown: CancellationToken) {
    let every = every.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let removed = sessions.sweep();
        if removed > 0 {
            tracing::debug!(removed, left = sessions.len(), "idle sessions swept");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_evicts_least_recently_used() {
        let s = Sessions::new(Duration::from_secs(60), 2);
        let (a, _) = s.put(None, Position::default());
        let (b, _) = s.put(None, Position::default());
        assert!(s.get(&a).is_some()); // a is now newer than b
        let (c, _) = s.put(None, Position::default());
        assert_eq!(s.len(), 2);
        assert!(s.get(&b).is_none());
        assert!(s.get(&a).is_some());
        assert!(s.get(&c).is_some());
    }

    #[test]
    fn unknown_ids_are_not_adopted() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let forged = "0".repeat(32);
        let (id, new) = s.put(Some(&forged), Position::default());
        assert!(new);
        assert_ne!(id, forged);
        assert!(s.get(&forged).is_none());
    }

    #[test]
    fn sweep_removes_idle() {
        let s = Sessions::new(Duration::from_millis(0), 10);
        s.put(None, Position::default());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.sweep(), 1);
        assert!(s.is_empty());
    }
}
