//! The signals that end a process: SIGINT (Ctrl-C) and SIGTERM.

/// Waits for SIGINT or SIGTERM and names the one that came. A signal that
/// cannot be watched is logged, and only the other one is waited for.
pub(crate) async fn terminate() -> &'static str {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot watch SIGINT");
                std::future::pending::<()>().await;
            }
            "SIGINT"
        }
        _ = term => "SIGTERM",
    }
}
