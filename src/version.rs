//! What this binary is: its version, and the commit it was built from
//! (`build.rs` reads it from git, or `RADIO_COMMIT` at build time; "unknown"
//! when neither is there, as in a source tarball).

/// The package version, like `0.1.0`.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit built, abbreviated, or `unknown`.
pub(crate) const COMMIT: &str = env!("RADIO_COMMIT");

/// What `radio --version` prints after the name: `0.1.0 (commit 1a2b3c4d5e6f)`.
pub(crate) const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RADIO_COMMIT"),
    ")"
);
