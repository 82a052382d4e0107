//! The order a server-run station plays its source in: pass after pass,
//! each pass the source's tracks as they are at its start (so a rescan or a
//! re-read playlist shows at the next pass). Shuffled, each pass is a new
//! random order, and its first track is never the one the last pass ended
//! with, so no track plays twice in a row across the boundary.
//!
//! The track after the current one is decided when the current one starts
//! ([`Rotation::peek`], for `sync`'s `next`), the next pass's first at the
//! last track of a pass, and it is what plays next, a re-read source or
//! not: listeners fetch it ahead of time.

use super::source::Item;

/// Where a station is in its source.
pub(crate) struct Rotation {
    order: Vec<Item>,
    /// The next track's place in `order`.
    at: usize,
    shuffle: bool,
    rng: fastrand::Rng,
    /// The id of the track picked last.
    last: Option<String>,
    /// After a re-read, a pass in order starts after this id when it has it.
    resume_after: Option<String>,
    /// The next track, decided ahead ([`Rotation::peek`]).
    ahead: Option<Item>,
}

impl Rotation {
    pub(crate) fn new(shuffle: bool, rng: fastrand::Rng) -> Self {
        Self {
            order: Vec::new(),
            at: 0,
            shuffle,
            rng,
            last: None,
            resume_after: None,
            ahead: None,
        }
    }

    /// The next track; at a pass's end, `fill` gives the next pass's tracks
    /// in the source's order. `None` when the source has none.
    pub(crate) fn next(&mut self, fill: impl FnOnce() -> Vec<Item>) -> Option<Item> {
        match self.ahead.take() {
            Some(item) => Some(item),
            None => self.pick(fill),
        }
    }

    /// The track [`Rotation::next`] gives next, decided now (at a pass's
    /// end, the next pass is shuffled now).
    pub(crate) fn peek(&mut self, fill: impl FnOnce() -> Vec<Item>) -> Option<&Item> {
        if self.ahead.is_none() {
            self.ahead = self.pick(fill);
        }
        self.ahead.as_ref()
    }

    fn pick(&mut self, fill: impl FnOnce() -> Vec<Item>) -> Option<Item> {
        if self.at >= self.order.len() {
            self.start_pass(fill());
        }
        let item = self.order.get(self.at)?.clone();
        self.at += 1;
        self.last = Some(item.id.clone());
        Some(item)
    }

    /// Ends the pass now: the track after the next one comes from a new
    /// one (the source was read again; the next one was announced). In
    /// order, it goes on after the last track picked.
    pub(crate) fn restart(&mut self) {
        self.order.clear();
        self.at = 0;
        self.resume_after = self.last.clone();
    }

    /// Goes on after `id`, which another player of the station played
    /// last: the next track comes from a new pass, after `id` in order, or
    /// (shuffled) not `id` first.
    pub(crate) fn follow(&mut self, id: &str) {
        // A next track decided ahead was decided from another place.
        self.ahead = None;
        self.last = Some(id.to_owned());
        self.restart();
    }

