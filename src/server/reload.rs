//! SIGHUP: the one place that owns the signal and fans it out to every part
//! that can be reloaded: the media library (rescanned), the broadcast keys
//! and the TLS certificate (read again). Each part keeps what it had when
//! its reload fails, and says why.
//!
//! The signal is claimed when [`hangups`] is called (not when its task
//! first runs), so a SIGHUP right after the server logs its address never
//! meets the default action, which would end the process.

use std::future::Future;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A reload to run on every SIGHUP (reading a few small files: it runs on
/// the signal's task).
pub(crate) type Reloader = Box<dyn Fn() + Send + Sync>;

/// Claims SIGHUP. Returns the task that runs `reloaders` on each one and
/// then bumps the returned counter (which the media rescan watches).
pub(crate) fn hangups(
    reloaders: Vec<Reloader>,
    shutdown: CancellationToken,
) -> (impl Future<Output = ()> + Send, watch::Receiver<u64>) {
    let (tx, rx) = watch::channel(0u64);
    #[cfg(unix)]
    let signal = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP; nothing is reloaded on it");
            None
        }
    };
    #[cfg(not(unix))]
    let signal: Option<()> = None;
    let task = async move {
        #[cfg(unix)]
        let mut signal = signal;
        #[cfg(not(unix))]
        let _ = signal;
        loop {
            #[cfg(unix)]
            let hangup = async {
                match signal.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hangup => {}
            }
            tracing::info!(
                "SIGHUP received: reloading keys and certificates, rescanning the media library"
            );
            for reload in &reloaders {
                reload();
            }
            tx.send_modify(|n| *n += 1);
        }
    };
    (task, rx)
}
