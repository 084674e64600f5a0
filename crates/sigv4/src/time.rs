//! Timestamps as SigV4 writes them, without a date library.
//!
//! SigV4 needs only two conversions: the ISO 8601 basic format
//! (`20150830T123600Z`) both ways, and the IMF-fixdate of the HTTP `Date`
//! header one way. Both reduce to the proleptic Gregorian calendar, so a pair
//! of civil-date functions (Howard Hinnant's `days_from_civil` /
//! `civil_from_days`) is all the calendar we carry.

const SECONDS_PER_DAY: u64 = 86_400;

/// The last year that four digits can write; SigV4 timestamps have no room for more.
const LAST_FOUR_DIGIT_YEAR: u64 = 9999;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Shift the year to start in March so that the leap day is the last day
    // of the shifted year and drops out of the month arithmetic.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both casts are in range by construction: month is 1..=12 and day 1..=31.
    (year, month as u32, day as u32)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Unix seconds of a UTC civil time, or `None` before 1970 or past year 9999.
fn unix_seconds_from_civil(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> Option<u64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // Leap seconds (second 60) are not accepted: no AWS SDK ever writes one.
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if year < 1970 || year > LAST_FOUR_DIGIT_YEAR as i64 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(
        days * SECONDS_PER_DAY
            + u64::from(hour) * 3600
            + u64::from(minute) * 60
            + u64::from(second),
    )
}

fn parse_digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u32, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

/// Parses the ISO 8601 basic format SigV4 uses, `YYYYMMDD'T'HHMMSS'Z'`.
pub(crate) fn parse_amz_date(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    unix_seconds_from_civil(
        i64::from(parse_digits(&bytes[0..4])?),
        parse_digits(&bytes[4..6])?,
        parse_digits(&bytes[6..8])?,
        parse_digits(&bytes[9..11])?,
        parse_digits(&bytes[11..13])?,
        parse_digits(&bytes[13..15])?,
    )
}

/// Parses an HTTP `Date` header: IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`,
/// or the same with a `-0000`/`+0000` zone, which is what botocore writes
/// (Python's `email.utils.formatdate`) when it signs with `Date`.
///
/// The obsolete RFC 850 and asctime forms are not accepted: no SigV4 client
/// writes them, and they are not worth a parser.
pub(crate) fn parse_http_date(text: &str) -> Option<u64> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let bytes = text.as_bytes();
    // "Sun, 06 Nov 1994 08:49:37" is exactly 25 bytes; the zone follows.
    let (stamp, zone) = bytes.split_at_checked(25)?;
    if !matches!(zone, b" GMT" | b" -0000" | b" +0000")
        || &stamp[3..5] != b", "
        || stamp[7] != b' '
        || stamp[11] != b' '
        || stamp[16] != b' '
        || stamp[19] != b':'
        || stamp[22] != b':'
    {
        return None;
    }
    let month = MONTHS.iter().position(|name| *name == &stamp[8..11])? as u32 + 1;
    unix_seconds_from_civil(
        i64::from(parse_digits(&stamp[12..16])?),
        month,
        parse_digits(&stamp[5..7])?,
        parse_digits(&stamp[17..19])?,
        parse_digits(&stamp[20..22])?,
        parse_digits(&stamp[23..25])?,
    )
}

/// A timestamp in the ISO 8601 basic format, held inline so that formatting
/// one on the verification path allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct AmzDate([u8; 16]);

impl AmzDate {
    /// Formats Unix seconds; years past 9999 are clamped to 9999-12-31T23:59:59Z
    /// because the format has four year digits and no caller can mean them.
    pub(crate) fn from_unix_seconds(unix_seconds: u64) -> Self {
        const LAST_WRITABLE_SECOND: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        let unix_seconds = unix_seconds.min(LAST_WRITABLE_SECOND);
        let days = (unix_seconds / SECONDS_PER_DAY) as i64;
        let second_of_day = unix_seconds % SECONDS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        let mut text = *b"00000000T000000Z";
        write_digits(&mut text[0..4], year as u64);
        write_digits(&mut text[4..6], u64::from(month));
        write_digits(&mut text[6..8], u64::from(day));
        write_digits(&mut text[9..11], second_of_day / 3600);
        write_digits(&mut text[11..13], second_of_day / 60 % 60);
        write_digits(&mut text[13..15], second_of_day % 60);
        Self(text)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits, 'T' and 'Z' are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The `YYYYMMDD` part, as the credential scope carries it.
    pub(crate) fn date(&self) -> &str {
        &self.as_str()[..8]
    }
}

impl std::fmt::Debug for AmzDate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::fmt::Display for AmzDate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_covers_leap_years_and_century_rules() {
        for days in -800_000..800_000 {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn amz_date_parses_and_formats() {
        let unix = parse_amz_date("20150830T123600Z");
        assert_eq!(unix, Some(1_440_938_160));
        assert_eq!(
            AmzDate::from_unix_seconds(1_440_938_160).as_str(),
            "20150830T123600Z"
        );
        assert_eq!(AmzDate::from_unix_seconds(0).as_str(), "19700101T000000Z");
        assert_eq!(
            AmzDate::from_unix_seconds(u64::MAX).as_str(),
            "99991231T235959Z"
        );
        assert_eq!(parse_amz_date("20240229T000000Z"), Some(1_709_164_800));
    }

    #[test]
    fn amz_date_rejects_malformed_text() {
        for text in [
            "",
            "2015-08-30T12:36:00Z",
            "20150830T123600",
            "20150830 123600Z",
            "20150230T000000Z",
            "20230229T000000Z",
            "20151301T000000Z",
            "20150830T240000Z",
            "20150830T126000Z",
            "20150830T123660Z",
            "19691231T235959Z",
            "2015083aT123600Z",
            "+0150830T123600Z",
        ] {
            assert_eq!(parse_amz_date(text), None, "{text:?}");
        }
    }

    #[test]
    fn http_date_parses_imf_fixdate_and_python_formatdate() {
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(1_440_938_160)
        );
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 -0000"),
            Some(1_440_938_160)
        );
        assert_eq!(parse_http_date("Sun, 30 Aug 2015 12:36:00 +0100"), None);
        assert_eq!(parse_http_date("Sun, 30 Aug 2015 12:36:00"), None);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
    }
}
