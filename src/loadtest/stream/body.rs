//! An HTTP audio stream's response as a reader sees it (and a fetched
//! track's, `--fetch-media`): the head (status, `Transfer-Encoding`,
//! `Content-Length`, `icy-br`) and the body's audio bytes, counted
//! through chunked framing when the server chunks (hyper does for an
//! HTTP/1.1 body of unknown length; Icecast does not), so the bytes
//! counted are the audio and nothing else.

/// What the response head says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// The status code (`ICY 200 OK` is 200).
    pub(crate) status: u16,
    pub(crate) chunked: bool,
    /// `Content-Length`, when given.
    pub(crate) length: Option<u64>,
    /// `icy-br`, in kb/s.
    pub(crate) kbps: Option<u32>,
    /// Where the body starts in the bytes read.
    pub(crate) body_at: usize,
}

/// Reads the head from the bytes read so far: `None` until its blank line
/// has arrived, `Err` when it is not an HTTP response.
pub(crate) fn head(buf: &[u8]) -> Option<Result<Head, String>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let proto = parts.next().unwrap_or_default();
    if !(proto.starts_with("HTTP/") || proto == "ICY") {
        return Some(Err("not_http".into()));
    }
    let Some(status) = parts.next().and_then(|s| s.parse::<u16>().ok()) else {
        return Some(Err("not_http".into()));
    };
    let mut head = Head {
        status,
        chunked: false,
        length: None,
        kbps: None,
        body_at: end,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "transfer-encoding" => {
                head.chunked = value.to_ascii_lowercase().contains("chunked");
            }
            "content-length" => head.length = value.parse().ok(),
            "icy-br" => {
                // Sometimes a list (`128,128`): the first.
                head.kbps = value
                    .split(',')
                    .next()
                    .and_then(|v| v.trim().parse().ok())
                    .filter(|&k| k > 0);
            }
            _ => {}
        }
    }
    Some(Ok(head))
}

/// Counts a body's audio bytes, through chunked framing or not.
#[derive(Debug)]
pub(crate) enum Body {
    /// Every byte is audio.
    Identity,
    Chunked(Chunk),
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// In a size line: the size so far, and whether an extension began.
    Size(u64, bool),
    /// In a chunk, this many bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// The last chunk (size 0) was read: the body ended.
    Done,
}

impl Body {
    pub(crate) fn new(chunked: bool) -> Self {
        if chunked {
            Body::Chunked(Chunk::Size(0, false))
        } else {
            Body::Identity
        }
    }

    /// Feeds the bytes read; gives how many of them are audio.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> usize {
        let Body::Chunked(state) = self else {
            return bytes.len();
        };
        let mut audio = 0;
        let mut i = 0;
        while i < bytes.len() {
            match *state {
                Chunk::Size(n, ext) => {
                    let b = bytes[i];
                    i += 1;
                    *state = match b {
                        b'\n' if n == 0 => Chunk::Done,
                        b'\n' => Chunk::Data(n),
                        b';' => Chunk::Size(n, true),
                        _ if ext => Chunk::Size(n, ext),
                        _ => match (b as char).to_digit(16) {
                            Some(d) => {
                                Chunk::Size(n.saturating_mul(16).saturating_add(u64::from(d)), ext)
                            }
                            // '\r', spaces: nothing to count.
                            None => Chunk::Size(n, ext),
                        },
                    };
                }
                Chunk::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    audio += take;
                    i += take;
                    let left = left - take as u64;
                    *state = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::DataEnd => {
                    if bytes[i] == b'\n' {
                        *state = Chunk::Size(0, false);
                    }
                    i += 1;
                }
                Chunk::Done => return audio,
            }
        }
        audio
    }

    /// Whether the body ended (the last chunk was read).
    pub(crate) fn ended(&self) -> bool {
        matches!(self, Body::Chunked(Chunk::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_of_http_and_icy() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nicy-br: 128\r\n\r\nab";
        let h = head(wire).unwrap().unwrap();
        assert_eq!((h.status, h.chunked, h.kbps), (200, true, Some(128)));
        assert_eq!(h.length, None);
        let ranged = head(b"HTTP/1.1 206 Partial Content\r\ncontent-length: 481115\r\n\r\n");
        assert_eq!(ranged.unwrap().unwrap().length, Some(481_115));
        assert_eq!(&wire[h.body_at..], b"ab");
        let icy = head(b"ICY 200 OK\r\nicy-br:128,128\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((icy.status, icy.chunked, icy.kbps), (200, false, Some(128)));
        assert!(head(b"HTTP/1.0 404 Not Found\r\n").is_none());
        assert_eq!(
            head(b"HTTP/1.0 404 Not Found\r\n\r\n")
                .unwrap()
                .unwrap()
                .status,
            404
        );
        assert!(head(b"SSH-2.0\r\n\r\n").unwrap().is_err());
    }

    #[test]
    fn chunked_bodies_count_their_data_however_split() {
        let wire = b"4\r\nabcd\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut body = Body::new(true);
            let n = body.feed(&wire[..split]) + body.feed(&wire[split..]);
            assert_eq!(n, 20, "split at {split}");
            assert!(body.ended());
        }
        let mut plain = Body::new(false);
        assert_eq!(plain.feed(b"0\r\n\r\n"), 5);
        assert!(!plain.ended());
    }
}
