//! Kubernetes time formats: RFC 3339 timestamps as the API writes them, the Go durations
//! of query parameters (`?timeout=30s`), and kubectl's human-readable durations and ages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `kubectl`'s age of a timestamp: `<unknown>` when missing or unreadable.
pub fn age(timestamp: Option<&str>, now: SystemTime) -> String {
    match timestamp.and_then(parse_timestamp) {
        Some(then) => human_duration_between(then, now),
        None => "<unknown>".to_string(),
    }
}

/// [`human_duration`] of `now - then`, tolerating up to a second of clock skew into the
/// future (`0s`) and showing `<invalid>` beyond, as upstream.
pub fn human_duration_between(then: SystemTime, now: SystemTime) -> String {
    match now.duration_since(then) {
        Ok(elapsed) => human_duration(elapsed),
        Err(ahead) if ahead.duration().as_secs() < 2 => "0s".to_string(),
        Err(_) => "<invalid>".to_string(),
    }
}

/// k8s.io/apimachinery `duration.HumanDuration`: precise while short, coarser as it grows
/// (`45s`, `5m30s`, `3h10m`, `2d5h`, `300d`, `4y20d`, `9y`).
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        };
    }
    format!("{}y", days / 365)
}

/// An RFC 3339 timestamp as Kubernetes writes them (`2024-05-01T10:00:00Z`, fractions and
/// offsets accepted).
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<9}", &fraction[..digits.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    let since_epoch = Duration::new(seconds.unsigned_abs(), 0);
    let whole = if seconds >= 0 {
        UNIX_EPOCH.checked_add(since_epoch)?
    } else {
        UNIX_EPOCH.checked_sub(since_epoch)?
    };
    whole.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A Go duration of one whole unit, as clients send `?timeout=` (`30s`, `1m`, `500ms`,
/// `1h`); `None` if it is not one.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(
        number.saturating_mul(millis_per_unit),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_of_one_unit_parse() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "10", "s", "5x", "-1s", "1.5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (630, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 600, "3h10m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86_400, "2d"),
            (2 * 86_400 + 5 * 3600, "2d5h"),
            (300 * 86_400, "300d"),
            (4 * 365 * 86_400, "4y"),
            (2 * 365 * 86_400 + 20 * 86_400, "2y20d"),
            (9 * 365 * 86_400, "9y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                human_duration(Duration::from_secs(seconds)),
                expected,
                "{seconds}s"
            );
        }
        let then = now();
        assert_eq!(
            human_duration_between(then + Duration::from_millis(1500), then),
            "0s"
        );
        assert_eq!(
            human_duration_between(then + Duration::from_secs(5), then),
            "<invalid>"
        );
        assert_eq!(age(None, now()), "<unknown>");
        assert_eq!(age(Some("yesterday"), now()), "<unknown>");
    }

    #[test]
    fn timestamps_parse_as_rfc3339() {
        let epoch = |text: &str| {
            parse_timestamp(text)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| (d.as_secs(), d.subsec_nanos()))
        };
        assert_eq!(epoch("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(epoch("2024-02-29T12:00:00Z"), Some((1_709_208_000, 0)));
        assert_eq!(
            epoch("2024-02-29T13:30:00.5+01:30"),
            Some((1_709_208_000, 500_000_000))
        );
        assert_eq!(epoch("2024-02-29"), None);
        assert_eq!(epoch("2024-13-01T00:00:00Z"), None);
    }
}
