//! Positions and durations in a track as people read and write them. Printed
//! `m:ss.t` (`h:mm:ss.t` from an hour on); typed as plain seconds (`90`,
//! `12.5`), `m:ss` (`1:30`, `1:30.5`) or `h:mm:ss` (`1:02:30`). One printer
//! and one parser, so whatever the program prints can be typed back.

/// The forms a typed time may take, for messages that say how to write one.
pub(crate) const FORMS: &str = "seconds (90), m:ss (1:30) or h:mm:ss (1:02:30)";

/// Formats milliseconds as `m:ss.t`, or `h:mm:ss.t` from an hour on (tenths
/// truncated, so a position never shows later than it is).
pub(crate) fn clock(ms: u64) -> String {
    let tenths = ms / 100;
    let t = tenths % 10;
    let secs = tenths / 10 % 60;
    let mins = tenths / 600;
    if mins < 60 {
        format!("{mins}:{secs:02}.{t}")
    } else {
        format!("{}:{:02}:{secs:02}.{t}", mins / 60, mins % 60)
    }
}

/// Reads a typed position or duration, in milliseconds (rounded to the
/// nearest). The forms are [`FORMS`]; seconds may have a fraction (`1:30.5`,
/// `.5`). After a colon the seconds (and in `h:mm:ss` the minutes) go up to
/// 59; the leading field is unbounded (`90:00` is an hour and a half).
///
/// `Err` says what is wrong with `text`, to follow its quoted self:
/// `"1:75" has more than 59 seconds after a colon ...`.
pub(crate) fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let not_a_time = || format!("is not a time; write {FORMS}");
    if t.starts_with('-') {
        return Err("is negative; a time counts from the track's start".to_owned());
    }
    let fields: Vec<&str> = t.split(':').collect();
    let Some((last, leading)) = fields.split_last() else {
        return Err(not_a_time());
    };
    if leading.len() > 2 {
        return Err(format!("has too many colons; write {FORMS}"));
    }
    let (whole, frac) = match last.split_once('.') {
        Some((w, f)) => (w, f),
        None => (*last, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = frac.is_empty() || digits(frac);
    // Plain seconds may be `.5` or `5.`; after a colon, `ss` is one or two digits.
    let seconds_ok = if leading.is_empty() {
        (digits(whole) || (whole.is_empty() && !frac.is_empty())) && fraction_ok
    } else {
        digits(whole) && whole.len() <= 2 && fraction_ok && !last.ends_with('.')
    };
    if !seconds_ok || !leading.iter().all(|f| digits(f)) {
        return Err(not_a_time());
    }
    let too_long = || "is too long to be a time in a track".to_owned();
    let number = |s: &str| -> Result<u64, String> {
        if s.is_empty() {
            Ok(0)
        } else {
            s.parse::<u64>().map_err(|_| too_long())
        }
    };
    let secs = number(whole)?;
    if !leading.is_empty() && secs > 59 {
        return Err(
            "has more than 59 seconds after a colon; write m:ss with ss from 00 to 59".to_owned(),
        );
    }
    let mut minutes = 0u64;
    for (i, field) in leading.iter().enumerate() {
        let n = number(field)?;
        if i == 1 && n > 59 {
            return Err(
                "has more than 59 minutes in h:mm:ss; write h:mm:ss with mm from 00 to 59"
                    .to_owned(),
            );
        }
        minutes = minutes
            .checked_mul(60)
            .and_then(|m| m.checked_add(n))
            .ok_or_else(too_long)?;
    }
    // Milliseconds from the fraction's first three digits, rounded by the fourth.
    let mut millis = 0u64;
    for k in 0..3 {
        millis = millis * 10 + frac.as_bytes().get(k).map_or(0, |b| u64::from(b - b'0'));
    }
    if frac.as_bytes().get(3).is_some_and(|b| *b >= b'5') {
        millis += 1;
    }
    minutes
        .checked_mul(60)
        .and_then(|s| s.checked_add(secs))
        .and_then(|s| s.checked_mul(1000))
        .and_then(|ms| ms.checked_add(millis))
        .ok_or_else(too_long)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_minutes_then_hours() {
        assert_eq!(clock(0), "0:00.0");
        assert_eq!(clock(61_250), "1:01.2");
        assert_eq!(clock(3_599_999), "59:59.9");
        assert_eq!(clock(3_600_000), "1:00:00.0");
        assert_eq!(clock(37_230_400), "10:20:30.4");
    }

    #[test]
    fn reads_seconds_m_ss_and_h_mm_ss() {
        let ok = [
            ("0", 0),
            ("90", 90_000),
            ("12.5", 12_500),
            (".5", 500),
            ("5.", 5_000),
            ("  42 ", 42_000),
            ("0.0004", 0),
            ("0.0005", 1),
            ("1.2345", 1_235),
            ("1:30", 90_000),
            ("0:30.0", 30_000),
            ("1:5", 65_000),
            ("01:05.25", 65_250),
            ("90:00", 5_400_000),
            ("1:02:30", 3_750_000),
            ("1:00:00.0", 3_600_000),
            ("0:00:07", 7_000),
        ];
        for (text, ms) in ok {
            assert_eq!(parse(text), Ok(ms), "{text:?}");
        }
    }

    #[test]
    fn refuses_with_what_is_wrong() {
        let not_a_time = format!("is not a time; write {FORMS}");
        let refused = [
            ("", not_a_time.as_str()),
            ("abc", &not_a_time),
            ("1m30", &not_a_time),
            ("1e3", &not_a_time),
            ("inf", &not_a_time),
            (".", &not_a_time),
            ("1:", &not_a_time),
            (":30", &not_a_time),
            ("1::30", &not_a_time),
            ("1:030", &not_a_time),
            ("1:30.", &not_a_time),
            ("1.5:30", &not_a_time),
            ("1:3x", &not_a_time),
            ("-4", "is negative; a time counts from the track's start"),
            ("-1:30", "is negative; a time counts from the track's start"),
            (
                "1:2:3:4",
                "has too many colons; write seconds (90), m:ss (1:30) or h:mm:ss (1:02:30)",
            ),
            (
                "1:75",
                "has more than 59 seconds after a colon; write m:ss with ss from 00 to 59",
            ),
            (
                "1:60:00",
                "has more than 59 minutes in h:mm:ss; write h:mm:ss with mm from 00 to 59",
            ),
            (
                "99999999999999999999",
                "is too long to be a time in a track",
            ),
            ("99999999999999999", "is too long to be a time in a track"),
        ];
        for (text, why) in refused {
            assert_eq!(parse(text), Err(why.to_owned()), "{text:?}");
        }
    }

    /// Every printed position reads back as itself (to the tenth it shows).
    #[test]
    fn what_prints_reads_back() {
        let mut ms = 0u64;
        while ms < 40_000_000 {
            let shown = clock(ms);
            assert_eq!(parse(&shown), Ok(ms / 100 * 100), "{shown}");
            ms = ms * 3 / 2 + 137;
        }
        for ms in [59_900, 60_000, 3_599_900, 3_600_000, 86_400_000] {
            assert_eq!(parse(&clock(ms)), Ok(ms), "{}", clock(ms));
        }
    }
}
