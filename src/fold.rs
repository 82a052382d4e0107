//! Text as queries compare it, in one place: the library search of `radio
//! broadcast`, its track names, and playlist entries matched by file name.

use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

/// Text as queries compare it: lower case, decomposed (Unicode NFKD) and
/// without combining marks, so "hoppipolla" finds "Hoppípolla", "cafe" finds
/// "CAFÉ" whichever way its é is encoded, and "ﬁ" finds "fi".
pub(crate) fn fold(text: &str) -> String {
    text.to_lowercase()
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .collect()
}
