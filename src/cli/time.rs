//! Reading the times people type (`log --since`) and showing times in local time.
//!
//! JSON output keeps the daemon's RFC 3339 UTC times untouched; only the human output
//! converts them, with the zone passed in so tests do not depend on the machine's.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

/// A time zone whose offsets can be printed; `chrono::Local` in the binary.
pub trait Zone: TimeZone<Offset: std::fmt::Display> {}
impl<T: TimeZone<Offset: std::fmt::Display>> Zone for T {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot read {0:?} as a time: give RFC 3339 (2026-11-24T03:00:00Z), a local date \
     (2026-11-24) or a duration ago (90m, 2h, 3d, 1w2d)"
)]
pub struct TimeError(String);

/// Reads a `--since` value: an RFC 3339 time, a date (midnight in `zone`), or a
/// duration before `now` made of `<number><unit>` groups, units s, m, h, d, w.
pub fn parse_since(
    text: &str,
    now: DateTime<Utc>,
    zone: &impl Zone,
) -> Result<DateTime<Utc>, TimeError> {
    parse_point(text, now, zone, -1)
}

/// Reads a `--until` / `--keep-until` value: as [`parse_since`], but a duration
/// counts forward from `now`.
pub fn parse_until(
    text: &str,
    now: DateTime<Utc>,
    zone: &impl Zone,
) -> Result<DateTime<Utc>, TimeError> {
    parse_point(text, now, zone, 1)
}

/// An absolute time, or `now` plus `direction` times a duration.
fn parse_point(
    text: &str,
    now: DateTime<Utc>,
    zone: &impl Zone,
    direction: i32,
) -> Result<DateTime<Utc>, TimeError> {
    let text = text.trim();
    let invalid = || TimeError(text.to_owned());
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        // `earliest`: on a day whose midnight a DST change skips or repeats.
        return zone
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(invalid);
    }
    let span = parse_duration(text).ok_or_else(invalid)?;
    let moved = if direction < 0 {
        now.checked_sub_signed(span)
    } else {
        now.checked_add_signed(span)
    };
    moved.ok_or_else(invalid)
}

fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::zero();
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let seconds_per_unit = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        total = total.checked_add(&Duration::try_seconds(
            number.checked_mul(seconds_per_unit)?,
        )?)?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Some(total)
}

/// A time in a table cell: minutes are enough to tell rows apart at a glance.
pub fn table_time(time: DateTime<Utc>, zone: &impl Zone) -> String {
    time.with_timezone(zone)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// A time in a `key: value` block: to the second, with the offset.
pub fn block_time(time: DateTime<Utc>, zone: &impl Zone) -> String {
    time.with_timezone(zone)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

pub use crate::message::human_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn since_accepts_times_dates_and_durations() {
        let now = at("2026-11-24T12:00:00Z");
        let paris = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(
            parse_since("2026-11-20T03:00:00+01:00", now, &paris),
            Ok(at("2026-11-20T02:00:00Z"))
        );
        assert_eq!(
            parse_since("2026-11-20T03:00:00Z", now, &Utc),
            Ok(at("2026-11-20T03:00:00Z"))
        );
        assert_eq!(
            parse_since("2026-11-20", now, &paris),
            Ok(at("2026-11-19T23:00:00Z"))
        );
        assert_eq!(parse_since("2h", now, &Utc), Ok(at("2026-11-24T10:00:00Z")));
        assert_eq!(parse_since("3d", now, &Utc), Ok(at("2026-11-21T12:00:00Z")));
        assert_eq!(parse_since("1w", now, &Utc), Ok(at("2026-11-17T12:00:00Z")));
        assert_eq!(
            parse_since("1h30m", now, &Utc),
            Ok(at("2026-11-24T10:30:00Z"))
        );
        assert_eq!(
            parse_since(" 90s ", now, &Utc),
            Ok(at("2026-11-24T11:58:30Z"))
        );
    }

    #[test]
    fn since_refuses_nonsense() {
        let now = at("2026-11-24T12:00:00Z");
        for text in [
            "",
            "2",
            "h",
            "2x",
            "2h3",
            "-2h",
            "yesterday",
            "99999999999999999999d",
            "9999999999999w",
        ] {
            let error = parse_since(text, now, &Utc).unwrap_err();
            assert!(
                error.to_string().contains("duration ago"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn times_show_in_the_given_zone() {
        let zone = FixedOffset::east_opt(2 * 3600).unwrap();
        let time = at("2026-11-24T03:04:05Z");
        assert_eq!(table_time(time, &zone), "2026-11-24 05:04");
        assert_eq!(block_time(time, &zone), "2026-11-24 05:04:05 +02:00");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(125), "2m 5s");
        assert_eq!(human_duration(2 * 3600 + 5 * 60 + 7), "2h 5m");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
    }
}
