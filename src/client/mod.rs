//! The shared client: URL handling, connecting (ws:// and wss:// through
//! rustls), the clock-offset estimate, reconnect backoff, and typed frames.
//! `radio broadcast`, `radio listen` and `radio loadtest` are built on it.

pub(crate) mod broadcast;
pub(crate) mod http;
pub(crate) mod listen;
pub(crate) mod mpv;
pub(crate) mod nodes;
pub(crate) mod position;
mod trust;

pub(crate) use position::clock;

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::protocol::{self, ClientMessage, ServerMessage};

/// A client's WebSocket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Turns what a person types into the WebSocket URL: `http(s)://` becomes
/// `ws(s)://`, a bare `host:port` gets `ws://`, and a missing path gets `/ws`.
/// Parsed as a URL (the `url` crate), so what is wrong is said exactly.
pub(crate) fn ws_url(input: &str) -> anyhow::Result<String> {
    let input = input.trim();
    let example = "write it like ws://127.0.0.1:8080 or https://radio.example.org";
    if !input.is_empty() && input.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{input:?} is a port, not a server; {example} (or 127.0.0.1:{input})");
    }
    let full = if input.contains("://") {
        input.to_owned()
    } else {
        format!("ws://{input}")
    };
    let mut url = url::Url::parse(&full)
        .map_err(|e| anyhow::anyhow!("{input:?} is not a URL ({e}); {example}"))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => bail!(
            "unsupported URL scheme {other:?} in {input:?}; use ws://, wss://, http:// or https://"
        ),
    };
    if url.host_str().is_none_or(str::is_empty) {
        bail!("the URL {input:?} has no host; {example}");
    }
    if url.set_scheme(scheme).is_err() {
        bail!("cannot use {input:?} as a WebSocket URL; {example}");
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/ws");
    }
    Ok(url.to_string())
}

/// The client side's WebSocket limits: small buffers, since a client reads
/// small frames (a listener in `radio loadtest` is one of thousands).
pub(crate) fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// `--ca-cert`: the TLS settings that trust that CA for `wss://`, set once
/// at start; without it the Mozilla roots are trusted.
static TRUSTED_CA: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
    std::sync::OnceLock::new();

/// Makes `wss://` and `https://` connections trust the certificate(s) in
/// the PEM file at `path` (`--ca-cert`) instead of the Mozilla roots: as
/// CAs, for a server with a private CA, and as the server's own certificate
/// when it is exactly one of them, for a self-signed one ([`trust`]).
/// `None` leaves the roots.
pub(crate) fn trust_ca(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let certs = crate::pem::read_certs(path).context("--ca-cert")?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = trust::CaOrPinned::new(&certs, provider.clone())
        .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    // Set once per process; a second call keeps the first.
    TRUSTED_CA.set(std::sync::Arc::new(config)).ok();
    Ok(())
}

/// The TLS settings of every client connection, `wss://` and `https://`
/// alike: the `--ca-cert` CA when one was given, else the Mozilla roots.
pub(crate) fn tls_config() -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    static ROOTS: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    if let Some(config) = TRUSTED_CA.get().or(ROOTS.get()) {
        return Ok(config.clone());
    }
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(ROOTS.get_or_init(|| std::sync::Arc::new(config)).clone())
}

/// Connects and reads the `welcome`. Returns the socket and the welcome's
/// session id.
pub(crate) async fn connect(url: &str) -> anyhow::Result<(Ws, String)> {
    let connector = Some(tokio_tungstenite::Connector::Rustls(tls_config()?));
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        url,
        Some(client_config()),
        true,
        connector,
    );
    let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Err(_) => bail!("cannot connect to {url}: no answer within 10s"),
        Ok(Ok(connected)) => connected,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(res)))
            if res.status() == 503 || res.status() == 429 =>
        {
            return Err(ServerFull::from_response(&res).into());
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(res))) => {
            bail!(refused_upgrade(url, res.status(), res.body().as_deref()))
        }
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context(format!("cannot connect to {url}"))),
    };
    let welcome = tokio::time::timeout(Duration::from_secs(10), next_message(&mut ws))
        .await
        .context("the server sent no welcome within 10s")??;
    match welcome {
        Some(ServerMessage::Welcome {
            protocol: v,
            session_id,
            ..
        }) => {
            if v != protocol::PROTOCOL_VERSION {
                bail!(
                    "the server speaks protocol {v}, this client {}; upgrade the older one",
                    protocol::PROTOCOL_VERSION
                );
            }
            Ok((ws, session_id))
        }
        Some(other) => bail!("expected welcome, got {other:?}"),
        None => bail!("the server closed the connection before its welcome"),
    }
}

