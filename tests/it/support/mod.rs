//! The harness every test module shares, one file per concept:
//! - [`server`]: a `radio` server, in this process (the default) or as a
//!   `radio serve` process for what only a process can show (signals, exit
//!   codes, log lines, a node killed outright);
//! - [`ws`]: a protocol client over a real WebSocket;
//! - [`http`]: raw HTTP/1.1 over a socket, sent exactly as written;
//! - [`redis`]: a real `redis-server` for the cluster tests;
//! - [`fixtures`]: temporary directories and generated media;
//! - [`poll`]: waiting for something to happen, bounded;
//! - [`process`]: the `radio` binary and child processes;
//! - [`cli`]: the shell clients as processes, and reading what they print.

pub mod cli;
pub mod fixtures;
pub mod http;
pub mod poll;
pub mod process;
pub mod redis;
pub mod server;
pub mod ws;

pub use fixtures::{TempDir, tone_wav};
pub use http::{Resp, request};
pub use poll::eventually;
pub use process::radio_bin;
pub use redis::Redis;
pub use server::Server;
pub use ws::Client;
