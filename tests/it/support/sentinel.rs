//! Redis with Sentinel, all real processes on free loopback ports: a
//! master, a replica of it, and three Sentinels (`redis-server --sentinel`,
//! quorum 2) watching them; all killed on drop. The Sentinels take a master
//! for dead after a second without an answer, so a failover takes a few
//! seconds.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

use ::redis as redis_crate;

use super::fixtures::TempDir;
use super::poll::eventually;
use super::process::{free_port, kill};

/// The master's name in the Sentinels' configuration.
pub(crate) const MASTER: &str = "radiomaster";

pub(crate) struct Sentinels {
    /// Redis servers (the first started as master) by port.
    redis: HashMap<u16, Child>,
    sentinels: Vec<(u16, Child)>,
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

async fn query<T: redis_crate::FromRedisValue>(
    port: u16,
    cmd: &redis_crate::Cmd,
) -> Result<T, String> {
    let client = redis_crate::Client::open(format!("redis://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    cmd.query_async(&mut conn).await.map_err(|e| e.to_string())
}

impl Sentinels {
    /// Master, replica and Sentinels, ready: the replica in sync, and every
    /// Sentinel knowing the replica and the two other Sentinels.
    pub(crate) async fn start() -> Sentinels {
        let dir = TempDir::new("sentinel");
        let master = free_port();
        let replica = free_port();
        let common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let mut redis = HashMap::new();
        let m = master.to_string();
        redis.insert(
            master,
            redis_server(&[&["--port", &m][..], &common].concat()),
        );
        let r = replica.to_string();
        let replica_args = [&["--port", &r, "--replicaof", "127.0.0.1", &m][..], &common].concat();
        redis.insert(replica, redis_server(&replica_args));
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 4000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir = dir.arg()
            );
            let name = format!("sentinel-{i}.conf");
            dir.write(&name, conf);
            let path = dir.path().join(&name);
            let path = path.to_str().expect("utf-8 temp path");
            sentinels.push((port, redis_server(&[path, "--sentinel"])));
        }
        let s = Sentinels {
            redis,
            sentinels,
            _dir: dir,
        };
        s.wait_settled(master, replica).await;
        s
    }

    /// `redis+sentinel://` naming the three Sentinels and the master.
    pub(crate) fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// Waits until the replica follows `master` and every Sentinel knows
    /// it and its two peers: before that, a failover could not happen.
    async fn wait_settled(&self, master: u16, replica: u16) {
        eventually("the replica is in sync with the master", async || {
            let info: String = query(replica, redis_crate::cmd("INFO").arg("replication")).await?;
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
                    let replicas: Vec<HashMap<String, String>> = query(
                        port,
                        redis_crate::cmd("SENTINEL").arg("replicas").arg(MASTER),
                    )
                    .await?;
                    let peers: Vec<HashMap<String, String>> = query(
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
        let addr: Vec<String> = query(
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
            let role: Vec<redis_crate::Value> = query(new, &redis_crate::cmd("ROLE")).await?;
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
