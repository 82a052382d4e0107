//! The `radio` binary: all of it lives in the library (`radio::main`), so
//! the integration tests and fuzz targets reach the same code.

fn main() -> std::process::ExitCode {
    radio::main()
}
