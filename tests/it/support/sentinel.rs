//! Redis with Sentinel, all real processes on free loopback ports: a
//! master, a replica of it, and three Sentinels (`redis-server --sentinel`,
//! quorum 2) watching them; all killed on drop. The Sentinels take a master
//! for dead after a second without an answer, so a failover takes a few
//! seconds. A [`Setup`] adds passwords (on the data nodes, on the
//! Sentinels, or both) and TLS on every link.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

use ::redis as redis_crate;

use super::fixtures::TempDir;
use super::poll::eventually;
use super::process::{free_port, kill};
use super::tls::Certs;

/// The master's name in the Sentinels' configuration.
pub(crate) const MASTER: &str = "radiomaster";

/// What the Redis servers and Sentinels require.
#[derive(Clone, Copy, Default)]
pub(crate) struct Setup<'a> {
    /// The data nodes' password: `requirepass` and `masterauth` on the
    /// master and the replica, `sentinel auth-pass` on the Sentinels.
    pub password: Option<&'a str>,
    /// The Sentinels' own `requirepass` (they share it, and use it with
    /// each other).
    pub sentinel_password: Option<&'a str>,
    /// TLS only, on every node and every link between them (replication
    /// and the Sentinels' too), with `certs`' server certificate; no client
    /// certificates asked.
    pub tls: Option<&'a Certs>,
}

pub(crate) struct Sentinels {
    /// Redis servers (the first started as master) by port.
    redis: HashMap<u16, Child>,
    sentinels: Vec<(u16, Child)>,
    password: Option<String>,
    sentinel_password: Option<String>,
    /// The CA's PEM, for TLS.
    ca: Option<Vec<u8>>,
    _dir: TempDir,
}

fn redis_server(args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (scripts/setup.sh installs it)")
}

impl Sentinels {
    /// Master, replica and Sentinels, ready: the replica in sync, and every
    /// Sentinel knowing the replica and the two other Sentinels.
    pub(crate) async fn start() -> Sentinels {
        Sentinels::start_with(Setup::default()).await
    }

