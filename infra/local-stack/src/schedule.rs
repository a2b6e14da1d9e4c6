//! Schedule expressions as EventBridge writes them: `rate(5 minutes)`,
//! [`cron(...)`](https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html#cron-based)
//! with its six fields (minutes hours day-of-month month day-of-week year) and
//! Scheduler's one-time `at(yyyy-mm-ddThh:mm:ss)`.
//!
//! Pure and time-injected: [`ScheduleExpression::next_after`] takes `now`, so the
//! firing rules are tested without waiting. Times are UTC (the local stack ignores
//! Scheduler's `ScheduleExpressionTimezone`, and says so when it is set).

use std::collections::BTreeSet;

use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time, Weekday};

/// Why an expression was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{0}` is not rate(...), cron(...) or at(...)")]
    UnknownForm(String),
    #[error("rate `{0}`: expected `rate(<positive number> minute[s]|hour[s]|day[s])`")]
    Rate(String),
    #[error("cron `{expression}`: {reason}")]
    Cron { expression: String, reason: String },
    #[error("at `{0}`: expected `at(yyyy-mm-ddThh:mm:ss)`")]
    At(String),
}

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpression {
    /// Every `period`, starting when the schedule is created.
    Rate(Duration),
    /// The minutes matching the cron fields.
    Cron(Box<Cron>),
    /// Once, at this UTC time.
    At(OffsetDateTime),
}

