//! Plain HTTP requests from the CLI to the server it talks to: `GET
//! /api/library` (`radio broadcast`) and `HEAD /media/{id}` (`radio listen
//! --player mpv`). One request per connection over hyper's HTTP/1 client,
//! through rustls for `https://`, bounded in time and size.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest body read (a library of ~200,000 tracks).
const MAX_BODY: usize = 64 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No connection: nothing listens there, or the name does not resolve.
    #[error("cannot connect to {url}: {why}")]
    Unreachable { url: String, why: String },
    /// Connected, but the exchange failed (TLS, protocol, timeout, size).
    #[error("{url}: {why}")]
    Failed { url: String, why: String },
}

/// The server's HTTP side, from the `--url` a client was given.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoint {
    tls: bool,
    /// `host:port` as written (the `Host` header).
    authority: String,
    /// The host to connect to and name in TLS, without brackets.
    host: String,
    port: u16,
}

impl Endpoint {
    /// The HTTP side of a WebSocket URL (as [`super::ws_url`] returns it):
    /// same host and port, `http` for `ws` and `https` for `wss`; the path is
    /// not kept (the library is at `/api/library` on that host).
    pub(crate) fn of_ws_url(ws_url: &str) -> anyhow::Result<Self> {
        let (tls, rest) = if let Some(rest) = ws_url.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = ws_url.strip_prefix("ws://") {
            (false, rest)
        } else {
            anyhow::bail!("{ws_url:?} is not a ws:// or wss:// URL");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        // Credentials in a URL are not ours to send anywhere else.
        let authority = authority.rsplit('@').next().unwrap_or_default().to_owned();
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| anyhow::anyhow!("unclosed [ in the host of {ws_url:?}"))?;
            (host.to_owned(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.clone(), None),
            }
        };
        let port = match port {
            None | Some("") => default_port,
            Some(p) => p
                .parse()
                .map_err(|_| anyhow::anyhow!("the port {p:?} in {ws_url:?} is not a number"))?,
        };
        if host.is_empty() {
            anyhow::bail!("the URL {ws_url:?} has no host");
        }
        Ok(Self {
            tls,
            authority,
            host,
            port,
        })
    }

    /// The full URL of `path` (which starts with `/`) on this server.
    pub(crate) fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.authority)
    }

    /// `GET path`: the status and the body (at most 64 MiB).
    pub(crate) async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), HttpError> {
        self.request(Method::GET, path).await
    }

    /// `HEAD path`: the status.
    pub(crate) async fn head(&self, path: &str) -> Result<StatusCode, HttpError> {
        Ok(self.request(Method::HEAD, path).await?.0)
    }

    async fn request(&self, method: Method, path: &str) -> Result<(StatusCode, Bytes), HttpError> {
        let url = self.url(path);
        let failed = |why: String| HttpError::Failed {
            url: url.clone(),
            why,
        };
        let tcp = match tokio::time::timeout(
            TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                return Err(HttpError::Unreachable {
                    url,
                    why: e.to_string(),
                });
            }
            Err(_) => {
                return Err(HttpError::Unreachable {
                    url,
                    why: format!("no answer within {TIMEOUT:?}"),
                });
            }
        };
        let exchange = async {
            if self.tls {
                let tls = self.tls_handshake(tcp).await?;
                self.exchange(tls, method, path).await
            } else {
                self.exchange(tcp, method, path).await
            }
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(r) => r.map_err(failed),
            Err(_) => Err(failed(format!("no answer within {TIMEOUT:?}"))),
        }
    }

    async fn tls_handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let config = crate::client::tls_config().map_err(|e| format!("TLS: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("{:?} is not a TLS server name: {e}", self.host))?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))
    }

    async fn exchange<S>(
        &self,
        io: S,
        method: Method,
        path: &str,
    ) -> Result<(StatusCode, Bytes), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        // The connection runs beside the request and ends with it.
        let conn = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(
                header::USER_AGENT,
                concat!("radio/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        drop(sender);
        conn.abort();
        Ok((status, body))
    }
}

/// `id` as a URL path below `/media/`: every byte but unreserved ones and
/// `/` percent-encoded (the server decodes it back).
pub(crate) fn media_path(id: &str) -> String {
    let mut out = String::from("/media/");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_ws_urls() {
        let e = Endpoint::of_ws_url("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(e.url("/api/library"), "http://127.0.0.1:8080/api/library");
        assert_eq!((e.host.as_str(), e.port, e.tls), ("127.0.0.1", 8080, false));
        let e = Endpoint::of_ws_url("wss://radio.example.org/live/ws").unwrap();
        assert_eq!(e.url("/x"), "https://radio.example.org/x");
        assert_eq!(e.port, 443);
        let e = Endpoint::of_ws_url("ws://[::1]:9/ws").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9));
        assert_eq!(e.url("/"), "http://[::1]:9/");
        let e = Endpoint::of_ws_url("ws://user:pw@h/ws").unwrap();
        assert_eq!(e.url("/"), "http://h/");
        assert!(Endpoint::of_ws_url("ws://h:port/ws").is_err());
        assert!(Endpoint::of_ws_url("http://h/").is_err());
    }

    #[test]
    fn media_paths_are_encoded() {
        assert_eq!(
            media_path("Artist/01 Side A?.mp3"),
            "/media/Artist/01%20Side%20A%3F.mp3"
        );
        assert_eq!(media_path("é.ogg"), "/media/%C3%A9.ogg");
    }
}
