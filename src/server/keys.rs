//! Broadcast keys: who may start which station.
//!
//! - `--broadcast-key KEY` (or `--broadcast-key-file FILE`, so the key sits
//!   in neither argv nor the environment): one key for every station.
//! - `--broadcast-keys FILE`: lines `PATTERN KEY`, where a pattern is a
//!   station name or a glob (`*` any run of characters, `?` one: `team-*`,
//!   `*` for all); the first line whose pattern matches the station decides
//!   its key. Blank lines and `#` comments are skipped. A station no line
//!   matches may not be broadcast at all (unless `--broadcast-key` is also
//!   given: it then acts as a last `* KEY` line).
//!
//! Both files are read again on SIGHUP; a file that cannot be read or
//! parsed then keeps the keys in force and says why. Keys are compared in
//! constant time ([`subtle`]), and never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq as _;

use crate::server::keyguard::KeyGuard;

/// Where the keys come from (`ServerConfig`).
#[derive(Clone, Default)]
pub struct KeySources {
    /// `--broadcast-key`: one key for all stations.
    pub key: Option<String>,
    /// `--broadcast-key-file`: that one key, read from a file.
    pub key_file: Option<PathBuf>,
    /// `--broadcast-keys`: per-station keys.
    pub keys_file: Option<PathBuf>,
}

impl std::fmt::Debug for KeySources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySources")
            .field("key", &self.key.as_ref().map(|_| "<hidden>"))
            .field("key_file", &self.key_file)
            .field("keys_file", &self.keys_file)
            .finish()
    }
}

/// What a station needs to be broadcast.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No key is needed, or the right one was given.
    Allowed,
    /// A key is needed and none was given.
    Missing,
    /// A key was given and it is wrong.
    Wrong,
    /// The keys file names no key for this station.
    NotListed,
}

/// The rules in force, swapped whole on reload.
#[derive(Default)]
struct Rules {
    lines: Vec<(String, String)>,
    /// Whether stations no line matches are closed.
    closed: bool,
}

/// The broadcast keys, reloadable.
pub(crate) struct Keys {
    sources: KeySources,
    rules: RwLock<Arc<Rules>>,
    /// Wrong keys by address and by station, across connections.
    pub guard: KeyGuard,
}

impl Keys {
    /// Reads the key files; `Err` says which file and why.
    pub(crate) fn load(sources: KeySources) -> anyhow::Result<Self> {
        let rules = read(&sources)?;
        Ok(Self {
            sources,
            rules: RwLock::new(Arc::new(rules)),
            guard: KeyGuard::new(),
        })
    }

    fn current(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files again (SIGHUP); keeps the keys in force on error.
    pub(crate) fn reload(&self) {
        if self.sources.key_file.is_none() && self.sources.keys_file.is_none() {
            return;
        }
        match read(&self.sources) {
            Ok(rules) => {
                let n = rules.lines.len();
                *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
                tracing::info!(rules = n, "broadcast keys reloaded");
            }
            Err(e) => tracing::error!("broadcast keys not reloaded, the old ones stay: {e:#}"),
        }
    }

    /// Checks `given` for `station`.
    pub(crate) fn check(&self, station: &str, given: Option<&str>) -> Verdict {
        let rules = self.current();
        let Some((_, key)) = rules.lines.iter().find(|(p, _)| glob(p, station)) else {
            return if rules.closed {
                Verdict::NotListed
            } else {
                Verdict::Allowed
            };
        };
        match given {
            None => Verdict::Missing,
            Some(g) if bool::from(g.as_bytes().ct_eq(key.as_bytes())) => Verdict::Allowed,
            Some(_) => Verdict::Wrong,
        }
    }
}

fn read(sources: &KeySources) -> anyhow::Result<Rules> {
    let mut lines = Vec::new();
    if let Some(path) = &sources.keys_file {
        lines = parse_keys_file(path)?;
    }
    let one = match &sources.key_file {
        Some(path) => {
            let key = crate::key_file::read(path, "--broadcast-key-file")?;
            long_enough(&key).map_err(|e| {
                anyhow::anyhow!("--broadcast-key-file {}: line 1: {e}", path.display())
            })?;
            Some(key)
        }
        None => {
            if let Some(key) = &sources.key {
                long_enough(key).map_err(|e| anyhow::anyhow!("--broadcast-key: {e}"))?;
            }
            sources.key.clone()
        }
    };
    let closed = sources.keys_file.is_some();
    if let Some(key) = one {
        lines.push(("*".to_owned(), key));
    }
    Ok(Rules { lines, closed })
}

/// The shortest broadcast key the server takes: guessing is bounded by
/// the failure budgets ([`crate::server::keyguard`]), and this rules out
/// keys short enough to guess within them.
pub(crate) const MIN_KEY_CHARS: usize = 8;

/// `Err` (a sentence, without the key) when `key` is too short.
fn long_enough(key: &str) -> anyhow::Result<()> {
    let n = key.chars().count();
    if n < MIN_KEY_CHARS {
        anyhow::bail!(
            "the broadcast key is {n} characters long; use at least {MIN_KEY_CHARS} \
             (a random one: openssl rand -base64 18)"
        );
    }
    Ok(())
}

/// Parses `PATTERN KEY` lines; names the line of an error, never its key.
fn parse_keys_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read --broadcast-keys {}: {e}", path.display()))?;
    parse_keys(&text).map_err(|e| anyhow::anyhow!("--broadcast-keys {}: {e}", path.display()))
}

