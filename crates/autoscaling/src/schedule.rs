//! Scheduled actions' schedules in Application Auto Scaling's syntax:
//! `at(yyyy-mm-ddThh:mm:ss)`, `rate(N unit)` and `cron(M H DoM Mon DoW Y)`
//! with `*`, `?`, ranges, lists, steps, `L`, `W`, `LW`, `#` and names, in an
//! IANA time zone (UTC by default), daylight saving included.
//!
//! No cron crate on crates.io speaks this dialect (six fields ending in a
//! year, Quartz weekday numbers 1 = SUN, `?` required in one day field), so
//! this is a small parser of our own, fuzzed (`fuzz/fuzz_targets/schedule.rs`).

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::ValidationError;

pub const YEAR_MIN: i16 = 1970;
pub const YEAR_MAX: i16 = 2199;
/// How far ahead the next occurrence is searched (a cron for 30 February
/// never fires).
const SEARCH_YEARS_MAX: i16 = 50;

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    At(DateTime),
    Rate { every_ms: i64 },
    Cron(Box<Cron>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    day_of_month: DayOfMonth,
    months: u16,
    day_of_week: DayOfWeek,
    /// Bit `y - 1970` for each year allowed.
    years: [u64; 4],
}

#[derive(Clone, Debug, PartialEq)]
enum DayOfMonth {
    Any,
    Days(u32),
    Last,
    LastWeekday,
    NearestWeekday(u8),
}

#[derive(Clone, Debug, PartialEq)]
enum DayOfWeek {
    Any,
    /// Bit 0 = Sunday … bit 6 = Saturday.
    Days(u8),
    Last(u8),
    Nth(u8, u8),
}

fn invalid(schedule: &str, why: impl std::fmt::Display) -> ValidationError {
    ValidationError(format!("Invalid schedule expression {schedule}: {why}"))
}

/// Parses a schedule as PutScheduledAction takes it.
pub fn parse(text: &str) -> Result<Schedule, ValidationError> {
    let body = |prefix: &str| {
        text.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(')'))
    };
    if let Some(at) = body("at(") {
        return parse_at(at)
            .map(Schedule::At)
            .ok_or_else(|| invalid(text, "expected at(yyyy-mm-ddThh:mm:ss)"));
    }
    if let Some(rate) = body("rate(") {
        return parse_rate(rate).map_err(|why| invalid(text, why));
    }
    if let Some(cron) = body("cron(") {
        return parse_cron(cron)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|why| invalid(text, why));
    }
    Err(ValidationError(format!(
        "Invalid schedule expression {text}: a schedule is at(yyyy-mm-ddThh:mm:ss), rate(value unit) or cron(minutes hours day-of-month month day-of-week year)"
    )))
}

fn parse_at(text: &str) -> Option<DateTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i16>().ok();
    let date = Date::new(number(0..4)?, number(5..7)? as i8, number(8..10)? as i8).ok()?;
    let time = jiff::civil::Time::new(
        number(11..13)? as i8,
        number(14..16)? as i8,
        number(17..19)? as i8,
        0,
    )
    .ok()?;
    Some(DateTime::from_parts(date, time))
}

fn parse_rate(text: &str) -> Result<Schedule, String> {
    let (value, unit) = text
        .trim()
        .split_once(' ')
        .ok_or("expected rate(value unit)")?;
    let value: i64 = value
        .parse()
        .map_err(|_| format!("{value} is not a positive whole number"))?;
    if value < 1 {
        return Err(format!("{value} is not a positive whole number"));
    }
    let unit_ms = match (unit.trim(), value == 1) {
        ("minute", true) | ("minutes", false) => 60_000,
        ("hour", true) | ("hours", false) => 3_600_000,
        ("day", true) | ("days", false) => 86_400_000,
        (other, _) => {
            return Err(format!(
            "unit {other} is not minute(s), hour(s) or day(s) (singular for 1, plural otherwise)"
        ))
        }
    };
    value
        .checked_mul(unit_ms)
        .map(|every_ms| Schedule::Rate { every_ms })
        .ok_or_else(|| "rate is too long".to_string())
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(text: &str, min: u32, max: u32, names: &[&str], field: &str) -> Result<u32, String> {
    if let Some(index) = names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(min + index as u32);
    }
    let number: u32 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a valid {field}"))?;
    if number < min || number > max {
        return Err(format!("{field} {number} is outside {min}-{max}"));
    }
    Ok(number)
}

