//! A real `redis-server` (installed by scripts/setup.sh) on a free loopback
//! port, without persistence; killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::poll::eventually;
use super::process::{free_port, kill};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// A running Redis, ready (it answers PING).
    pub async fn start() -> Redis {
        let mut r = Redis::not_started();
        r.spawn().await;
        r
    }

    /// A port for a Redis that is not running yet; [`Redis::spawn`] starts it.
    pub fn not_started() -> Redis {
        Redis {
            port: free_port(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server and waits until it answers PING.
    pub async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        eventually(
            &format!("redis-server answers PING on port {port}"),
            async || {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())?;
                s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
                let mut buf = [0u8; 16];
                let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
                    .await
                    .map_err(|_| "no answer within 1 s".to_owned())?
                    .map_err(|e| e.to_string())?;
                buf[..n]
                    .starts_with(b"+PONG")
                    .then_some(())
                    .ok_or_else(|| String::from_utf8_lossy(&buf[..n]).into_owned())
            },
        )
        .await;
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
