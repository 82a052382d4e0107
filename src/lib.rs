//! radio: a synchronized internet radio.
//!
//! One binary with four jobs over one protocol module:
//! - `server`: `radio serve`, the sync server, media library and web player;
//! - `client`: `radio broadcast` and `radio listen`, over a shared client;
//! - `loadtest`: `radio loadtest`, the stress generator;
//! - [`protocol`]: the wire contract they all speak (docs/protocol.md).
//!
//! Everything is crate-private but the wire contract and the few entry
//! points below, which the binary, the integration tests (`tests/it`) and
//! the fuzz targets (`fuzz/`) use.

mod app;
mod cli;
mod client;
mod errors;
mod fold;
mod key_file;
mod loadtest;
mod logging;
mod m3u;
mod man;
mod pem;
pub mod protocol;
mod server;
mod signals;
mod version;

pub use app::main;

/// A server inside the calling process: bind, configure, run.
pub use server::backend::any::BackendConfig;
pub use server::backend::redis::Config as RedisConfig;
pub use server::config::TlsFiles;
pub use server::listener::bind;
pub use server::onair::StationSpec;
pub use server::{ServerConfig, run};

/// The generated documentation (completions and man pages), checked fresh.
pub use cli::command;
pub use man::{subcommands as man_subcommands, write as write_man};

/// Parsers of untrusted input, for the fuzz targets, and test fixtures.
pub use m3u::parse_m3u;
pub use pem::read_certs;
pub use server::backend::redis::keys::station as redis_station_key;
pub use server::media::{LoudnessCache, answer_for, arpeggio, encode_wav};
pub use server::sessions::session_cookie;