/// Plain numeric items (`*`, `n`, `a-b`, `a/s`, `a-b/s`, `*/s`, lists) as
/// the set of allowed values.
fn plain(text: &str, min: u32, max: u32, names: &[&str], field: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("'{step}' is not a valid step in the {field} field"))?;
                if step == 0 {
                    return Err(format!("a step of 0 in the {field} field"));
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                value(a, min, max, names, field)?,
                value(b, min, max, names, field)?,
            )
        } else {
            let start = value(range, min, max, names, field)?;
            (start, if item.contains('/') { max } else { start })
        };
        if from > to {
            return Err(format!("range {range} in the {field} field runs backwards"));
        }
        out.extend((from..=to).step_by(step as usize));
    }
    Ok(out)
}

fn bits(values: &[u32]) -> u64 {
    values.iter().fold(0u64, |bits, v| bits | (1u64 << v))
}

fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "expected 6 fields (minutes hours day-of-month month day-of-week year), found {}",
            fields.len()
        ));
    }
    let minutes = bits(&plain(fields[0], 0, 59, &[], "minutes")?);
    let hours = bits(&plain(fields[1], 0, 23, &[], "hours")?) as u32;
    let months = (bits(&plain(fields[3], 1, 12, &MONTHS, "month")?) >> 1) as u16;
    let mut years = [0u64; 4];
    for year in plain(fields[5], YEAR_MIN as u32, YEAR_MAX as u32, &[], "year")? {
        let bit = (year - YEAR_MIN as u32) as usize;
        years[bit / 64] |= 1 << (bit % 64);
    }
    let (dom_text, dow_text) = (fields[2], fields[4]);
    match (dom_text == "?", dow_text == "?") {
        (true, true) => {
            return Err("the day-of-month and day-of-week fields cannot both be '?'".into())
        }
        (false, false) => {
            return Err(
                "the day-of-month and day-of-week fields cannot both be set; one must be '?'"
                    .into(),
            )
        }
        _ => {}
    }
    let day_of_month = match dom_text {
        "?" => DayOfMonth::Any,
        "L" => DayOfMonth::Last,
        "LW" => DayOfMonth::LastWeekday,
        text if text.ends_with('W') => {
            let day = value(&text[..text.len() - 1], 1, 31, &[], "day-of-month")?;
            DayOfMonth::NearestWeekday(day as u8)
        }
        text if text.contains(['L', 'W', '#']) => {
            return Err(format!("'{text}' is not a valid day-of-month"))
        }
        text => DayOfMonth::Days((bits(&plain(text, 1, 31, &[], "day-of-month")?)) as u32),
    };
    let day_of_week = match dow_text {
        "?" => DayOfWeek::Any,
        "L" => DayOfWeek::Days(1 << 6),
        text if text.ends_with('L') => DayOfWeek::Last(
            (value(&text[..text.len() - 1], 1, 7, &WEEKDAYS, "day-of-week")? - 1) as u8,
        ),
        text if text.contains('#') => {
            let (day, nth) = text.split_once('#').unwrap_or((text, ""));
            let day = value(day, 1, 7, &WEEKDAYS, "day-of-week")?;
            let nth: u8 = nth
                .parse()
                .ok()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| format!("'{text}': the week after # must be 1-5"))?;
            DayOfWeek::Nth((day - 1) as u8, nth)
        }
        text => DayOfWeek::Days((bits(&plain(text, 1, 7, &WEEKDAYS, "day-of-week")?) >> 1) as u8),
    };
    Ok(Cron {
        minutes,
        hours,
        day_of_month,
        months,
        day_of_week,
        years,
    })
}

fn weekday_index(date: Date) -> u8 {
    date.weekday().to_sunday_zero_offset() as u8
}

