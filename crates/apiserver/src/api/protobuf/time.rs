//! Kubernetes JSON forms of time: RFC 3339 timestamps and Go duration strings.
//!
//! meta/v1 `Time` is written as `2006-01-02T15:04:05Z` (UTC, whole seconds), `MicroTime`
//! as `2006-01-02T15:04:05.000000Z`, `Duration` as Go's `time.Duration.String()`
//! (`1h0m0s`, `1.5s`, `300ms`). Written by hand because the few lines needed do not
//! justify a date crate beside the one k8s-openapi already brings privately.

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Format seconds + nanoseconds since the Unix epoch, in UTC.
pub(crate) fn format_timestamp(seconds: i64, nanos: i32, micros: bool) -> Result<String, String> {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(format!("timestamp {seconds}s is outside years 0-9999"));
    }
    if !(0..NANOS_PER_SECOND).contains(&i64::from(nanos)) {
        return Err(format!("nanos {nanos} outside 0..1e9"));
    }
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
    );
    let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if micros {
        text.push_str(&format!(".{:06}", nanos / 1000));
    }
    text.push('Z');
    Ok(text)
}

/// Parse an RFC 3339 timestamp into seconds + nanoseconds since the Unix epoch.
pub(crate) fn parse_timestamp(text: &str) -> Result<(i64, i32), String> {
    let bad = || format!("{text:?} is not an RFC 3339 timestamp");
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let digits = text.get(range).ok_or_else(bad)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        digits.parse::<i64>().map_err(|_| bad())
    };
    let separators_ok = bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok {
        return Err(bad());
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(bad());
    }
    if second > 60 {
        return Err(bad());
    }
    let mut rest = &text[19..];
    let mut nanos: i64 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        for (index, digit) in fraction.bytes().take(digits).enumerate() {
            if index < 9 {
                nanos += i64::from(digit - b'0') * 10i64.pow(8 - index as u32);
            }
        }
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(bad()),
            };
            let offset = &rest[1..];
            if offset.len() != 5 || offset.as_bytes()[2] != b':' {
                return Err(bad());
            }
            let hours: i64 = offset[..2].parse().map_err(|_| bad())?;
            let minutes: i64 = offset[3..].parse().map_err(|_| bad())?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Ok((seconds, nanos as i32))
}

/// Go's `time.Duration.String()` of a number of nanoseconds.
pub(crate) fn format_duration(nanoseconds: i64) -> String {
    let sign = if nanoseconds < 0 { "-" } else { "" };
    let value = nanoseconds.unsigned_abs();
    if value == 0 {
        return "0s".to_string();
    }
    let fraction = |remainder: u64, width: usize| -> String {
        if remainder == 0 {
            return String::new();
        }
        let digits = format!("{remainder:0width$}");
        format!(".{}", digits.trim_end_matches('0'))
    };
    if value < 1_000_000_000 {
        let (unit, scale, width) = match value {
            0..1_000 => ("ns", 1, 0),
            1_000..1_000_000 => ("µs", 1_000, 3),
            _ => ("ms", 1_000_000, 6),
        };
        let whole = value / scale;
        let text = if scale == 1 {
            String::new()
        } else {
            fraction(value % scale, width)
        };
        return format!("{sign}{whole}{text}{unit}");
    }
    let hours = value / 3_600_000_000_000;
    let minutes = value % 3_600_000_000_000 / 60_000_000_000;
    let second_nanos = value % 60_000_000_000;
    let seconds = format!(
        "{}{}s",
        second_nanos / 1_000_000_000,
        fraction(second_nanos % 1_000_000_000, 9)
    );
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}"),
        (0, _) => format!("{sign}{minutes}m{seconds}"),
        _ => format!("{sign}{hours}h{minutes}m{seconds}"),
    }
}

/// Parse a Go duration string (`1h30m`, `1.5s`, `-300ms`, `0`) into nanoseconds.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a duration such as \"1h30m\" or \"30s\"");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let whole: i128 = if whole_len == 0 {
            0
        } else {
            rest[..whole_len].parse().map_err(|_| bad())?
        };
        rest = &rest[whole_len..];
        let mut fraction = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            fraction = &after_dot[..len];
            rest = &after_dot[len..];
        }
        if whole_len == 0 && fraction.is_empty() {
            return Err(bad());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(index, _)| index);
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let mut part = whole.checked_mul(unit).ok_or_else(bad)?;
        let mut scale = unit;
        for digit in fraction.bytes() {
            scale /= 10;
            part += i128::from(digit - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        if total > i128::from(i64::MAX) {
            return Err(bad());
        }
    }
    let total = if negative { -total } else { total };
    i64::try_from(total).map_err(|_| bad())
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01, the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn timestamps_format_and_parse_like_go() {
        assert_eq!(
            format_timestamp(0, 0, false).unwrap(),
            "1970-01-01T00:00:00Z"
        );
        // 2026-11-24T20:00:00Z
        assert_eq!(
            format_timestamp(1_795_550_400, 0, false).unwrap(),
            "2026-11-24T20:00:00Z"
        );
        assert_eq!(
            format_timestamp(1_795_550_400, 123_456_789, true).unwrap(),
            "2026-11-24T20:00:00.123456Z"
        );
        assert_eq!(
            parse_timestamp("2026-11-24T20:00:00Z").unwrap(),
            (1_795_550_400, 0)
        );
        assert_eq!(
            parse_timestamp("2026-11-24T21:00:00.5+01:00").unwrap(),
            (1_795_550_400, 500_000_000)
        );
        assert_eq!(
            parse_timestamp("2000-02-29T00:00:00Z").unwrap().0,
            951_782_400
        );
        for bad in [
            "",
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2026-11-24T20:00:00",
            "x".repeat(30).as_str(),
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?}");
        }
        assert!(format_timestamp(i64::MAX, 0, false).is_err());
        assert!(format_timestamp(i64::MIN, 0, false).is_err());
    }

    #[test]
    fn durations_format_and_parse_like_go() {
        for (nanos, text) in [
            (0, "0s"),
            (30 * NANOS_PER_SECOND, "30s"),
            (3600 * NANOS_PER_SECOND, "1h0m0s"),
            (90 * NANOS_PER_SECOND, "1m30s"),
            (1_500_000_000, "1.5s"),
            (300_000_000, "300ms"),
            (1_500, "1.5µs"),
            (7, "7ns"),
            (-2 * NANOS_PER_SECOND, "-2s"),
        ] {
            assert_eq!(format_duration(nanos), text);
            assert_eq!(parse_duration(text).unwrap(), nanos, "{text}");
        }
        assert_eq!(parse_duration("1h30m").unwrap(), 5400 * NANOS_PER_SECOND);
        assert_eq!(format_duration(i64::MIN), "-2562047h47m16.854775808s");
        for bad in ["", "-", "5", "1x", "1.s.", "9999999999999h", "h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
