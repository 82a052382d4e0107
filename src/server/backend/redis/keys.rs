//! The names of everything the cluster keeps in Redis (docs/cluster.md lists
//! them with their lifetimes), and the durations they are kept for.

use std::time::Duration;

/// Every key and channel starts with this.
pub(crate) const PREFIX: &str = "radio:";
/// The set of stations that are live somewhere in the cluster.
pub(crate) const LIVE_SET: &str = "radio:live";
/// How long a live station's history list outlives its last play.
pub(crate) const HISTORY_LIVE_MS: u64 = 24 * 60 * 60 * 1000;
/// How many leases an offline station's hash (its `seq`), its history and
/// its listener counts are kept after the last node with listeners of it
/// refreshed them (every fifth of a lease while any listener is tuned).
const KEEP_OFFLINE_LEASES: u32 = 6;

/// How long an offline station's traces outlive the last listener tuned to
/// it: six leases (30 s at the default `--lease`). The rule that keeps `seq`
/// from going back for a listener: a node refreshes this expiry, and raises
/// the stored `seq` to what its listeners were sent, on every reap (five a
/// lease) for as long as it has a listener of the station, so the hash
/// cannot expire under a tuned listener; once nobody is tuned, no one can
/// see the next claim start again from `seq` 0, and it all expires.
pub(crate) fn keep_offline(lease: Duration) -> u64 {
    millis(lease * KEEP_OFFLINE_LEASES)
}

/// The lease of a station: its owner's holder id, or `grace:` and it.
pub(crate) fn lease(name: &str) -> String {
    format!("{PREFIX}lease:{name}")
}

/// Set while some node runs the station itself (`radio serve --station`):
/// each such node refreshes it, so a station whose lease is gone stays
/// live for them to take ([`super::auto`]).
pub(crate) fn auto(name: &str) -> String {
    format!("{PREFIX}auto:{name}")
}

/// A station's hash: `live`, `grace`, `token`, `seq`, `frame`, `reason`,
/// and on a server-run station `by` and `auto_frame`.
pub fn station(name: &str) -> String {
    format!("{PREFIX}station:{name}")
}

/// A station's last plays, newest first (JSON, [`crate::server::history`]).
pub(crate) fn history(name: &str) -> String {
    format!("{PREFIX}history:{name}")
}

/// A station's listener counts, one field per node.
pub(crate) fn listeners(name: &str) -> String {
    format!("{PREFIX}listeners:{name}")
}

/// A node's liveness marker.
pub(crate) fn node(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}

/// A station's pub/sub channel (messages: [`super::channel::ChannelMsg`]).
pub(crate) fn channel(name: &str) -> String {
    format!("{PREFIX}ch:{name}")
}

/// A duration as Redis milliseconds (at least 1: `PX 0` is an error).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