/// Why the server refused the upgrade, in its own words when it gave
/// some (a 421 names the flag its operator must pass, a 403 the origin).
fn refused_upgrade(url: &str, status: ::http::StatusCode, body: Option<&[u8]>) -> String {
    let said = body
        .map(String::from_utf8_lossy)
        .map(|text| printable(text.trim()).into_owned())
        .filter(|text| !text.is_empty());
    match said {
        Some(said) => format!("cannot connect to {url}: the server answered {status}: {said}"),
        None => format!("cannot connect to {url}: the server answered {status}"),
    }
}

/// The server refused the upgrade for want of room: it holds all the
/// connections it may (`--max-connections`, 503), or all it allows from
/// this address (`--max-connections-per-ip`, 429).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerFull {
    #[error("the server is full (it holds all the connections it may)")]
    Server { retry_after: Duration },
    #[error(
        "the server holds all the connections it allows from this address \
         (its --max-connections-per-ip)"
    )]
    ThisAddress { retry_after: Duration },
}

impl ServerFull {
    /// Its `Retry-After`, or 5 s.
    pub(crate) fn retry_after(&self) -> Duration {
        match self {
            ServerFull::Server { retry_after } | ServerFull::ThisAddress { retry_after } => {
                *retry_after
            }
        }
    }

    fn from_response<B>(res: &::http::Response<B>) -> Self {
        let secs = res
            .headers()
            .get(::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(5);
        let retry_after = Duration::from_secs(secs.clamp(1, 300));
        match res.status().as_u16() {
            429 => ServerFull::ThisAddress { retry_after },
            _ => ServerFull::Server { retry_after },
        }
    }
}

/// After a failed connection attempt: how long to wait and what to say, or
/// the error that ends the client. A full server or address is waited for
/// (its `Retry-After`, plus up to a second so that its clients do not all
/// come back at once), even on the first attempt; another failure on the
/// first attempt ends the client (most likely a wrong `--url`); later ones
/// are retried with `backoff`.
pub(crate) fn after_failed_connect(
    e: &anyhow::Error,
    first: bool,
    backoff: &mut Backoff,
) -> anyhow::Result<(Duration, String)> {
    if let Some(full) = e.downcast_ref::<ServerFull>() {
        let delay = full.retry_after() + Duration::from_millis(fastrand::u64(0..1_000));
        return Ok((delay, format!("{full}; retrying in {}s", delay.as_secs())));
    }
    let text = crate::errors::text(e);
    if first {
        bail!("{text}\n{}", first_failure_hint(&text));
    }
    let delay = backoff.next_delay();
    Ok((delay, format!("{text}; retrying in {delay:.1?}")))
}

/// What to do when the first attempt to reach the server failed with
/// `text`: trust its certificate, or check that it runs at `--url`.
pub(crate) fn first_failure_hint(text: &str) -> &'static str {
    if untrusted_certificate(text) {
        "The server's certificate is not trusted: for a private CA or a self-signed \
         certificate, pass --ca-cert FILE (its CA, PEM)."
    } else {
        "Is `radio serve` running there? Check --url."
    }
}

/// Whether a failure's text is a TLS certificate we do not trust.
pub(crate) fn untrusted_certificate(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("certificate") || lower.contains("unknownissuer")
}

/// The wait a shutting-down server asks for, kept between 100 ms and a
/// minute: a server cannot make its clients spin, nor stall them for days.
pub(crate) fn reconnect_after(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(100, 60_000))
}

/// A connection whose server has said nothing (not even a pong) for this
/// long is taken for lost, and made again.
pub(crate) const SILENT_FOR: Duration = Duration::from_secs(15);

/// Whether `e` is the WebSocket failing (a send or a read), which a
/// client answers by reconnecting, unlike a refusal or a player's end.
pub(crate) fn is_connection_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
            .is_some()
    })
}

