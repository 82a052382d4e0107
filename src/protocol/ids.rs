//! Names and tokens: the validated [`StationName`], and the random tokens
//! (session ids, resume tokens) the server hands out.

use std::fmt;
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// Longest station name, in characters (all ASCII).
pub const MAX_STATION_LEN: usize = 64;

/// A validated station name: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
///
/// Cheap to clone (an `Arc<str>`), since every listener and registry entry
/// holds one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StationName(Arc<str>);

impl Serialize for StationName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl StationName {
    /// Validates `name`, returning the reason it is not a station name.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("a station name must not be empty".into());
        }
        if name.len() > MAX_STATION_LEN {
            return Err(format!(
                "a station name has at most {MAX_STATION_LEN} characters, this one has {}",
                name.chars().count()
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "a station name may use only A-Z a-z 0-9 . _ - (found {bad:?})"
            ));
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StationName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for StationName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StationName::new(&s).map_err(D::Error::custom)
    }
}

/// A random token of `bytes` bytes from the OS, hex-encoded.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // The OS generator failing is not recoverable in a sane way; fall
        // back to a time-and-counter mix so we still never repeat a token.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 8) * 8)) as u8 ^ fastrand::u8(..);
        }
    }
    let mut out = String::with_capacity(bytes * 2);
    for b in buf {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn station_names() {
        assert!(StationName::new("a").is_ok());
        assert!(StationName::new("Lo-Fi_radio.1").is_ok());
        assert!(StationName::new(&"x".repeat(64)).is_ok());
        assert!(StationName::new("").is_err());
        assert!(StationName::new(&"x".repeat(65)).is_err());
        assert!(StationName::new("a b").is_err());
        assert!(StationName::new("é").is_err());
        assert!(StationName::new("a/b").is_err());
    }

    #[test]
    fn tokens_are_random_hex() {
        let a = random_token(16);
        let b = random_token(16);
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
