//! The one poller: waits for something to happen, bounded.

use std::fmt::Debug;
use std::time::Duration;

/// How long anything may take to happen before a test gives up.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// Runs `check` every 20 ms until it returns `Ok`, for at most [`LIMIT`];
/// then fails the test with `what` and the last `Err` (what was seen
/// instead).
pub(crate) async fn eventually<T, E: Debug>(
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {LIMIT:?}; last seen: {last:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