    /// As [`Sentinels::start`], with the passwords and TLS of `setup`.
    pub(crate) async fn start_with(setup: Setup<'_>) -> Sentinels {
        let dir = TempDir::new("sentinel");
        let master = free_port();
        let replica = free_port();
        let mut common: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .map(String::from)
            .to_vec();
        if let Some(pw) = setup.password {
            common.extend(["--requirepass", pw, "--masterauth", pw].map(String::from));
        }
        let port_args = |port: u16| -> Vec<String> {
            match setup.tls {
                None => vec!["--port".into(), port.to_string()],
                Some(certs) => vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    certs.arg("server.pem"),
                    "--tls-key-file".into(),
                    certs.arg("server.key"),
                    "--tls-ca-cert-file".into(),
                    certs.arg("ca.pem"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                    "--tls-replication".into(),
                    "yes".into(),
                ],
            }
        };
        let args = |port: u16, extra: &[String]| -> Vec<String> {
            [port_args(port), common.clone(), extra.to_vec()].concat()
        };
        let start = |args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            redis_server(&args)
        };
        let mut redis = HashMap::new();
        redis.insert(master, start(args(master, &[])));
        let follow = ["--replicaof", "127.0.0.1", &master.to_string()].map(String::from);
        redis.insert(replica, start(args(replica, &follow)));
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let mut conf = match setup.tls {
                None => format!("port {port}\n"),
                Some(certs) => format!(
                    "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                     tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                    certs.arg("server.pem"),
                    certs.arg("server.key"),
                    certs.arg("ca.pem"),
                ),
            };
            conf += &format!(
                "bind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 4000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir = dir.arg()
            );
            if let Some(pw) = setup.password {
                // Quoted: a password may hold a space.
                conf += &format!("sentinel auth-pass {MASTER} {pw:?}\n");
            }
            if let Some(pw) = setup.sentinel_password {
                conf += &format!("requirepass {pw:?}\n");
            }
            let name = format!("sentinel-{i}.conf");
            dir.write(&name, conf);
            let path = dir.path().join(&name);
            let path = path.to_str().expect("utf-8 temp path");
            sentinels.push((port, redis_server(&[path, "--sentinel"])));
        }
        let s = Sentinels {
            redis,
            sentinels,
            password: setup.password.map(String::from),
            sentinel_password: setup.sentinel_password.map(String::from),
            ca: setup
                .tls
                .map(|c| std::fs::read(c.path("ca.pem")).expect("the CA")),
            _dir: dir,
        };
        s.wait_settled(master, replica).await;
        s
    }

    /// `redis+sentinel://` (`rediss+sentinel://` with TLS) naming the three
    /// Sentinels and the master, with `userinfo` (`:password@`, already
    /// %-encoded) in front of the Sentinels when given.
    pub(crate) fn url_with(&self, userinfo: &str) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.ca.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{userinfo}{}/{MASTER}", hosts.join(","))
    }

    /// [`Sentinels::url_with`] without a password.
    pub(crate) fn url(&self) -> String {
        self.url_with("")
    }

    /// `cmd`'s answer from the Redis (or Sentinel) at `port`, over TLS
    /// and with the password each needs.
    async fn query<T: redis_crate::FromRedisValue>(
        &self,
        port: u16,
        cmd: &redis_crate::Cmd,
    ) -> Result<T, String> {
        use redis_crate::IntoConnectionInfo as _;
        let is_sentinel = self.sentinels.iter().any(|(p, _)| *p == port);
        let password = if is_sentinel {
            &self.sentinel_password
        } else {
            &self.password
        };
        let e = |e: redis_crate::RedisError| e.to_string();
        let url = match self.ca {
            Some(_) => format!("rediss://127.0.0.1:{port}"),
            None => format!("redis://127.0.0.1:{port}"),
        };
        let mut info = url.into_connection_info().map_err(e)?;
        if let Some(pw) = password {
            let settings = info.redis_settings().clone().set_password(pw.as_str());
            info = info.set_redis_settings(settings);
        }
        let client = match &self.ca {
            None => redis_crate::Client::open(info),
            Some(ca) => redis_crate::Client::build_with_tls(
                info,
                redis_crate::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
        }
        .map_err(e)?;
        let mut conn = client.get_multiplexed_async_connection().await.map_err(e)?;
        cmd.query_async(&mut conn).await.map_err(e)
    }

    /// Waits until the replica follows `master` and every Sentinel knows
    /// it and its two peers: before that, a failover could not happen.
    async fn wait_settled(&self, master: u16, replica: u16) {
        eventually("the replica is in sync with the master", async || {
            let info: String = self
                .query(replica, redis_crate::cmd("INFO").arg("replication"))
                .await?;
            info.contains("master_link_status:up")
                .then_some(())
                .ok_or(info)
        })
        .await;
        for (port, _) in &self.sentinels {
            let port = *port;
            eventually(
                &format!("Sentinel {port} knows the replica and its peers"),
                async || {
                    let replicas: Vec<HashMap<String, String>> = self
                        .query(
                            port,
                            redis_crate::cmd("SENTINEL").arg("replicas").arg(MASTER),
                        )
                        .await?;
                    let peers: Vec<HashMap<String, String>> = self
                        .query(
                            port,
                            redis_crate::cmd("SENTINEL").arg("sentinels").arg(MASTER),
                        )
                        .await?;
                    let knows_replica = replicas
                        .iter()
                        .any(|r| r.get("port") == Some(&replica.to_string()));
                    let at = self.master_port_at(port).await?;
                    (knows_replica && peers.len() == 2 && at == master)
                        .then_some(())
                        .ok_or(format!(
                            "{} replicas, {} peers, master at {at}",
                            replicas.len(),
                            peers.len()
                        ))
                },
            )
            .await;
        }
    }

    async fn master_port_at(&self, sentinel: u16) -> Result<u16, String> {
        let addr: Vec<String> = self
            .query(
                sentinel,
                redis_crate::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER),
            )
            .await?;
        addr.get(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{addr:?}"))
    }

    /// The master's port, as the first Sentinel that answers names it.
    pub(crate) async fn master_port(&self) -> u16 {
        eventually("a Sentinel names the master", async || {
            let mut last = String::new();
            for (port, _) in &self.sentinels {
                match self.master_port_at(*port).await {
                    Ok(p) => return Ok(p),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
        .await
    }

    /// Kills the master outright (SIGKILL; nothing of it is saved) and
    /// gives its port.
    pub(crate) async fn kill_master(&mut self) -> u16 {
        let port = self.master_port().await;
        if let Some(mut child) = self.redis.remove(&port) {
            kill(&mut child);
        }
        port
    }

    /// Waits until every Sentinel names a master other than `old`, and
    /// that master says it is one; gives its port.
    pub(crate) async fn wait_failover(&self, old: u16) -> u16 {
        eventually("the Sentinels promote the replica", async || {
            let mut ports = Vec::new();
            for (port, _) in &self.sentinels {
                ports.push(self.master_port_at(*port).await?);
            }
            let new = ports[0];
            if new == old || ports.iter().any(|&p| p != new) {
                return Err(format!("masters named: {ports:?}"));
            }
            let role: Vec<redis_crate::Value> = self.query(new, &redis_crate::cmd("ROLE")).await?;
            match role.first() {
                Some(redis_crate::Value::BulkString(b)) if b == b"master" => Ok(new),
                other => Err(format!("{new} says it is {other:?}")),
            }
        })
        .await
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            kill(child);
        }
        for child in self.redis.values_mut() {
            kill(child);
        }
    }
}
