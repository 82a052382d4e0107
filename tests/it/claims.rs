//! What one client address may claim: its share of the stations live or in
//! their grace period (`--max-stations-per-ip`), its claim rate
//! (`--claim-rate`), and no grace period for a station that never had an
//! update, on a single node and in cluster mode. Clients of different
//! addresses connect from different loopback addresses (127.0.0.0/8).

use std::time::Duration;

use radio::{BackendConfig, RedisConfig, ServerConfig};
use serde_json::{Value, json};

use crate::support::{Client, Redis, Server, eventually};

/// `start_broadcasting` for `station`: the reply, `broadcasting` or `error`.
async fn claim(c: &mut Client, station: &str) -> Value {
    c.send(json!({"type":"start_broadcasting","station":station}))
        .await;
    let r = c.recv().await;
    assert!(r["type"] == "broadcasting" || r["type"] == "error", "{r}");
    r
}

/// A station with a state: in its grace period once its connection goes.
async fn claim_and_update(c: &mut Client, station: &str) -> Value {
    let r = claim(c, station).await;
    if r["type"] == "broadcasting" {
        c.update(station, "a.ogg", 0, true).await;
    }
    r
}

/// A cluster node behind `redis` with `edit` on top.
fn node(redis: &Redis, id: &str, edit: impl FnOnce(&mut ServerConfig)) -> Server {
    Server::with(|c| {
        c.backend = BackendConfig::Redis(RedisConfig {
            redis_url: redis.url(),
            node_id: id.to_owned(),
            lease: Duration::from_secs(5),
            grace: Duration::from_secs(30),
            ca_cert: None,
            password_file: None,
            sentinel_password_file: None,
            max_stations: 10_000,
        });
        edit(c);
    })
}

async fn ready(server: &Server) {
    eventually("/readyz answers 200", async || {
        let now = server.get("/readyz").await.status;
        if now == 200 { Ok(()) } else { Err(now) }
    })
    .await;
}

