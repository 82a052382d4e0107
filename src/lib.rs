//! radio: a synchronized internet radio.
//!
//! One binary with four jobs over one protocol module:
//! - [`server`]: `radio serve`, the sync server, media library and web player;
//! - [`client`]: `radio broadcast` and `radio listen`, over a shared client;
//! - [`loadtest`]: `radio loadtest`, the stress generator;
//! - [`protocol`]: the wire contract they all speak (docs/protocol.md).

pub mod cli;
pub mod client;
pub mod errors;
pub mod loadtest;
pub mod logging;
pub mod man;
pub mod pem;
pub mod protocol;
pub mod server;
pub mod signals;
pub mod version;
