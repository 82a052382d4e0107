//! A real `redis-server` (installed by scripts/setup.sh) on a free loopback
//! port, without persistence; killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ::redis as redis_crate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use serde_json::json;

use super::poll::eventually;
use super::process::{free_port, kill};
use super::ws::Client;

pub(crate) struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// `Some` for a TLS-only Redis: its certificate and key, and the CA.
    tls: Option<[String; 3]>,
}

impl Redis {
    /// A running Redis, ready (it answers PING).
    pub(crate) async fn start() -> Redis {
        let mut r = Redis::not_started();
        r.spawn().await;
        r
    }

    /// A port for a Redis that is not running yet; [`Redis::spawn`] starts it.
    pub(crate) fn not_started() -> Redis {
        Redis {
            port: free_port(),
            child: None,
            tls: None,
        }
    }

    /// A running Redis that speaks TLS only (`--tls-port`), with the server
    /// certificate of `certs`, not asking clients for certificates.
    pub(crate) async fn start_tls(certs: &super::tls::Certs) -> Redis {
        let mut r = Redis::not_started();
        r.tls = Some([
            certs.arg("server.pem"),
            certs.arg("server.key"),
            certs.arg("ca.pem"),
        ]);
        r.spawn().await;
        r
    }

    pub(crate) fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://localhost:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Starts the server and waits until it answers PING.
    pub(crate) async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some([cert, key, ca]) => cmd
                .args(["--port", "0", "--tls-port", &port])
                .args(["--tls-cert-file", cert, "--tls-key-file", key])
                .args(["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        if self.tls.is_some() {
            // TLS: wait for the port, then for a PING through the radio client.
            let url = self.url();
            let ca = self.tls.as_ref().map(|t| t[2].clone()).unwrap_or_default();
            return eventually(
                &format!("redis-server (TLS) answers on port {port}"),
                async || ping_tls(&url, &ca).await,
            )
            .await;
        }
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
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Starts it again on the same port, empty.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// PING over `rediss://` trusting `ca`, as a cluster node connects.
async fn ping_tls(url: &str, ca: &str) -> Result<(), String> {
    let certs = redis_crate::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(ca).map_err(|e| e.to_string())?),
    };
    let client = redis_crate::Client::build_with_tls(url, certs).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis_crate::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// An acknowledged update, retried while the cluster says `unavailable`
/// (its Redis down or failing over); its `seq`.
pub(crate) async fn update_retrying(
    b: &mut Client,
    station: &str,
    track: &str,
    position_ms: u64,
) -> u64 {
    eventually("the update is accepted", async || {
        b.send(json!({"type":"update","station":station,"track":track,
            "position_ms":position_ms,"playing":true,"ack":true}))
            .await;
        let r = b.recv().await;
        match r["type"].as_str() {
            Some("ack") => Ok(r["seq"].as_u64().expect("ack has a seq")),
            Some("error") if r["code"] == "unavailable" => Err(r),
            _ => panic!("unexpected reply to update: {r}"),
        }
    })
    .await
}