/// 640 connections each claimed 16 names, updated them and left: their
/// grace periods filled `--max-stations` in under a second and a real
/// broadcaster got `unsupported`. Now one address holds at most its share.
#[tokio::test]
async fn one_address_cannot_take_every_station_slot() {
    let server = Server::with(|c| {
        c.max_stations = 40;
        c.max_stations_per_ip = 4;
        c.claim_rate = 0;
    });
    let (mut granted, mut refused) = (0, 0);
    for conn in 0..10 {
        let mut squatter = Client::connect_from(&server, "127.0.0.2").await;
        for i in 0..4 {
            let r = claim_and_update(&mut squatter, &format!("squat-{conn}-{i}")).await;
            if r["type"] == "broadcasting" {
                granted += 1;
            } else {
                assert_eq!(r["code"], "too_many_stations", "{r}");
                assert_eq!(r["request_type"], "start_broadcasting", "{r}");
                assert!(
                    r["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("--max-stations-per-ip")),
                    "{r}"
                );
                refused += 1;
            }
        }
        // Leaves its stations to their grace period.
    }
    assert_eq!((granted, refused), (4, 36));
    let mut real = Client::connect_from(&server, "127.0.0.3").await;
    real.start("the-real-one").await;
    assert_eq!(
        server
            .metric("radio_limit_refusals_total{limit=\"station_share\"}")
            .await,
        36.0
    );
    assert_eq!(
        server
            .metric("radio_errors_total{code=\"too_many_stations\"}")
            .await,
        36.0
    );
}

/// A claim then a disconnect held the name (and a slot) for the grace
/// period. A station that never had an update now has none: the name and
/// the address's share are free at once.
#[tokio::test]
async fn a_station_never_updated_is_freed_at_once() {
    let server = Server::with(|c| {
        c.max_stations_per_ip = 1;
        c.backend = BackendConfig::Local {
            grace: Duration::from_secs(60),
        };
    });
    let mut listener = Client::connect(&server).await;
    listener.tune("quick").await;
    {
        let mut gone = Client::connect(&server).await;
        gone.start("quick").await;
        listener.expect("broadcaster_online").await;
    }
    let off = listener.expect("broadcaster_offline").await;
    assert_eq!(off["reason"], "disconnected", "{off}");
    // The same name, and another within the share of one: both at once.
    let mut next = Client::connect(&server).await;
    next.start("quick").await;
    next.send(json!({"type":"stop_broadcasting","station":"quick"}))
        .await;
    next.expect("stopped").await;
    next.start("other").await;
}

/// A broadcaster that reconnects resumes its stations in their grace
/// period without a second share for each.
#[tokio::test]
async fn resuming_takes_no_second_share() {
    let server = Server::with(|c| c.max_stations_per_ip = 2);
    let mut tokens = Vec::new();
    {
        let mut first = Client::connect(&server).await;
        for s in ["one", "two"] {
            let r = claim_and_update(&mut first, s).await;
            tokens.push(r["resume_token"].as_str().expect("a token").to_owned());
        }
    }
    // In their grace periods once the server has seen the connection
    // close, which on a busy machine may come after a new one's requests.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.metric("radio_connections").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the close was never seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = Client::connect(&server).await;
    // In their grace periods, both still count: no third station.
    let e = claim(&mut again, "three").await;
    assert_eq!(e["code"], "too_many_stations", "{e}");
    for (s, token) in ["one", "two"].iter().zip(&tokens) {
        again
            .send(json!({"type":"start_broadcasting","station":s,"resume_token":token}))
            .await;
        let r = again.recv().await;
        assert_eq!(r["type"], "broadcasting", "{r}");
    }
    let e = claim(&mut again, "three").await;
    assert_eq!(e["code"], "too_many_stations", "{e}");
}

/// Claims are limited per address, not per connection: a new connection
/// starts with its address's budget, not a fresh one.
#[tokio::test]
async fn claims_are_rate_limited_per_address() {
    let server = Server::with(|c| c.claim_rate = 3);
    let mut a = Client::connect_from(&server, "127.0.0.4").await;
    for i in 0..3 {
        let s = format!("s{i}");
        a.start(&s).await;
        a.send(json!({"type":"stop_broadcasting","station":s}))
            .await;
        a.expect("stopped").await;
    }
    let e = claim(&mut a, "s3").await;
    assert_eq!(
        (e["code"].as_str(), e["request_type"].as_str()),
        (Some("rate_limited"), Some("start_broadcasting")),
        "{e}"
    );
    let mut a_again = Client::connect_from(&server, "127.0.0.4").await;
    let e = claim(&mut a_again, "s3").await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    let mut b = Client::connect_from(&server, "127.0.0.5").await;
    b.start("s3").await;
    assert_eq!(
        server
            .metric("radio_limit_refusals_total{limit=\"claim_rate\"}")
            .await,
        2.0
    );
}

/// In cluster mode the node that holds the connection counts its
/// address's share, and a station never updated leaves no grace lease in
/// Redis: another node may claim it at once.
#[tokio::test]
async fn the_share_and_the_no_grace_rule_hold_in_cluster_mode() {
    let redis = Redis::start().await;
    let a = node(&redis, "a", |c| c.max_stations_per_ip = 2);
    let b = node(&redis, "b", |_| {});
    ready(&a).await;
    ready(&b).await;
    {
        let mut gone = Client::connect_from(&a, "127.0.0.6").await;
        for s in ["c1", "c2"] {
            assert_eq!(claim_and_update(&mut gone, s).await["type"], "broadcasting");
        }
        let e = claim(&mut gone, "c3").await;
        assert_eq!(e["code"], "too_many_stations", "{e}");
    }
    {
        let mut brief = Client::connect_from(&a, "127.0.0.8").await;
        brief.start("never").await;
    }
    // c1 and c2 wait in their grace periods: still this address's.
    let mut back = Client::connect_from(&a, "127.0.0.6").await;
    let e = claim(&mut back, "c3").await;
    assert_eq!(e["code"], "too_many_stations", "{e}");
    let mut other = Client::connect_from(&a, "127.0.0.7").await;
    other.start("c3").await;
    // "never" had no update: free in the cluster at once (its release
    // runs as the connection closes, so allow it a moment).
    let mut elsewhere = Client::connect(&b).await;
    eventually("another node claims \"never\"", async || {
        let r = claim(&mut elsewhere, "never").await;
        if r["type"] == "broadcasting" {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;
    let e = claim(&mut elsewhere, "c1").await;
    assert_eq!(e["code"], "station_taken", "c1 is in its grace period: {e}");
}
