//! mpv's JSON IPC over its Unix socket: one JSON object a line each way.
//! Requests carry a `request_id` and are answered by one reply with the
//! same id; events (`file-loaded`, `end-file`, ...) come in between. One
//! reader task sorts them: replies to the request waiting for them, events
//! into a channel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

/// How long mpv may take to answer a request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The field added to each reply and event: its line's number on the
/// socket, so an event can be told to come after a reply ([`line_of`]).
const LINE: &str = "_line";

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A connection to mpv's IPC socket.
pub(crate) struct Ipc {
    writer: OwnedWriteHalf,
    waiting: Waiting,
    events: mpsc::UnboundedReceiver<Value>,
    reader: tokio::task::JoinHandle<()>,
    next_id: u64,
    /// The line of the last reply.
    replied_at: u64,
}

impl Ipc {
    /// Connects to the socket at `path`.
    pub(crate) async fn connect(path: &Path) -> std::io::Result<Ipc> {
        let stream = UnixStream::connect(path).await?;
        let (read, writer) = stream.into_split();
        let waiting: Waiting = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let sorted = waiting.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            let mut n = 0u64;
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
                    tracing::debug!(line, "unreadable line from mpv");
                    continue;
                };
                n += 1;
                if let Some(fields) = v.as_object_mut() {
                    fields.insert(LINE.to_owned(), n.into());
                }
                if let Some(id) = v.get("request_id").and_then(Value::as_u64) {
                    let waiter = lock(&sorted).remove(&id);
                    // The request may have timed out; then nobody waits.
                    if waiter.is_some_and(|tx| tx.send(v).is_err()) {
                        tracing::debug!(id, "mpv answered a request nobody waits for");
                    }
                } else if v.get("event").is_some() && events_tx.send(v).is_err() {
                    return;
                }
            }
            // mpv closed the socket: requests waiting get no answer.
            lock(&sorted).clear();
        });
        Ok(Ipc {
            writer,
            waiting,
            events,
            reader,
            next_id: 1,
            replied_at: 0,
        })
    }

    /// Runs a command (its arguments as a JSON array, or an object with
    /// named arguments) and returns its `data`; mpv's `error` otherwise.
    pub(crate) async fn command(&mut self, command: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id, tx);
        let mut line = json!({"command": command, "request_id": id}).to_string();
        line.push('\n');
        if let Err(e) = self.writer.write_all(line.as_bytes()).await {
            lock(&self.waiting).remove(&id);
            return Err(e).context("cannot write to mpv's IPC socket");
        }
        let reply = match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => bail!("mpv closed its IPC socket"),
            Err(_) => {
                lock(&self.waiting).remove(&id);
                bail!("mpv did not answer {command} within {REPLY_TIMEOUT:?}");
            }
        };
        self.replied_at = line_of(&reply);
        match reply.get("error").and_then(Value::as_str) {
            Some("success") => Ok(reply.get("data").cloned().unwrap_or(Value::Null)),
            Some(error) => bail!("mpv refused {command}: {error}"),
            None => bail!("mpv answered {command} with {reply}"),
        }
    }

    /// A property's value; `None` while it is unavailable (no file loaded).
    pub(crate) async fn get(&mut self, property: &str) -> anyhow::Result<Option<Value>> {
        match self.command(json!(["get_property", property])).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.to_string().ends_with("property unavailable") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn set(&mut self, property: &str, value: Value) -> anyhow::Result<()> {
        self.command(json!(["set_property", property, value]))
            .await
            .map(drop)
    }

    /// The line of the last reply: events on later lines happened after
    /// mpv took that request.
    pub(crate) fn replied_at(&self) -> u64 {
        self.replied_at
    }

    /// The next event; `None` once mpv closed the socket.
    pub(crate) async fn event(&mut self) -> Option<Value> {
        self.events.recv().await
    }
}

impl Drop for Ipc {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The line an event or reply came on (0 if unknown).
pub(crate) fn line_of(v: &Value) -> u64 {
    v.get(LINE).and_then(Value::as_u64).unwrap_or(0)
}

/// A lock that a panic elsewhere does not poison.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