/// Sends one request.
pub(crate) async fn send(ws: &mut Ws, msg: &ClientMessage) -> anyhow::Result<()> {
    ws.send(Message::Text(protocol::encode(msg)))
        .await
        .context("cannot send to the server")
}

/// One frame from the server, decoded.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The text as received (what `--json` prints).
    pub text: String,
    pub msg: ServerMessage,
}

/// Reads the next server frame; `Ok(None)` when the connection closed.
/// Frames this client cannot decode are reported and skipped, so a newer
/// server's additions do not break an older client.
pub(crate) async fn next_frame(ws: &mut Ws) -> anyhow::Result<Option<Frame>> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e).context("connection to the server failed"),
            Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                Ok(msg) => {
                    return Ok(Some(Frame {
                        text: t.as_str().to_owned(),
                        msg,
                    }));
                }
                Err(e) => tracing::warn!(error = %e, frame = t.as_str(), "unreadable frame"),
            },
            Some(Ok(Message::Close(frame))) => {
                tracing::debug!(?frame, "server closed the connection");
                return Ok(None);
            }
            Some(Ok(_)) => {}
        }
    }
}

/// [`next_frame`] without the text.
pub(crate) async fn next_message(ws: &mut Ws) -> anyhow::Result<Option<ServerMessage>> {
    Ok(next_frame(ws).await?.map(|f| f.msg))
}

/// Estimates the offset of the server's clock from ours with ping/pong,
/// trusting the samples with the smallest round trip (their midpoint
/// assumption errs least), in the manner of NTP's clock filter.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClockOffset {
    /// Recent `(rtt_ms, offset_ms)` samples, newest last.
    samples: VecDeque<(i64, f64)>,
}

impl ClockOffset {
    const KEEP: usize = 16;
    const BEST: usize = 3;

    /// Records a pong: we sent at `sent_ms` (our clock), the server stamped
    /// `server_ms`, we received at `received_ms`.
    pub(crate) fn record(&mut self, sent_ms: i64, server_ms: i64, received_ms: i64) {
        let rtt = (received_ms - sent_ms).max(0);
        let offset = server_ms as f64 - (sent_ms as f64 + rtt as f64 / 2.0);
        if self.samples.len() == Self::KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back((rtt, offset));
    }

    fn best(&self) -> Vec<(i64, f64)> {
        let mut v: Vec<_> = self.samples.iter().copied().collect();
        v.sort_by_key(|s| s.0);
        v.truncate(Self::BEST);
        v
    }

    /// Server clock minus ours, in ms: the mean of the lowest-RTT samples.
    pub(crate) fn offset_ms(&self) -> Option<f64> {
        let best = self.best();
        if best.is_empty() {
            return None;
        }
        Some(best.iter().map(|s| s.1).sum::<f64>() / best.len() as f64)
    }

    /// The smallest round trip seen recently.
    pub(crate) fn rtt_ms(&self) -> Option<i64> {
        self.samples.iter().map(|s| s.0).min()
    }

    pub(crate) fn samples(&self) -> usize {
        self.samples.len()
    }

    /// The server's clock now, by our estimate.
    pub(crate) fn server_now_ms(&self) -> i64 {
        protocol::now_ms() + self.offset_ms().unwrap_or(0.0).round() as i64
    }
}

/// Ctrl-C or SIGTERM, as a level rather than an event: the signal is
/// watched from the start, so one that arrives while the client is busy
/// elsewhere (sending, reconnecting) is never missed, and every later wait on
/// the token returns at once.
pub(crate) fn quit_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let quit = token.clone();
    tokio::spawn(async move {
        crate::signals::terminate().await;
        quit.cancel();
    });
    token
}

/// Sends a `ping` stamped with our clock, waits for its `pong` and records
/// the sample. Other frames arriving meanwhile are skipped, so use it on a
/// connection that is not tuned in (or before tuning).
pub(crate) async fn sample_clock(ws: &mut Ws, clock: &mut ClockOffset) -> anyhow::Result<()> {
    let sent = protocol::now_ms();
    send(
        ws,
        &ClientMessage::Ping {
            id: None,
            client_time_ms: Some(sent),
        },
    )
    .await?;
    let wait = async {
        loop {
            match next_message(ws).await? {
                Some(ServerMessage::Pong {
                    client_time_ms: Some(c),
                    server_time_ms,
                    ..
                }) if c == sent => {
                    clock.record(sent, server_time_ms, protocol::now_ms());
                    return Ok(());
                }
                Some(_) => {}
                None => bail!("the server closed the connection while we measured its clock"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .context("the server sent no pong within 5s")?
}

/// Exponential backoff with full jitter, for reconnects.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    attempt: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            attempt: 0,
            base,
            max,
        }
    }

    /// The next delay: up to `base * 2^attempt`, capped at `max`, at least half of it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let cap = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        cap.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(15))
    }
}