/// The six fields of an EventBridge cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: BTreeSet<u8>,
    hours: BTreeSet<u8>,
    day_of_month: DayOfMonth,
    months: BTreeSet<u8>,
    day_of_week: DayOfWeek,
    years: Option<BTreeSet<i32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfMonth {
    Any,
    Days(BTreeSet<u8>),
    /// `L`: the last day of the month.
    Last,
    /// `LW`: the last weekday of the month.
    LastWeekday,
    /// `15W`: the weekday nearest the 15th, within the month.
    NearestWeekday(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfWeek {
    Any,
    /// 1 = Sunday … 7 = Saturday.
    Days(BTreeSet<u8>),
    /// `6L`: the last Friday of the month.
    LastOfMonth(u8),
    /// `3#2`: the second Tuesday of the month.
    Nth(u8, u8),
}

impl ScheduleExpression {
    /// Parses `rate(...)`, `cron(...)` or `at(...)`.
    pub fn parse(expression: &str) -> Result<ScheduleExpression, ScheduleError> {
        let trimmed = expression.trim();
        if let Some(inner) = strip_call(trimmed, "rate") {
            return parse_rate(inner).ok_or_else(|| ScheduleError::Rate(expression.to_owned()));
        }
        if let Some(inner) = strip_call(trimmed, "cron") {
            return Cron::parse(inner)
                .map(|cron| ScheduleExpression::Cron(Box::new(cron)))
                .map_err(|reason| ScheduleError::Cron {
                    expression: expression.to_owned(),
                    reason,
                });
        }
        if let Some(inner) = strip_call(trimmed, "at") {
            let format =
                time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            return PrimitiveDateTime::parse(inner.trim(), format)
                .map(|at| ScheduleExpression::At(at.assume_utc()))
                .map_err(|_| ScheduleError::At(expression.to_owned()));
        }
        Err(ScheduleError::UnknownForm(expression.to_owned()))
    }

    /// The first firing strictly after `after`. `created` is when the schedule started
    /// (rates count from it). `None` when it never fires again.
    pub fn next_after(
        &self,
        created: OffsetDateTime,
        after: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        match self {
            ScheduleExpression::Rate(period) => {
                let elapsed = after - created;
                let periods = if elapsed.is_negative() {
                    0
                } else {
                    elapsed.whole_seconds() / period.whole_seconds().max(1)
                };
                let mut next = created + Duration::seconds(period.whole_seconds() * periods);
                while next <= after {
                    next += *period;
                }
                Some(next)
            }
            ScheduleExpression::At(at) => (*at > after).then_some(*at),
            ScheduleExpression::Cron(cron) => cron.next_after(after),
        }
    }
}

fn strip_call<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn parse_rate(inner: &str) -> Option<ScheduleExpression> {
    let mut parts = inner.split_whitespace();
    let value: i64 = parts.next()?.parse().ok().filter(|v| *v > 0)?;
    let unit = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    // EventBridge insists on the singular for 1 and the plural otherwise.
    let seconds = match (unit, value) {
        ("minute", 1) | ("minutes", 2..) => 60,
        ("hour", 1) | ("hours", 2..) => 3600,
        ("day", 1) | ("days", 2..) => 86_400,
        _ => return None,
    };
    Some(ScheduleExpression::Rate(Duration::seconds(value * seconds)))
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    fn parse(inner: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [minutes, hours, day_of_month, months, day_of_week, years] = fields[..] else {
            return Err(format!(
                "expected 6 fields (minutes hours day-of-month month day-of-week year), got {}",
                fields.len()
            ));
        };
        if (day_of_month == "?") == (day_of_week == "?") {
            return Err("exactly one of day-of-month and day-of-week must be `?`".into());
        }
        let small = |set: BTreeSet<i32>| set.into_iter().map(|v| v as u8).collect();
        Ok(Cron {
            minutes: small(parse_set(minutes, 0, 59, &[], "minutes")?),
            hours: small(parse_set(hours, 0, 23, &[], "hours")?),
            day_of_month: parse_day_of_month(day_of_month)?,
            months: small(parse_set(months, 1, 12, &MONTH_NAMES, "month")?),
            day_of_week: parse_day_of_week(day_of_week)?,
            years: match years {
                "*" => None,
                _ => Some(parse_set(years, 1970, 2199, &[], "year")?),
            },
        })
    }

    fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = after.to_offset(time::UtcOffset::UTC);
        let mut date = after.date();
        // Five years of days covers every expression that fires at all except rare
        // year lists; beyond that the schedule counts as finished.
        for _ in 0..(366 * 5) {
            if self.day_matches(date) {
                for &hour in &self.hours {
                    for &minute in &self.minutes {
                        let Ok(at) = Time::from_hms(hour, minute, 0) else {
                            continue;
                        };
                        let candidate = PrimitiveDateTime::new(date, at).assume_utc();
                        if candidate > after {
                            return Some(candidate);
                        }
                    }
                }
            }
            date = date.next_day()?;
        }
        None
    }

    fn day_matches(&self, date: Date) -> bool {
        if let Some(years) = &self.years
            && !years.contains(&date.year())
        {
            return false;
        }
        if !self.months.contains(&u8::from(date.month())) {
            return false;
        }
        let last = last_day_of_month(date);
        let day_of_month_ok = match &self.day_of_month {
            DayOfMonth::Any => true,
            DayOfMonth::Days(days) => days.contains(&date.day()),
            DayOfMonth::Last => date.day() == last,
            DayOfMonth::LastWeekday => date.day() == nearest_weekday(date, last),
            DayOfMonth::NearestWeekday(day) => date.day() == nearest_weekday(date, *day.min(&last)),
        };
        let weekday = date.weekday().number_from_sunday();
        let day_of_week_ok = match &self.day_of_week {
            DayOfWeek::Any => true,
            DayOfWeek::Days(days) => days.contains(&weekday),
            DayOfWeek::LastOfMonth(day) => *day == weekday && date.day() + 7 > last,
            DayOfWeek::Nth(day, nth) => *day == weekday && (date.day() - 1) / 7 + 1 == *nth,
        };
        day_of_month_ok && day_of_week_ok
    }
}

fn last_day_of_month(date: Date) -> u8 {
    date.month().length(date.year())
}

/// The weekday nearest `day` of `date`'s month, not crossing into another month.
fn nearest_weekday(date: Date, day: u8) -> u8 {
    let Ok(target) = Date::from_calendar_date(date.year(), date.month(), day) else {
        return day;
    };
    let last = last_day_of_month(date);
    match target.weekday() {
        Weekday::Saturday if day == 1 => 3,
        Weekday::Saturday => day - 1,
        Weekday::Sunday if day == last => day - 2,
        Weekday::Sunday => day + 1,
        _ => day,
    }
}

fn parse_value(text: &str, names: &[&str], offset: i32) -> Option<i32> {
    if let Some(index) = names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return i32::try_from(index).ok().map(|i| i + offset);
    }
    text.parse().ok()
}

