//! Dates as IAM reads them in `Date*` conditions and `aws:CurrentTime`.
//!
//! IAM accepts ISO 8601 in several degrees of completeness (`2024`,
//! `2024-05-01`, `2024-05-01T12:00Z`, `2024-05-01t2:00:00.5+02:00`) and epoch
//! seconds (`1714560000`). Everything becomes milliseconds since the epoch,
//! saturating far outside any date a request carries.

const MILLIS_PER_SECOND: i64 = 1_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// The years IAM accepts in a date value (Java's `Long` milliseconds range).
const YEAR_MIN: i64 = -292_275_054;
const YEAR_MAX: i64 = 292_278_993;

/// Milliseconds since 1970-01-01T00:00:00Z, or `None` when IAM would not
/// read `text` as a date.
pub fn parse_date_ms(text: &str) -> Option<i64> {
    let lowered = text.to_ascii_lowercase();
    if !lowered.contains('t') && !lowered.contains('-') {
        let seconds: i64 = lowered.parse().ok()?;
        return (seconds >= 0).then(|| seconds.saturating_mul(MILLIS_PER_SECOND));
    }
    parse_iso(&lowered)
}

fn parse_iso(text: &str) -> Option<i64> {
    let (date, time) = match text.split_once('t') {
        Some((date, time)) => (date, time),
        None => (text, ""),
    };
    let (negative, date) = match date.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, date),
    };
    let mut parts = date.split('-');
    let year = number(parts.next()?)?;
    let year = if negative { -year } else { year };
    let month = parts.next().map(number).unwrap_or(Some(1))?;
    let day = parts.next().map(number).unwrap_or(Some(1))?;
    if parts.next().is_some()
        || !(YEAR_MIN..=YEAR_MAX).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let (seconds_of_day, offset_seconds, millis) = parse_time(time)?;
    let days = days_from_civil(year, month, day);
    let seconds =
        days as i128 * SECONDS_PER_DAY as i128 + seconds_of_day as i128 - offset_seconds as i128;
    let total = seconds * MILLIS_PER_SECOND as i128 + millis as i128;
    Some(total.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// `hh[:mm[:ss[.fraction]]]` then `z`, `+hh[:mm]` or `-hh[:mm]`: seconds
/// into the day, the zone's offset in seconds and the milliseconds.
fn parse_time(text: &str) -> Option<(i64, i64, i64)> {
    if text.is_empty() {
        return Some((0, 0, 0));
    }
    let (clock, offset_seconds) = split_zone(text)?;
    let mut fields = clock.split(':');
    let hours = fields
        .next()
        .filter(|h| !h.is_empty())
        .map(number)
        .unwrap_or(Some(0))?;
    let minutes = fields.next().map(number).unwrap_or(Some(0))?;
    let (seconds, millis) = match fields.next() {
        Some(field) => seconds_and_millis(field)?,
        None => (0, 0),
    };
    if fields.next().is_some() || hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some((
        hours * 3_600 + minutes * 60 + seconds,
        offset_seconds,
        millis,
    ))
}

fn split_zone(text: &str) -> Option<(&str, i64)> {
    if let Some(clock) = text.strip_suffix('z') {
        return Some((clock, 0));
    }
    // A '-' can only start a zone here, dates having been split off already.
    let Some(at) = text.find(['+', '-']) else {
        return Some((text, 0));
    };
    let sign = if text.as_bytes()[at] == b'-' { -1 } else { 1 };
    let zone = &text[at + 1..];
    let (hours, minutes) = match zone.split_once(':') {
        Some((hours, minutes)) if minutes.len() == 2 => (hours, number(minutes)?),
        Some(_) => return None,
        None => (zone, 0),
    };
    if hours.len() != 2 {
        return None;
    }
    let hours = number(hours)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((&text[..at], sign * (hours * 3_600 + minutes * 60)))
}

fn seconds_and_millis(field: &str) -> Option<(i64, i64)> {
    let (whole, fraction) = match field.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (field, None),
    };
    let seconds = number(whole)?;
    let millis = match fraction {
        None => 0,
        Some(digits)
            if (1..=9).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let padded = format!("{digits:0<3}");
            padded[..3].parse().ok()?
        }
        Some(_) => return None,
    };
    Some((seconds, millis))
}

fn number(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number (the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
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

/// `2024-05-01T12:00:00Z`: how `aws:CurrentTime` appears in a request context.
pub fn format_iso8601(epoch_ms: i64) -> String {
    let seconds = epoch_ms.div_euclid(MILLIS_PER_SECOND);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{format_iso8601, parse_date_ms};

    #[test]
    fn reads_what_iam_reads() {
        assert_eq!(parse_date_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_date_ms("2019-07-01T13:20:15Z"),
            Some(1_561_987_215_000)
        );
        assert_eq!(
            parse_date_ms("2019-07-01T15:20:15+02:00"),
            Some(1_561_987_215_000)
        );
        assert_eq!(parse_date_ms("2019-07-01"), Some(1_561_939_200_000));
        assert_eq!(parse_date_ms("1561987215"), Some(1_561_987_215_000));
        assert_eq!(
            parse_date_ms("2016-12-13T21:20:37.593194+00:00"),
            Some(1_481_664_037_593)
        );
        assert!(parse_date_ms("2016-12-13t2:00:00.593194+23").is_some());
        assert!(parse_date_ms("01T").is_some());
        for refused in [
            "sdfdsf",
            "234-13",
            "2016-12-13t2:00:00.593194+1",
            "9223372036854775808",
            "",
        ] {
            assert_eq!(parse_date_ms(refused), None, "{refused}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in [
            "2024-02-29T23:59:59Z",
            "1969-12-31T00:00:01Z",
            "2000-01-01T00:00:00Z",
        ] {
            let ms = parse_date_ms(text).expect("a date");
            assert_eq!(format_iso8601(ms), text);
        }
    }
}
