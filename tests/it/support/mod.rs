//! The harness every test module shares, one file per concept:
//! - [`server`]: a `radio` server, in this process (the default) or as a
//!   `radio serve` process for what only a process can show (signals, exit
//!   codes, log lines, a node killed outright);
//! - [`ws`]: a protocol client over a real WebSocket;
//! - [`http`]: raw HTTP/1.1 over a socket, sent exactly as written;
//! - [`redis`]: a real `redis-server` for the cluster tests; [`sentinel`]:
//!   one with a replica and three Sentinels, for failovers;
//! - [`fixtures`]: temporary directories and generated media;
//! - [`poll`]: waiting for something to happen, bounded;
//! - [`tls`]: certificates made by openssl, and https/wss clients;
//! - [`process`]: the `radio` binary and child processes;
//! - [`cli`]: the shell clients as processes, and reading what they print.

pub(crate) mod cli;
pub(crate) mod fixtures;
pub(crate) mod http;
pub(crate) mod poll;
pub(crate) mod process;
pub(crate) mod redis;
pub(crate) mod sentinel;
pub(crate) mod server;
pub(crate) mod tls;
pub(crate) mod ws;

pub(crate) use fixtures::{TempDir, ffmpeg_tone, sine_wav, tone_wav, tone_wav_at};
pub(crate) use http::{Resp, request};
pub(crate) use poll::eventually;
pub(crate) use process::radio_bin;
pub(crate) use redis::{Redis, update_retrying};
pub(crate) use server::Server;
pub(crate) use ws::Client;
