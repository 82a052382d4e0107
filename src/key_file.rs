//! Reading a broadcast key from a file, one rule for the server's
//! `--broadcast-key-file` and `radio broadcast --key-file`: the file's first
//! line, trimmed, not empty. Keys come from files so that they are in
//! neither argv nor the environment. A leaf: it names no module of the crate.

use std::path::Path;

/// The key in the file a flag (`flag`, named in the error) points to.
pub(crate) fn read(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", path.display()))?;
    match text.lines().next().map(str::trim) {
        Some(key) if !key.is_empty() => Ok(key.to_owned()),
        _ => anyhow::bail!(
            "{flag} {} is empty; put the broadcast key on its first line",
            path.display()
        ),
    }
}
