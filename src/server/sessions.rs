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
//! - **New sessions are rate limited per client address** (`--session-rate`
//!   a minute, 10 by default), so one client cannot churn the others' entries
//!   out of the LRU; a save to an existing session is not limited.
//! - **A body must arrive within the handshake timeout**, or the request is
//!   answered 408 and its connection closed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};

use crate::server::ratelimit::AddressBuckets;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::protocol::{MAX_TRACK_BYTES, random_token};
use crate::server::response::{Body, json, method_not_allowed, text};

/// The path sessions are served at.
pub(crate) const PATH: &str = "/api/session";
/// The session cookie's name.
pub(crate) const COOKIE: &str = "radio_session";
/// Random bytes in a session id (hex-encoded in the cookie).
const ID_BYTES: usize = 16;
/// Largest `PUT /api/session` body.
const MAX_BODY: usize = 2048;

/// What a session remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
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

/// What a request may do, from the router: who sent it and how long its
/// body may take.
pub(crate) struct Limits {
    pub client: IpAddr,
    pub body_timeout: Duration,
}

/// New-session budgets tracked at most; beyond it the one used longest ago
/// is forgotten (a flood of addresses cannot grow it, nor reset the rest).
const MAX_TRACKED: usize = 65_536;

/// Every private session.
pub(crate) struct Sessions {
    inner: Mutex<Inner>,
    ttl: Duration,
    max: usize,
    /// New sessions per minute per address (0: no limit).
    rate: u32,
    /// New sessions left per address (IPv6: per /64, /56 and /48).
    budgets: Mutex<AddressBuckets>,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, max: usize, rate_per_minute: u32) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ttl,
            max: max.max(1),
            rate: rate_per_minute,
            budgets: Mutex::new(AddressBuckets::new(
                f64::from(rate_per_minute) / 60.0,
                f64::from(rate_per_minute),
                MAX_TRACKED,
            )),
        }
    }

    /// Takes one new session from `client`'s budget: a bucket of `rate`
    /// refilled over a minute. `false` when it is empty.
    fn may_create(&self, client: IpAddr) -> bool {
        if self.rate == 0 {
            return true;
        }
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        budgets.take(client, tokio::time::Instant::now())
    }

    fn knows(&self, id: Option<&str>) -> bool {
        id.is_some_and(|id| self.lock().by_id.contains_key(id))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session's position, if `id` names a live session (and marks it used).
    pub(crate) fn get(&self, id: &str) -> Option<Position> {
        self.lock()
            .touch(id, Instant::now())
            .map(|e| e.position.clone())
    }

    /// Saves `position` under `id` when it names a session; otherwise creates
    /// a session with a new id. Returns the id used and whether it is new.
    pub(crate) fn put(&self, id: Option<&str>, position: Position) -> (String, bool) {
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
    pub(crate) fn sweep(&self) -> usize {
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
    pub(crate) async fn route(
        &self,
        req: Request<hyper::body::Incoming>,
        limits: Limits,
    ) -> Response<Body> {
        let cookie = session_cookie(req.headers());
        match *req.method() {
            Method::GET | Method::HEAD => {
                let position = cookie.and_then(|id| self.get(&id)).unwrap_or_default();
                json(StatusCode::OK, &position)
            }
            Method::PUT => self.save(req, cookie, limits).await,
            _ => method_not_allowed("GET, PUT"),
        }
    }

    /// `PUT`: saves the position in the body under the cookie's session (a
    /// new one, rate limited per address, without a known cookie).
    async fn save(
        &self,
        req: Request<hyper::body::Incoming>,
        cookie: Option<String>,
        limits: Limits,
    ) -> Response<Body> {
        if !self.knows(cookie.as_deref()) && !self.may_create(limits.client) {
            let mut res = text(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many new sessions from your address (at most {} a minute); \
                     keep the session cookie, or try again in a minute",
                    self.rate
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return res;
        }
        let position = match read_position(req, limits).await {
            Ok(p) => p,
            Err(refused) => return refused,
        };
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
}

/// The [`Position`] a `PUT` carries, read within the body timeout and size
/// limit; or the response that says why not (413, 408, 400).
async fn read_position(
    req: Request<hyper::body::Incoming>,
    limits: Limits,
) -> Result<Position, Response<Body>> {
    let read = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
            ));
        }
        Err(_) => {
            let mut res = text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {:?}; send it with the request",
                    limits.body_timeout
                ),
            );
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(res);
        }
    };
    let position: Position = serde_json::from_slice(&body).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            format!(
                "expected JSON {{\"track\": string or null, \"position_ms\": \
                 non-negative integer}}: {e}"
            ),
        )
    })?;
    if position
        .track
        .as_ref()
        .is_some_and(|t| t.len() > MAX_TRACK_BYTES)
    {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("track is longer than {MAX_TRACK_BYTES} bytes"),
        ));
    }
    Ok(position)
}

/// The session cookie's value, when it has the shape of an id we issue.
/// Public for the fuzz targets (`fuzz/`).
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
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
pub(crate) async fn sweep_task(
    sessions: Arc<Sessions>,
    every: Duration,
    shutdown: CancellationToken,
) {
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
        let s = Sessions::new(Duration::from_secs(60), 2, 0);
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
        let s = Sessions::new(Duration::from_secs(60), 10, 0);
        let forged = "0".repeat(32);
        let (id, new) = s.put(Some(&forged), Position::default());
        assert!(new);
        assert_ne!(id, forged);
        assert!(s.get(&forged).is_none());
    }

    #[test]
    fn sweep_removes_idle() {
        let s = Sessions::new(Duration::from_millis(0), 10, 0);
        s.put(None, Position::default());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.sweep(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn new_sessions_are_limited_per_address() {
        let s = Sessions::new(Duration::from_secs(60), 100, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!((0..3).all(|_| s.may_create(a)));
        assert!(!s.may_create(a));
        assert!(s.may_create(b));
    }

    /// Once 65,536 addresses were tracked, every budget was cleared, so
    /// an address out of its budget got it back by making others appear.
    /// Now the budget used longest ago is forgotten, one at a time.
    #[test]
    fn a_flood_of_addresses_does_not_reset_a_budget() {
        let s = Sessions::new(Duration::from_secs(60), 100, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| s.may_create(a)));
        for i in 0..=MAX_TRACKED as u32 {
            assert!(s.may_create(IpAddr::from((0x0a00_0000 + i).to_be_bytes())));
            if i % 1000 == 0 {
                assert!(!s.may_create(a), "out of its budget after {i} others");
            }
        }
        assert!(!s.may_create(a));
    }
}
