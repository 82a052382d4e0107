//! Several `--url`s: nodes of one cluster, tried in turn. A client starts at
//! the first; when its connection is lost or cannot be made, it moves on to
//! the next with the same backoff as ever, so a dead node costs one
//! reconnect. Every node serves every station (the cluster shares them
//! through Redis), and a broadcaster's resume token is good on any of them.

use std::time::Duration;

use super::Backoff;

/// The nodes, and which one is in use.
#[derive(Debug, Clone)]
pub(crate) struct Nodes {
    urls: Vec<String>,
    at: usize,
    /// A connection succeeded once: failures from then on are waited out,
    /// never fatal.
    reached: bool,
    /// Nodes that failed in a row since the last success (or the start).
    failures: usize,
}

impl Nodes {
    /// The nodes of `--url` (each made a WebSocket URL; repeats dropped).
    pub(crate) fn new(inputs: &[String]) -> anyhow::Result<Self> {
        let mut urls: Vec<String> = Vec::with_capacity(inputs.len());
        for input in inputs {
            let url = super::ws_url(input)?;
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        if urls.is_empty() {
            anyhow::bail!("no --url given");
        }
        Ok(Self {
            urls,
            at: 0,
            reached: false,
            failures: 0,
        })
    }

    /// The node to connect to now.
    pub(crate) fn current(&self) -> &str {
        &self.urls[self.at]
    }

    /// A connection to the current node was made.
    pub(crate) fn reached(&mut self) {
        self.reached = true;
        self.failures = 0;
    }

    /// Moves on to the next node (the same one when there is only one).
    pub(crate) fn advance(&mut self) {
        self.at = (self.at + 1) % self.urls.len();
    }

    /// After a failed attempt on the current node: how long to wait and
    /// what to say, moving on to the next node; or the error that ends the
    /// client, when no node was ever reached and every one has now failed
    /// (most likely a wrong `--url`).
    pub(crate) fn after_failed_connect(
        &mut self,
        e: &anyhow::Error,
        backoff: &mut Backoff,
    ) -> anyhow::Result<(Duration, String)> {
        self.failures += 1;
        let first_round = !self.reached;
        let all_failed = self.failures >= self.urls.len();
        let failed_at = self.at;
        self.advance();
        let (delay, why) = super::after_failed_connect(e, first_round && all_failed, backoff)?;
        Ok(if self.urls.len() > 1 {
            (
                delay,
                format!("{}: {why}; next: {}", self.urls[failed_at], self.current()),
            )
        } else {
            (delay, why)
        })
    }

    /// After a lost connection: moves on to the next node and says where,
    /// when there are several.
    pub(crate) fn after_lost(&mut self) -> Option<&str> {
        if self.urls.len() < 2 {
            return None;
        }
        self.advance();
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> anyhow::Error {
        anyhow::anyhow!("connection refused")
    }

    #[test]
    fn one_url_fails_at_once_before_it_was_reached() {
        let mut n = Nodes::new(&["ws://a/ws".into()]).unwrap();
        assert!(
            n.after_failed_connect(&err(), &mut Backoff::default())
                .is_err()
        );
    }

    #[test]
    fn several_urls_are_each_tried_before_giving_up() {
        let mut n = Nodes::new(&["a".into(), "b:1".into(), "a".into()]).unwrap();
        let mut b = Backoff::default();
        assert_eq!(n.current(), "ws://a/ws");
        let (_, why) = n.after_failed_connect(&err(), &mut b).unwrap();
        assert!(why.contains("next: ws://b:1/ws"), "{why}");
        assert!(n.after_failed_connect(&err(), &mut b).is_err());
    }

    #[test]
    fn once_reached_failures_are_waited_out() {
        let mut n = Nodes::new(&["a".into(), "b".into()]).unwrap();
        n.reached();
        assert_eq!(n.after_lost(), Some("ws://b/ws"));
        assert_eq!(n.after_lost(), Some("ws://a/ws"));
        let mut b = Backoff::default();
        for _ in 0..5 {
            n.after_failed_connect(&err(), &mut b).unwrap();
        }
    }
}
