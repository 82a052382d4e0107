//! The Lua scripts that make each multi-key change atomic in Redis. Each
//! lives in its own file under `lua/`, whose header says what its KEYS and
//! ARGV are and what it returns; they are compiled into the binary and run
//! with `EVALSHA` (loaded on first use).

use redis::Script;

/// Every script of the cluster, loaded once per node.
pub(crate) struct Scripts {
    /// Claims a station or resumes it with its token.
    pub claim: Script,
    /// Checks the lease, stores and publishes a state.
    pub update: Script,
    /// Renews the leases still held by their holders.
    pub renew: Script,
    /// Turns a lease into a grace lease when its connection closes.
    pub release: Script,
    /// `stop_broadcasting`.
    pub stop: Script,
    /// Publishes a station's snapshot on its channel.
    pub snapshot: Script,
    /// Takes stations whose lease expired offline.
    pub reap: Script,
    /// Writes back an owner's lease and state after Redis came back.
    pub reassert: Script,
    /// One batch of the live stations with their newest frames and
    /// listener counts.
    pub list: Script,
    /// Takes abandoned stations offline, whoever listens (cluster hygiene).
    pub sweep: Script,
    /// A server-run station's player on one node: keeps the station's
    /// mark, renews its lease or takes the station when it is free.
    pub claim_auto: Script,
    /// A node's server-run station player leaves.
    pub unseat: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            claim: Script::new(include_str!("lua/claim.lua")),
            update: Script::new(include_str!("lua/update.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            release: Script::new(include_str!("lua/release.lua")),
            stop: Script::new(include_str!("lua/stop.lua")),
            snapshot: Script::new(include_str!("lua/snapshot.lua")),
            reap: Script::new(include_str!("lua/reap.lua")),
            reassert: Script::new(include_str!("lua/reassert.lua")),
            list: Script::new(include_str!("lua/list.lua")),
            sweep: Script::new(include_str!("lua/sweep.lua")),
            claim_auto: Script::new(include_str!("lua/claim_auto.lua")),
            unseat: Script::new(include_str!("lua/unseat.lua")),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
