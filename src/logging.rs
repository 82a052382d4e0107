//! Logging setup: `RUST_LOG` filters, `--log-format` picks pretty or JSON,
//! `--color` (and NO_COLOR) whether the pretty lines are coloured.

use tracing_subscriber::EnvFilter;

/// `--log-format` (`pub` for `ServeArgs`, see there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. Logs go to stderr so stdout stays free
/// for the clients' output. `default` is the filter used without `RUST_LOG`.
pub(crate) fn init(format: LogFormat, default: &str, ansi: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Libraries whose own lines are off unless RUST_LOG names them: the
    // decoder's (a probe that fails on a file that is not audio is an
    // "error" to it) are noise beside the scan's one warning; rustls's
    // (a warning per bad record, alert or IP-address SNI a client sends)
    // would let any client fill the log: the server counts what matters
    // in its aggregated warnings instead.
    let named = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = ["symphonia", "rustls"]
        .into_iter()
        .filter(|lib| !named.contains(lib))
        .filter_map(|lib| format!("{lib}=off").parse().ok())
        .fold(filter, |f, quiet| f.add_directive(quiet));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("radio: cannot set up logging: {e}");
    }
}
