//! Reading a broadcast key from a file, one rule for the server's
//! `--broadcast-key-file` and `radio broadcast --key-file` (and the
//! server's `--redis-password-file`): the file's first line, trimmed, not
//! empty. Secrets come from files so that they are in neither argv nor
//! the environment. A leaf: it names no module of the crate.

use std::path::Path;

/// The key in the file a flag (`flag`, named in the error) points to.
pub(crate) fn read(path: &Path, flag: &str) -> anyhow::Result<String> {
    read_secret(path, flag, "the broadcast key")
}

/// The secret (`what`, named in the error: "the Redis password") on the
/// first line of the file `flag` points to.
pub(crate) fn read_secret(path: &Path, flag: &str, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", path.display()))?;
    match text.lines().next().map(str::trim) {
        Some(key) if !key.is_empty() => Ok(key.to_owned()),
        _ => anyhow::bail!(
            "{flag} {} is empty; put {what} on its first line",
            path.display()
        ),
    }
}