/// Writes one line to stdout. Unlike `println!`, a reader that went away
/// (`radio listen --json | head`) is an error to act on, not a panic.
pub(crate) fn emit(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// `text` fit for a terminal: control characters (escape sequences a
/// broadcaster could put in a title, say) become spaces, and format
/// characters (Unicode category Cf: bidi overrides such as U+202E, which
/// reorder what follows on the line, and zero-width ones, which hide
/// text) are dropped.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(|c| c.is_control() || is_format(c)) {
        text.chars()
            .filter(|&c| !is_format(c))
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// Unicode's format characters (general category Cf, Unicode 16), as
/// ranges of code points; the standard library has no test for them.
const FORMAT: [(u32, u32); 21] = [
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(ws_url("ws://h:1/ws").unwrap(), "ws://h:1/ws");
        assert_eq!(ws_url("http://h:1").unwrap(), "ws://h:1/ws");
        assert_eq!(
            ws_url("https://radio.example/").unwrap(),
            "wss://radio.example/ws"
        );
        assert_eq!(ws_url("127.0.0.1:8080").unwrap(), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("wss://h/custom").unwrap(), "wss://h/custom");
        assert!(ws_url("ftp://h").is_err());
        assert!(ws_url("ws://").is_err());
        let port = ws_url("38835").unwrap_err().to_string();
        assert!(
            port.contains("is a port") && port.contains("127.0.0.1:38835"),
            "{port}"
        );
        let bad = ws_url("http://[::1").unwrap_err().to_string();
        assert!(bad.contains("not a URL"), "{bad}");
    }

    #[test]
    fn a_refused_upgrade_is_told_in_the_servers_words() {
        let why = refused_upgrade(
            "ws://radio.example:8080/ws",
            ::http::StatusCode::MISDIRECTED_REQUEST,
            Some(b"this server does not answer to the name \"radio.example\"; ... --allowed-hosts radio.example\n"),
        );
        assert!(why.contains("421 Misdirected Request"), "{why}");
        assert!(why.contains("--allowed-hosts radio.example"), "{why}");
        let bare = refused_upgrade("ws://h/ws", ::http::StatusCode::FORBIDDEN, Some(b"\x1b[2J"));
        assert!(bare.ends_with("answered 403 Forbidden:  [2J"), "{bare}");
        let none = refused_upgrade("ws://h/ws", ::http::StatusCode::FORBIDDEN, None);
        assert!(none.ends_with("answered 403 Forbidden"), "{none}");
    }

    #[test]
    fn printable_drops_format_characters() {
        assert_eq!(printable("plain title"), "plain title");
        assert_eq!(printable("a\u{1b}[2Jb"), "a [2Jb");
        // A right-to-left override would show "gpj.exe" as "exe.jpg".
        assert_eq!(printable("x\u{202e}gpj.exe"), "xgpj.exe");
        assert_eq!(printable("in\u{200b}vis\u{2066}ible\u{feff}"), "invisible");
        assert_eq!(printable("tag\u{e0041}"), "tag");
        // Letters and marks of other scripts stay.
        assert_eq!(printable("Björk – 東京 ﷺ"), "Björk – 東京 ﷺ");
    }

    #[test]
    fn clock_offset_prefers_small_round_trips() {
        let mut c = ClockOffset::default();
        // True offset +1000; a slow sample with asymmetric delay lies.
        c.record(0, 1_010, 20);
        c.record(100, 1_105, 110);
        c.record(200, 1_700, 1_400);
        c.record(300, 1_303, 306);
        let off = c.offset_ms().unwrap();
        assert!((off - 1_000.0).abs() < 2.0, "{off}");
        assert_eq!(c.rtt_ms(), Some(6));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d0 = b.next_delay();
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