/// A field of numbers: `*`, `5`, `1-5`, `*/10`, `5/15`, `MON-FRI`, comma lists.
fn parse_set(
    field: &str,
    min: i32,
    max: i32,
    names: &[&str],
    what: &str,
) -> Result<BTreeSet<i32>, String> {
    let bad = || format!("{what} field `{field}` is not valid");
    let mut values = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<i32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(bad)?,
            ),
            None => (item, 1),
        };
        let (start, end) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, names, min).ok_or_else(bad)?,
                parse_value(b, names, min).ok_or_else(bad)?,
            )
        } else {
            let start = parse_value(range, names, min).ok_or_else(bad)?;
            (start, if item.contains('/') { max } else { start })
        };
        if start < min || end > max || start > end {
            return Err(format!(
                "{what} field `{field}`: values must be {min}-{max}"
            ));
        }
        values.extend((start..=end).step_by(usize::try_from(step).unwrap_or(1)));
    }
    Ok(values)
}

fn parse_day_of_month(field: &str) -> Result<DayOfMonth, String> {
    match field {
        "?" | "*" => Ok(DayOfMonth::Any),
        "L" => Ok(DayOfMonth::Last),
        "LW" => Ok(DayOfMonth::LastWeekday),
        _ => match field.strip_suffix('W') {
            Some(day) => day
                .parse()
                .ok()
                .filter(|d| (1..=31).contains(d))
                .map(DayOfMonth::NearestWeekday)
                .ok_or_else(|| format!("day-of-month field `{field}` is not valid")),
            None => parse_set(field, 1, 31, &[], "day-of-month")
                .map(|set| DayOfMonth::Days(set.into_iter().map(|v| v as u8).collect())),
        },
    }
}

