//! The `stations` listing under a flood: each connection's `list_stations`
//! rate (`--list-rate`), and, in cluster mode, one listing at a time, read
//! from Redis in bounded batches, while a broadcaster's updates keep being
//! acknowledged.

use std::time::Duration;

use ::redis as redis_crate;
use radio::{BackendConfig, RedisConfig};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{Client, Redis, Server, eventually};

/// A connection asking for the list more often than `--list-rate` is
/// answered `rate_limited`; another connection is not.
#[tokio::test]
async fn list_stations_is_rate_limited_per_connection() {
    let server = Server::with(|c| c.conn.list_rate = 2);
    let mut flood = Client::connect(&server).await;
    for _ in 0..10 {
        flood.send(json!({"type":"list_stations"})).await;
    }
    let (mut lists, mut limited) = (0, 0);
    for _ in 0..10 {
        let r = flood.recv().await;
        match r["type"].as_str() {
            Some("stations") => lists += 1,
            Some("error") => {
                assert_eq!(r["code"], "rate_limited", "{r}");
                assert_eq!(r["request_type"], "list_stations", "{r}");
                limited += 1;
            }
            _ => panic!("unexpected {r}"),
        }
    }
    // Bursts of twice the rate.
    assert!(
        (4..=5).contains(&lists),
        "{lists} answered, {limited} refused"
    );
    let mut calm = Client::connect(&server).await;
    calm.send(json!({"type":"list_stations"})).await;
    assert_eq!(calm.expect("stations").await["type"], "stations");
    assert_eq!(
        server
            .metric("radio_limit_refusals_total{limit=\"list_rate\"}")
            .await,
        f64::from(limited)
    );
}

/// Stations live on a node that is not running, as Redis holds them:
/// `n` names in the live set, each with a lease and a hash.
async fn other_nodes_stations(redis: &Redis, n: usize) {
    let client = redis_crate::Client::open(redis.url()).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let mut pipe = redis_crate::pipe();
    for i in 0..n {
        let name = format!("elsewhere-{i:04}");
        pipe.cmd("SADD").arg("radio:live").arg(&name).ignore();
        pipe.cmd("SET")
            .arg(format!("radio:lease:{name}"))
            .arg("gone:boot:1")
            .arg("PX")
            .arg(120_000)
            .ignore();
        pipe.cmd("HSET")
            .arg(format!("radio:station:{name}"))
            .arg("live")
            .arg("1")
            .arg("token")
            .arg("t")
            .arg("seq")
            .arg("0")
            .ignore();
    }
    pipe.query_async::<()>(&mut conn)
        .await
        .expect("populate Redis");
}

/// Calls of `command` Redis has run (scripts' calls included).
async fn calls(redis: &Redis, command: &str) -> u64 {
    let client = redis_crate::Client::open(redis.url()).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let info: String = redis_crate::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

/// With 2,000 live stations, 60 connections asking for the list for 6 s
/// each ran the listing script over every station whenever the cache was
/// stale, and another broadcaster's acknowledgements waited behind them.
/// Now one listing is made at a time (the others get the page in hand):
/// Redis walks the stations about once a second, however many ask, and
/// the broadcaster's updates are acknowledged throughout.
#[tokio::test]
async fn a_list_flood_makes_one_listing_at_a_time() {
    const STATIONS: usize = 2_000;
    const FLOOD: Duration = Duration::from_secs(3);
    let redis = Redis::start().await;
    other_nodes_stations(&redis, STATIONS).await;
    let server = Server::with(|c| {
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: redis.url(),
            node_id: "a".to_owned(),
            lease: Duration::from_secs(5),
            grace: Duration::from_secs(10),
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        });
        c.conn.list_rate = 0;
        c.conn.rate_limit = 10_000;
    });
    eventually("/readyz answers 200", async || {
        let now = server.get("/readyz").await.status;
        if now == 200 { Ok(()) } else { Err(now) }
    })
    .await;
    let mut caster = Client::connect(&server).await;
    caster.start("on-air").await;
    caster.update("on-air", "a.ogg", 0, true).await;
    // Every station is listed: the walk in batches covers the whole set.
    let mut probe = Client::connect(&server).await;
    probe.send(json!({"type":"list_stations"})).await;
    let first = probe.expect("stations").await;
    assert_eq!(first["total"], STATIONS + 1, "{}", first["total"]);

    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(Client::connect(&server).await);
    }
    let before = calls(&redis, "hgetall").await;
    let until = Instant::now() + FLOOD;
    let mut flood = Vec::new();
    for mut c in clients {
        flood.push(tokio::spawn(async move {
            let mut answered = 0u64;
            while Instant::now() < until {
                c.send(json!({"type":"list_stations"})).await;
                let r = c.recv().await;
                assert_eq!(r["type"], "stations", "{r}");
                answered += 1;
            }
            answered
        }));
    }
    let mut acked = 0;
    while Instant::now() < until {
        caster
            .send(json!({"type":"update","station":"on-air","track":"a.ogg",
            "position_ms":acked * 50,"playing":true,"ack":true}))
            .await;
        let r = caster.recv().await;
        assert_eq!(r["type"], "ack", "the broadcaster's update: {r}");
        acked += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answered = 0;
    for f in flood {
        answered += f.await.expect("a flooding client");
    }
    let walked = (calls(&redis, "hgetall").await - before) as f64 / STATIONS as f64;
    // About one listing a second (a walk started as the flood ended may
    // be counted too), however many requests.
    assert!(
        walked <= FLOOD.as_secs_f64() + 2.0,
        "{walked:.1} listings for {answered} requests"
    );
    assert!(answered >= 200, "{answered} requests answered");
    assert!(acked >= 3, "{acked} updates acknowledged");
}
