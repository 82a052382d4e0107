//! How a failure is told, and the exit status it gets: 2 for a usage error
//! (a flag or argument that cannot work; clap's own parse errors exit 2
//! too), 1 for a failure at run time. Each man page's EXIT STATUS says so.

use std::process::ExitCode;

/// A usage error found after parsing (an argument that parses but cannot
/// work): exit status 2. `pub` only because the command line's conversion
/// into the public `ServerConfig` names it; nothing outside can reach it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The message of `e` and its causes, each said once: a cause whose text
/// its parent already carries (`IO error: Connection refused` over
/// `Connection refused`) is left out.
pub(crate) fn text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if out.contains(&part) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&part);
    }
    out
}

/// Stdout's reader went away (`radio man serve | head`): it had what it
/// wanted, so that is no failure and nothing to say. Only writes to stdout
/// are marked so; a broken pipe elsewhere (a WebSocket) is a failure.
#[derive(Debug, thiserror::Error)]
#[error("stdout is closed")]
pub(crate) struct ClosedStdout;

/// Whether `e` is only a closed stdout.
pub(crate) fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ClosedStdout>().is_some()
}

/// What a write to stdout failed with: [`ClosedStdout`] for a reader that
/// went away, else the error.
pub(crate) fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        ClosedStdout.into()
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// Writes `bytes` to stdout, whole.
pub(crate) fn to_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// The exit status for `e`.
pub(crate) fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Usage>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thing_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("IO error: {0}")]
        struct Wrapped(#[source] std::io::Error);
        let e = anyhow::Error::new(Wrapped(io)).context("cannot connect to ws://h/ws");
        assert_eq!(
            text(&e),
            "cannot connect to ws://h/ws: IO error: Connection refused"
        );
        assert_eq!(
            exit_code(&anyhow::Error::new(Usage("x".into()))),
            ExitCode::from(2)
        );
    }
}