fn parse_day_of_week(field: &str) -> Result<DayOfWeek, String> {
    let bad = || format!("day-of-week field `{field}` is not valid");
    let day = |text: &str| {
        parse_value(text, &DAY_NAMES, 1)
            .filter(|d| (1..=7).contains(d))
            .map(|d| d as u8)
            .ok_or_else(bad)
    };
    match field {
        "?" | "*" => Ok(DayOfWeek::Any),
        "L" => Ok(DayOfWeek::Days(BTreeSet::from([7]))),
        _ => {
            if let Some((weekday, nth)) = field.split_once('#') {
                let nth = nth
                    .parse()
                    .ok()
                    .filter(|n| (1..=5).contains(n))
                    .ok_or_else(bad)?;
                return Ok(DayOfWeek::Nth(day(weekday)?, nth));
            }
            if let Some(weekday) = field.strip_suffix('L') {
                return Ok(DayOfWeek::LastOfMonth(day(weekday)?));
            }
            parse_set(field, 1, 7, &DAY_NAMES, "day-of-week")
                .map(|set| DayOfWeek::Days(set.into_iter().map(|v| v as u8).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn next(expression: &str, after: OffsetDateTime) -> Option<OffsetDateTime> {
        ScheduleExpression::parse(expression)
            .expect("valid expression")
            .next_after(after, after)
    }

    #[test]
    fn rate_counts_from_creation() {
        let created = datetime!(2024-01-01 00:00:10 UTC);
        let rate = ScheduleExpression::parse("rate(5 minutes)").expect("valid");
        assert_eq!(
            rate.next_after(created, created),
            Some(datetime!(2024-01-01 00:05:10 UTC))
        );
        assert_eq!(
            rate.next_after(created, datetime!(2024-01-01 00:12:00 UTC)),
            Some(datetime!(2024-01-01 00:15:10 UTC))
        );
        assert_eq!(
            rate.next_after(created, datetime!(2024-01-01 00:15:10 UTC)),
            Some(datetime!(2024-01-01 00:20:10 UTC))
        );
    }

    #[test]
    fn rate_units_follow_eventbridge() {
        assert!(ScheduleExpression::parse("rate(1 minute)").is_ok());
        assert!(ScheduleExpression::parse("rate(2 hours)").is_ok());
        assert!(ScheduleExpression::parse("rate(1 day)").is_ok());
        for bad in [
            "rate(1 minutes)",
            "rate(2 minute)",
            "rate(0 minutes)",
            "rate(5)",
            "rate(5 weeks)",
        ] {
            assert!(ScheduleExpression::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_every_ten_minutes_on_weekdays() {
        // Saturday 2024-03-02 → Monday 2024-03-04 00:00.
        assert_eq!(
            next(
                "cron(0/10 * ? * MON-FRI *)",
                datetime!(2024-03-02 10:03 UTC)
            ),
            Some(datetime!(2024-03-04 00:00 UTC))
        );
        assert_eq!(
            next(
                "cron(0/10 * ? * MON-FRI *)",
                datetime!(2024-03-04 10:03 UTC)
            ),
            Some(datetime!(2024-03-04 10:10 UTC))
        );
    }

    #[test]
    fn cron_fires_strictly_after_now() {
        assert_eq!(
            next("cron(15 10 * * ? *)", datetime!(2024-05-01 10:15 UTC)),
            Some(datetime!(2024-05-02 10:15 UTC))
        );
    }

    #[test]
    fn cron_last_day_nearest_weekday_and_nth() {
        assert_eq!(
            next("cron(0 12 L * ? *)", datetime!(2024-02-10 00:00 UTC)),
            Some(datetime!(2024-02-29 12:00 UTC))
        );
        // 2024-06-15 is a Saturday: the nearest weekday is Friday the 14th.
        assert_eq!(
            next("cron(0 9 15W * ? *)", datetime!(2024-06-01 00:00 UTC)),
            Some(datetime!(2024-06-14 09:00 UTC))
        );
        // The second Tuesday (3#2) of April 2024 is the 9th.
        assert_eq!(
            next("cron(0 8 ? 4 3#2 2024)", datetime!(2024-01-01 00:00 UTC)),
            Some(datetime!(2024-04-09 08:00 UTC))
        );
        // The last Friday (6L) of May 2024 is the 31st.
        assert_eq!(
            next("cron(30 18 ? MAY 6L *)", datetime!(2024-05-01 00:00 UTC)),
            Some(datetime!(2024-05-31 18:30 UTC))
        );
    }

    #[test]
    fn cron_with_a_past_year_never_fires() {
        assert_eq!(
            next("cron(0 0 1 1 ? 2020)", datetime!(2024-01-01 00:00 UTC)),
            None
        );
    }

    #[test]
    fn cron_rejects_what_eventbridge_rejects() {
        for bad in [
            "cron(* * * * *)",
            "cron(0 0 * * * *)",
            "cron(0 0 ? * ? *)",
            "cron(60 0 * * ? *)",
            "cron(0 24 * * ? *)",
            "cron(0 0 ? * 8 *)",
            "cron(0 0 32W * ? *)",
        ] {
            assert!(ScheduleExpression::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn at_fires_once() {
        let at = ScheduleExpression::parse("at(2024-07-01T09:30:00)").expect("valid");
        let before = datetime!(2024-06-30 00:00 UTC);
        assert_eq!(
            at.next_after(before, before),
            Some(datetime!(2024-07-01 09:30 UTC))
        );
        let after = datetime!(2024-07-01 09:30 UTC);
        assert_eq!(at.next_after(before, after), None);
    }

    #[test]
    fn unknown_forms_are_named() {
        assert_eq!(
            ScheduleExpression::parse("every 5 minutes"),
            Err(ScheduleError::UnknownForm("every 5 minutes".into()))
        );
    }
}
