//! The `radio` binary: all of it lives in the library (`radio::main`), so
//! the integration tests and fuzz targets reach the same code.

/// mimalloc rather than glibc's malloc: a server that holds thousands of
/// connections while they come and go keeps its memory where it settled,
/// where glibc's heap fragmented and grew by a third (Cargo.toml says why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    radio::main()
}
