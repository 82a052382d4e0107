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
pub use server::backend::redis::source::masked as masked_redis_url;
pub use server::media::{LoudnessCache, answer_for, arpeggio, encode_wav};
pub use server::origin::{AllowedHosts, Host, host_name};
pub use server::playlists::base_url as playlist_base_url;
pub use server::sessions::session_cookie;
#[cfg(target_os = "linux")]
pub use server::zerocopy::media_head;

/// The test build's allocator: the system's, counting each thread's
/// allocations, so a test can tell whether a call allocated.
#[cfg(test)]
pub(crate) mod allocations {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    struct Counting;

    // SAFETY: every call goes to the system allocator as it came; the
    // count is a thread-local without a destructor, which allocates
    // nothing.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: the caller's contract is passed on unchanged.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract is passed on unchanged.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: the caller's contract is passed on unchanged.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// How many allocations this thread has made so far.
    pub(crate) fn allocations() -> usize {
        ALLOCATIONS.with(Cell::get)
    }
}