impl Cron {
    fn year_allowed(&self, year: i16) -> bool {
        if !(YEAR_MIN..=YEAR_MAX).contains(&year) {
            return false;
        }
        let bit = (year - YEAR_MIN) as usize;
        self.years[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn day_allowed(&self, date: Date) -> bool {
        let last = date.last_of_month().day();
        let day = date.day();
        let dom = match &self.day_of_month {
            DayOfMonth::Any => true,
            DayOfMonth::Days(bits) => bits & (1 << day) != 0,
            DayOfMonth::Last => day == last,
            DayOfMonth::LastWeekday => {
                let mut candidate = date.last_of_month();
                while weekday_index(candidate) == 0 || weekday_index(candidate) == 6 {
                    candidate = candidate.yesterday().unwrap_or(candidate);
                }
                candidate == date
            }
            DayOfMonth::NearestWeekday(target) => {
                let target = (*target as i8).min(last);
                let Ok(anchor) = date.with().day(target).build() else {
                    return false;
                };
                // The nearest weekday within the month.
                let nearest = match weekday_index(anchor) {
                    6 if target == 1 => anchor.tomorrow().and_then(|d| d.tomorrow()),
                    6 => anchor.yesterday(),
                    0 if target == last => anchor.yesterday().and_then(|d| d.yesterday()),
                    0 => anchor.tomorrow(),
                    _ => Ok(anchor),
                };
                nearest.is_ok_and(|n| n == date)
            }
        };
        let weekday = weekday_index(date);
        let dow = match &self.day_of_week {
            DayOfWeek::Any => true,
            DayOfWeek::Days(bits) => bits & (1 << weekday) != 0,
            DayOfWeek::Last(target) => weekday == *target && day + 7 > last,
            DayOfWeek::Nth(target, nth) => weekday == *target && (day - 1) / 7 + 1 == *nth as i8,
        };
        dom && dow
    }

    /// The first local time strictly after `after` that the cron names.
    fn next_local(&self, after: DateTime) -> Option<DateTime> {
        let mut date = after.date();
        let end_year = after.year().saturating_add(SEARCH_YEARS_MAX).min(YEAR_MAX);
        while date.year() <= end_year {
            if !self.year_allowed(date.year()) {
                date = Date::new(date.year().checked_add(1)?, 1, 1).ok()?;
                continue;
            }
            if self.months & (1 << (date.month() - 1)) == 0 {
                date = date
                    .first_of_month()
                    .checked_add(jiff::Span::new().months(1))
                    .ok()?;
                continue;
            }
            if self.day_allowed(date) {
                for hour in 0..24i8 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    for minute in 0..60i8 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let candidate = date.at(hour, minute, 0, 0);
                        if candidate > after {
                            return Some(candidate);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// Resolves an IANA time zone name (UTC when absent).
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, ValidationError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|_| ValidationError(format!("Invalid timezone: {name}. It must be a canonical IANA time zone name, such as America/New_York or Etc/GMT+9."))),
    }
}

fn to_ms(local: DateTime, zone: &TimeZone) -> Option<i64> {
    // Times a daylight-saving change skips run just after it; repeated
    // times run at their first occurrence.
    zone.to_ambiguous_zoned(local)
        .compatible()
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

fn local(ms: i64, zone: &TimeZone) -> Option<DateTime> {
    Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_zoned(zone.clone()).datetime())
}

impl Schedule {
    /// The first occurrence strictly after `after_ms`, in epoch ms. `anchor_ms`
    /// is where a rate starts counting (the action's StartTime, or when it
    /// was created).
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64, zone: &TimeZone) -> Option<i64> {
        match self {
            Schedule::At(at) => to_ms(*at, zone).filter(|t| *t > after_ms),
            Schedule::Rate { every_ms } => {
                if after_ms < anchor_ms {
                    return Some(anchor_ms);
                }
                Some(anchor_ms + ((after_ms - anchor_ms) / every_ms + 1) * every_ms)
            }
            Schedule::Cron(cron) => {
                let mut from = local(after_ms, zone)?;
                // Skip local times that map back to the same or an earlier instant.
                for _ in 0..4 {
                    let next = cron.next_local(from)?;
                    let ms = to_ms(next, zone)?;
                    if ms > after_ms {
                        return Some(ms);
                    }
                    from = next;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> i64 {
        to_ms(Date::new(y, mo, d).unwrap().at(h, mi, 0, 0), &TimeZone::UTC).unwrap()
    }

    fn next(schedule: &str, after: i64, zone: Option<&str>) -> Option<i64> {
        parse(schedule)
            .unwrap()
            .next_after(after, after, &time_zone(zone).unwrap())
    }

    #[test]
    fn the_documented_examples() {
        let monday = utc(2024, 6, 3, 9, 0); // a Monday
        assert_eq!(
            next("cron(0 10 * * ? *)", monday, None),
            Some(utc(2024, 6, 3, 10, 0))
        );
        assert_eq!(
            next("cron(15 12 * * ? *)", monday, None),
            Some(utc(2024, 6, 3, 12, 15))
        );
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)", utc(2024, 6, 7, 19, 0), None),
            Some(utc(2024, 6, 10, 18, 0))
        );
        assert_eq!(
            next("cron(0 8 1 * ? *)", monday, None),
            Some(utc(2024, 7, 1, 8, 0))
        );
        assert_eq!(
            next("cron(0/15 * * * ? *)", utc(2024, 6, 3, 9, 7), None),
            Some(utc(2024, 6, 3, 9, 15))
        );
        assert_eq!(
            next(
                "cron(0/5 8-17 ? * MON-FRI *)",
                utc(2024, 6, 3, 17, 56),
                None
            ),
            Some(utc(2024, 6, 4, 8, 0))
        );
        assert_eq!(
            next("cron(30 6 ? * 3 *)", monday, None),
            Some(utc(2024, 6, 4, 6, 30)),
            "3 is Tuesday"
        );
    }

    #[test]
    fn last_weekday_and_nth() {
        let start = utc(2024, 6, 1, 0, 0);
        assert_eq!(
            next("cron(0 0 L * ? *)", start, None),
            Some(utc(2024, 6, 30, 0, 0))
        );
        assert_eq!(
            next("cron(0 0 LW * ? *)", start, None),
            Some(utc(2024, 6, 28, 0, 0)),
            "30 June 2024 is a Sunday"
        );
        assert_eq!(
            next("cron(0 0 15W * ? *)", start, None),
            Some(utc(2024, 6, 14, 0, 0)),
            "15 June 2024 is a Saturday"
        );
        assert_eq!(
            next("cron(0 0 1W * ? *)", start, None),
            Some(utc(2024, 6, 3, 0, 0)),
            "1 June is a Saturday: Monday the 3rd"
        );
        assert_eq!(
            next("cron(0 0 ? * 6L *)", start, None),
            Some(utc(2024, 6, 28, 0, 0)),
            "last Friday"
        );
        assert_eq!(
            next("cron(0 0 ? * 2#1 *)", start, None),
            Some(utc(2024, 6, 3, 0, 0)),
            "first Monday"
        );
        assert_eq!(
            next("cron(0 0 ? * TUE#3 *)", start, None),
            Some(utc(2024, 6, 18, 0, 0))
        );
        assert_eq!(
            next("cron(0 0 29 FEB ? 2025-2030)", start, None),
            Some(utc(2028, 2, 29, 0, 0))
        );
        assert_eq!(next("cron(0 0 30 FEB ? *)", start, None), None);
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 18:00 in New York is 22:00 UTC in summer, 23:00 in winter.
        assert_eq!(
            next(
                "cron(0 18 * * ? *)",
                utc(2024, 7, 1, 0, 0),
                Some("America/New_York")
            ),
            Some(utc(2024, 7, 1, 22, 0))
        );
        assert_eq!(
            next(
                "cron(0 18 * * ? *)",
                utc(2024, 12, 1, 0, 0),
                Some("America/New_York")
            ),
            Some(utc(2024, 12, 1, 23, 0))
        );
        // 02:30 does not exist on 10 March 2024 in New York: it runs at 03:30 EDT.
        assert_eq!(
            next(
                "cron(30 2 * * ? *)",
                utc(2024, 3, 10, 0, 0),
                Some("America/New_York")
            ),
            Some(utc(2024, 3, 10, 7, 30))
        );
        assert_eq!(
            next(
                "at(2021-01-31T17:00:00)",
                utc(2021, 1, 1, 0, 0),
                Some("America/New_York")
            ),
            Some(utc(2021, 1, 31, 22, 0))
        );
        assert_eq!(
            next(
                "cron(0 18 ? * MON-FRI *)",
                utc(2024, 6, 3, 0, 0),
                Some("Etc/GMT+9")
            ),
            Some(utc(2024, 6, 4, 3, 0))
        );
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn rates_and_refusals() {
        let start = utc(2024, 6, 1, 0, 0);
        let schedule = parse("rate(5 minutes)").unwrap();
        assert_eq!(
            schedule.next_after(start + 60_000, start, &TimeZone::UTC),
            Some(start + 300_000)
        );
        assert!(parse("rate(1 minutes)").is_err());
        assert!(parse("rate(0 hours)").is_err());
        let cases = [
            ("cron(0 10 * * * *)", "Invalid schedule expression cron(0 10 * * * *): the day-of-month and day-of-week fields cannot both be set; one must be '?'"),
            ("cron(0 10 * *)", "Invalid schedule expression cron(0 10 * *): expected 6 fields (minutes hours day-of-month month day-of-week year), found 4"),
            ("cron(61 10 * * ? *)", "Invalid schedule expression cron(61 10 * * ? *): minutes 61 is outside 0-59"),
            ("cron(0 10 ? * FUNDAY *)", "Invalid schedule expression cron(0 10 ? * FUNDAY *): 'FUNDAY' is not a valid day-of-week"),
            ("cron(0 10 ? * 2#6 *)", "Invalid schedule expression cron(0 10 ? * 2#6 *): '2#6': the week after # must be 1-5"),
            ("at(2021-13-01T00:00:00)", "Invalid schedule expression at(2021-13-01T00:00:00): expected at(yyyy-mm-ddThh:mm:ss)"),
        ];
        for (text, message) in cases {
            assert_eq!(parse(text).unwrap_err().0, message);
        }
    }
}
