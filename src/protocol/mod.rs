//! The radio wire protocol, version 1: every message, field, error code and
//! limit, shared by the server, the CLI clients and the load generator.
//!
//! docs/protocol.md is the prose contract; this module is its one
//! implementation. Inbound frames are decoded by [`decode_request`], which maps
//! every kind of bad input onto an [`ErrorCode`] instead of failing silently,
//! and outbound frames are encoded once by [`encode`] into a shared
//! [`Utf8Bytes`] that any number of sockets can write without copying.
//!
//! The parts: [`messages`] (every frame, field, error code and limit),
//! [`ids`] (station names and tokens) and [`decode`] (inbound validation).

pub mod decode;
pub mod ids;
pub mod messages;

pub use decode::{DecodeError, decode_request};
pub use ids::{MAX_STATION_LEN, StationName, random_token};
pub use messages::*;
