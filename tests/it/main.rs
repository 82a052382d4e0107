//! The integration tests, one crate (`cargo test --test it`), one module per
//! area, over real sockets against a real server: in this process by
//! default, through the `radio` binary where only a process shows what is
//! checked (signals, exit codes, log lines, a node killed outright, the
//! shell clients and the load generator). The harness is in `support/`.
//!
//! Run one area with `cargo test --test it protocol::`.

mod support;

mod backend;
mod broadcast;
mod browser;
mod claims;
mod cli;
mod cluster;
mod contrib;
mod failover;
mod failover_secured;
mod fanout;
mod generated;
mod herd;
mod layout;
mod limits;
mod listing;
mod loadtest;
mod loudness;
mod media;
mod metadata;
mod metrics;
mod mpv;
mod next;
mod onair;
mod onair_cluster;
mod operate;
mod protocol;
mod scan;
mod security;
mod shell;
mod stream;
mod streamlinks;
mod tls;
mod unplayable;