    fn start_pass(&mut self, mut order: Vec<Item>) {
        self.at = 0;
        let after = self.resume_after.take();
        if self.shuffle {
            self.rng.shuffle(&mut order);
            if let (Some(last), true) = (&self.last, order.len() > 1) {
                if order[0].id == *last {
                    // Swap in a track that is not the last one, from a
                    // random place (a playlist may list a track twice).
                    let n = order.len();
                    let from = self.rng.usize(1..n);
                    if let Some(j) = (0..n - 1)
                        .map(|k| 1 + (from - 1 + k) % (n - 1))
                        .find(|&j| order[j].id != *last)
                    {
                        order.swap(0, j);
                    }
                }
            }
        } else if let Some(after) = after {
            if let Some(i) = order.iter().position(|t| t.id == after) {
                self.at = (i + 1) % order.len();
            }
        }
        self.order = order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(ids: &[&str]) -> Vec<Item> {
        ids.iter()
            .map(|id| Item {
                id: (*id).to_owned(),
                duration_ms: 1_000,
            })
            .collect()
    }

    fn take(r: &mut Rotation, n: usize, ids: &[&str]) -> Vec<String> {
        (0..n)
            .map(|_| r.next(|| items(ids)).expect("a track").id)
            .collect()
    }

    /// What `peek` says comes next is what comes next, across a pass's
    /// end and a re-read, in order and shuffled.
    #[test]
    fn the_next_track_is_known_ahead() {
        for shuffle in [false, true] {
            for seed in 0..20 {
                let mut r = Rotation::new(shuffle, fastrand::Rng::with_seed(seed));
                let ids = ["a", "b", "c"];
                let mut now = r.next(|| items(&ids)).expect("a track").id;
                for step in 0..10 {
                    let told = r.peek(|| items(&ids)).expect("a next track").id.clone();
                    assert_eq!(r.peek(Vec::new).map(|i| i.id.clone()), Some(told.clone()));
                    if step == 4 {
                        r.restart();
                    }
                    let next = r.next(|| items(&ids)).expect("a track").id;
                    assert_eq!(next, told, "shuffle {shuffle}, seed {seed}");
                    assert!(!shuffle || next != now, "no repeat: {now} {next}");
                    now = next;
                }
            }
        }
        let mut r = Rotation::new(false, fastrand::Rng::with_seed(1));
        assert!(r.peek(Vec::new).is_none());
    }

    #[test]
    fn in_order_it_loops_and_goes_on_after_a_reread() {
        let mut r = Rotation::new(false, fastrand::Rng::with_seed(1));
        assert_eq!(take(&mut r, 5, &["a", "b", "c"]), ["a", "b", "c", "a", "b"]);
        r.restart();
        assert_eq!(take(&mut r, 3, &["x", "b", "y"]), ["y", "x", "b"]);
        r.restart();
        assert_eq!(take(&mut r, 2, &["p", "q"]), ["p", "q"]);
        assert!(r.next(Vec::new).is_none());
    }

    #[test]
    fn it_goes_on_after_a_track_another_player_played() {
        let ids = ["a", "b", "c"];
        let mut r = Rotation::new(false, fastrand::Rng::with_seed(1));
        assert_eq!(take(&mut r, 1, &ids), ["a"]);
        r.follow("b");
        assert_eq!(take(&mut r, 4, &ids), ["c", "a", "b", "c"]);
        // A track the source does not have: from the top.
        r.follow("elsewhere.ogg");
        assert_eq!(take(&mut r, 1, &ids), ["a"]);
        for seed in 0..50 {
            let mut r = Rotation::new(true, fastrand::Rng::with_seed(seed));
            r.follow("a");
            assert_ne!(take(&mut r, 1, &["a", "b"]), ["a"], "seed {seed}");
        }
    }

    /// Over many passes of many seeds: each pass plays every track once,
    /// the orders differ, and no track plays twice in a row, across a
    /// pass's boundary included.
    #[test]
    fn shuffled_passes_are_permutations_without_a_repeat_at_the_boundary() {
        let ids = ["a", "b", "c", "d", "e"];
        let mut orders = std::collections::HashSet::new();
        for seed in 0..200 {
            let mut r = Rotation::new(true, fastrand::Rng::with_seed(seed));
            let played = take(&mut r, ids.len() * 6, &ids);
            for pass in played.chunks(ids.len()) {
                let mut sorted = pass.to_vec();
                sorted.sort();
                assert_eq!(sorted, ids, "seed {seed}: {played:?}");
                orders.insert(pass.to_vec());
            }
            for w in played.windows(2) {
                assert_ne!(w[0], w[1], "seed {seed}: {played:?}");
            }
        }
        assert!(orders.len() > 50, "{} orders", orders.len());
        // Two tracks alternate; one track repeats, having nothing else.
        let mut r = Rotation::new(true, fastrand::Rng::with_seed(7));
        let two = take(&mut r, 10, &["a", "b"]);
        assert!(two.windows(2).all(|w| w[0] != w[1]), "{two:?}");
        let mut r = Rotation::new(true, fastrand::Rng::with_seed(7));
        assert_eq!(take(&mut r, 2, &["a"]), ["a", "a"]);
        // A playlist that lists a track twice still avoids the repeat at
        // the boundary.
        for seed in 0..50 {
            let mut r = Rotation::new(true, fastrand::Rng::with_seed(seed));
            let played = take(&mut r, 12, &["a", "a", "b"]);
            for i in (3..12).step_by(3) {
                assert_ne!(played[i - 1], played[i], "seed {seed}: {played:?}");
            }
        }
    }
}