/// Parses the text of a keys file.
pub(crate) fn parse_keys(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(pattern), Some(key), None) = (words.next(), words.next(), words.next()) else {
            anyhow::bail!(
                "line {}: write a station pattern and its key, separated by a space \
                 (like `team-* s3cret`)",
                n + 1
            );
        };
        if !pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?'))
        {
            anyhow::bail!(
                "line {}: a pattern is a station name (A-Z a-z 0-9 . _ -) with * and ? wildcards",
                n + 1
            );
        }
        long_enough(key).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        out.push((pattern.to_owned(), key.to_owned()));
    }
    Ok(out)
}

/// Matches `name` against a glob of `*` (any run) and `?` (one character).
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == b'?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("team-*", "team-a"));
        assert!(!glob("team-*", "teams"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*-live-*", "x-live-y"));
        assert!(!glob("jazz", "jazz2"));
        assert!(glob("jazz", "jazz"));
    }

    #[test]
    fn first_match_wins_and_unlisted_stations_are_closed() {
        let rules = Rules {
            lines: parse_keys("# keys\nteam-a key-one-1\nteam-* key-two-2\n").expect("parses"),
            closed: true,
        };
        let keys = Keys {
            sources: KeySources::default(),
            rules: RwLock::new(Arc::new(rules)),
            guard: KeyGuard::new(),
        };
        let (k1, k2) = (Some("key-one-1"), Some("key-two-2"));
        assert_eq!(keys.check("team-a", k1), Verdict::Allowed);
        assert_eq!(keys.check("team-a", k2), Verdict::Wrong);
        assert_eq!(keys.check("team-b", k2), Verdict::Allowed);
        assert_eq!(keys.check("team-b", None), Verdict::Missing);
        assert_eq!(keys.check("other", k1), Verdict::NotListed);
        assert!(parse_keys("only-a-pattern").is_err());
        assert!(parse_keys("bad/pattern key").is_err());
    }

    /// A short key is refused when the keys are loaded, naming the line
    /// (and the file, through the caller) but never the key.
    #[test]
    fn short_keys_are_refused_by_line() {
        let e = parse_keys("# keys\njazz long-enough\nrock abc\n")
            .expect_err("a short key")
            .to_string();
        assert!(e.starts_with("line 3: "), "{e}");
        assert!(e.contains("at least 8"), "{e}");
        assert!(!e.contains("abc"), "{e}");
        let one = KeySources {
            key: Some("short".into()),
            ..KeySources::default()
        };
        let e = Keys::load(one).err().expect("a short key").to_string();
        assert!(e.starts_with("--broadcast-key: "), "{e}");
    }

    #[test]
    fn no_keys_no_questions() {
        let keys = Keys::load(KeySources::default()).expect("nothing to read");
        assert_eq!(keys.check("any", None), Verdict::Allowed);
    }
}
