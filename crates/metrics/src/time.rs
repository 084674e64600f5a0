//! Time as the store sees it: epoch milliseconds passed in by the caller,
//! never read from a clock here, and the few renderings CloudWatch's
//! messages use.

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Rounds down to a multiple of `step_ms` (also for negative times).
pub fn floor_to(time_ms: i64, step_ms: i64) -> i64 {
    time_ms.div_euclid(step_ms) * step_ms
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
pub fn civil(time_ms: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = time_ms.div_euclid(DAY_MS);
    let in_day = time_ms.rem_euclid(DAY_MS);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (in_day / HOUR_MS) as u32,
        (in_day % HOUR_MS / MINUTE_MS) as u32,
        (in_day % MINUTE_MS / SECOND_MS) as u32,
        (in_day % SECOND_MS) as u32,
    )
}

/// Epoch milliseconds of a UTC civil time (days_from_civil).
pub fn from_civil(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = month as i64;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * DAY_MS + hour as i64 * HOUR_MS + minute as i64 * MINUTE_MS + second as i64 * SECOND_MS
}

/// `2024-12-19T08:35:01.260+0000`, as CloudWatch writes StateReasonData dates.
pub fn iso_reason_data(time_ms: i64) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(time_ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}+0000")
}

/// `19/12/24 08:35:00`, as CloudWatch writes datapoint times in a StateReason.
pub fn reason_time(time_ms: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(time_ms);
    format!(
        "{d:02}/{mo:02}/{:02} {h:02}:{mi:02}:{s:02}",
        y.rem_euclid(100)
    )
}

/// `2024-12-19T08:35:01Z`.
pub fn iso_seconds(time_ms: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(time_ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// A double as Java's `Double.toString` writes it, which is how CloudWatch
/// renders values and thresholds in its messages: `1.0`, `0.25`, `1.0E7`.
pub fn java_double(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-3..1e7).contains(&magnitude) {
        let text = format!("{value}");
        if text.contains('.') {
            text
        } else {
            format!("{text}.0")
        }
    } else {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        format!("{mantissa}E{exponent}")
    }
}

/// `1,440`: CloudWatch's thousands separators.
pub fn with_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        let t = from_civil(2024, 12, 19, 8, 35, 1) + 260;
        assert_eq!(iso_reason_data(t), "2024-12-19T08:35:01.260+0000");
        assert_eq!(reason_time(t), "19/12/24 08:35:01");
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0, 0));
        assert_eq!(from_civil(2000, 2, 29, 0, 0, 0), 951_782_400_000);
    }

    #[test]
    fn java_doubles() {
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(0.01758096118768056), "0.01758096118768056");
        assert_eq!(java_double(400000.0), "400000.0");
        assert_eq!(java_double(1e7), "1.0E7");
        assert_eq!(java_double(1.5e-5), "1.5E-5");
        assert_eq!(java_double(-2.0), "-2.0");
        assert_eq!(with_thousands(16666), "16,666");
        assert_eq!(with_thousands(999), "999");
    }
}
