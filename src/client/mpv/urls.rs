//! Where mpv fetches a track: the URL the server's library gives it
//! (`/api/library`'s `url`, which names the file's version and starts with
//! the server's `--media-base-url` when it has one: a CDN or an object
//! store), as the web player does; for a track the library lacks, the
//! server's own `/media/{id}`, checked first (`HEAD`) so that a track the
//! server does not have is said as such.
//!
//! The library is fetched at the first track and again, at most every
//! [`REFETCH`], when a station plays a track it does not list (a rescan
//! may have added it), and when the listener moves to another node; a
//! station's track changes over a known library cost no request.

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;

use crate::client::http::{Endpoint, media_path};

/// A track the library lacks fetches the library again at most this often.
const REFETCH: Duration = Duration::from_secs(10);

/// Why a track is not given to mpv.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Missing {
    /// The server has no such track (404).
    NotInLibrary,
    /// The server refused it otherwise; what it answered.
    Refused(String),
}

/// One track of `/api/library`, as far as its URL goes.
#[derive(Debug, Deserialize)]
struct Entry {
    id: String,
    /// Absent from older servers: the server's path is used then.
    #[serde(default)]
    url: Option<String>,
}

/// The server's media URLs, by track id.
#[derive(Debug)]
pub(crate) struct MediaUrls {
    endpoint: Endpoint,
    /// Absolute `http(s)` URLs, from the last library fetched.
    by_id: HashMap<String, String>,
    fetched: Option<Instant>,
}

impl MediaUrls {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            by_id: HashMap::new(),
            fetched: None,
        }
    }

    /// The server the listener is on now; another one's library is fetched
    /// at the next track.
    pub(crate) fn set_endpoint(&mut self, endpoint: Endpoint) {
        if endpoint != self.endpoint {
            self.endpoint = endpoint;
            self.by_id.clear();
            self.fetched = None;
        }
    }

    /// Where mpv fetches `id`, for a track the station plays now.
    pub(crate) async fn locate(&mut self, id: &str) -> Result<String, Missing> {
        let stale = self.fetched.is_none_or(|at| at.elapsed() >= REFETCH);
        if !self.by_id.contains_key(id) && stale {
            self.fetch().await;
        }
        if let Some(url) = self.by_id.get(id) {
            return Ok(url.clone());
        }
        let path = media_path(id);
        match self.endpoint.head(&path).await {
            Ok(status) if status.is_success() => {}
            Ok(StatusCode::NOT_FOUND) => return Err(Missing::NotInLibrary),
            Ok(status) => return Err(Missing::Refused(format!("the server answered {status}"))),
            // Loading will tell; mpv's own message says more.
            Err(e) => tracing::debug!(error = %e, "cannot check the track"),
        }
        Ok(self.endpoint.url(&path))
    }

    /// Where mpv fetches `id` ahead of time (the station's next track,
    /// which the server announces from its library): no request here.
    pub(crate) fn known(&self, id: &str) -> String {
        self.by_id
            .get(id)
            .cloned()
            .unwrap_or_else(|| self.endpoint.url(&media_path(id)))
    }

    /// Fetches the library; on failure keeps what it had (each track then
    /// falls back to the server's path).
    async fn fetch(&mut self) {
        self.fetched = Some(Instant::now());
        let entries = match self.endpoint.get("/api/library").await {
            Ok((status, body)) if status.is_success() => {
                serde_json::from_slice::<Vec<Entry>>(&body).map_err(|e| e.to_string())
            }
            Ok((status, _)) => Err(format!("the server answered {status}")),
            Err(e) => Err(e.to_string()),
        };
        match entries {
            Ok(entries) => {
                let base = self.endpoint.url("/");
                self.by_id = entries
                    .into_iter()
                    .filter_map(|e| Some((absolute(&base, e.url.as_deref()?)?, e.id)))
                    .map(|(url, id)| (id, url))
                    .collect();
                tracing::debug!(tracks = self.by_id.len(), "the library's URLs");
            }
            Err(why) => tracing::debug!(why, "no library URLs; playing from the server's paths"),
        }
    }
}

/// `url` (absolute, or relative to the server at `base`) as an absolute
/// `http`/`https` URL; `None` for any other scheme: mpv opens local files
/// and other protocols too, which a server must not make it open.
fn absolute(base: &str, url: &str) -> Option<String> {
    let joined = url::Url::parse(base).ok()?.join(url).ok()?;
    matches!(joined.scheme(), "http" | "https").then(|| joined.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_urls_are_made_absolute_and_only_http() {
        let base = "http://127.0.0.1:8080/";
        assert_eq!(
            absolute(base, "/media/a%20b.wav?v=1-2").as_deref(),
            Some("http://127.0.0.1:8080/media/a%20b.wav?v=1-2")
        );
        assert_eq!(
            absolute(base, "https://cdn.example.com/radio/media/a.wav?v=1").as_deref(),
            Some("https://cdn.example.com/radio/media/a.wav?v=1")
        );
        assert_eq!(absolute(base, "file:///etc/passwd"), None);
        assert_eq!(absolute(base, "av://lavfi:sine"), None);
    }
}
