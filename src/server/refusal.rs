//! Why a request is refused: one [`Refusal`] per reason, each with its
//! protocol [`ErrorCode`] and the sentence the client reads, written once
//! here for every backend and the connection alike.

use crate::protocol::{ErrorCode, StationName};

/// A refused request: answered with an `error` frame of [`Refusal::code`]
/// whose message is this value's `Display`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("station {0} is live from another connection")]
    Taken(StationName),
    #[error(
        "station {0} is waiting for its broadcaster to resume (with its resume_token) \
         until its grace period ends"
    )]
    InGrace(StationName),
    #[error(
        "station {0} was taken over by another connection \
         (its broadcaster resumed elsewhere with the resume_token)"
    )]
    TakenOver(StationName),
    #[error("station {0} is broadcast by another connection")]
    NotOwner(StationName),
    #[error("station {0} is not live; send start_broadcasting first")]
    NotLive(StationName),
    #[error("the station has no track yet: send an update before heartbeats")]
    NoTrackYet,
    #[error("this connection is not tuned to station {0}; a listener reports on its own station")]
    NotTuned(StationName),
    #[error("a connection may broadcast at most {0} stations")]
    TooManyStations(usize),
    #[error(
        "this server has its most live stations ({0}, radio serve --max-stations); \
         try again when one stops"
    )]
    ServerStationsFull(usize),
    #[error(
        "your address has its most stations live or in their grace period ({0}, \
         radio serve --max-stations-per-ip); stop one, or wait for a grace period to end"
    )]
    AddressStations(usize),
    #[error(
        "more than {0} start_broadcasting a minute from your address \
         (radio serve --claim-rate); wait a little and try again"
    )]
    ClaimRate(u32),
    #[error(
        "more than {0} list_stations a second on this connection \
         (radio serve --list-rate); ask less often"
    )]
    ListRate(u32),
    /// A key missing, wrong, or for a station the server has no key for:
    /// one answer, so that a guesser cannot tell which names have keys.
    #[error(
        "this station needs a broadcast key (\"key\"), and the one given is missing or \
         wrong, or the server has none for this station; check the key, or ask the \
         server's operator"
    )]
    Unauthorized,
    #[error(
        "too many wrong broadcast keys from your address or for this station; try again \
         in {0} s"
    )]
    KeyBudget(u64),
    #[error("more than {0} messages a second; slow down or be disconnected")]
    RateLimited(u32),
    #[error("binary frames are not supported; send JSON text frames")]
    Binary,
    /// The station backend cannot be reached; the reason names it.
    #[error("{0}; try again shortly")]
    Unavailable(&'static str),
}

impl Refusal {
    /// The `error` frame's code.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Refusal::Taken(_) | Refusal::InGrace(_) => ErrorCode::StationTaken,
            Refusal::TakenOver(_) | Refusal::NotOwner(_) => ErrorCode::NotOwner,
            Refusal::NotLive(_) => ErrorCode::NotLive,
            Refusal::NoTrackYet | Refusal::NotTuned(_) => ErrorCode::BadMessage,
            Refusal::TooManyStations(_) | Refusal::ServerStationsFull(_) | Refusal::Binary => {
                ErrorCode::Unsupported
            }
            Refusal::Unauthorized => ErrorCode::Unauthorized,
            Refusal::AddressStations(_) => ErrorCode::TooManyStations,
            Refusal::RateLimited(_)
            | Refusal::ClaimRate(_)
            | Refusal::ListRate(_)
            | Refusal::KeyBudget(_) => ErrorCode::RateLimited,
            Refusal::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_sentences() {
        let s = StationName::new("jazz").expect("a valid name");
        let r = Refusal::InGrace(s.clone());
        assert_eq!(r.code(), ErrorCode::StationTaken);
        assert!(r.to_string().starts_with("station jazz is waiting"), "{r}");
        assert_eq!(Refusal::TakenOver(s).code(), ErrorCode::NotOwner);
        let u = Refusal::Unavailable("the cluster's Redis is unreachable right now");
        assert_eq!(
            u.to_string(),
            "the cluster's Redis is unreachable right now; try again shortly"
        );
        assert_eq!(u.code(), ErrorCode::Unavailable);
    }
}
