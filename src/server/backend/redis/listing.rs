//! The `stations` list from Redis: the live set walked in batches of
//! [`BATCH`], one script call each, so no call costs Redis more than a
//! batch's worth of time however many stations are live, and other nodes'
//! requests (a broadcaster's `update`) run between the batches.
//! (`server::listing` makes one listing at a time and caches it.)

use std::collections::HashSet;

use super::keys::{LIVE_SET, PREFIX};
use super::node::{Node, lock, unavailable};
use crate::protocol::{self, StationName, StationSummary};
use crate::server::backend::summary;
use crate::server::refusal::Refusal;
use crate::server::station::State;

/// Stations of the live set one call looks at.
pub(crate) const BATCH: usize = 100;

/// Most calls of one walk: far more than a live set within
/// `--max-stations` needs; a bound, so a walk always ends.
const MAX_CALLS: usize = 100_000;

/// Every live station, with its listeners counted over every node, sorted
/// by name.
pub(crate) async fn list(node: &Node) -> Result<Vec<StationSummary>, Refusal> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor = "0".to_owned();
    for _ in 0..MAX_CALLS {
        let reply: Vec<String> = node
            .call(
                node.scripts
                    .list
                    .key(LIVE_SET)
                    .arg(&node.cfg.node_id)
                    .arg(PREFIX)
                    .arg(&cursor)
                    .arg(BATCH),
            )
            .await?;
        let Some((next, rows)) = reply.split_first() else {
            tracing::error!("empty reply from the list script");
            return Err(unavailable());
        };
        let now = protocol::now_ms();
        for row in rows.chunks_exact(3) {
            let Ok(station) = StationName::new(&row[0]) else {
                continue;
            };
            if !seen.insert(station.clone()) {
                continue;
            }
            let elsewhere: u64 = row[2].parse().unwrap_or(0);
            let here = lock(&node.stations)
                .get(&station)
                .map_or(0, |e| e.station.listener_count());
            let state = (!row[1].is_empty())
                .then(|| State::from_frame(&row[1]))
                .flatten();
            let sync = state.as_ref().map(|s| &s.sync);
            out.push(summary(station, elsewhere + here, sync, now));
        }
        if next == "0" {
            out.sort_by(|a, b| a.station.cmp(&b.station));
            return Ok(out);
        }
        cursor.clone_from(next);
    }
    tracing::error!("the live set's walk did not end");
    Err(unavailable())
}
